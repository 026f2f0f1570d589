/**
 * Typed failures. Every error that reaches the operator names a stable `code`, the `phase` it happened
 * in, a one-line message and (when we know one) a one-line hint. The CLI maps `exitCode` to the process
 * exit status; library callers switch on `code`.
 */

/** Phases of an operation, in the order a deploy runs them. */
export type Phase =
  | 'config'
  | 'lock'
  | 'preflight'
  | 'resolve'
  | 'artifact'
  | 'archive'
  | 'unpack'
  | 'env'
  | 'install'
  | 'build'
  | 'prune'
  | 'isolation'
  | 'verify'
  | 'switch'
  | 'health'
  | 'route'
  | 'save'
  | 'soak'
  | 'retain'
  | 'hook'
  | 'pull'
  | 'activate'
  | 'status'
  | 'list'
  | 'pack'
  | 'internal';

/** Process exit codes. Documented in README and documentation/exit-codes.md; keep them stable. */
export const ExitCode = {
  ok: 0,
  /** A bug or an unexpected condition. */
  internal: 1,
  /** Bad flags, bad config, bad release id: nothing was changed. */
  usage: 2,
  /** Another pm2-release operation holds the lock. */
  locked: 3,
  /** Archive, install or build of the new release failed: the live app was not touched. */
  build: 4,
  /** The switch or the health gate failed: the previous release was put back. */
  switch: 5,
  /** An outside dependency (git, pm2, the filesystem) failed. */
  environment: 6,
  /** Refused by policy: the sha was marked bad by a rollback or a reverted health gate (--force overrides). */
  refused: 7,
  /** Cancelled (SIGINT/SIGTERM or an AbortSignal): the live app was left as it was. */
  cancelled: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export interface ReleaseErrorOptions {
  phase: Phase;
  hint?: string;
  cause?: unknown;
  /** Path of the release build log, when one exists. */
  logFile?: string;
  /** The last lines of a failed command's output (already redacted). */
  outputTail?: string;
  releaseId?: string;
}

export class ReleaseError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  phase: Phase;
  readonly hint?: string;
  logFile?: string;
  outputTail?: string;
  releaseId?: string;

  constructor(code: string, exitCode: ExitCode, message: string, opts: ReleaseErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.phase = opts.phase;
    this.hint = opts.hint;
    this.logFile = opts.logFile;
    this.outputTail = opts.outputTail;
    this.releaseId = opts.releaseId;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      phase: this.phase,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.releaseId ? { releaseId: this.releaseId } : {}),
      ...(this.logFile ? { logFile: this.logFile } : {}),
    };
  }
}

export class ConfigError extends ReleaseError {
  readonly problems: string[];
  constructor(problems: string[], source: string) {
    super('CONFIG_INVALID', ExitCode.usage, `invalid configuration (${source}): ${problems.join('; ')}`, {
      phase: 'config',
      hint: 'fix the listed keys; see documentation/configuration.md',
    });
    this.problems = problems;
  }
}

export class UsageError extends ReleaseError {
  constructor(code: string, message: string, opts: Partial<ReleaseErrorOptions> = {}) {
    super(code, ExitCode.usage, message, { phase: 'config', ...opts });
  }
}

export class LockError extends ReleaseError {
  constructor(message: string, hint?: string) {
    super('LOCKED', ExitCode.locked, message, { phase: 'lock', hint });
  }
}

export class BuildError extends ReleaseError {
  constructor(code: string, message: string, opts: ReleaseErrorOptions) {
    super(code, ExitCode.build, message, opts);
  }
}

export class SwitchError extends ReleaseError {
  constructor(code: string, message: string, opts: ReleaseErrorOptions) {
    super(code, ExitCode.switch, message, opts);
  }
}

export class EnvironmentError extends ReleaseError {
  constructor(code: string, message: string, opts: ReleaseErrorOptions) {
    super(code, ExitCode.environment, message, opts);
  }
}

/** Wraps anything that is not a ReleaseError so callers always see the same shape. */
export function asReleaseError(err: unknown, phase: Phase = 'internal'): ReleaseError {
  if (err instanceof ReleaseError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ReleaseError('INTERNAL', ExitCode.internal, firstLine(message), { phase, cause: err });
}

export function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? text;
  return line.trim();
}

/**
 * An install or build stopped by the memory guard (release/memory-guard.ts) for crossing its budget, or not
 * started for want of one. `memory` is what the step used (the manifest's record), shown with --json.
 */
export class BuildMemoryError extends BuildError {
  constructor(
    message: string,
    readonly memory: object,
    opts: ReleaseErrorOptions,
  ) {
    super('BUILD_MEMORY', message, opts);
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), memory: this.memory };
  }
}

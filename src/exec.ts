/**
 * The one gateway for child processes (the only importer of execa): argv arrays, never a shell string,
 * an explicit cwd, the command logged as `$ cmd`, the tail of its output kept for error messages.
 */
import fs from 'node:fs';
import type { ResultPromise } from 'execa';
import type { Logger } from './log.js';
import type { Redactor } from './log.js';

export interface RunOptions {
  cwd: string;
  /** Extra variables on top of the inherited environment (or of `baseEnv`). */
  env?: Record<string, string | undefined>;
  /** The environment the child starts from; default: the parent's. */
  baseEnv?: Record<string, string | undefined>;
  logger: Logger;
  /** Append stdout and stderr to this file (the release build log). */
  logFile?: string;
  /** Called for each output line (already redacted). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Keep stdout in the result (default true); large outputs should set false and use onLine. */
  captureStdout?: boolean;
  redactor?: Redactor;
  /** Feed to stdin. */
  input?: string;
  /**
   * Called with the child's pid once it started (also its process group id: it runs detached). The child
   * keeps running meanwhile; if this throws, the group is stopped and run() rejects with that error.
   */
  onStart?: (pid: number) => Promise<void>;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** A command that could not start or exited non-zero. */
export class CommandFailure extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly tail: string,
    readonly reason: string,
  ) {
    super(`${command}: ${reason}`);
  }
}

const TAIL_LINES = 30;

/**
 * execa, loaded on the first command: it is the largest module graph pm2-release loads (~150 ms of a CLI
 * start on a 2-core VM), and `status`, `list`, `history` never spawn anything.
 */
let execaModule: Promise<typeof import('execa')> | undefined;
const loadExeca = () => (execaModule ??= import('execa'));

export function formatCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(' ');
}

export async function run(argv: readonly string[], opts: RunOptions): Promise<RunResult> {
  const [file, ...args] = argv;
  if (!file) throw new Error('run: empty argv');
  const shown = formatCommand(argv);
  opts.logger.debug({ cwd: opts.cwd }, `$ ${shown}`);

  const tail: string[] = [];
  const log = opts.logFile ? fs.createWriteStream(opts.logFile, { flags: 'a', mode: 0o600 }) : undefined;
  // A full disk fails the log writes: keep the first error (an unhandled stream 'error' would crash us) and
  // report it once the command is done.
  let logError: NodeJS.ErrnoException | undefined;
  log?.on('error', (err) => (logError ??= err));
  log?.write(`$ ${shown}\n`);

  const { execa } = await loadExeca();
  const child: ResultPromise = execa(file, args, {
    cwd: opts.cwd,
    env: { ...(opts.baseEnv ?? process.env), ...opts.env },
    extendEnv: false,
    stdin: opts.input !== undefined ? 'pipe' : 'ignore',
    input: opts.input,
    buffer: false,
    reject: false,
    cancelSignal: opts.signal,
    // Kill the whole group on abort or timeout: npm scripts spawn grandchildren (next build, node-gyp).
    detached: true,
    forceKillAfterDelay: 5_000,
    timeout: opts.timeoutMs,
    stripFinalNewline: false,
  });

  let stdout = '';
  let stderr = '';
  const onData = (stream: 'stdout' | 'stderr') => {
    let partial = '';
    return (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      if (stream === 'stdout' && opts.captureStdout !== false) stdout += text;
      if (stream === 'stderr') stderr += text;
      const redacted = opts.redactor ? opts.redactor.redact(text) : text;
      if (!logError) log?.write(redacted);
      partial += redacted;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        tail.push(line);
        if (tail.length > TAIL_LINES) tail.shift();
        opts.onLine?.(line, stream);
      }
    };
  };
  child.stdout?.on('data', onData('stdout'));
  child.stderr?.on('data', onData('stderr'));

  // When the parent is aborted we kill the child's whole process group, not just the child.
  const killGroup = () => {
    if (child.pid) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
  };
  opts.signal?.addEventListener('abort', killGroup, { once: true });

  let startError: Error | undefined;
  if (child.pid && opts.onStart) {
    try {
      await opts.onStart(child.pid);
    } catch (err) {
      startError = err instanceof Error ? err : new Error(String(err));
      killGroup();
    }
  }

  const result = await child;
  opts.signal?.removeEventListener('abort', killGroup);
  if (log) await new Promise<void>((resolve) => (log.destroyed ? resolve() : log.end(resolve)));
  if (startError) throw startError;

  const tailText = tail.join('\n');
  if (result.failed) {
    let reason: string;
    if (result.isCanceled) reason = 'cancelled';
    else if (result.timedOut) reason = `timed out after ${opts.timeoutMs} ms`;
    else if (result.exitCode === undefined && result.signal) reason = `killed by ${result.signal}`;
    else if (result.exitCode === undefined) reason = `could not start (${(result as { code?: string }).code ?? 'unknown error'})`;
    else reason = `exited with code ${result.exitCode}`;
    throw new CommandFailure(shown, result.exitCode, tailText, reason);
  }
  if (logError) throw logError;
  return { stdout, stderr, exitCode: result.exitCode ?? 0 };
}

/**
 * Starts a command whose stdout is consumed as a stream (git archive into tar). Resolves to `{ child }` (a
 * bare execa child would be awaited to its end by the caller's `await`: it is a promise of its result).
 */
export async function spawnStream(
  argv: readonly string[],
  opts: { cwd: string; logger: Logger; signal?: AbortSignal; env?: Record<string, string | undefined> },
) {
  const [file, ...args] = argv;
  if (!file) throw new Error('spawnStream: empty argv');
  opts.logger.debug({ cwd: opts.cwd }, `$ ${formatCommand(argv)}`);
  const { execa } = await loadExeca();
  return { child: spawnWith(execa, file, args, opts) };
}

function spawnWith(
  execa: (typeof import('execa'))['execa'],
  file: string,
  args: string[],
  opts: { cwd: string; signal?: AbortSignal; env?: Record<string, string | undefined> },
) {
  return execa(file, args, {
    cwd: opts.cwd,
    env: opts.env,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
    reject: false,
    cancelSignal: opts.signal,
  });
}

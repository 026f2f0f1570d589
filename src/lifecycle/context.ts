/**
 * What every operation receives: config, logger, the environment for child processes, progress events,
 * cancellation, and the PM2 and release-store gateways. Built once per call from the caller's options.
 */
import os from 'node:os';
import { loadConfig, type Config, type ConfigOverrides } from '../config.js';
import { asReleaseError, ExitCode, ReleaseError, type Phase } from '../errors.js';
import { Redactor, silentLogger, type Logger } from '../log.js';
import { Pm2 } from '../pm2/client.js';
import { ReleaseStore } from '../release/store.js';
import type { StepMemory } from '../release/memory-budget.js';

export type Trigger = 'cli' | 'api' | 'webhook' | 'schedule';

export type ReleaseEvent =
  | { type: 'phase'; phase: Phase; state: 'start' }
  | { type: 'phase'; phase: Phase; state: 'end'; durationMs: number }
  | { type: 'phase'; phase: Phase; state: 'fail'; durationMs: number; code: string; message: string }
  | { type: 'output'; phase: Phase; stream: 'stdout' | 'stderr'; line: string }
  | { type: 'warning'; message: string };

/** Options every API call accepts. */
export interface CommonOptions {
  /** A config object (validated like a file). */
  config?: unknown;
  /** Path of a JSON config file. */
  configPath?: string;
  /** Directory used to find `pm2-release.config.json` and to resolve relative paths (default: process.cwd()). */
  cwd?: string;
  /** Environment for config lookup and child processes (default: process.env). */
  env?: Record<string, string | undefined>;
  logger?: Logger;
  onEvent?: (event: ReleaseEvent) => void;
  signal?: AbortSignal;
  trigger?: Trigger;
}

export interface Context {
  config: Config;
  warnings: string[];
  configSource: string;
  logger: Logger;
  env: Record<string, string | undefined>;
  signal?: AbortSignal;
  trigger: Trigger;
  redactor: Redactor;
  pm2: Pm2;
  store: ReleaseStore;
  durations: Record<string, number>;
  /** What this operation's install and build used (release/memory-guard.ts), for the history line. */
  memory: Partial<Record<'install' | 'build', StepMemory>>;
  /** Names the app had before a rename this operation applied to the router (the routed switch retires their processes). */
  formerApps?: string[];
  emit(event: ReleaseEvent): void;
  now(): Date;
}

export function createContext(opts: CommonOptions, overrides?: ConfigOverrides): Context {
  const env = opts.env ?? process.env;
  const logger = opts.logger ?? silentLogger();
  const { config, warnings, source } = loadConfig({
    config: opts.config,
    configPath: opts.configPath,
    cwd: opts.cwd ?? process.cwd(),
    env,
    home: env.HOME ?? os.homedir(),
    overrides,
  });
  const redactor = new Redactor();
  // The app's configured env may hold tokens; the port and release identifiers are not secrets.
  redactor.addEnv(config.app.env, (k) => k === config.app.portEnv);
  redactor.addSecretEnv(env);
  for (const w of warnings) logger.warn(w);
  const ctx: Context = {
    config,
    warnings: [...warnings],
    configSource: source,
    logger,
    env,
    signal: opts.signal,
    trigger: opts.trigger ?? 'api',
    redactor,
    // The pm2 CLI (and so a daemon it starts) never sees our own secrets or an outer npm run's variables.
    pm2: new Pm2({ env: childEnv(env), logger, redactor, exposeEnv: [config.app.portEnv] }),
    store: new ReleaseStore(config.releasesDir, config.app.dir),
    durations: {},
    memory: {},
    emit(event) {
      try {
        opts.onEvent?.(event);
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'onEvent callback threw; ignored');
      }
    },
    now: () => new Date(),
  };
  return ctx;
}

/** Runs one phase: emits start/end events, records its duration, tags errors with the phase. */
/**
 * Phases after the new release went live (save, retain) are short and must finish: cancelling them would
 * leave PM2, the dump and the record disagreeing. A cancel arriving then is honoured by the next operation.
 */
const NOT_CANCELLABLE: Phase[] = ['save', 'retain'];

export async function phase<T>(ctx: Context, name: Phase, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  ctx.emit({ type: 'phase', phase: name, state: 'start' });
  ctx.logger.info({ phase: name }, `${name}…`);
  try {
    const cancellable = !NOT_CANCELLABLE.includes(name);
    if (cancellable && ctx.signal?.aborted) throw cancelled(name);
    const result = await fn();
    const durationMs = Math.round(performance.now() - started);
    ctx.durations[name] = (ctx.durations[name] ?? 0) + durationMs;
    ctx.emit({ type: 'phase', phase: name, state: 'end', durationMs });
    ctx.logger.debug({ phase: name, durationMs }, `${name} done`);
    return result;
  } catch (err) {
    const durationMs = Math.round(performance.now() - started);
    ctx.durations[name] = (ctx.durations[name] ?? 0) + durationMs;
    const e =
      ctx.signal?.aborted && !NOT_CANCELLABLE.includes(name) && !(err instanceof ReleaseError && err.code === 'CANCELLED')
        ? cancelled(name)
        : asReleaseError(err, name);
    // The PM2 gateway cannot know which phase called it: its errors take the phase they happened in.
    if (e.code.startsWith('PM2_')) e.phase = name;
    ctx.emit({ type: 'phase', phase: name, state: 'fail', durationMs, code: e.code, message: e.message });
    throw e;
  }
}

export function cancelled(phase: Phase): ReleaseError {
  return new ReleaseError('CANCELLED', ExitCode.cancelled, `cancelled during ${phase}`, { phase, hint: 'the live app was left as it was' });
}

export function warn(ctx: Context, message: string): void {
  ctx.warnings.push(message);
  ctx.logger.warn(message);
  ctx.emit({ type: 'warning', message });
}

/**
 * Variables that belong to an outer `npm run` (pm2-release itself started by npm), and pm2-release's own
 * secrets and test switches: they must not leak into the app's PM2 env or the release's own commands.
 */
const OUTER_NPM_VARS =
  /^(npm_package_|npm_lifecycle_|npm_config_local_prefix$|npm_command$|npm_execpath$|npm_node_execpath$|INIT_CWD$|PM2_RELEASE_WEBHOOK_SECRET$|PM2_RELEASE_FAILPOINT$)/;

/**
 * What PM2 puts into the environment of a process it runs (pm2_env keys). When pm2-release itself runs under
 * PM2 (the webhook listener), these describe the listener, not the app, and must not reach the app's env.
 */
const PM2_BOOKKEEPING = new Set(
  'pm_id name namespace NODE_APP_INSTANCE unique_id cwd pm_cwd pm_exec_path pm_out_log_path pm_err_log_path pm_log_path pm_pid_path pm_uptime status restart_time unstable_restarts created_at exec_mode exec_interpreter instances max_restarts min_uptime autorestart autostart vizion vizion_running km_link watch treekill kill_timeout kill_retry_time merge_logs args node_args version node_version username windowsHide instance_var filter_env automation pmx exit_code axm_actions axm_monitor axm_options axm_dynamic prev_restart_delay PM2_USAGE PM2_JSON_PROCESSING PM2_PROGRAMMATIC PM2_INTERACTOR_PROCESSING'.split(
    ' ',
  ),
);

export function childEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const underPm2 = env.pm_id !== undefined && env.PM2_HOME !== undefined;
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) if (!OUTER_NPM_VARS.test(k) && !(underPm2 && PM2_BOOKKEEPING.has(k))) out[k] = v;
  return out;
}

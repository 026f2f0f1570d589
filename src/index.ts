/**
 * pm2-release library API. Importing this module has no side effects: every call takes its options
 * (config or config path, ref, logger, onEvent, signal) and returns the same typed result the CLI prints
 * with --json, or throws a ReleaseError.
 */
import { deploy } from './commands/deploy.js';
import { serve as serveWith, startWebhookServer as startWebhookServerWith, type ServeOptions, type WebhookServer } from './commands/serve.js';

export { deploy, type DeployOptions } from './commands/deploy.js';
export { build, type BuildOptions } from './commands/build.js';
export { activate, rollback, type ActivateOptions, type RollbackOptions } from './commands/activate.js';
export { list, status, history, type ListOptions, type StatusOptions, type HistoryOptions } from './commands/inspect.js';
export { prune, type PruneOptions } from './commands/prune.js';
export { pack, type PackOptions } from './commands/pack.js';
export type { HistoryEntry, HistoryAction, BadMark } from './release/history.js';
export { init, type InitOptions, type InitResult } from './commands/init.js';
export { proposeConfig, type InitFacts, type Proposal } from './lifecycle/proposal.js';
export { doctor, type DoctorOptions } from './commands/doctor.js';
export type { DoctorResult, Check, CheckStatus } from './lifecycle/checks.js';
export { sign as signWebhook, type ServeOptions, type WebhookServer, type WebhookStatus } from './commands/serve.js';
export type { CommonOptions, ReleaseEvent, Trigger } from './lifecycle/context.js';
export type {
  ReleaseInfo,
  DeployResult,
  BuildResult,
  PackResult,
  ActivateResult,
  RollbackResult,
  RollbackSkipped,
  ListResult,
  StatusResult,
  PruneResult,
  HistoryResult,
  Pm2State,
} from './lifecycle/results.js';
export { failureChanged } from './lifecycle/results.js';
export { loadConfig, DEFAULTS, CONFIG_FILE_NAME, type Config, type AppConfig, type LoadedConfig } from './config.js';
export { ReleaseError, ConfigError, UsageError, LockError, BuildError, SwitchError, EnvironmentError, ExitCode, type Phase } from './errors.js';
export { createLogger, silentLogger, type Logger } from './log.js';
export { makeReleaseId, isReleaseId, parseReleaseId, planRetention } from './release/naming.js';

// The webhook listener starts deploys. A command does not import another command, so the two are put
// together here, above both: a push runs `deploy` unless the caller passes its own (tests of the queue).
export async function startWebhookServer(opts: ServeOptions): Promise<WebhookServer> {
  return startWebhookServerWith({ ...opts, deploy: opts.deploy ?? deploy });
}

/** Runs until the signal aborts (SIGINT/SIGTERM in the CLI), then waits for a running deploy to finish. */
export async function serve(opts: ServeOptions): Promise<void> {
  return serveWith({ ...opts, deploy: opts.deploy ?? deploy });
}

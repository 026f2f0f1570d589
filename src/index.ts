/**
 * pm2-release library API. Importing this module has no side effects: every call takes its options
 * (config or config path, ref, logger, onEvent, signal) and returns the same typed result the CLI prints
 * with --json, or throws a ReleaseError.
 */
export { deploy, build, type DeployOptions, type BuildOptions } from './commands/deploy.js';
export { activate, rollback, type ActivateOptions, type RollbackOptions } from './commands/activate.js';
export { list, status, prune, history, type ListOptions, type StatusOptions, type PruneOptions, type HistoryOptions } from './commands/inspect.js';
export type { HistoryEntry, HistoryAction, BadMark } from './release/history.js';
export { init, type InitOptions, type InitResult } from './commands/init.js';
export { proposeConfig, type InitFacts, type Proposal } from './lifecycle/proposal.js';
export { doctor, type DoctorOptions, type DoctorResult, type Check, type CheckStatus } from './lifecycle/checks.js';
export { serve, startWebhookServer, sign as signWebhook, type ServeOptions, type WebhookServer, type WebhookStatus } from './commands/serve.js';
export type { CommonOptions, ReleaseEvent, Trigger } from './lifecycle/context.js';
export type {
  ReleaseInfo,
  DeployResult,
  BuildResult,
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

/**
 * The typed results every operation returns; the CLI prints them as-is with --json. Keep them stable.
 * Each carries `changed` next to `ok`: whether the run changed the host (for deploy, activate and rollback:
 * the live release), so an orchestrator (Ansible's changed/ok/failed) reports the truth.
 */
import { ExitCode, type Phase, type ReleaseError } from '../errors.js';
import type { ReleaseRecord } from '../release/store.js';
import type { StepMemory } from '../release/memory-budget.js';
import type { BadMark, HistoryEntry } from '../release/history.js';
import type { RetentionStatus } from '../release/naming.js';
import type { SoakRecord } from './soak.js';
import type { StandbyView } from './standby.js';

export interface ReleaseInfo {
  id: string;
  sha: string | null;
  shortSha: string | null;
  ref: string | null;
  subject: string | null;
  status: RetentionStatus;
  active: boolean;
  createdAt: string | null;
  finishedAt: string | null;
  /** The release root (the archived commit). */
  dir: string;
  /** The app's directory inside it: PM2's cwd when active. */
  cwd: string;
  sizeBytes: number | null;
  buildLog: string;
  durationsMs: Record<string, number>;
  error: { code: string; phase: string; message: string } | null;
  /** Set when an operator rolled back from this sha or the health gate reverted it. */
  bad: { reason: string; markedAt: string } | null;
  /** The commits this release serves: its own sha, then later commits whose inputs were the same. */
  commits: string[];
  /** What its install and build used against their memory budget (null for a release built before the guard). */
  memory: { install: StepMemory | null; build: StepMemory | null } | null;
  /** The former releases dir that holds it (built before a `releasesDir` move), null for this dir's own. */
  elsewhere: string | null;
  /** Built here from git, or unpacked from an artifact (null: a release of before pm2-release recorded it). */
  source: 'git' | 'artifact' | null;
  /** The artifact it was unpacked from: its sha256, file name, the host and release it was packed from. */
  artifact: { sha256: string; file: string; packedOn: string; release: string; packedAt: string; envKey?: string; signedBy?: string } | null;
}

export function releaseInfo(r: ReleaseRecord, activeId: string | null, buildLog: string, marks: Record<string, BadMark> = {}): ReleaseInfo {
  const mark = r.manifest?.sha ? marks[r.manifest.sha] : undefined;
  const m = r.manifest;
  return {
    id: r.id,
    sha: m?.sha ?? null,
    shortSha: m?.sha ? m.sha.slice(0, 7) : null,
    ref: m?.ref ?? null,
    subject: m?.subject ?? null,
    status: r.status,
    active: r.id === activeId,
    createdAt: m?.createdAt ?? null,
    finishedAt: m?.finishedAt ?? null,
    dir: r.dir,
    cwd: r.cwd,
    sizeBytes: m?.sizeBytes ?? null,
    buildLog,
    durationsMs: m?.durationsMs ?? {},
    error: m?.error ?? null,
    bad: mark ? { reason: mark.reason, markedAt: mark.markedAt } : null,
    commits: m?.commits ?? (m?.sha ? [m.sha] : []),
    memory: m?.memory ? { install: m.memory.install ?? null, build: m.memory.build ?? null } : null,
    elsewhere: r.elsewhere ?? null,
    source: m ? (m.source ?? 'git') : null,
    artifact: m?.artifact ?? null,
  };
}

export interface DeployResult {
  ok: true;
  /** The live release changed: false exactly when `mode` is `unchanged`. */
  changed: boolean;
  action: 'deploy';
  /**
   * built: a new release; unpacked: a new release from an artifact (no build); reactivated: a retained release of
   * this sha (or this artifact) was switched to; unchanged: it was already active.
   */
  mode: 'built' | 'unpacked' | 'reactivated' | 'unchanged';
  /** Set when the commit was matched by its inputs, not its sha: "frontend tree unchanged since 3f2a9c1". */
  reason?: string;
  release: ReleaseInfo;
  /** The release that served before, or null on a first deploy / adoption of a non-release app. */
  previous: string | null;
  url: string;
  durationsMs: Record<string, number>;
  removed: { id: string; reason: string }[];
  /**
   * The soak after the route change (router strategy, a previous release to keep warm, soak.durationMs > 0):
   * `passed` when the deploy waited for it; `running` with --no-wait-soak (status and history give the verdict).
   */
  soak: SoakRecord | null;
  warnings: string[];
}

/**
 * `rollback --if-current <sha>` on a host whose active release does not serve that sha: nothing was done
 * (no lock held past the check, no history line), so a fleet rollback can run on every host, twice.
 */
export interface RollbackSkipped {
  ok: true;
  changed: false;
  action: 'rollback';
  skipped: true;
  /** "serves 20261121T204233Z-3f2a9c1 (3f2a9c1), not 8f04d09: nothing to roll back". */
  reason: string;
  /** The release that serves, unchanged (null when none does). */
  active: ReleaseInfo | null;
  durationsMs: Record<string, number>;
  warnings: string[];
}

export type RollbackResult = ActivateResult | RollbackSkipped;

export interface BuildResult {
  ok: true;
  /**
   * A new ready release exists (the live one did not change); false only for `build --artifact` of an artifact
   * already unpacked here (that release is returned).
   */
  changed: boolean;
  action: 'build';
  release: ReleaseInfo;
  durationsMs: Record<string, number>;
  warnings: string[];
}

export interface PackResult {
  ok: true;
  /** A file was written (the live release did not change). */
  changed: true;
  action: 'pack';
  /** The release was built for this pack (no ready release had the ref's inputs). */
  built: boolean;
  release: ReleaseInfo;
  artifact: {
    file: string;
    sha256File: string;
    /** `<file>.sig`, when packed with --sign. */
    signature: string | null;
    /** sha256 of the file: what deploy --artifact checks and what makes a second deploy of it a no-op. */
    sha256: string;
    bytes: number;
    compression: 'gzip' | 'brotli';
    withDependencies: boolean;
    /** Files in the packed app dir and their bytes before compression. */
    files: number;
    appBytes: number;
    /** The build-time public variables it baked in (names only). */
    publicEnv: string[];
  };
  durationsMs: Record<string, number>;
  warnings: string[];
}

export interface ActivateResult {
  ok: true;
  /** The live release changed (false when the target was already the active release). */
  changed: boolean;
  action: 'activate' | 'rollback';
  release: ReleaseInfo;
  previous: string | null;
  url: string;
  durationsMs: Record<string, number>;
  warnings: string[];
}

export interface ListResult {
  ok: true;
  changed: false;
  active: string | null;
  releases: ReleaseInfo[];
  /** Releases left in former releases dirs (a `releasesDir` move): listed only, not rollback targets. */
  elsewhere: ReleaseInfo[];
}

export interface Pm2State {
  name: string;
  status: string;
  pid: number;
  pmId: number;
  cwd: string;
  restarts: number;
  uptimeSince: string | null;
  releaseId: string | null;
  /** How many PM2 processes carry the app's name. */
  processes: number;
}

export interface RouterInfo {
  /** The router process runs in PM2 and answers on its control socket. */
  running: boolean;
  listening: boolean;
  port: number;
  /** The release new requests go to, and its private port. */
  live: { port: number; release: string } | null;
  /** During a canary soak: the release that gets a share of the visitors. */
  canary: { upstream: { port: number; release: string }; share: number } | null;
  upstreams: { port: number; release: string; role: 'live' | 'canary' | 'standby' | 'draining'; inflight: number; websockets: number }[];
  held: number;
  /** Per release, the last minute: requests, req/s, 5xx count and rate, p50/p99 latency (ms). */
  stats: { release: string; requests: number; rps: number; errors5xx: number; rate5xx: number; p50Ms: number | null; p99Ms: number | null }[];
  error: string | null;
}

export interface StatusResult {
  ok: true;
  changed: false;
  app: string;
  /** The release PM2 serves, found by its cwd. */
  active: ReleaseInfo | null;
  /** The release pm2-release last recorded as active. */
  recorded: string | null;
  pm2: Pm2State | null;
  health: { url: string; ok: boolean; status: number | null; error: string | null };
  drift: { detected: boolean; reason: string | null };
  /** The front door, when the app runs behind the router (null otherwise). */
  router: RouterInfo | null;
  /** Behind the router: the previous release kept warm (a rollback to it is a route change), or why there is none. */
  standby: StandbyView | null;
  /** The running soak (with the time left), else the last one's verdict; null when there was none. */
  soak: (SoakRecord & { running: boolean; timeLeftMs: number }) | null;
  /**
   * Behind the router: its definition in PM2 (`running`) next to the config's, what differs, and for a change
   * a deploy would not apply, the command that does. Null without a router strategy or a PM2 daemon.
   */
  routerConfig?: RouterConfigView | null;
  warnings: string[];
}

export interface RouterDefinitionView {
  name: string;
  releasesDir: string | null;
  port: number | null;
  host: string | null;
  holdMs: number | null;
  script: string;
  execMode: string | null;
}

export interface RouterConfigView {
  running: RouterDefinitionView | null;
  config: RouterDefinitionView;
  differences: { key: string; running: string; config: string }[];
  /** What the next deploy, activate or rollback does: nothing, replace the router, or refuse (exit 2). */
  next: 'none' | 'replace' | 'refuse';
  command: string | null;
}

export interface PruneResult {
  ok: true;
  /** At least one release was removed (always false for a dry run). */
  changed: boolean;
  action: 'prune';
  dryRun: boolean;
  keep: number;
  kept: string[];
  removed: { id: string; reason: string }[];
}

export interface HistoryResult {
  ok: true;
  changed: false;
  /** Newest first. */
  entries: HistoryEntry[];
}

/** Phases that end before PM2 is touched: a failure there leaves the live app as it was. */
const BEFORE_SWITCH: ReadonlySet<Phase> = new Set<Phase>([
  'config',
  'lock',
  'preflight',
  'pull',
  'resolve',
  'artifact',
  'archive',
  'unpack',
  'pack',
  'env',
  'install',
  'build',
  'prune',
  'isolation',
  'verify',
  'hook',
  'list',
  'status',
]);

/**
 * Pure: the `changed` of a failure object. False when the app is as it was: usage (2), lock (3), build (4) and
 * refusal (7) stop before the switch, and a switch failure (5) put the previous release back or never stopped it
 * (its message says whether the put-back answered). An internal error (1), an outside failure (6) or a cancel
 * (130) at or after the switch may have left something else: true, so an orchestrator looks (`status`).
 */
export function failureChanged(e: Pick<ReleaseError, 'exitCode' | 'phase'>): boolean {
  if (e.exitCode === ExitCode.usage || e.exitCode === ExitCode.locked || e.exitCode === ExitCode.build || e.exitCode === ExitCode.refused) return false;
  if (e.exitCode === ExitCode.switch) return false;
  return !BEFORE_SWITCH.has(e.phase);
}

/** The typed results every operation returns; the CLI prints them as-is with --json. Keep them stable. */
import type { ReleaseRecord } from '../release/store.js';
import type { BadMark, HistoryEntry } from '../release/history.js';
import type { RetentionStatus } from '../release/naming.js';
import type { SoakRecord } from './soak.js';

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
  };
}

export interface DeployResult {
  ok: true;
  action: 'deploy';
  /** built: a new release; reactivated: a retained release of this sha was switched to; unchanged: it was already active. */
  mode: 'built' | 'reactivated' | 'unchanged';
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

export interface BuildResult {
  ok: true;
  action: 'build';
  release: ReleaseInfo;
  durationsMs: Record<string, number>;
  warnings: string[];
}

export interface ActivateResult {
  ok: true;
  action: 'activate' | 'rollback';
  release: ReleaseInfo;
  previous: string | null;
  url: string;
  durationsMs: Record<string, number>;
  warnings: string[];
}

export interface ListResult {
  ok: true;
  active: string | null;
  releases: ReleaseInfo[];
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
  /** The running soak (with the time left), else the last one's verdict; null when there was none. */
  soak: (SoakRecord & { running: boolean; timeLeftMs: number }) | null;
  warnings: string[];
}

export interface PruneResult {
  ok: true;
  action: 'prune';
  dryRun: boolean;
  keep: number;
  kept: string[];
  removed: { id: string; reason: string }[];
}

export interface HistoryResult {
  ok: true;
  /** Newest first. */
  entries: HistoryEntry[];
}

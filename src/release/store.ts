/**
 * Releases on disk: one directory per release under releasesDir, each with a manifest written atomically,
 * plus the `active.json` state (which release PM2 serves, the activation history, the PM2 app definition
 * that ecosystem.config.cjs starts on reboot) and a `current` symlink for operators.
 *
 *   <releasesDir>/<id>/                  the archived commit
 *   <releasesDir>/<id>/.pm2-release/     manifest.json, build.log
 *   <releasesDir>/active.json            state (mode 0600: it holds the app's configured env)
 *   <releasesDir>/current -> <id>        convenience link, swapped atomically
 *   <releasesDir>/.build/                the release being built (one at a time: the deploy lock), renamed to
 *                                        <id>/ when its build ends: every build runs at the same absolute path
 *   <releasesDir>/.cache/                the framework's build cache between builds (release/build-cache.ts)
 *   <releasesDir>/former-releases-dirs.json  the releases dirs this app was moved from under a running router
 *                                        (lifecycle/router-config.ts): their releases are listed as elsewhere
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { UsageError } from '../errors.js';
import type { StepMemory } from './memory-budget.js';
import { isReleaseId, newestFirst, parseReleaseId, type RetentionStatus } from './naming.js';

export const META_DIR = '.pm2-release';
export const MANIFEST_FILE = 'manifest.json';
export const BUILD_LOG = 'build.log';
export const STATE_FILE = 'active.json';
export const CURRENT_LINK = 'current';
export const FORMER_DIRS_FILE = 'former-releases-dirs.json';
/** Where every release is built: frameworks (Next.js) key their build caches on the absolute path. */
export const BUILD_DIR = '.build';
export const MANIFEST_VERSION = 1;

export type ReleaseStatus = 'building' | 'ready' | 'failed';

export interface Manifest {
  version: typeof MANIFEST_VERSION;
  id: string;
  sha: string;
  ref: string;
  subject?: string;
  status: ReleaseStatus;
  appDir: string;
  createdAt: string;
  finishedAt?: string;
  durationsMs: Record<string, number>;
  builder: { pid: number; host: string };
  node: string;
  npm?: string;
  lockfileHash?: string;
  /**
   * How node_modules came to be: a fresh install, or from another release's: reflink or copy (a clone), or
   * link (hard links to the read-only shared set, release/shared-deps.ts). `installedAt` (ms since the epoch)
   * ends a fresh install: a file changed after it was written by the build, and is never shared.
   */
  dependencies?: {
    method: 'install' | 'reflink' | 'copy' | 'link' | 'artifact';
    key?: string;
    from?: string;
    durationMs?: number;
    installedAt?: number;
    note?: string;
  };
  /** The build cache around its build (release/build-cache.ts): the entry, whether it was warm, what was kept. */
  buildCache?: { key: string; warm: boolean; bytes?: number; dropped?: string };
  /** The input key (release/inputs.ts): a later commit with the same key is served by this release. */
  inputKey?: string;
  /** The app dir's git tree id at `sha`. */
  tree?: string;
  /** Every commit this release serves: its own sha first, then later commits with the same inputs (bounded). */
  commits?: string[];
  sizeBytes?: number;
  /** What install and build used against their memory budget (release/memory-guard.ts). */
  memory?: { install?: StepMemory; build?: StepMemory };
  envFiles: string[];
  error?: { code: string; phase: string; message: string };
  /** How it was laid out: archived from git and built here, or unpacked from an artifact (absent: git). */
  source?: 'git' | 'artifact';
  /** The artifact it was unpacked from (release/artifact.ts): its sha256 identifies it. */
  artifact?: { sha256: string; file: string; packedOn: string; release: string; packedAt: string; envKey?: string; signedBy?: string };
  /** The build-time public variables its build baked in: names and sha256 of `name=value`, never values. */
  publicEnv?: { name: string; hash: string }[];
}

/** PM2 app definition as started (and as ecosystem.config.cjs starts it after a reboot). */
export interface AppDefinition {
  name: string;
  script: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  /** PM2 exec mode: fork (the seed's `pm2 start npm`) or cluster (zero-downtime strategy). */
  execMode?: 'fork' | 'cluster';
  instances?: number;
  /** PM2's kill_timeout (ms between SIGINT and SIGKILL on stop). */
  killTimeoutMs?: number;
  /** Options for the Node interpreter PM2 runs the script with (PM2's node_args). */
  nodeArgs?: string[];
}

export interface ActiveState {
  version: 1;
  active: string;
  sha: string;
  activatedAt: string;
  /** Newest last; bounded. */
  activations: string[];
  app: AppDefinition;
  /** The router's PM2 definition when the app runs behind one (ecosystem.config.cjs starts it too). */
  router?: AppDefinition;
  /**
   * Behind the router: the previous release, kept running unrouted (as PM2 runs it, on its private port), so
   * that a rollback to it is a route change. Absent when there is none; `standbyOff` then says why.
   */
  standby?: { id: string; app: AppDefinition };
  standbyOff?: string;
}

/** What a switch decided about the previous release behind the router. */
export type StandbyRecord = { id: string; app: AppDefinition } | { off: string };

/** The state file's fields for `standby`: the release, or why there is none. */
function standbyFields(standby: StandbyRecord | undefined): Pick<ActiveState, 'standby' | 'standbyOff'> {
  if (!standby) return {};
  return 'id' in standby ? { standby } : { standbyOff: standby.off };
}

export interface ReleaseRecord {
  id: string;
  dir: string;
  /** The app's directory inside the release (PM2's cwd). */
  cwd: string;
  /** 'incomplete': no readable manifest, or a build whose process is gone. */
  status: RetentionStatus;
  manifest?: Manifest;
  /** Set for a release of a former releases dir (listed, never activated, retained or pruned from here). */
  elsewhere?: string;
}

const ACTIVATIONS_KEPT = 50;

export class ReleaseStore {
  /** The release whose build runs in `.build` now (between beginBuild and finishBuild). */
  private building: string | undefined;
  /** Set once this run created `.build` for it: only then is it this run's to rename. */
  private buildCreated = false;

  constructor(
    readonly releasesDir: string,
    readonly appDir: string,
  ) {}

  /** The stable build directory (absolute). */
  get buildRoot(): string {
    return path.join(this.releasesDir, BUILD_DIR);
  }

  /** From now until finishBuild, every path of release `id` (dir, app cwd, meta dir, log) is under `.build`. */
  beginBuild(id: string): void {
    this.building = id;
    this.buildCreated = false;
  }

  /**
   * Renames `.build` to the release's own directory (same filesystem: one atomic step). Called on success
   * and on failure alike, so a failed release is kept for its log as before and `.build` is free again.
   */
  async finishBuild(id: string): Promise<void> {
    if (this.building !== id) return;
    this.building = undefined;
    if (this.buildCreated && fs.existsSync(this.buildRoot)) await fsp.rename(this.buildRoot, this.releaseDir(id));
    this.buildCreated = false;
  }

  releaseDir(id: string): string {
    return id === this.building ? this.buildRoot : path.join(this.releasesDir, id);
  }
  /** The directory release `id` has once built, wherever it builds now. */
  finalDir(id: string): string {
    return path.join(this.releasesDir, id);
  }
  appCwd(id: string): string {
    return path.join(this.releaseDir(id), this.appDir);
  }
  metaDir(id: string): string {
    return path.join(this.releaseDir(id), META_DIR);
  }
  buildLog(id: string): string {
    return path.join(this.metaDir(id), BUILD_LOG);
  }
  get statePath(): string {
    return path.join(this.releasesDir, STATE_FILE);
  }

  async ensureDir(): Promise<void> {
    await fsp.mkdir(this.releasesDir, { recursive: true });
  }

  /** Creates the release directory and its `building` manifest; fails if the id is taken. */
  async create(manifest: Manifest): Promise<void> {
    await this.ensureDir();
    // Throws EEXIST rather than reuse a directory (a `.build` left by a killed run is removed before: retain.ts).
    if (this.building === manifest.id && fs.existsSync(this.finalDir(manifest.id))) throw new Error(`release ${manifest.id} exists already`);
    await fsp.mkdir(this.releaseDir(manifest.id));
    if (this.building === manifest.id) this.buildCreated = true;
    await fsp.mkdir(this.metaDir(manifest.id));
    await this.writeManifest(manifest);
  }

  async writeManifest(manifest: Manifest): Promise<void> {
    await writeFileAtomic(path.join(this.metaDir(manifest.id), MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o644 });
  }

  async readManifest(id: string): Promise<Manifest | undefined> {
    const m = await this.readManifestIn(this.releaseDir(id));
    return m?.id === id ? m : undefined;
  }

  /** The manifest in a release directory, if it is readable and well-formed. */
  private async readManifestIn(dir: string): Promise<Manifest | undefined> {
    try {
      const m = JSON.parse(await fsp.readFile(path.join(dir, META_DIR, MANIFEST_FILE), 'utf8')) as Manifest;
      if (m && typeof m.id === 'string' && typeof m.sha === 'string' && ['building', 'ready', 'failed'].includes(m.status)) return m;
      return undefined;
    } catch {
      return undefined;
    }
  }

  /** All release directories, newest first, with their effective status. */
  async list(): Promise<ReleaseRecord[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.releasesDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const records: ReleaseRecord[] = [];
    for (const id of names) {
      if (!isReleaseId(id)) continue;
      const st = await fsp.lstat(this.releaseDir(id)).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      const manifest = await this.readManifest(id);
      let status: RetentionStatus = manifest?.status ?? 'incomplete';
      if (status === 'building' && manifest && !builderAlive(manifest.builder)) status = 'incomplete';
      records.push({ id, dir: this.releaseDir(id), cwd: this.appCwd(id), status, manifest });
    }
    // The release being built (or left by a killed build) lives in `.build` until it is renamed: list it
    // under its id, so `list` and `status` show it and the clean-up of interrupted runs finds it.
    const built = await this.readManifestIn(this.buildRoot);
    if (built && isReleaseId(built.id) && !records.some((r) => r.id === built.id)) {
      const status: RetentionStatus = built.status === 'building' && !builderAlive(built.builder) ? 'incomplete' : built.status;
      records.push({ id: built.id, dir: this.buildRoot, cwd: path.join(this.buildRoot, this.appDir), status, manifest: built });
    }
    return newestFirst(records);
  }

  /** The releases dirs this app was moved from (newest last), as recorded when its router was replaced. */
  async formerDirs(): Promise<string[]> {
    try {
      const f = JSON.parse(await fsp.readFile(path.join(this.releasesDir, FORMER_DIRS_FILE), 'utf8')) as { dirs?: unknown };
      return Array.isArray(f.dirs) ? f.dirs.filter((d): d is string => typeof d === 'string' && path.isAbsolute(d)) : [];
    } catch {
      return [];
    }
  }

  /** Records that this app's releases lived in `dir` before (a `releasesDir` move); never this dir itself. */
  async recordFormerDir(dir: string): Promise<void> {
    if (!path.isAbsolute(dir) || path.resolve(dir) === path.resolve(this.releasesDir)) return;
    const dirs = [...(await this.formerDirs()).filter((d) => path.resolve(d) !== path.resolve(dir)), path.resolve(dir)];
    await this.ensureDir();
    await writeFileAtomic(path.join(this.releasesDir, FORMER_DIRS_FILE), JSON.stringify({ version: 1, dirs }, null, 2) + '\n', { mode: 0o644 });
  }

  /**
   * The releases still in former releases dirs (those that exist), newest first, minus ids this dir holds
   * too. Read only: they are listed, never activated, retained or pruned from here.
   */
  async listElsewhere(): Promise<ReleaseRecord[]> {
    const own = new Set((await this.list()).map((r) => r.id));
    const found: ReleaseRecord[] = [];
    for (const dir of (await this.formerDirs()).reverse()) {
      if (path.resolve(dir) === path.resolve(this.releasesDir)) continue;
      const other = new ReleaseStore(dir, this.appDir);
      for (const r of await other.list().catch(() => [] as ReleaseRecord[])) {
        if (r.dir === other.buildRoot || own.has(r.id) || found.some((f) => f.id === r.id)) continue;
        found.push({ ...r, elsewhere: dir });
      }
    }
    return newestFirst(found);
  }

  async get(id: string): Promise<ReleaseRecord | undefined> {
    return (await this.list()).find((r) => r.id === id);
  }

  /**
   * Validates a release id that came from outside (CLI, config, webhook) and returns its record.
   * Refuses anything that is not a plain id, and any release directory that is a symlink or resolves
   * outside releasesDir.
   */
  async resolveId(id: string): Promise<ReleaseRecord> {
    if (typeof id !== 'string' || !isReleaseId(id) || !parseReleaseId(id))
      throw new UsageError('RELEASE_ID_INVALID', `invalid release id ${JSON.stringify(String(id).slice(0, 80))}`, {
        phase: 'activate',
        hint: 'use an id from `pm2-release list` (e.g. 20261121T204233Z-3f2a9c1)',
      });
    const dir = this.releaseDir(id);
    const st = await fsp.lstat(dir).catch(() => undefined);
    if (!st)
      throw new UsageError('RELEASE_NOT_FOUND', `release ${id} does not exist in ${this.releasesDir}`, {
        phase: 'activate',
        hint: 'see `pm2-release list` for retained releases',
      });
    if (!st.isDirectory()) throw new UsageError('RELEASE_ID_INVALID', `release ${id} is not a directory (symlinks are refused)`, { phase: 'activate' });
    const real = await fsp.realpath(dir);
    const root = await fsp.realpath(this.releasesDir);
    if (path.dirname(real) !== root) throw new UsageError('RELEASE_ID_INVALID', `release ${id} resolves outside ${this.releasesDir}`, { phase: 'activate' });
    const record = await this.get(id);
    if (!record) throw new UsageError('RELEASE_NOT_FOUND', `release ${id} not found`, { phase: 'activate' });
    return record;
  }

  async remove(id: string, afterRename?: () => void): Promise<void> {
    if (!isReleaseId(id)) throw new Error(`refusing to remove ${id}`);
    // Rename first so a half-deleted release is never mistaken for a release (the name no longer matches).
    const doomed = path.join(this.releasesDir, `.removing-${id}-${process.pid}`);
    await fsp.rename(this.releaseDir(id), doomed);
    afterRename?.();
    // Retries: an orphaned npm from a killed run may still be writing into it.
    await fsp.rm(doomed, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  }

  /** Leftovers of interrupted removals. */
  async sweepRemovals(): Promise<string[]> {
    const names = await fsp.readdir(this.releasesDir).catch(() => [] as string[]);
    const swept: string[] = [];
    for (const n of names) {
      if (n.startsWith('.removing-')) {
        await fsp.rm(path.join(this.releasesDir, n), { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
        swept.push(n);
      }
    }
    return swept;
  }

  async readState(): Promise<ActiveState | undefined> {
    try {
      const s = JSON.parse(await fsp.readFile(this.statePath, 'utf8')) as ActiveState;
      if (s && typeof s.active === 'string' && isReleaseId(s.active) && Array.isArray(s.activations)) return s;
      return undefined;
    } catch {
      return undefined;
    }
  }

  /** Records `id` as active. Written after PM2 serves it and `pm2 save` succeeded. */
  async writeActive(id: string, sha: string, app: AppDefinition, at: Date, router?: AppDefinition, standby?: StandbyRecord): Promise<ActiveState> {
    const prev = await this.readState();
    const activations = [...(prev?.activations ?? []), id].slice(-ACTIVATIONS_KEPT);
    const state: ActiveState = {
      version: 1,
      active: id,
      sha,
      activatedAt: at.toISOString(),
      activations,
      app,
      ...(router ? { router } : {}),
      ...standbyFields(standby),
    };
    await this.writeState(state);
    await this.pointCurrent(id);
    return state;
  }

  /** Records what became of the previous release after the state was written (a soak's end). */
  async writeStandby(standby: StandbyRecord): Promise<void> {
    const state = await this.readState();
    if (!state) return;
    delete state.standby;
    delete state.standbyOff;
    await this.writeState({ ...state, ...standbyFields(standby) });
  }

  private async writeState(state: ActiveState): Promise<void> {
    await writeFileAtomic(this.statePath, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  }

  /** `current -> <id>`, replaced with a rename so it is never missing or half-written. */
  private async pointCurrent(id: string): Promise<void> {
    const link = path.join(this.releasesDir, CURRENT_LINK);
    const tmp = `${link}.tmp-${process.pid}`;
    await fsp.rm(tmp, { force: true });
    await fsp.symlink(id, tmp);
    await fsp.rename(tmp, link);
  }
}

export function builderAlive(builder: { pid: number; host: string } | undefined): boolean {
  if (!builder) return false;
  if (builder.host !== os.hostname()) return true; // cannot tell: assume alive
  return pidAlive(builder.pid);
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Disk use of a tree in bytes (allocated blocks, hard links counted once). */
export async function diskUsage(dir: string): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = path.join(d, e.name);
      const st = await fsp.lstat(p).catch(() => undefined);
      if (!st) continue;
      const key = `${st.dev}:${st.ino}`;
      if (st.nlink > 1) {
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += st.blocks * 512;
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return total;
}

export function existsSync(p: string): boolean {
  return fs.existsSync(p);
}

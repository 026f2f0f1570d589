/**
 * Shared node_modules on filesystems without reflinks (ext4): releases with the same dependency key hold
 * hard links to one copy of each file. A hard link shares every later write, so independence is enforced,
 * not assumed:
 *
 *  - shared files are made read-only (a-w) before they are shared; that stops a normal user's build;
 *  - root ignores modes, so the check is what guarantees it: the size, mtime and ctime of every shared inode
 *    are recorded in `<releasesDir>/.deps/<key>.json` after pm2-release's own last change to them (the chmod,
 *    each link and each unlink change ctime) and compared after every build of a release that shares;
 *  - a file changed after its release's fresh install (written by that release's build) is never shared;
 *  - on a mismatch the building release installs fresh, every other release sharing a changed file gets a
 *    private copy of it from that fresh install (same dependency key: the same bytes npm wrote for them), and
 *    `<releasesDir>/.deps/no-link.json` turns sharing off for this app: later deploys install.
 *
 * Directories are never shared (each release has its own), so a file added in one release's node_modules
 * is not in another's, and deleting a release unlinks only its own names.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { CommandFailure, run } from '../exec.js';
import type { Logger } from '../log.js';

export const DEPS_DIR = '.deps';
export const NO_LINK_FILE = 'no-link.json';

export interface SharedFile {
  /** Relative to node_modules. */
  path: string;
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

export interface SharedSet {
  version: 1;
  key: string;
  /** Release ids whose node_modules hold links to these files. */
  members: string[];
  files: SharedFile[];
  /** Files found changed before a removal had to refresh the record: reported by the next check. */
  tainted?: string[];
}

export interface Observed {
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

/**
 * The shared files whose inode no longer matches its record: any write through a link (size or mtime), and
 * anything else done to the inode (chmod, utimes to hide a write, a link or unlink) moves ctime. Pure.
 * A file no member holds any more (`undefined`: every name was replaced or removed) is shared by nobody and
 * is not a change.
 */
export function changedShared(recorded: readonly SharedFile[], observed: ReadonlyMap<string, Observed | undefined>): string[] {
  const out: string[] = [];
  for (const f of recorded) {
    const o = observed.get(f.path);
    if (!o) continue;
    if (o.size !== f.size || o.mtimeNs !== f.mtimeNs || o.ctimeNs !== f.ctimeNs) out.push(f.path);
  }
  return out;
}

/** Pure: a file whose ctime is after the fresh install ended was written by the build: it stays private. */
export function shareable(ctimeMs: number, installedAt: number): boolean {
  return ctimeMs <= installedAt;
}

export class SharedDeps {
  constructor(
    readonly releasesDir: string,
    /** The node_modules of release `id`. */
    readonly nodeModules: (id: string) => string,
  ) {}

  get dir(): string {
    return path.join(this.releasesDir, DEPS_DIR);
  }
  recordPath(key: string): string {
    return path.join(this.dir, `${key}.json`);
  }

  async read(key: string): Promise<SharedSet | undefined> {
    if (!/^[0-9a-f]{64}$/.test(key)) return undefined;
    try {
      const s = JSON.parse(await fsp.readFile(this.recordPath(key), 'utf8')) as SharedSet;
      if (s?.version !== 1 || s.key !== key || !Array.isArray(s.members) || !Array.isArray(s.files)) return undefined;
      return s;
    } catch {
      return undefined;
    }
  }

  async write(set: SharedSet): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    if (set.members.length === 0) {
      await fsp.rm(this.recordPath(set.key), { force: true });
      return;
    }
    await writeFileAtomic(this.recordPath(set.key), JSON.stringify(set) + '\n', { mode: 0o644 });
  }

  async all(): Promise<SharedSet[]> {
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    const out: SharedSet[] = [];
    for (const n of names) {
      const m = /^([0-9a-f]{64})\.json$/.exec(n);
      const s = m ? await this.read(m[1]) : undefined;
      if (s) out.push(s);
    }
    return out;
  }

  /** Why sharing is off for this app, or undefined when it is on. */
  async disabled(): Promise<string | undefined> {
    try {
      const r = JSON.parse(await fsp.readFile(path.join(this.dir, NO_LINK_FILE), 'utf8')) as { reason?: unknown };
      return typeof r.reason === 'string' ? r.reason : 'sharing was turned off';
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : 'the no-link flag is unreadable';
    }
  }

  async disable(reason: string, at: Date): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    await writeFileAtomic(path.join(this.dir, NO_LINK_FILE), JSON.stringify({ reason, at: at.toISOString() }) + '\n', { mode: 0o644 });
  }

  /** The current stats of each recorded inode, read through the first member that still holds it. */
  async observe(set: SharedSet): Promise<Map<string, Observed | undefined>> {
    const out = new Map<string, Observed | undefined>();
    await eachLimited(set.files, async (f) => {
      for (const m of set.members) {
        const st = await fsp.lstat(path.join(this.nodeModules(m), f.path), { bigint: true }).catch(() => undefined);
        if (st && String(st.ino) === f.ino) {
          out.set(f.path, observed(st));
          return;
        }
      }
      out.set(f.path, undefined);
    });
    return out;
  }

  /** The shared files changed since the record (plus those a removal found changed). */
  async check(set: SharedSet): Promise<string[]> {
    const changed = changedShared(set.files, await this.observe(set));
    return [...new Set([...(set.tainted ?? []), ...changed])];
  }

  /** Re-reads every shared inode's stats after pm2-release itself linked or unlinked (both move ctime). */
  async restat(set: SharedSet): Promise<SharedSet> {
    const obs = await this.observe(set);
    const files: SharedFile[] = [];
    for (const f of set.files) {
      const o = obs.get(f.path);
      if (o) files.push({ path: f.path, ...o });
    }
    return { ...set, files };
  }

  /**
   * node_modules for a new release `id` as hard links to `donor`'s (the set's files, made read-only first),
   * with every file that is not in the shared set copied instead. Returns the updated set, already written.
   * `installedAt` is the donor's install end (first share only).
   */
  async link(key: string, donor: string, id: string, existing: SharedSet | undefined, installedAt: number | undefined, logger: Logger): Promise<SharedSet> {
    const src = this.nodeModules(donor);
    const dest = this.nodeModules(id);
    let sharedPaths: Set<string>;
    if (existing) sharedPaths = new Set(existing.files.map((f) => f.path));
    else {
      if (installedAt === undefined) throw new Error(`${donor} has no install time: its files cannot be told from build output`);
      sharedPaths = new Set();
      for (const { rel, st } of await regularFiles(src)) {
        if (!shareable(st.ctimeMs, installedAt)) continue;
        // Read-only before the record is taken: chmod moves ctime.
        if (st.mode & 0o222) await fsp.chmod(path.join(src, rel), st.mode & 0o7555);
        sharedPaths.add(rel);
      }
    }
    await linkTree(src, dest, logger);
    // What is not in the set (written by the donor's build, or added since) becomes a private copy.
    for (const { rel, st } of await regularFiles(dest)) {
      if (sharedPaths.has(rel)) continue;
      await privateCopy(path.join(dest, rel), path.join(src, rel), st.mode | 0o200);
    }
    const members = [...new Set([...(existing?.members ?? [donor]), id])];
    const files: SharedFile[] = [];
    await eachLimited([...sharedPaths], async (rel) => {
      const p = path.join(dest, rel);
      let st = await fsp.lstat(p, { bigint: true }).catch(() => undefined);
      if (!st?.isFile()) return;
      if (Number(st.mode) & 0o222) {
        // A donor file replaced since it was shared (a rename keeps the path, not the inode): read-only too.
        await fsp.chmod(p, Number(st.mode) & 0o7555);
        st = await fsp.lstat(p, { bigint: true });
      }
      files.push({ path: rel, ...observed(st) });
    });
    files.sort((a, b) => (a.path < b.path ? -1 : 1));
    const set: SharedSet = { version: 1, key, members, files, ...(existing?.tainted?.length ? { tainted: existing.tainted } : {}) };
    await this.write(set);
    return set;
  }

  /**
   * After a shared file changed: every member except `fresh` (a release just installed from scratch with the
   * same key) gets a private copy of each changed file that it still shares. Returns what could not be
   * repaired (a file the fresh install does not have).
   */
  async repair(set: SharedSet, changed: readonly string[], fresh: string): Promise<{ repaired: string[]; missing: string[] }> {
    const recorded = new Map(set.files.map((f) => [f.path, f]));
    const repaired: string[] = [];
    const missing: string[] = [];
    for (const m of set.members.filter((x) => x !== fresh)) {
      for (const rel of changed) {
        const target = path.join(this.nodeModules(m), rel);
        const st = await fsp.lstat(target, { bigint: true }).catch(() => undefined);
        if (!st || String(st.ino) !== recorded.get(rel)?.ino) continue; // this member no longer shares it
        const source = path.join(this.nodeModules(fresh), rel);
        if (!fs.existsSync(source)) {
          missing.push(`${m}/${rel}`);
          continue;
        }
        await privateCopy(target, source, Number(st.mode) & 0o7777);
        repaired.push(`${m}/${rel}`);
      }
    }
    const members = set.members.filter((x) => x !== fresh);
    const left = await this.restat({ ...set, members, files: set.files.filter((f) => !changed.includes(f.path)), tainted: undefined });
    await this.write(left);
    return { repaired, missing };
  }

  /**
   * Runs `remove` (which deletes release `id`, or its files) and keeps every set it belonged to true: changes
   * found before are kept as `tainted` for the next check, and the record is re-read after (unlink moves ctime).
   */
  async removing<T>(id: string, remove: () => Promise<T>): Promise<T> {
    const sets = (await this.all()).filter((s) => s.members.includes(id));
    const tainted = new Map<string, string[]>();
    for (const s of sets) tainted.set(s.key, await this.check(s));
    try {
      return await remove();
    } finally {
      for (const s of sets) {
        const members = s.members.filter((m) => m !== id);
        const t = tainted.get(s.key) ?? [];
        await this.write(await this.restat({ ...s, members, ...(t.length ? { tainted: t } : { tainted: undefined }) }));
      }
    }
  }

  /** Forgets a member without touching its files (its node_modules was replaced by a fresh install). */
  async leave(key: string, id: string): Promise<void> {
    const s = await this.read(key);
    if (s?.members.includes(id)) await this.write(await this.restat({ ...s, members: s.members.filter((m) => m !== id) }));
  }
}

function observed(st: fs.BigIntStats): Observed {
  return { ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
}

/** Replaces `target` with a private copy of `source` through a rename: the old inode (shared) is left as it was. */
async function privateCopy(target: string, source: string, mode: number): Promise<void> {
  const tmp = `${target}.pm2r-${process.pid}`;
  await fsp.rm(tmp, { force: true });
  await fsp.copyFile(source, tmp);
  await fsp.chmod(tmp, mode);
  await fsp.rename(tmp, target);
}

/** Every regular file under dir (relative paths, symlinks not followed), with its stats. */
export async function regularFiles(dir: string): Promise<{ rel: string; st: fs.Stats }[]> {
  const out: { rel: string; st: fs.Stats }[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fsp.readdir(path.join(dir, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const r = rel ? path.join(rel, e.name) : e.name;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) out.push({ rel: r, st: await fsp.lstat(path.join(dir, r)) });
    }
  };
  await walk('');
  return out;
}

/**
 * A tree of new directories holding hard links to `src`'s files and symlinks: GNU `cp -al` (one process in
 * C), else a walk from Node.
 */
export async function linkTree(src: string, dest: string, logger: Logger): Promise<void> {
  try {
    await run(['cp', '-al', '--', src, dest], { cwd: path.dirname(dest), logger });
    return;
  } catch (err) {
    if (!(err instanceof CommandFailure)) throw err;
    await fsp.rm(dest, { recursive: true, force: true });
    logger.debug(`cp -al failed (${err.reason}); linking from Node`);
  }
  const walk = async (from: string, to: string): Promise<void> => {
    await fsp.mkdir(to, { mode: (await fsp.stat(from)).mode & 0o7777 });
    for (const e of await fsp.readdir(from, { withFileTypes: true })) {
      const s = path.join(from, e.name);
      const d = path.join(to, e.name);
      if (e.isDirectory()) await walk(s, d);
      else if (e.isSymbolicLink()) await fsp.symlink(await fsp.readlink(s), d);
      else if (e.isFile()) await fsp.link(s, d);
    }
  };
  await walk(src, dest);
}

/** Bounded parallelism: enough to hide stat latency, not enough to exhaust file descriptors. */
async function eachLimited<T>(items: readonly T[], fn: (item: T) => Promise<void>, limit = 32): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < items.length) await fn(items[i++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * The framework's build cache carried between builds, outside every release. Next.js keys its cache
 * (`.next/cache`: webpack packs, SWC, fetch and image caches) on absolute paths, so it only helps a build that
 * runs where the previous one ran: every release builds in `<releasesDir>/.build` (release/store.ts) and is
 * renamed to its id afterwards. Around each build the cache is moved (rename, never a copy) in and back out:
 *
 *   <releasesDir>/.cache/<framework>-<version>-<hash>/key.json    what it was built with
 *   <releasesDir>/.cache/<framework>-<version>-<hash>/<n>/        one per configured path (build.cachePaths)
 *
 * Guarantees: a release never holds the cache (it leaves before prune runs, and prune removes the same paths
 * anyway); the cache is dropped when the framework's installed version, Node or the platform changes (another
 * entry name) and when it grows over build.cacheMaxBytes; a build killed with the cache inside loses it (the
 * leftover `.build` is removed whole) and the next build starts cold.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { isInside } from '../config.js';
import { diskUsage } from './store.js';

export const CACHE_DIR = '.cache';

export interface CacheKey {
  /** The framework's package name (build.cacheFramework). */
  framework: string;
  /** Its installed version, from node_modules/<framework>/package.json; 'none' when it is not installed. */
  version: string;
  node: string;
  platform: string;
  /** The configured cache paths, relative to the app dir. */
  paths: readonly string[];
}

/** Pure: the entry's directory name, readable and unique per key. */
export function entryName(key: CacheKey): string {
  const hash = crypto
    .createHash('sha256')
    .update(JSON.stringify([key.framework, key.version, key.node, key.platform, key.paths]))
    .digest('hex')
    .slice(0, 12);
  const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60);
  return `${safe(key.framework)}-${safe(key.version)}-${hash}`;
}

/** The framework's installed version in an app dir, or 'none'. */
export async function frameworkVersion(appCwd: string, framework: string): Promise<string> {
  try {
    const pkg = JSON.parse(await fsp.readFile(path.join(appCwd, 'node_modules', framework, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' && pkg.version.length <= 64 ? pkg.version : 'none';
  } catch {
    return 'none';
  }
}

export interface Restored {
  entry: string;
  /** True when a cache from an earlier build was moved into the app dir. */
  warm: boolean;
  /** Entries of other keys removed (framework upgraded, Node changed…). */
  dropped: string[];
}

export interface Saved {
  entry: string;
  bytes: number;
  /** Why nothing was kept, when nothing was. */
  dropped?: string;
}

export class BuildCache {
  constructor(readonly releasesDir: string) {}

  get dir(): string {
    return path.join(this.releasesDir, CACHE_DIR);
  }

  /**
   * Moves the entry for `key` into the app dir (each path that the archive did not bring itself), and drops
   * every entry of another key. Returns whether a warm cache was found.
   */
  async restore(appCwd: string, key: CacheKey): Promise<Restored> {
    const entry = entryName(key);
    const dropped: string[] = [];
    for (const name of await fsp.readdir(this.dir).catch(() => [] as string[])) {
      if (name === entry) continue;
      await fsp.rm(path.join(this.dir, name), { recursive: true, force: true });
      dropped.push(name);
    }
    const at = path.join(this.dir, entry);
    if (!(await this.matches(at, key))) {
      await fsp.rm(at, { recursive: true, force: true });
      return { entry, warm: false, dropped };
    }
    let warm = false;
    for (const [i, rel] of key.paths.entries()) {
      const target = inApp(appCwd, rel);
      const src = path.join(at, String(i));
      if (!target || !fs.existsSync(src) || fs.existsSync(target)) continue;
      await fsp.mkdir(path.dirname(target), { recursive: true });
      await fsp.rename(src, target);
      warm = true;
    }
    return { entry, warm, dropped };
  }

  /**
   * Moves the cache paths out of the app dir into the entry for `key` (success or failure of the build alike),
   * replacing what was there. Over `maxBytes` together: nothing is kept (the paths are removed from the app dir
   * too, as prune would).
   */
  async save(appCwd: string, key: CacheKey, maxBytes: number): Promise<Saved> {
    const entry = entryName(key);
    const at = path.join(this.dir, entry);
    const present = key.paths.map((rel, i) => ({ i, target: inApp(appCwd, rel) })).filter((p) => p.target && fs.existsSync(p.target)) as {
      i: number;
      target: string;
    }[];
    let bytes = 0;
    for (const p of present) bytes += await diskUsage(p.target);
    await fsp.rm(at, { recursive: true, force: true });
    if (present.length === 0) return { entry, bytes: 0, dropped: 'the build left no cache' };
    if (bytes > maxBytes) {
      for (const p of present) await fsp.rm(p.target, { recursive: true, force: true });
      return { entry, bytes, dropped: `${bytes} bytes is over build.cacheMaxBytes (${maxBytes})` };
    }
    await fsp.mkdir(at, { recursive: true, mode: 0o700 });
    for (const p of present) await fsp.rename(p.target, path.join(at, String(p.i)));
    // The key is written last: an entry without it (a run killed while saving) is never restored.
    await writeFileAtomic(path.join(at, 'key.json'), JSON.stringify(key) + '\n', { mode: 0o600 });
    return { entry, bytes };
  }

  /** What is cached now: entry names and their size (status, doctor). */
  async describe(): Promise<{ entry: string; bytes: number }[]> {
    const out: { entry: string; bytes: number }[] = [];
    for (const name of await fsp.readdir(this.dir).catch(() => [] as string[])) out.push({ entry: name, bytes: await diskUsage(path.join(this.dir, name)) });
    return out;
  }

  private async matches(at: string, key: CacheKey): Promise<boolean> {
    try {
      const k = JSON.parse(await fsp.readFile(path.join(at, 'key.json'), 'utf8')) as CacheKey;
      return JSON.stringify(k) === JSON.stringify(key);
    } catch {
      return false;
    }
  }
}

function inApp(appCwd: string, rel: string): string | undefined {
  const p = path.resolve(appCwd, rel);
  return isInside(p, appCwd) && p !== appCwd ? p : undefined;
}

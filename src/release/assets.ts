/**
 * No version skew: a page rendered by an older build asks for its own content-hashed chunks
 * (`/_next/static/chunks/4f2a….js`), which the newer build does not have. Before a release starts, the
 * hashed assets that the other retained releases built are hard-linked into its asset dirs (only files
 * it lacks; same name means same content for hashed files), so the live release answers them all.
 *
 * - Only the configured dirs (`app.staticAssets`, Next.js's `<distDir>/static`) are touched: a non-hashed
 *   path is never served from another build.
 * - Each release's own files are listed once (`.pm2-release/assets.json`, before anything is linked into
 *   it), and only own files are linked: the set stays bounded by the retained releases, not by history.
 * - Hard links cost no space while both releases are kept; deleting a release leaves the other's copy.
 * - Next.js lists `<distDir>/static` when it starts, so the links are made before the process starts.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { isInside } from '../config.js';
import { META_DIR, type ReleaseRecord } from './store.js';

const ASSETS_FILE = 'assets.json';
/** A Next.js build has hundreds of chunks; far more means the dir is not what we think. */
const MAX_FILES = 20_000;

interface OwnAssets {
  version: 1;
  /** Paths relative to the release's app dir. */
  files: string[];
}

async function walk(root: string, rel: string, out: string[]): Promise<void> {
  let entries: fs.Dirent[];
  try {
    entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    if (out.length >= MAX_FILES) return;
    const p = path.join(rel, e.name);
    if (e.isDirectory()) await walk(root, p, out);
    else if (e.isFile()) out.push(p);
  }
}

/** The asset files a release's own build made (listed on first use, before anything is linked into it). */
export async function ownAssets(release: ReleaseRecord, dirs: string[]): Promise<string[]> {
  const file = path.join(release.dir, META_DIR, ASSETS_FILE);
  try {
    const o = JSON.parse(await fsp.readFile(file, 'utf8')) as OwnAssets;
    if (o.version === 1 && Array.isArray(o.files)) return o.files.filter((f) => typeof f === 'string' && safeRelative(f));
  } catch {
    /* not listed yet */
  }
  const files: string[] = [];
  for (const d of dirs) if (safeRelative(d)) await walk(release.cwd, d, files);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, JSON.stringify({ version: 1, files } satisfies OwnAssets) + '\n', { mode: 0o644 });
  return files;
}

function safeRelative(p: string): boolean {
  return p !== '' && !path.isAbsolute(p) && !p.split(/[\\/]/).includes('..');
}

export interface LinkedAssets {
  linked: number;
  from: string[];
}

/** Links into `target` the own assets of `others` that it lacks. Never overwrites a file. */
export async function linkRetainedAssets(target: ReleaseRecord, others: ReleaseRecord[], dirs: string[]): Promise<LinkedAssets> {
  const present = dirs.filter((d) => safeRelative(d) && fs.existsSync(path.join(target.cwd, d)));
  if (present.length === 0) return { linked: 0, from: [] };
  await ownAssets(target, present);
  let linked = 0;
  const from = new Set<string>();
  for (const other of others) {
    if (other.id === target.id) continue;
    for (const rel of await ownAssets(other, present)) {
      if (!present.some((d) => rel === d || rel.startsWith(d + path.sep))) continue;
      const src = path.join(other.cwd, rel);
      const dst = path.join(target.cwd, rel);
      if (!isInside(dst, target.cwd) || fs.existsSync(dst)) continue;
      try {
        const st = await fsp.lstat(src);
        if (!st.isFile()) continue;
        await fsp.mkdir(path.dirname(dst), { recursive: true });
        await fsp.link(src, dst).catch(async (err: NodeJS.ErrnoException) => {
          // Another filesystem, or links not allowed: a copy does the same job.
          if (err.code === 'EXDEV' || err.code === 'EPERM' || err.code === 'EMLINK') await fsp.copyFile(src, dst, fs.constants.COPYFILE_EXCL);
          else throw err;
        });
        linked++;
        from.add(other.id);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST' || (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
    }
  }
  return { linked, from: [...from] };
}

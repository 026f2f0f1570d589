/**
 * Dependency reuse: when a new release's package-lock.json, Node and npm versions and platform hash the
 * same as a retained ready release's, its node_modules comes from that release instead of `npm ci`.
 *
 * Releases must stay independent (a change under one release's node_modules must never alter another's).
 * Copy-on-write reflinks (XFS, btrfs) give that for free; a plain copy too, at full disk cost. On ext4 the
 * default is hard links to one read-only copy, whose independence release/shared-deps.ts enforces.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CommandFailure, run } from '../exec.js';
import type { Logger } from '../log.js';

export type DependencyMethod = 'install' | 'reflink' | 'copy' | 'link';

/**
 * How this build gets node_modules. Pure. `reuse` is false when reuse is off or cannot apply (no lockfile,
 * the app has install lifecycle scripts that must run); `sharingOff` once a shared file was found changed.
 */
export function dependencyMethod(o: {
  mode: 'auto' | 'link' | 'reflink' | 'copy' | 'install';
  reuse: boolean;
  reflink: boolean;
  sharingOff: boolean;
}): DependencyMethod {
  if (!o.reuse || o.mode === 'install') return 'install';
  if (o.mode === 'copy') return 'copy';
  if (o.mode === 'reflink' || (o.mode === 'auto' && o.reflink)) return o.reflink ? 'reflink' : 'copy';
  return o.sharingOff ? 'install' : 'link';
}

export function dependencyKey(lockfile: Buffer, node: string, npm: string | undefined, platform = `${process.platform}-${process.arch}`): string {
  return crypto
    .createHash('sha256')
    .update(lockfile)
    .update('\0')
    .update(node)
    .update('\0')
    .update(npm ?? '')
    .update('\0')
    .update(platform)
    .digest('hex');
}

/** True when `dir`'s filesystem can clone a file with a reflink. */
export async function supportsReflink(dir: string): Promise<boolean> {
  const a = path.join(dir, `.reflink-probe-${process.pid}`);
  const b = `${a}.clone`;
  try {
    await fsp.writeFile(a, 'probe');
    await fsp.copyFile(a, b, fs.constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    await fsp.rm(a, { force: true });
    await fsp.rm(b, { force: true });
  }
}

/**
 * Clones a tree with GNU `cp -a --reflink=auto` when it is there (one process in C: several times faster
 * than walking the tree from Node, and it reflinks by itself where it can), else with cloneTreeNode.
 */
export async function cloneDirectory(src: string, dest: string, reflink: boolean, logger: Logger): Promise<void> {
  try {
    await run(['cp', '-a', '--reflink=auto', '--', src, dest], { cwd: path.dirname(dest), logger });
    return;
  } catch (err) {
    if (!(err instanceof CommandFailure)) throw err;
    await fsp.rm(dest, { recursive: true, force: true });
    logger.debug(`cp -a failed (${err.reason}); cloning from Node`);
  }
  await cloneTree(src, dest, reflink);
}

/**
 * Clones a tree: directories created, files reflinked (or copied, keeping their mode), symlinks recreated
 * with the same (relative) target, so `file:` dependencies point into the new release.
 */
export async function cloneTree(src: string, dest: string, reflink: boolean): Promise<void> {
  const mode = reflink ? fs.constants.COPYFILE_FICLONE_FORCE : 0;
  const walk = async (from: string, to: string): Promise<void> => {
    await fsp.mkdir(to, { recursive: true, mode: (await fsp.stat(from)).mode & 0o7777 });
    const entries = await fsp.readdir(from, { withFileTypes: true });
    // Bounded parallelism: enough to hide latency, not enough to exhaust file descriptors.
    const queue = [...entries];
    const worker = async () => {
      for (let e = queue.shift(); e; e = queue.shift()) {
        const s = path.join(from, e.name);
        const d = path.join(to, e.name);
        if (e.isDirectory()) await walk(s, d);
        else if (e.isSymbolicLink()) await fsp.symlink(await fsp.readlink(s), d);
        else if (e.isFile()) await fsp.copyFile(s, d, mode);
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, entries.length) }, worker));
  };
  await walk(src, dest);
}

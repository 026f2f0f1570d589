/**
 * One change at a time: deploy, build, activate, rollback and prune hold an exclusive lock on the releases
 * dir. proper-lockfile does the atomic part (mkdir + mtime refresh); beside it we record who holds the lock,
 * so a second caller is told "locked by pid 4121 (deploy of 3f2a9c1) since 12:04:10", and a lock whose
 * holder died (SIGKILL, OOM) on this host is broken at once instead of after the staleness timeout.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { LockError } from './errors.js';
import type { Logger } from './log.js';
import { pidAlive } from './release/store.js';

export const LOCK_DIR = '.lock';
export const LOCK_OWNER = '.lock.json';

export interface LockOwner {
  pid: number;
  host: string;
  command: string;
  release?: string;
  since: string;
}

export interface LockOptions {
  releasesDir: string;
  command: string;
  release?: string;
  logger: Logger;
  /** Wait up to this long for the lock (0: fail at once). */
  waitMs?: number;
  signal?: AbortSignal;
}

export interface HeldLock {
  owner: LockOwner;
  /** Records which release the holder works on (shown to other callers). */
  setRelease(id: string): Promise<void>;
  release(): Promise<void>;
}

const STALE_MS = 30_000;
const UPDATE_MS = 10_000;

export async function acquireLock(opts: LockOptions): Promise<HeldLock> {
  await fsp.mkdir(opts.releasesDir, { recursive: true });
  const lockPath = path.join(opts.releasesDir, LOCK_DIR);
  const ownerPath = path.join(opts.releasesDir, LOCK_OWNER);
  const started = Date.now();
  const waitMs = opts.waitMs ?? 0;
  let compromised: Error | undefined;

  while (true) {
    try {
      const unlock = await lockfile.lock(opts.releasesDir, {
        lockfilePath: lockPath,
        realpath: false,
        stale: STALE_MS,
        update: UPDATE_MS,
        retries: 0,
        onCompromised: (err) => {
          // Only if someone removed our lock by hand or the clock jumped: say so, don't crash mid-switch.
          compromised = err;
          opts.logger.error({ err: err.message }, 'the releases lock was taken from us');
        },
      });
      const owner: LockOwner = {
        pid: process.pid,
        host: os.hostname(),
        command: opts.command,
        release: opts.release,
        since: new Date().toISOString(),
      };
      // A lock without its owner file reads as "holder unknown" to everyone until it goes stale: if the owner
      // cannot be written (a full disk), give the lock back before failing.
      await writeFileAtomic(ownerPath, JSON.stringify(owner) + '\n').catch(async (err: unknown) => {
        await unlock().catch(() => undefined);
        throw err;
      });
      return {
        owner,
        async setRelease(id: string) {
          owner.release = id;
          await writeFileAtomic(ownerPath, JSON.stringify(owner) + '\n').catch(() => undefined);
        },
        async release() {
          await fsp.rm(ownerPath, { force: true });
          if (!compromised) await unlock().catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
    }

    // The holder writes its owner file right after taking the lock: give it a moment before saying "unknown".
    let owner = await readLockOwner(opts.releasesDir);
    for (let i = 0; !owner && i < 20; i++) {
      await sleep(50);
      owner = await readLockOwner(opts.releasesDir);
    }
    if (owner && owner.host === os.hostname() && !pidAlive(owner.pid)) {
      opts.logger.warn({ pid: owner.pid, command: owner.command }, `breaking the lock of pid ${owner.pid} (${owner.command}), which is no longer running`);
      await fsp.rm(ownerPath, { force: true });
      await fsp.rm(lockPath, { recursive: true, force: true });
      continue;
    }
    if (Date.now() - started < waitMs && !opts.signal?.aborted) {
      await sleep(250);
      continue;
    }
    throw new LockError(
      describeHolder(owner),
      waitMs > 0 ? `waited ${Math.round(waitMs / 1000)} s; try again when it finishes` : 'wait for it to finish, or pass --wait[=SECONDS]',
    );
  }
}

export async function readLockOwner(releasesDir: string): Promise<LockOwner | undefined> {
  try {
    const o = JSON.parse(await fsp.readFile(path.join(releasesDir, LOCK_OWNER), 'utf8')) as LockOwner;
    return typeof o.pid === 'number' ? o : undefined;
  } catch {
    return undefined;
  }
}

export function describeHolder(owner: LockOwner | undefined): string {
  if (!owner) return 'the releases dir is locked by another pm2-release (holder unknown, just starting?)';
  const what = owner.release ? `${owner.command} of ${owner.release}` : owner.command;
  const since = owner.since.replace(/^.*T(\d\d:\d\d:\d\d).*$/, '$1');
  return `locked by pid ${owner.pid} on ${owner.host} (${what}) since ${since} UTC`;
}

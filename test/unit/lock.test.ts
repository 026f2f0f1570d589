import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { acquireLock, LOCK_DIR, LOCK_OWNER, readLockOwner } from '../../src/lock.js';
import { silentLogger } from '../../src/log.js';

describe('the releases lock', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-lock-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const take = () => acquireLock({ releasesDir: dir, command: 'deploy', logger: silentLogger() });

  it('is held by one caller at a time, who is named to the next; released, it can be taken again', async () => {
    const held = await take();
    await held.setRelease('20261204T000000Z-abc1234');
    expect(await readLockOwner(dir)).toMatchObject({ pid: process.pid, command: 'deploy', release: '20261204T000000Z-abc1234' });
    await expect(take()).rejects.toThrow(new RegExp(`locked by pid ${process.pid} on .* \\(deploy of 20261204T000000Z-abc1234\\)`));
    await held.release();
    expect(fs.existsSync(path.join(dir, LOCK_DIR))).toBe(false);
    expect(fs.existsSync(path.join(dir, LOCK_OWNER))).toBe(false);
    await (await take()).release();
  });

  it('a holder that cannot write its owner file (a full disk, here a directory in its way) gives the lock back', async () => {
    fs.mkdirSync(path.join(dir, LOCK_OWNER));
    await expect(take()).rejects.toThrow();
    // Not "holder unknown" for the next 30 s: the lock is free at once.
    expect(fs.existsSync(path.join(dir, LOCK_DIR))).toBe(false);
    fs.rmdirSync(path.join(dir, LOCK_OWNER));
    await (await take()).release();
  });
});

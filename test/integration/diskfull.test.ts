/**
 * A full disk is a clear error: the releases dir is a 20 MiB tmpfs (needs root to mount; otherwise the suite
 * is skipped and says why). A build, then an install, that runs out of space must fail with DISK_FULL in its
 * phase (exit code 4, one line naming the disk, its free space and the biggest releases), give the failed
 * release's space back at once while keeping its manifest and build log, leave the live app alone, and
 * the next deploy must succeed.
 *
 * The example app's build.mjs writes as many MiB as a committed BIG_BUILD file says; the install case
 * commits a package.json whose preinstall script writes 64 MiB (npm ci runs the root package's scripts).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

const SIZE_MB = 20;

/** Mounts a small tmpfs for the releases dir, synchronously (skipIf is decided when the file is collected). */
function mountSmallDisk(): { dir?: string; skip?: string } {
  if (process.platform !== 'linux') return { skip: 'needs Linux (tmpfs)' };
  if (process.getuid?.() !== 0) return { skip: 'needs root to mount a tmpfs' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-disk-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${SIZE_MB}m,mode=0755`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmdirSync(dir);
    return { skip: `mount -t tmpfs failed: ${(r.stderr || r.error?.message || '').trim().split('\n')[0]}` };
  }
  return { dir };
}

const disk = mountSmallDisk();
const releasesDir = disk.dir ?? '';

async function unmount(dir: string): Promise<void> {
  // The app PM2 ran from the tmpfs may take a moment to exit after `pm2 kill`.
  for (let i = 0; i < 25; i++) {
    if (spawnSync('umount', [dir]).status === 0) return fs.rmdirSync(dir);
    await sleep(200);
  }
  spawnSync('umount', ['-l', dir]);
  fs.rmdirSync(dir);
}

const freeMiB = () => {
  const st = fs.statfsSync(releasesDir);
  return (st.bavail * st.bsize) / 2 ** 20;
};

interface ErrorJson {
  ok: false;
  error: { code: string; phase: string; message: string; hint?: string; releaseId?: string; logFile?: string };
}

describe.skipIf(!disk.dir)(`a full disk during a deploy${disk.skip ? ` (skipped: ${disk.skip})` : ''}`, () => {
  let sb: Sandbox;
  let live: string;

  const deploy = () => cli(sb, ['deploy', '--json']);
  const listJson = () =>
    JSON.parse(cli(sb, ['list', '--json']).stdout) as { releases: { id: string; status: string; error: { code: string; phase: string } | null }[] };

  beforeAll(async () => {
    sb = await createSandbox();
    // The releases dir on the small disk; the preflight minimum stays, below what a build will want.
    fs.writeFileSync(sb.configPath, JSON.stringify({ ...sb.config, releasesDir, preflight: { minFreeDiskMB: 5, minFreeInodes: 100 } }, null, 2));
    const r = deploy();
    expect(r.code, r.stderr).toBe(0);
    live = JSON.parse(r.stdout).release.id;
  });

  afterAll(async () => {
    await sb?.close(); // kills the daemon, so nothing runs from the tmpfs any more
    if (disk.dir) await unmount(disk.dir);
  });

  /** What every disk-full failure must look like. */
  const expectDiskFull = async (r: { code: number | null; stdout: string; stderr: string }, phase: string) => {
    expect(r.code, r.stderr).toBe(4);
    const { error } = JSON.parse(r.stdout) as ErrorJson;
    console.log('MSG', error.message);
    expect(error.code).toBe('DISK_FULL');
    expect(error.phase).toBe(phase);
    expect(error.message).not.toContain('\n');
    expect(error.message).toMatch(
      new RegExp(`^the disk holding ${releasesDir} is full \\(${phase} failed with ENOSPC\\): .*MiB free now; biggest releases: .*${live}`),
    );
    expect(error.hint).toMatch(/prune/);
    const id = error.releaseId!;
    // Its space is given back at once: only the manifest and the build log are left.
    const dir = path.join(releasesDir, id);
    expect(fs.readdirSync(dir)).toEqual(['.pm2-release']);
    expect(fs.readdirSync(path.join(dir, '.pm2-release')).sort()).toEqual(['build.log', 'manifest.json']);
    expect(freeMiB(), 'free space after the failure').toBeGreaterThan(SIZE_MB - 8);
    // `list` still shows what happened.
    expect(listJson().releases.find((x) => x.id === id)).toMatchObject({ status: 'failed', error: { code: 'DISK_FULL', phase } });
    // The live app was not touched.
    const res = await get(`http://127.0.0.1:${sb.port}/`);
    expect(res.status).toBe(200);
    expect(res.body).toContain(live);
  };

  it('a build that fills the disk fails as DISK_FULL in build and gives its space back', async () => {
    sb.commit('big build', { BIG_BUILD: '64\n', 'version.txt': 'v2-big\n' });
    await expectDiskFull(deploy(), 'build');
  });

  it('an install that fills the disk fails as DISK_FULL in install', async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(sb.appDir, 'package.json'), 'utf8'));
    const original = JSON.stringify(pkg, null, 2) + '\n';
    pkg.scripts.preinstall = `node -e "require('fs').writeFileSync('fill.bin', Buffer.alloc(64 * 2 ** 20))"`;
    sb.commit('big install', { BIG_BUILD: null, 'package.json': JSON.stringify(pkg, null, 2) + '\n', 'version.txt': 'v3-big-install\n' });
    await expectDiskFull(deploy(), 'install');
    sb.commit('restore package.json', { 'package.json': original });
  });

  it('the next deploy works once there is space', async () => {
    sb.commit('fits', { 'version.txt': 'v4\n' });
    const r = deploy();
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { release: { id: string } };
    const res = await get(`http://127.0.0.1:${sb.port}/`);
    expect(res.status).toBe(200);
    expect(res.body).toContain('v4');
    expect(res.body).toContain(out.release.id);
  });
});

/**
 * Correctness of the performance features on a real PM2 daemon: the cluster strategy's zero-downtime switch
 * and its failure path, dependency reuse (and that reused releases stay independent), instant redeploy.
 * Timings live in bench/, not here.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, list, rollback } from '../../src/index.js';
import { commitLockfileBump, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

/** Polls the URL until stopped; counts failures (anything but a 200). */
function poller(url: string) {
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const bodies = new Set<string>();
  const loop = (async () => {
    while (!stop) {
      // 20 s, as the shared traffic loop (test/helpers/traffic.ts): a request that waits through a reload on a
      // busy CI host is slow, not dropped. A fresh clone's run counted one past 3 s as a failure.
      const r = await get(url, 20_000);
      if (r.status === 200) {
        ok++;
        bodies.add(r.body!.trim());
      } else failures.push(r.error ?? String(r.status));
      await new Promise((res) => setTimeout(res, 20));
    }
  })();
  return {
    async finish() {
      stop = true;
      await loop;
      return { ok, failures, bodies };
    },
  };
}

describe('cluster strategy: zero-downtime switch', () => {
  let sb: Sandbox;
  const url = () => `http://127.0.0.1:${sb.port}/`;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  beforeAll(async () => {
    sb = await createSandbox({ keep: 3, app: { strategy: 'cluster', script: 'server.mjs', args: [], instances: 1 } });
  });
  afterAll(async () => sb?.close());

  it('first deploy starts the app in cluster mode', async () => {
    const r = await deploy(opts());
    expect(r.release.status).toBe('ready');
    const procs = sb.jlist().filter((p) => p.name === 'frontend-dev');
    expect(procs).toHaveLength(1);
    expect(procs[0].pm2_env.exec_mode).toBe('cluster_mode');
    expect((await get(url())).body).toContain('v1');
  });

  it('switching to v2 under steady polling drops no request, then only v2 processes remain', async () => {
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const p = poller(url());
    await new Promise((r) => setTimeout(r, 200));
    const r = await deploy(opts());
    await new Promise((r) => setTimeout(r, 300));
    const { ok, failures, bodies } = await p.finish();
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(20);
    expect([...bodies].some((b) => b.includes('v1'))).toBe(true);
    expect([...bodies].some((b) => b.includes('v2'))).toBe(true);
    const procs = sb.jlist().filter((p) => p.name === 'frontend-dev');
    expect(procs).toHaveLength(1);
    expect(procs[0].pm2_env.pm_cwd).toBe(r.release.cwd);
    expect(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')).toContain(r.release.cwd);
  });

  it('a release that crashes at boot: only its new processes are deleted, the old release never stops serving', async () => {
    const before = sb
      .jlist()
      .filter((p) => p.name === 'frontend-dev')
      .map((p) => p.pid);
    sb.commit('crash', { CRASH_ON_BOOT: '1' });
    const p = poller(url());
    await expect(deploy({ ...opts(), verify: false })).rejects.toMatchObject({ code: 'HEALTH_FAILED', exitCode: 5 });
    const { failures, bodies } = await p.finish();
    expect(failures).toEqual([]);
    expect([...bodies].every((b) => b.includes('v2'))).toBe(true);
    expect(
      sb
        .jlist()
        .filter((p) => p.name === 'frontend-dev')
        .map((p) => p.pid),
    ).toEqual(before);
  });

  it('rollback in cluster mode is zero-downtime too, and pm2 resurrect brings the cluster app back', async () => {
    sb.commit('fixed', { CRASH_ON_BOOT: null });
    const p = poller(url());
    const r = await rollback(opts());
    const { failures } = await p.finish();
    expect(failures).toEqual([]);
    expect((await get(url())).body).toContain(r.release.id);
    sb.pm2('kill');
    sb.pm2('resurrect');
    for (let i = 0; i < 100 && !(await get(url())).body?.includes(r.release.id); i++) await new Promise((res) => setTimeout(res, 100));
    expect((await get(url())).body).toContain(r.release.id);
    expect(sb.jlist().find((p) => p.name === 'frontend-dev')!.pm2_env.exec_mode).toBe('cluster_mode');
  });
});

describe('dependency reuse and instant redeploy', () => {
  let sb: Sandbox;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  const manifest = (id: string) => JSON.parse(fs.readFileSync(path.join(sb.releasesDir, id, '.pm2-release/manifest.json'), 'utf8'));
  let first: string;
  let second: string;
  beforeAll(async () => {
    // The clone methods (reflink, else copy): no file is shared at all. Hard links (the ext4 default) are
    // tested in builds.test.ts, where a write through a shared file is refused or detected and repaired.
    sb = await createSandbox({ keep: 3, app: { dependencyMode: 'reflink' } });
  });
  afterAll(async () => sb?.close());

  it('a cold release installs; the next one with the same lockfile reuses node_modules (manifest records it)', async () => {
    first = (await deploy(opts())).release.id;
    expect(manifest(first).dependencies).toMatchObject({ method: 'install' });
    sb.commit('v2', { 'version.txt': 'v2\n' });
    second = (await deploy(opts())).release.id;
    const dep = manifest(second).dependencies;
    expect(['reflink', 'copy']).toContain(dep.method);
    expect(dep.from).toBe(first);
    expect(dep.key).toBe(manifest(first).dependencies.key);
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain('v2');
    expect(fs.readFileSync(path.join(sb.releasesDir, second, '.pm2-release/build.log'), 'utf8')).toContain(`reused node_modules from ${first}`);
  });

  it('reused releases stay independent: a change under one node_modules never alters the other', () => {
    const a = path.join(sb.releasesDir, first, 'frontend/node_modules');
    const b = path.join(sb.releasesDir, second, 'frontend/node_modules');
    // the file: dependency is a relative symlink that must point into its own release
    expect(fs.realpathSync(path.join(b, 'greeting'))).toBe(path.join(sb.releasesDir, second, 'frontend/lib/greeting'));
    const fileA = path.join(a, '.package-lock.json');
    const fileB = path.join(b, '.package-lock.json');
    expect(fs.statSync(fileA).ino).not.toBe(fs.statSync(fileB).ino);
    const original = fs.readFileSync(fileA, 'utf8');
    fs.appendFileSync(fileB, '\n// changed in the second release only\n');
    fs.writeFileSync(path.join(b, 'added-later.txt'), 'x');
    expect(fs.readFileSync(fileA, 'utf8')).toBe(original);
    expect(fs.existsSync(path.join(a, 'added-later.txt'))).toBe(false);
  });

  it('a changed lockfile installs again', async () => {
    commitLockfileBump(sb);
    const r = await deploy(opts());
    expect(manifest(r.release.id).dependencies.method).toBe('install');
  });

  it('instant redeploy: the active sha is a no-op; a retained sha is reactivated without a build; --rebuild builds', async () => {
    const active = (await list(opts())).active!;
    const dump = path.join(sb.pm2Home, 'dump.pm2');
    const dumpBefore = fs.statSync(dump).mtimeMs;
    const stateBefore = fs.readFileSync(path.join(sb.releasesDir, 'active.json'), 'utf8');
    const same = await deploy(opts());
    expect(same.mode).toBe('unchanged');
    expect(same.release.id).toBe(active);
    // One look at the state: no lock, no pre-flight, no PM2 write, nothing recorded but the history line.
    expect(Object.keys(same.durationsMs)).toEqual(['resolve']);
    expect(fs.statSync(dump).mtimeMs).toBe(dumpBefore);
    expect(fs.readFileSync(path.join(sb.releasesDir, 'active.json'), 'utf8')).toBe(stateBefore);
    expect(fs.existsSync(path.join(sb.releasesDir, '.lock'))).toBe(false);
    const sha2 = manifest(second).sha;
    const re = await deploy({ ...opts(), ref: sha2 });
    expect(re.mode).toBe('reactivated');
    expect(re.release.id).toBe(second);
    expect(re.durationsMs.install).toBeUndefined();
    expect(re.durationsMs.build).toBeUndefined();
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain(second);
    const fresh = await deploy({ ...opts(), ref: sha2, rebuild: true });
    expect(fresh.mode).toBe('built');
    expect(fresh.release.id).not.toBe(second);
    expect(fresh.release.sha).toBe(sha2);
  });
});

/**
 * The core release cycle on a real PM2 daemon (private PM2_HOME), real git, real npm ci, real HTTP.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activate, deploy, list, rollback, status } from '../../src/index.js';
import { cli, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

describe('core release cycle', () => {
  let sb: Sandbox;
  const ids: string[] = [];
  const url = () => `http://127.0.0.1:${sb.port}/`;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });

  beforeAll(async () => {
    sb = await createSandbox({ keep: 2 });
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('deploy → serves v1 from an immutable release dir, with RELEASE_ID in its env', async () => {
    fs.writeFileSync(path.join(sb.appDir, '.env.local'), 'API_TOKEN=not-for-logs\n', { mode: 0o640 });
    const r = await deploy(opts());
    ids.push(r.release.id);
    expect(r.ok).toBe(true);
    expect(r.release.id).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{7}$/);
    expect(r.release.cwd).toBe(path.join(sb.releasesDir, r.release.id, 'frontend'));
    expect(r.previous).toBeNull();
    const res = await get(url());
    expect(res.status).toBe(200);
    expect(res.body).toContain('v1');
    expect(res.body).toContain(r.release.id);
    // env file copied, never looser than 0600; caches pruned; runtime build kept
    const envCopy = path.join(r.release.cwd, '.env.local');
    expect(fs.readFileSync(envCopy, 'utf8')).toContain('API_TOKEN');
    expect(fs.statSync(envCopy).mode & 0o777).toBe(0o600);
    expect(fs.existsSync(path.join(r.release.cwd, '.next'))).toBe(false);
    expect(fs.existsSync(path.join(r.release.cwd, 'build/cache'))).toBe(false);
    expect(fs.existsSync(path.join(r.release.cwd, 'build/build.json'))).toBe(true);
    // PM2 runs it from the release cwd, and the dump is saved with mode 0600
    const proc = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(proc.pm2_env.pm_cwd).toBe(r.release.cwd);
    expect(proc.pm2_env.RELEASE_ID).toBe(r.release.id);
    const dump = path.join(sb.pm2Home, 'dump.pm2');
    expect(fs.statSync(dump).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(dump, 'utf8')).toContain(r.release.cwd);
  });

  it('deploy → v2 replaces v1 and reports the previous release', async () => {
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const r = await deploy(opts());
    ids.push(r.release.id);
    expect(r.previous).toBe(ids[0]);
    expect((await get(url())).body).toContain('v2');
  });

  it('a failing build leaves the live release serving and PM2 untouched', async () => {
    const before = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    sb.commit('broken build', { FAIL_BUILD: 'yes\n' });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code).toBe(4);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: false, error: { code: 'BUILD_FAILED', phase: 'build' } });
    const after = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(after.pid).toBe(before.pid);
    expect(after.pm2_env.restart_time).toBe(before.pm2_env.restart_time);
    expect((await get(url())).body).toContain('v2');
    const l = await list(opts());
    const failed = l.releases.find((x) => x.status === 'failed')!;
    expect(failed.error).toMatchObject({ code: 'BUILD_FAILED', phase: 'build' });
    expect(fs.readFileSync(failed.buildLog, 'utf8')).toContain('FAIL_BUILD is present');
    // The human form shows the cause, the log's tail and the log path
    const human = cli(sb, ['deploy']);
    expect(human.code).toBe(4);
    expect(human.stderr).toContain('build failed');
    expect(human.stderr).toContain('FAIL_BUILD is present');
    expect(human.stderr).toMatch(/log: .*build\.log/);
    sb.commit('fix build', { FAIL_BUILD: null });
  });

  it('deploy → v3 with keep=2 removes the oldest ready release (failed builds do not count)', async () => {
    sb.commit('v3', { 'version.txt': 'v3\n' });
    const r = await deploy(opts());
    ids.push(r.release.id);
    expect((await get(url())).body).toContain('v3');
    expect(r.removed.map((x) => x.id)).toContain(ids[0]);
    expect(fs.existsSync(path.join(sb.releasesDir, ids[0]))).toBe(false);
    const l = await list(opts());
    expect(l.releases.filter((x) => x.status === 'ready').map((x) => x.id)).toEqual([ids[2], ids[1]]);
    expect(l.releases.filter((x) => x.status === 'failed')).toHaveLength(1);
  });

  it('rollback → v2 is served, and PM2 cwd and the dump point at it', async () => {
    const r = await rollback(opts());
    expect(r.release.id).toBe(ids[1]);
    expect(r.previous).toBe(ids[2]);
    expect((await get(url())).body).toContain('v2');
    const proc = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(proc.pm2_env.pm_cwd).toBe(path.join(sb.releasesDir, ids[1], 'frontend'));
    expect(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')).toContain(path.join(sb.releasesDir, ids[1], 'frontend'));
    const s = await status(opts());
    expect(s.active?.id).toBe(ids[1]);
    expect(s.drift.detected).toBe(false);
    expect(s.health.ok).toBe(true);
  });

  it('activate <id> switches to a retained release by id (CLI, --json)', async () => {
    const r = cli(sb, ['activate', ids[2], '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: true, action: 'activate', release: { id: ids[2] }, previous: ids[1] });
    expect((await get(url())).body).toContain('v3');
  });

  it('list and status through the CLI', async () => {
    const l = cli(sb, ['list', '--json']);
    expect(l.code).toBe(0);
    const parsed = JSON.parse(l.stdout);
    expect(parsed.ok).toBe(true);
    expect(parsed.releases[0]).toMatchObject({ id: ids[2], active: true, status: 'ready' });
    expect(parsed.releases.map((r: { id: string }) => r.id)).toEqual([...parsed.releases.map((r: { id: string }) => r.id)].sort().reverse());
    const human = cli(sb, ['list']);
    expect(human.stdout).toMatch(/^\s+ID\s+SHA\s+STATUS\s+CREATED\s+SIZE/);
    expect(human.stdout).toMatch(new RegExp(`^\\*\\s+${ids[2]}\\s`, 'm'));
    const st = cli(sb, ['status', '--json']);
    expect(JSON.parse(st.stdout)).toMatchObject({
      ok: true,
      app: 'frontend-dev',
      active: { id: ids[2] },
      pm2: { status: 'online' },
      drift: { detected: false },
    });
  });

  it('pm2 kill + pm2 resurrect brings back the active release', async () => {
    sb.pm2('kill');
    expect((await get(url())).error).toBeDefined();
    sb.pm2('resurrect');
    await waitFor(async () => (await get(url())).body?.includes(ids[2]) ?? false);
    expect((await get(url())).body).toContain('v3');
  });

  it('pm2 start ecosystem.config.cjs with no dump brings back the active release', async () => {
    sb.pm2('kill');
    fs.rmSync(path.join(sb.pm2Home, 'dump.pm2'), { force: true });
    fs.rmSync(path.join(sb.pm2Home, 'dump.pm2.bak'), { force: true });
    sb.pm2('start', path.join(__dirname, '../../ecosystem.config.cjs'));
    await waitFor(async () => (await get(url())).body?.includes(ids[2]) ?? false);
    const proc = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(proc.pm2_env.pm_cwd).toBe(path.join(sb.releasesDir, ids[2], 'frontend'));
    const s = await status(opts());
    expect(s.drift.detected).toBe(false);
  });

  it('activate refuses ids that are malformed or escape the releases dir, changing nothing', async () => {
    const before = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    for (const bad of ['../ws', '/etc', '20261121T204233Z-abc123g', `${ids[2]}/..`, 'nope']) {
      await expect(activate({ ...opts(), id: bad })).rejects.toMatchObject({ code: 'RELEASE_ID_INVALID', exitCode: 2 });
    }
    await expect(activate({ ...opts(), id: '20200101T000000Z-0000000' })).rejects.toMatchObject({ code: 'RELEASE_NOT_FOUND' });
    const after = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(after.pid).toBe(before.pid);
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('condition not met in time');
}

/**
 * The build cache (issue 10, item 3) on real git, npm and PM2: every release builds at the stable path
 * `<releasesDir>/.build`, is renamed to its id, and the framework's cache (`.next/cache`, which the example's
 * build.mjs keys on its absolute build path as Next.js does) is carried between builds outside every release.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/index.js';
import { cli, createSandbox, get, walkFiles, type Sandbox } from '../helpers/sandbox.js';

const manifestOf = (sb: Sandbox, id: string) => JSON.parse(fs.readFileSync(path.join(sb.releasesDir, id, '.pm2-release/manifest.json'), 'utf8'));
const releaseIds = (sb: Sandbox) => fs.readdirSync(sb.releasesDir).filter((n) => /^\d{8}T\d{6}Z-/.test(n));

async function health(sb: Sandbox) {
  const r = await get(`http://127.0.0.1:${sb.port}/health`);
  expect(r.status, r.error ?? r.body).toBe(200);
  return JSON.parse(r.body!) as { release: string; builtIn: string; cwd: string; warmCache: boolean; version: string };
}

describe('build cache', () => {
  let sb: Sandbox;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  beforeAll(async () => {
    // The seed's prune list (the default removes .next whole, which for Next.js is the build itself).
    sb = await createSandbox({ keep: 3, app: { prune: ['.next/cache', 'build/cache'] }, config: { build: { cache: true } } });
  });
  afterAll(async () => sb?.close());

  it('a cold build at the stable path; the renamed release serves under PM2; the cache is kept outside it', async () => {
    const r = await deploy(opts());
    expect(r.mode).toBe('built');
    const id = r.release.id;
    const m = manifestOf(sb, id);
    expect(m.buildCache).toMatchObject({ warm: false });
    expect(m.buildCache.dropped).toBeUndefined();
    expect(fs.existsSync(path.join(sb.releasesDir, '.build')), '.build is renamed to the release id').toBe(false);
    const h = await health(sb);
    expect(h.release).toBe(id);
    expect(h.builtIn).toBe(path.join(sb.releasesDir, '.build', 'frontend'));
    expect(fs.realpathSync(h.cwd)).toBe(fs.realpathSync(path.join(sb.releasesDir, id, 'frontend')));
    expect(h.warmCache).toBe(false);
    // The cache: one entry, outside every release; the release itself is pruned.
    const entries = fs.readdirSync(path.join(sb.releasesDir, '.cache'));
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatch(/^next-none-[0-9a-f]{12}$/);
    expect(fs.existsSync(path.join(sb.releasesDir, '.cache', entries[0], 'key.json'))).toBe(true);
    expect(fs.existsSync(path.join(sb.releasesDir, id, 'frontend/.next/cache'))).toBe(false);
  });

  it('a rebuild at the stable path reuses it, and the renamed release serves', async () => {
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const r = await deploy(opts());
    expect(r.mode).toBe('built');
    const id = r.release.id;
    expect(manifestOf(sb, id).buildCache).toMatchObject({ warm: true });
    const built = JSON.parse(fs.readFileSync(path.join(sb.releasesDir, id, 'frontend/build/build.json'), 'utf8'));
    expect(built).toMatchObject({ warmCache: true, cachedBuilds: 2, builtIn: path.join(sb.releasesDir, '.build', 'frontend') });
    const h = await health(sb);
    expect(h).toMatchObject({ release: id, version: 'v2', warmCache: true });
    expect(fs.realpathSync(h.cwd)).toBe(fs.realpathSync(path.join(sb.releasesDir, id, 'frontend')));
    // PM2 runs it from the release's own directory, not from .build.
    const app = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(app.pm2_env.pm_cwd).toBe(path.join(sb.releasesDir, id, 'frontend'));
    // No release holds any of the cache (releases stay pruned); the one entry moved on.
    expect(releaseIds(sb)).toHaveLength(2);
    for (const rid of releaseIds(sb)) {
      const files = walkFiles(path.join(sb.releasesDir, rid));
      expect(files.filter((f) => f.includes('.next/cache') || f.includes('build/cache'))).toEqual([]);
    }
    expect(fs.readdirSync(path.join(sb.releasesDir, '.cache'))).toHaveLength(1);
    const doctor = JSON.parse(cli(sb, ['doctor', '--json']).stdout) as { checks: { name: string; status: string; message: string }[] };
    expect(doctor.checks.find((c) => c.name === 'build-cache')).toMatchObject({
      status: 'ok',
      message: expect.stringMatching(/^\.next\/cache carried between builds .*: next-none-/),
    });
  });

  it('a failed build gives the cache back and keeps its release (log, manifest) under its id', async () => {
    sb.commit('broken', { FAIL_BUILD: '1\n', 'version.txt': 'v3\n' });
    await expect(deploy(opts())).rejects.toMatchObject({ code: 'BUILD_FAILED', phase: 'build' });
    expect(fs.existsSync(path.join(sb.releasesDir, '.build'))).toBe(false);
    const failed = releaseIds(sb).find((rid) => manifestOf(sb, rid).status === 'failed');
    expect(failed).toBeDefined();
    expect(fs.existsSync(path.join(sb.releasesDir, failed!, '.pm2-release/build.log'))).toBe(true);
    // FAIL_BUILD exits before the build touches the cache: what it was moved in with goes back out whole.
    const entry = fs.readdirSync(path.join(sb.releasesDir, '.cache'))[0];
    expect(fs.readFileSync(path.join(sb.releasesDir, '.cache', entry, '0/webpack/builds'), 'utf8').trim()).toBe('2');
    sb.commit('fixed', { FAIL_BUILD: null, 'version.txt': 'v4\n' });
    const r = await deploy(opts());
    expect(manifestOf(sb, r.release.id).buildCache).toMatchObject({ warm: true });
    expect(await health(sb)).toMatchObject({ version: 'v4', warmCache: true });
  });

  it('over build.cacheMaxBytes the cache is dropped, and build.cache: false builds cold', async () => {
    const config = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    fs.writeFileSync(sb.configPath, JSON.stringify({ ...config, build: { cache: true, cacheMaxBytes: 1 } }));
    sb.commit('v5', { 'version.txt': 'v5\n' });
    const r = await deploy(opts());
    expect(manifestOf(sb, r.release.id).buildCache).toMatchObject({ warm: true, dropped: expect.stringContaining('over build.cacheMaxBytes') });
    expect(fs.readdirSync(path.join(sb.releasesDir, '.cache'))).toEqual([]);

    fs.writeFileSync(sb.configPath, JSON.stringify({ ...config, build: { cache: false } }));
    sb.commit('v6', { 'version.txt': 'v6\n' });
    const r2 = await deploy(opts());
    expect(manifestOf(sb, r2.release.id).buildCache).toBeUndefined();
    expect(await health(sb)).toMatchObject({ version: 'v6', warmCache: false });
  });
});

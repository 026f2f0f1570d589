/**
 * The configs and commands operators really write (issue "First try works"), on a real PM2 daemon, real git,
 * npm ci and HTTP on 127.0.0.1. The config is the one an operator writes by hand: no strategy (the router is
 * the default), the default prune, and the runbook's own health check, `curl -I http://127.0.0.1:3001`, as
 * a literal URL on the public port. Counts and states, not timings.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executorCall } from '../../src/commands/init.js';
import { CLI, ROOT, cli, createSandbox, get, releasePortRange, type Sandbox } from '../helpers/sandbox.js';
import { startTraffic } from '../helpers/traffic.js';

const APP = 'frontend-dev';
const BRIDGE_TOKEN = 'bridge-token-9d3c1e';

describe('first try: the config an operator writes (real PM2, router by default)', () => {
  let sb: Sandbox;
  let live = '';
  const url = (p = '/') => `http://127.0.0.1:${sb.port}${p}`;
  const json = (r: { stdout: string }) => JSON.parse(r.stdout) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const writeConfig = (over: { app?: Record<string, unknown> } = {}) => {
    const config = {
      workspace: sb.workspace,
      releasesDir: sb.releasesDir,
      preflight: { minFreeDiskMB: 50, minFreeInodes: 1000 },
      // As the runbook checks it: the public port, literally. No strategy, no prune: the defaults.
      app: { env: { FRONT_PORT: String(sb.port) }, healthcheck: { url: `http://127.0.0.1:${sb.port}/`, timeoutMs: 8_000, settleMs: 300 }, ...over.app },
      router: { releasePorts: releasePortRange(), holdMs: 4_000, drainTimeoutMs: 5_000 },
      soak: { durationMs: 0 },
    };
    fs.writeFileSync(sb.configPath, JSON.stringify(config, null, 2));
  };
  const servingRelease = async () => (await get(url())).body ?? '';
  const appProcs = () => sb.jlist().filter((p) => p.name === APP);

  beforeAll(async () => {
    sb = await createSandbox();
    writeConfig();
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('a first deploy on a VM whose release is broken fails honestly: no previous app is claimed', () => {
    sb.commit('broken at run time', { ANSWER_500: '1' });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(5);
    const e = json(r).error;
    expect(e.code).toBe('HEALTH_FAILED');
    // It probed the release's private port (status 500), not the empty public port for the whole timeout.
    expect(e.message).toContain('500');
    expect(e.message).toContain('there was no previous app to put back');
    expect(e.message).not.toMatch(/previous app (was restarted|is serving)/);
    expect(appProcs()).toHaveLength(0);
  });

  it('deploys with the literal health URL and {} defaults: the loader says so in one line, and the Next build in .next survives the prune', () => {
    // A Next app without distDir: its build is .next (BUILD_ID), the default prune names .next.
    sb.commit('v1', { ANSWER_500: null, NEXT_DEFAULT_DIST: '1', 'version.txt': 'v1\n' });
    writeConfig();
    // An uncommitted change in the workspace: deploy warns about it, as text.
    fs.writeFileSync(path.join(sb.appDir, 'version.txt'), 'edited by hand\n');
    const r = cli(sb, ['deploy']);
    fs.writeFileSync(path.join(sb.appDir, 'version.txt'), 'v1\n');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const notes = r.stderr.split('\n').filter((l) => l.includes("names the app's public port"));
    expect(notes, r.stderr).toHaveLength(1);
    expect(notes[0]).toContain(`app.healthcheck.url: http://127.0.0.1:${sb.port}/ names the app's public port ${sb.port}`);
    // Human output is text: no raw JSON log line, the warning readable.
    expect(r.stderr).toContain('the workspace has uncommitted changes');
    expect(r.stderr.split('\n').filter((l) => l.trimStart().startsWith('{'))).toEqual([]);

    live = /deployed (\S+)/.exec(r.stdout)?.[1] ?? '';
    expect(live).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{7}$/);
    const dir = path.join(sb.releasesDir, live, 'frontend');
    expect(fs.existsSync(path.join(dir, '.next', 'BUILD_ID'))).toBe(true);
    expect(fs.existsSync(path.join(dir, '.next', 'cache'))).toBe(false);
    expect(fs.existsSync(path.join(dir, 'build', 'cache'))).toBe(false);
    const log = fs.readFileSync(path.join(sb.releasesDir, live, '.pm2-release', 'build.log'), 'utf8');
    expect(log).toContain('prune: kept .next: it holds the Next.js build (.next/BUILD_ID); pruned .next/cache instead');
  });

  it('behind a running router, a release that boots but answers 500 is stopped by the gate on its private port and never reaches a visitor', async () => {
    expect(await servingRelease()).toContain(live);
    sb.commit('answers 500', { ANSWER_500: '1' });
    const traffic = startTraffic(sb.port, { clients: 2 });
    const g = cli(sb, ['deploy', '--json']);
    const t = await traffic.stop();
    expect(g.code, g.stderr).toBe(5);
    const e = json(g).error;
    expect(e.code).toBe('HEALTH_FAILED');
    // The gate probed the new release's private port (it answered 500), not the router on the public port.
    expect(e.message).toMatch(/http:\/\/127\.0\.0\.1:(\d+)\/ answered 500/);
    expect(e.message).not.toContain(`127.0.0.1:${sb.port}/ answered`);
    expect(e.message).toContain(`${live} is serving again`);
    expect(t.failures).toEqual([]);
    expect([...t.releases.keys()]).toEqual([live]);
    expect(await servingRelease()).toContain(live);
  });

  it('status and doctor: the release listens on loopback only; one listening on every interface is named', async () => {
    const s = cli(sb, ['doctor', '--json']);
    const host = json(s).checks.find((c: { name: string }) => c.name === 'release-host');
    expect(host.status).toBe('ok');
    expect(host.message).toContain('loopback only');
    // The example server takes its address from HOST: an operator's server that listens everywhere.
    writeConfig({ app: { env: { FRONT_PORT: String(sb.port), HOST: '0.0.0.0' } } });
    const sha = sb.commit('v2', { ANSWER_500: null, 'version.txt': 'v2\n' });
    const d = cli(sb, ['deploy', '--json', '--ref', sha]);
    expect(d.code, d.stderr).toBe(0);
    const st = cli(sb, ['status']);
    expect(st.stderr + st.stdout).toMatch(/listens on 0\.0\.0\.0:\d+: not loopback only/);
    const doc = json(cli(sb, ['doctor', '--json'])).checks.find((c: { name: string }) => c.name === 'release-host');
    expect(doc.status).toBe('warn');
    expect(doc.fix).toContain('127.0.0.1');
    writeConfig();
    live = json(d).release.id;
  });

  it('history: notes sit under DETAIL, errors say "error"', () => {
    const h = cli(sb, ['history']);
    expect(h.code).toBe(0);
    const [header, ...rows] = h.stdout.trim().split('\n');
    expect(header).toMatch(/DETAIL$/);
    expect(header).not.toContain('ERROR');
    expect(rows.some((r) => /error HEALTH_FAILED in health/.test(r))).toBe(true);
  });

  it('the executor call init prints runs as printed, and the bridge’s own token reaches neither the app nor the dump', async () => {
    // The bridge's project: pm2-release installed as a dependency (a link to this checkout).
    const bridge = path.join(sb.root, 'bridge');
    fs.mkdirSync(path.join(bridge, 'node_modules'), { recursive: true });
    fs.symlinkSync(ROOT, path.join(bridge, 'node_modules', 'pm2-release'));
    const sha = sb.commit('v3', { 'version.txt': 'v3\n' });
    fs.writeFileSync(
      path.join(bridge, 'release.mjs'),
      `${executorCall(sb.configPath)}\nconsole.log(JSON.stringify({ ok: result.ok, id: result.release?.id, sha: result.release?.sha }));\n`,
    );
    const r = spawnSync(process.execPath, ['release.mjs'], {
      cwd: bridge,
      env: { ...sb.env, BRIDGE_API_TOKEN: BRIDGE_TOKEN },
      encoding: 'utf8',
      timeout: 180_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; id: string; sha: string };
    expect(out).toMatchObject({ ok: true, sha });
    await sleep(200);
    expect(await servingRelease()).toContain(out.id);
    const env = appProcs()[0].pm2_env;
    expect(JSON.stringify(env)).not.toContain(BRIDGE_TOKEN);
    expect(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')).not.toContain(BRIDGE_TOKEN);
    // The same CLI binary the docs name, for completeness: it is what the executor's fallback spawns.
    expect(fs.existsSync(CLI)).toBe(true);
  });
});

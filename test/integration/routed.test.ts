/**
 * The router strategy on a real PM2 daemon (private PM2_HOME), real git, npm ci and HTTP on 127.0.0.1:
 * take-over of an app started by hand the runbook's way, switches under keep-alive load with 0 failed
 * requests, what passes through a switch (streams, SSE, an upload, WebSockets), hold while PM2 restarts a
 * killed app, reboot safety (router killed, `pm2 kill` + `pm2 resurrect`), status, and the way back to
 * the restart strategy. Counts and states, not timings.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { activate, deploy, rollback, status } from '../../src/index.js';
import { portHolder } from '../../src/health.js';
import { cli, createSandbox, get, releasePortRange, type Sandbox, waitServing as waitServingOn } from '../helpers/sandbox.js';
import { startTraffic } from '../helpers/traffic.js';

const APP = 'frontend-dev';
const ROUTER = 'frontend-dev-router';

describe('router strategy (real PM2)', () => {
  let sb: Sandbox;
  const url = (p = '/') => `http://127.0.0.1:${sb.port}${p}`;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  const procs = () => sb.jlist();
  const app = () => procs().filter((p) => p.name === APP);
  const routerProc = () => procs().filter((p) => p.name === ROUTER);
  const routerState = () =>
    JSON.parse(fs.readFileSync(path.join(sb.releasesDir, '.router', `${APP}.state.json`), 'utf8')) as { live: { port: number; release: string } };
  const waitServing = (release: string, ms = 20_000) => waitServingOn(sb.port, release, ms);
  const ids: string[] = [];

  beforeAll(async () => {
    sb = await createSandbox({
      keep: 3,
      app: { strategy: 'router', healthcheck: { timeoutMs: 20_000, settleMs: 300 } },
      config: { router: { holdMs: 4_000, drainTimeoutMs: 5_000, releasePorts: releasePortRange() } },
    });
  });
  afterAll(async () => {
    if (process.env.ROUTED_DEBUG) {
      const dir = path.join(sb.pm2Home, 'logs');
      for (const f of fs.readdirSync(dir)) console.log(`== ${f}\n${fs.readFileSync(path.join(dir, f), 'utf8').slice(-3000)}`);
    }
    await sb?.close();
  });

  it('takes over an app started by hand from the workspace (pm2 start npm --name frontend-dev -- run start)', async () => {
    const env = { ...sb.env, FRONT_PORT: String(sb.port) } as NodeJS.ProcessEnv;
    execFileSync('npm', ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: sb.appDir, env, stdio: 'ignore' });
    execFileSync('npm', ['run', 'build'], { cwd: sb.appDir, env, stdio: 'ignore' });
    execFileSync(sb.env.PM2_RELEASE_PM2!, ['start', 'npm', '--name', APP, '--cwd', sb.appDir, '--', 'run', 'start'], { env, stdio: 'ignore' });
    await waitServing('release none');

    const traffic = startTraffic(sb.port);
    await sleep(300);
    const r = await deploy(opts());
    await sleep(300);
    const t = await traffic.stop();
    ids.push(r.release.id);
    await waitServing(r.release.id);
    // One short gap at most: the old process closing its port and the router binding it.
    console.log(
      `take-over: ${t.failures.length} failed of ${t.ok + t.failures.length} requests (${[...new Set(t.failures)].join(', ')}), longest gap ${t.maxGapMs} ms`,
    );
    expect(t.ok).toBeGreaterThan(0);
    expect(routerProc()).toHaveLength(1);
    expect(routerProc()[0].pm2_env.status).toBe('online');
    const a = app();
    expect(a).toHaveLength(1);
    expect(a[0].pm2_env.pm_cwd).toBe(r.release.cwd);
    const privatePort = Number((a[0].pm2_env.env as Record<string, string> | undefined)?.FRONT_PORT ?? a[0].pm2_env.FRONT_PORT);
    const range = (JSON.parse(fs.readFileSync(sb.configPath, 'utf8')) as { router: { releasePorts: [number, number] } }).router.releasePorts;
    expect(privatePort).toBeGreaterThanOrEqual(range[0]);
    expect(privatePort).toBeLessThanOrEqual(range[1]);
    expect(routerState().live).toEqual({ port: privatePort, release: r.release.id });
    // The router holds the public port (in PM2 cluster mode, through PM2's daemon: a replacement router can
    // share it); the release listens on its private one.
    expect(routerProc()[0].pm2_env.exec_mode).toBe('cluster_mode');
    expect(await portHolder(sb.port)).toBe(Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8')));
    // The control socket is the owner's only.
    expect(fs.statSync(path.join(sb.releasesDir, '.router', `${APP}.sock`)).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(sb.releasesDir, '.router')).mode & 0o777).toBe(0o700);
  });

  it('deploys, rollbacks, activates and a crash-at-boot release fail 0 requests under keep-alive load', async () => {
    const traffic = startTraffic(sb.port, { clients: 4 });
    await sleep(300);
    fs.writeFileSync(path.join(sb.appDir, '.env.local'), 'API_TOKEN=canary-router-secret\n', { mode: 0o600 });
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const v2 = await deploy(opts());
    ids.push(v2.release.id);
    const back = await rollback(opts());
    expect(back.release.id).toBe(ids[0]);
    const again = await activate({ ...opts(), id: v2.release.id });
    expect(again.release.id).toBe(v2.release.id);
    sb.commit('crash at boot', { CRASH_ON_BOOT: 'yes\n' });
    const crash = cli(sb, ['deploy', '--json']);
    expect(crash.code, crash.stdout).toBe(5);
    expect(JSON.parse(crash.stdout).error.code).toBe('HEALTH_FAILED');
    sb.commit('v3', { CRASH_ON_BOOT: null, 'version.txt': 'v3\n' });
    const v3 = await deploy(opts());
    ids.push(v3.release.id);
    await sleep(300);
    const t = await traffic.stop();
    expect(t.failures).toEqual([]);
    expect(t.ok).toBeGreaterThan(50);
    // Every release that went live answered some of the load.
    for (const id of [v2.release.id, ids[0], v3.release.id]) expect(t.releases.get(id) ?? 0, id).toBeGreaterThan(0);
    // One release process, named like the app, from the live release; the dump has it and the router.
    expect(app().map((p) => p.pm2_env.pm_cwd)).toEqual([v3.release.cwd]);
    const dump = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string; pm_cwd: string }[];
    expect(dump.map((d) => d.name).sort()).toEqual([APP, ROUTER]);
    expect(dump.find((d) => d.name === APP)!.pm_cwd).toBe(v3.release.cwd);
  });

  it('streams, server-sent events, a large upload and WebSockets pass through a switch; the old WebSocket is closed with 1001 after the drain', async () => {
    const before = routerState().live.release;
    const ws = new WebSocket(`ws://127.0.0.1:${sb.port}/ws`);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const echo = (sock: WebSocket, text: string) =>
      new Promise<string>((resolve) => {
        sock.once('message', (m: Buffer) => resolve(m.toString()));
        sock.send(text);
      });
    expect(await echo(ws, 'hi')).toBe(`${before}:hi`);
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    const body = crypto.randomBytes(6 * 1024 * 1024);
    const fetchText = (p: string) => get(url(p));
    const stream = fetchText('/stream');
    const events = fetchText('/events');
    const upload = new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: sb.port, path: '/upload', method: 'POST', agent: false }, (res) => {
        let t = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (t += d));
        res.on('end', () => resolve(t));
      });
      req.on('error', reject);
      req.end(body);
    });
    sb.commit('v4', { 'version.txt': 'v4\n' });
    const v4 = await deploy(opts());
    ids.push(v4.release.id);
    const s = await stream;
    expect(s.status).toBe(200);
    expect(s.body!.trim().split('\n')).toEqual(Array.from({ length: 10 }, (_, i) => `part ${i} of ${before}`));
    expect((await events).body).toContain(`data: ${before} 9\n\n`);
    expect(JSON.parse(await upload)).toMatchObject({ bytes: body.length, sha256: crypto.createHash('sha256').update(body).digest('hex') });
    expect(await closed).toBe(1001);
    const ws2 = new WebSocket(`ws://127.0.0.1:${sb.port}/ws`);
    await new Promise((r, j) => ws2.once('open', r).once('error', j));
    expect(await echo(ws2, 'new')).toBe(`${v4.release.id}:new`);
    ws2.close();
  });

  it('hold: the live app SIGKILLed under load fails 0 requests while PM2 restarts it; past the bound, 503 + Retry-After', async () => {
    const live = routerState().live;
    const traffic = startTraffic(sb.port);
    await sleep(300);
    // The process that holds the private port (npm's child), by pid: the one PM2 started for this sandbox.
    const server = await portHolder(live.port);
    expect(server).toBeDefined();
    process.kill(server!, 'SIGKILL');
    await sleep(200);
    await waitServing(live.release);
    await sleep(500);
    const t = await traffic.stop();
    expect(t.failures).toEqual([]);
    expect(app()[0].pm2_env.restart_time).toBeGreaterThanOrEqual(1);
    // Stopped for longer than router.holdMs (4 s): a 503 that says when to come back, then back to normal.
    const id = app()[0].pm_id;
    sb.pm2('stop', String(id));
    try {
      const held = await new Promise<{ status?: number; headers: http.IncomingHttpHeaders }>((resolve, reject) =>
        http
          .get({ host: '127.0.0.1', port: sb.port, agent: false, timeout: 15_000 }, (res) => {
            res.resume();
            resolve({ status: res.statusCode, headers: res.headers });
          })
          .on('error', reject),
      );
      expect(held.status).toBe(503);
      expect(held.headers['retry-after']).toBe('2');
    } finally {
      sb.pm2('start', String(id));
    }
    await waitServing(live.release);
  });

  it('routes to the recorded release after a router crash, and after pm2 kill + pm2 resurrect', async () => {
    const live = routerState().live;
    const pid = routerProc()[0].pid;
    process.kill(pid, 'SIGKILL');
    await waitServing(live.release);
    expect(routerProc()[0].pid).not.toBe(pid);
    sb.pm2('kill');
    sb.pm2('resurrect');
    await waitServing(live.release);
    expect(routerState().live).toEqual(live);
    expect(app()).toHaveLength(1);
  });

  it('pm2 start ecosystem.config.cjs with no dump brings back the router and the live release', async () => {
    const live = routerState().live;
    sb.pm2('kill');
    fs.rmSync(path.join(sb.pm2Home, 'dump.pm2'), { force: true });
    fs.rmSync(path.join(sb.pm2Home, 'dump.pm2.bak'), { force: true });
    sb.pm2('start', path.join(__dirname, '../../ecosystem.config.cjs'));
    await waitServing(live.release);
    expect(routerProc()).toHaveLength(1);
    expect(app()).toHaveLength(1);
    expect(routerState().live).toEqual(live);
    sb.pm2('save', '--force');
  });

  it('doctor checks the router; a canary secret of the app never reaches the router log', async () => {
    const d = cli(sb, ['doctor', '--json']);
    const router = (JSON.parse(d.stdout) as { checks: { name: string; status: string; message: string }[] }).checks.find((c) => c.name === 'router')!;
    expect(router.status, router.message).toBe('ok');
    expect(router.message).toMatch(/listens on :\d+ → \d{8}T\d{6}Z-[0-9a-f]{7} on :\d+/);
    const logs = path.join(sb.pm2Home, 'logs');
    const routerLogs = fs.readdirSync(logs).filter((f) => f.startsWith(`${ROUTER}-`));
    expect(routerLogs.length).toBeGreaterThan(0);
    for (const f of routerLogs) expect(fs.readFileSync(path.join(logs, f), 'utf8')).not.toContain('canary-router-secret');
  });

  it('status shows the router: live release and port, per-release numbers of the last minute', async () => {
    for (let i = 0; i < 20; i++) await get(url());
    const st = await status(opts());
    expect(st.drift.detected, st.drift.reason ?? '').toBe(false);
    expect(st.router).toMatchObject({ running: true, listening: true, live: routerState().live });
    const live = st.router!.stats.find((x) => x.release === routerState().live.release)!;
    expect(live.requests).toBeGreaterThanOrEqual(20);
    expect(live.p50Ms).not.toBeNull();
    expect(live.p99Ms).not.toBeNull();
    const human = cli(sb, ['status']);
    expect(human.stdout).toMatch(/router\s+listening on :\d+ → /);
    expect(human.stdout).toMatch(/last minute\s+[\d.]+ req\/s, 5xx [\d.]+ %, p50 [\d.]+ ms, p99 [\d.]+ ms/);
  });

  it('the way back: strategy "restart" and `activate <current>` puts the app on the public port, without a router', async () => {
    const current = routerState().live.release;
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    cfg.app.strategy = 'restart';
    fs.writeFileSync(sb.configPath, JSON.stringify(cfg, null, 2));
    const r = await activate({ ...opts(), id: current });
    expect(r.release.id).toBe(current);
    expect(routerProc()).toEqual([]);
    const a = app();
    expect(a).toHaveLength(1);
    expect(await portHolder(sb.port)).toBeDefined();
    await waitServing(current);
    const dump = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string }[];
    expect(dump.map((d) => d.name)).toEqual([APP]);
  });
});

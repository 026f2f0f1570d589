/**
 * The soak behind the router on a real PM2 daemon, real git, npm ci and HTTP on 127.0.0.1: the error gate
 * and the latency gate revert a bad release with a route change, a canary share is sticky per visitor, a
 * quiet app passes on its health checks alone, `rollback` during a soak is a route change back with 0
 * failed requests, the hashed chunks of an older build stay reachable after a switch (no version skew),
 * and `deploy --no-wait-soak` answers at once while the soak goes on. Counts and states, not timings.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, history, rollback, status } from '../../src/index.js';
import { ReleaseError } from '../../src/errors.js';
import { pidAlive } from '../../src/release/store.js';
import { cli, createSandbox, get, releasePortRange, type Sandbox } from '../helpers/sandbox.js';
import { startTraffic } from '../helpers/traffic.js';

const APP = 'frontend-dev';

describe('soak, gate, canary and skew (real PM2, router)', () => {
  let sb: Sandbox;
  const url = (p = '/') => `http://127.0.0.1:${sb.port}${p}`;
  const opts = (extra: Record<string, unknown> = {}) => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root, ...extra });
  const live = () =>
    (JSON.parse(fs.readFileSync(path.join(sb.releasesDir, '.router', `${APP}.state.json`), 'utf8')) as { live: { release: string } }).live.release;
  const bad = () => JSON.parse(fs.readFileSync(path.join(sb.releasesDir, 'bad-shas.json'), 'utf8')) as Record<string, { reason: string }>;
  const appProcs = () => sb.jlist().filter((p: { name: string }) => p.name === APP);
  let current = '';

  /** One visitor's GET through the router: its release and the bucket cookie it was given. */
  const visit = (xff: string, cookie?: string) =>
    new Promise<{ release: string; setCookie?: string }>((resolve, reject) => {
      const headers: Record<string, string> = { 'x-forwarded-for': xff, connection: 'close' };
      if (cookie) headers.cookie = cookie;
      http
        .get({ host: '127.0.0.1', port: sb.port, path: '/', agent: false, headers }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ release: /\(release ([^)]+)\)/.exec(body)?.[1] ?? `?${res.statusCode}`, setCookie: res.headers['set-cookie']?.[0] }));
        })
        .on('error', reject);
    });

  const soakEnded = async (ms = 60_000) => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const s = (await status(opts())).soak;
      if (s && !s.running && s.state !== 'running') return s;
      await sleep(200);
    }
    throw new Error('the soak did not end');
  };

  beforeAll(async () => {
    sb = await createSandbox({
      keep: 4,
      app: { strategy: 'router', healthcheck: { url: 'http://127.0.0.1:{port}/health', timeoutMs: 20_000, settleMs: 300 } },
      config: {
        router: { holdMs: 4_000, drainTimeoutMs: 5_000, releasePorts: releasePortRange() },
        soak: { durationMs: 20_000, minRequests: 30, max5xxRate: 0.02, p99Factor: 3, minP99Ms: 500, healthIntervalMs: 500 },
      },
    });
    const r = await deploy(opts());
    current = r.release.id;
    expect(r.soak).toBeNull(); // the take-over: no previous release behind the router to keep warm
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('error gate: a release whose / is healthy but /broken answers 500 is reverted within the soak; the sha is marked bad with the numbers', async () => {
    const sha = sb.commit('v2 with a broken route', { 'version.txt': '2.0.0\n', FAIL_PATHS: '/broken\n' });
    const traffic = startTraffic(sb.port, { clients: 4, paths: ['/', '/broken'], pauseMs: 5 });
    await sleep(1_500); // the previous release's baseline: /broken is a 404-free 200 there
    const err = await deploy(opts()).catch((e: unknown) => e);
    const t = await traffic.stop();
    expect(err).toBeInstanceOf(ReleaseError);
    const e = err as ReleaseError;
    expect([e.code, e.phase, e.exitCode]).toEqual(['SOAK_FAILED', 'soak', 5]);
    expect(e.message).toMatch(/5xx \d+ % of \d+ requests vs 0 % before/);
    expect(live()).toBe(current);
    expect(bad()[sha].reason).toMatch(/^the soak reverted it: 5xx/);
    // Only the broken route failed, and only while the new release had its share; / never failed.
    expect(t.failures.filter((f) => !f.startsWith('/broken'))).toEqual([]);
    expect(t.failures.length).toBeGreaterThan(0);
    expect(appProcs()).toHaveLength(1);
    const h = (await history(opts())).entries;
    const revert = h.find((x) => x.action === 'revert');
    expect(revert?.soak?.state).toBe('reverted');
    expect(revert?.soak?.candidate?.errors5xx).toBeGreaterThan(0);
    expect(revert?.soak?.baseline?.requests).toBeGreaterThan(0);
    expect(h[0]).toMatchObject({ action: 'deploy', result: 'failed', error: { code: 'SOAK_FAILED', phase: 'soak' } });
    expect((await get(url('/health'))).body).toContain(current);
  });

  it('latency gate: a release that sleeps 2 s on every request is reverted', async () => {
    sb.commit('v3 slow', { 'version.txt': '3.0.0\n', FAIL_PATHS: null, SLOW_MS: '2000\n' });
    const traffic = startTraffic(sb.port, { clients: 12, paths: ['/'], pauseMs: 5 });
    await sleep(1_500);
    const err = (await deploy(opts()).catch((e: unknown) => e)) as ReleaseError;
    const t = await traffic.stop();
    expect(err.code).toBe('SOAK_FAILED');
    expect(err.message).toMatch(/p99 \d+ ms over \d+ requests vs [\d.]+ ms before \(limit \d+ ms\)/);
    expect(live()).toBe(current);
    expect(t.failures).toEqual([]); // slow is not failed: every request was answered
  });

  it('a quiet app (below the minimum request count) passes the soak on its health checks alone', async () => {
    sb.commit('v4', { 'version.txt': '4.0.0\n', SLOW_MS: null });
    const r = await deploy(opts({ soakMs: 2_000 }));
    expect(r.soak).toMatchObject({ state: 'passed', judged: false });
    expect(r.soak?.reason).toMatch(/health checks alone/);
    expect(live()).toBe(r.release.id);
    expect(appProcs()).toHaveLength(1); // the previous release retired after the soak
    current = r.release.id;
  });

  it('canary 20 %: about a fifth of distinct visitors reach the new release, each stays on one release; status shows both', async () => {
    sb.commit('v5', { 'version.txt': '5.0.0\n' });
    const early = await deploy(opts({ canaryShare: 0.2, soakMs: 15_000, waitSoak: false }));
    expect(early.soak).toMatchObject({ state: 'running', share: 0.2 });
    const next = early.release.id;
    const seen = new Map<string, Set<string>>();
    const cookies = new Map<string, string>();
    for (let i = 0; i < 200; i++) {
      const xff = `10.9.${i >> 8}.${i & 255}`;
      const first = await visit(xff);
      seen.set(xff, new Set([first.release]));
      if (first.setCookie) cookies.set(xff, first.setCookie.split(';')[0]);
    }
    // The same visitors again, by their cookie now (a visitor whose address changes keeps its release).
    for (const [xff, cookie] of cookies) for (let k = 0; k < 2; k++) seen.get(xff)!.add((await visit(`172.16.0.${k}`, cookie)).release);
    const st = await status(opts());
    expect(st.soak).toMatchObject({ running: true, share: 0.2, release: next, previous: current });
    expect(st.soak!.timeLeftMs).toBeGreaterThan(0);
    expect(st.soak!.candidate!.requests).toBeGreaterThan(0);
    expect(st.soak!.baseline!.requests).toBeGreaterThan(0);
    expect(st.router?.canary?.upstream.release).toBe(next);
    expect(cookies.size).toBe(200);
    const onNew = [...seen.values()].filter((s) => s.has(next)).length;
    const mixed = [...seen.values()].filter((s) => s.size !== 1).length;
    console.log(`canary 20 %: ${onNew} of 200 visitors on the new release, ${mixed} saw both`);
    expect(mixed).toBe(0);
    expect(onNew).toBeGreaterThanOrEqual(24); // 20 % of 200 = 40; binomial sd ≈ 5.7
    expect(onNew).toBeLessThanOrEqual(56);
    const ended = await soakEnded();
    expect(ended.state).toBe('passed');
    expect(live()).toBe(next);
    expect((await visit('10.9.0.1', cookies.get('10.9.0.1'))).release).toBe(next); // promoted: every visitor
    current = next;
  });

  it('rollback during the soak is a route change back: 0 failed requests, no boot, the history says who', async () => {
    sb.commit('v6', { 'version.txt': '6.0.0\n' });
    // The canary deploy finishes (retention, history) after its soak: queue behind it.
    const early = await deploy(opts({ soakMs: 60_000, waitSoak: false, waitMs: 30_000 }));
    const next = early.release.id;
    expect(live()).toBe(next);
    const before = appProcs().find((p: { pm2_env: { RELEASE_ID?: string } }) => p.pm2_env.RELEASE_ID === current);
    expect(before).toBeDefined(); // the previous release is still running (standby)
    const traffic = startTraffic(sb.port, { clients: 4, paths: ['/'] });
    await sleep(1_000);
    const r = await rollback(opts());
    await sleep(500);
    const t = await traffic.stop();
    expect(r.release.id).toBe(current);
    expect(live()).toBe(current);
    expect(t.failures).toEqual([]);
    // The soaking deploy then drains and deletes the new release.
    for (let i = 0; i < 100 && appProcs().length > 1; i++) await sleep(200);
    const after = appProcs();
    expect(after).toHaveLength(1);
    expect(after[0].pid).toBe(before?.pid); // the same process: no boot
    const s = await soakEnded();
    expect(s.state).toBe('rolled-back');
    expect(s.revertMs).not.toBeNull();
    const h = (await history(opts())).entries;
    expect(h.find((x) => x.action === 'rollback')?.detail).toMatch(/rolled back by .* during the soak/);
    expect(bad()[early.release.sha!]).toBeDefined();
  });

  it('no version skew: the chunks of a page loaded before a switch are all answered after it', async () => {
    const page = (await get(url('/page'))).body ?? '';
    const chunks = [...page.matchAll(/src="([^"]+)"/g)].map((m) => m[1]);
    expect(chunks.length).toBe(3);
    for (const c of chunks) expect((await get(url(c))).status).toBe(200);
    sb.commit('v7', { 'version.txt': '7.0.0\n' });
    // (The rolled-back deploy may still be finishing: the next one waits for its lock.)
    const r = await deploy(opts({ soakMs: 0, waitMs: 30_000 }));
    expect(live()).toBe(r.release.id);
    const statuses = await Promise.all(chunks.map(async (c) => (await get(url(c))).status));
    expect(statuses).toEqual([200, 200, 200]);
    // The new build's own page and chunks, and a non-hashed path is never an old build's.
    const fresh = [...((await get(url('/page'))).body ?? '').matchAll(/src="([^"]+)"/g)].map((m) => m[1]);
    expect(fresh.some((c) => chunks.includes(c))).toBe(false);
    for (const c of fresh) expect((await get(url(c))).status).toBe(200);
    expect((await get(url('/health'))).body).toContain('7.0.0');
    expect((await get(url('/_next/static/chunks/not-a-chunk.js'))).status).toBe(404);
    current = r.release.id;
  });

  it('deploy --no-wait-soak --json answers when the soak starts; status shows it; history gets the verdict', async () => {
    sb.commit('v8', { 'version.txt': '8.0.0\n' });
    const r = cli(sb, ['deploy', '--json', '--no-wait-soak', '--soak', '4']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { ok: boolean; soak: { state: string; pid: number }; release: { id: string } };
    expect(out.ok).toBe(true);
    expect(out.soak.state).toBe('running');
    const st = JSON.parse(cli(sb, ['status', '--json']).stdout) as { soak: { running: boolean; release: string } };
    expect(st.soak).toMatchObject({ running: true, release: out.release.id });
    const ended = await soakEnded();
    expect(ended.state).toBe('passed');
    for (let i = 0; i < 100 && pidAlive(out.soak.pid); i++) await sleep(100);
    expect(pidAlive(out.soak.pid)).toBe(false); // the detached deploy finished
    const h = (await history(opts())).entries;
    expect(h[0]).toMatchObject({ action: 'deploy', result: 'ok', to: out.release.id, soak: { state: 'passed' } });
  });
});

/**
 * scripts/traffic.mjs, the load loop of the switch tests and the bench, against real HTTP servers on
 * 127.0.0.1 started here (no PM2): what counts as ok, a failure, an in-flight drop, a refused connection, a
 * gap; the releases seen; the maxMs bound; the loopback guard. Counts and states, not durations.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { isAnswer, isSuccess, loopbackUrl, startTraffic, type Traffic, type TrafficResult } from '../../scripts/traffic.mjs';

const servers: http.Server[] = [];
const traffics: Traffic[] = [];

async function serve(handler: http.RequestListener): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

function close(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function start(opts: Parameters<typeof startTraffic>[0]): Traffic {
  const t = startTraffic({ maxMs: 10_000, ...opts });
  traffics.push(t);
  return t;
}

/** Polls the counts until `done` holds (bounded). */
async function until(t: Traffic, done: (r: TrafficResult) => boolean, ms = 3_000): Promise<TrafficResult> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = t.snapshot();
    if (done(r)) return r;
    if (Date.now() > deadline)
      throw new Error(`traffic never reached the state: ${JSON.stringify({ ...r, fails: r.fails.length, releases: [...r.releases] })}`);
    await sleep(10);
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

afterEach(async () => {
  await Promise.all(traffics.splice(0).map((t) => t.stop()));
  await Promise.all(servers.splice(0).map((s) => (s.listening ? close(s) : Promise.resolve())));
});

describe('scripts/traffic.mjs', () => {
  it('counts ok answers of both client kinds, per path and status, per bucket, and the releases from the bodies', async () => {
    let n = 0;
    const { port } = await serve((_req, res) => res.end(`hello (release r${n++ % 2 ? 'b' : 'a'})\n`));
    const t = start({ port, clients: 2, bucketMs: 50 });
    await until(t, (r) => r.byKind.keepAlive.ok >= 20 && r.byKind.poller.ok >= 3);
    const r = await t.stop();
    expect(r.running).toBe(false);
    expect([r.failed, r.dropped, r.errors, r.nonOk, r.failures, r.fails]).toEqual([0, 0, 0, 0, [], []]);
    expect(r.ok).toBe(r.requests);
    expect(r.ok).toBe(r.byKind.keepAlive.ok + r.byKind.poller.ok);
    expect([r.byKind.keepAlive.clients, r.byKind.poller.clients]).toEqual([2, 1]);
    expect(r.counts).toEqual({ '/ 200': r.ok });
    expect((r.releases.get('ra') ?? 0) + (r.releases.get('rb') ?? 0)).toBe(r.ok);
    expect(r.releases.get('ra')).toBeGreaterThan(0);
    expect(r.releases.get('rb')).toBeGreaterThan(0);
    const b = r.buckets!;
    expect(b.bucketMs).toBe(50);
    expect([sum(b.keepAliveOk), sum(b.pollerOk), sum(b.keepAliveFail), sum(b.pollerFail)]).toEqual([r.byKind.keepAlive.ok, r.byKind.poller.ok, 0, 0]);
    // After stop: nothing more is counted.
    await sleep(30);
    expect(t.snapshot().requests).toBe(r.requests);
  });

  it('does not read bodies when releases are not wanted', async () => {
    const { port } = await serve((_req, res) => res.end('hello (release r1)\n'));
    const t = start({ port, clients: 1, poller: false, countReleases: false });
    const r = await until(t, (x) => x.ok >= 5);
    expect(r.releases.size).toBe(0);
  });

  it('a 500 and a 404: both failures with the default predicate; only the 500 with isAnswer (the soak bench)', async () => {
    const visitors = new Set<string>();
    const { port } = await serve((req, res) => {
      visitors.add(String(req.headers['x-forwarded-for']));
      res.statusCode = req.url === '/500' ? 500 : req.url === '/404' ? 404 : 200;
      res.end('x');
    });
    const headers = (n: number, client: number) => ({ 'x-forwarded-for': `10.0.${client}.${n & 255}` });
    const paths = ['/', '/404', '/500'];

    const d = start({ port, clients: 2, poller: false, paths, headers });
    const rd = await until(d, (r) => r.requests >= 30);
    await d.stop();
    const byPath = (r: TrafficResult, p: string) => r.counts[`${p} ${p === '/' ? 200 : p.slice(1)}`] ?? 0;
    expect(isSuccess(302)).toBe(true);
    expect(rd.ok).toBe(byPath(rd, '/'));
    expect(rd.nonOk).toBe(byPath(rd, '/404') + byPath(rd, '/500'));
    expect(rd.failed).toBe(rd.nonOk);
    expect([rd.errors, rd.dropped]).toEqual([0, 0]);
    expect(rd.codes).toEqual({ '404': byPath(rd, '/404'), '500': byPath(rd, '/500') });
    expect(new Set(rd.failures)).toEqual(new Set(['/404: 404', '/500: 500']));
    expect(rd.fails.every((f) => f.kind === 'keepAlive' && f.status === Number(f.path.slice(1)))).toBe(true);
    expect(visitors.size).toBeGreaterThan(10); // a new visitor per request

    const a = start({ port, clients: 2, poller: false, paths, okStatus: isAnswer });
    const ra = await until(a, (r) => r.requests >= 30);
    await a.stop();
    expect(ra.ok).toBe(byPath(ra, '/') + byPath(ra, '/404'));
    expect(ra.failed).toBe(byPath(ra, '/500'));
    expect(new Set(ra.failures)).toEqual(new Set(['/500: 500']));
    expect(ra.fails.every((f) => f.path === '/500' && f.status === 500)).toBe(true);
  });

  it('a request whose keep-alive connection the server closes without answering is dropped in flight, and failed', async () => {
    // On each connection, the 3rd request gets no answer: the server destroys the socket.
    const seen = new WeakMap<object, number>();
    const { port } = await serve((req, res) => {
      const k = (seen.get(req.socket) ?? 0) + 1;
      seen.set(req.socket, k);
      if (k === 3) return void req.socket.destroy();
      res.end('ok');
    });
    const t = start({ port, clients: 1, poller: false });
    await until(t, (r) => r.dropped >= 2);
    const r = await t.stop();
    expect(r.byKind.keepAlive.dropped).toBe(r.dropped);
    expect(r.failed).toBe(r.dropped);
    expect([r.errors, r.refused, r.timeouts, r.nonOk]).toEqual([0, 0, 0, 0]);
    expect(r.errorCodes).toEqual({});
    expect(new Set(r.failures)).toEqual(new Set(['/: ECONNRESET']));
    expect(r.codes).toEqual({ ECONNRESET: r.dropped });
    // Two answers on each connection before its drop.
    expect(r.ok).toBeGreaterThanOrEqual(2 * r.dropped);
    expect(r.ok).toBeLessThanOrEqual(2 * r.dropped + 2);
  });

  it('ECONNREFUSED once the server has closed: refused, an error, a failure (not a drop)', async () => {
    const { server, port } = await serve((_req, res) => res.end('ok'));
    const t = start({ port, clients: 2, pauseMs: 2, pollMs: 2 });
    await until(t, (r) => r.byKind.keepAlive.ok > 0 && r.byKind.poller.ok > 0);
    await close(server);
    const r = await until(t, (x) => x.byKind.keepAlive.refused > 0 && x.byKind.poller.refused > 0);
    await t.stop();
    expect(r.errorCodes.ECONNREFUSED).toBe(r.refused);
    expect(r.errors).toBeGreaterThanOrEqual(r.refused);
    expect(r.failed).toBe(r.errors + r.dropped + r.nonOk);
    expect(r.failures).toContain('/: ECONNREFUSED');
    expect(r.fails.some((f) => f.kind === 'poller' && f.status === 'ECONNREFUSED')).toBe(true);
  });

  it('maxGapMs: the server holds every answer for ~300 ms', async () => {
    let stalled = false;
    const held: http.ServerResponse[] = [];
    const { port } = await serve((_req, res) => (stalled ? held.push(res) : res.end('ok')));
    const t = start({ port, clients: 2, pollMs: 5 });
    await until(t, (r) => r.ok >= 20);
    const before = t.snapshot();
    stalled = true;
    await sleep(300);
    stalled = false;
    const stallEnd = performance.timeOrigin + performance.now();
    for (const res of held.splice(0)) res.end('ok');
    await until(t, (r) => r.ok >= before.ok + 20);
    const r = await t.stop();
    expect(r.failed).toBe(0); // slow is not failed
    expect(r.maxGapMs).toBeGreaterThanOrEqual(250);
    expect(r.byKind.keepAlive.maxGapMs).toBeGreaterThanOrEqual(250);
    expect(r.maxGapAt).toBeGreaterThanOrEqual(r.startedAt);
    expect(r.maxGapAt).toBeLessThan(stallEnd);
    expect(r.slowestMs).toBeGreaterThanOrEqual(250);
  });

  it('stops by itself after maxMs', async () => {
    const { port } = await serve((_req, res) => res.end('ok'));
    const t = start({ port, clients: 1, maxMs: 150, pollMs: 5 });
    await t.done;
    const r = t.snapshot();
    expect(r.running).toBe(false);
    expect(r.ok).toBeGreaterThan(0);
    await sleep(30);
    expect((await t.stop()).requests).toBe(r.requests);
  });

  it('refuses anything but loopback', () => {
    for (const url of [
      'http://example.com/',
      'http://127.0.0.1.nip.io/',
      'http://localhost@example.com/',
      'https://127.0.0.1/',
      'http://10.0.0.1:3000/',
      'nonsense',
    ])
      expect(() => startTraffic({ url }), url).toThrow(/loopback URLs only/);
    for (const url of ['http://127.0.0.1:3001/', 'http://localhost:3001/x', 'http://[::1]:3001/']) expect(loopbackUrl(url).href).toBe(url);
    expect(() => startTraffic({})).toThrow(/url or port/);
  });
});

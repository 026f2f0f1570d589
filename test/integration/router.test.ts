/**
 * The router on its own, in-process, against real HTTP servers on 127.0.0.1: what passes through
 * (headers, streamed bodies both ways, server-sent events, WebSockets), what a switch does to traffic
 * (keep-alive load over many route changes: 0 failures), hold and its bound, and the retry of a request
 * whose upstream connection died before it answered. Counts and states, not timings.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { Router } from '../../src/router/router.js';
import type { Upstream } from '../../src/router/protocol.js';
import { freePort } from '../helpers/sandbox.js';

const RELEASE_A = '20261201T100000Z-aaaaaaa';
const RELEASE_B = '20261201T100001Z-bbbbbbb';

interface Upstreamer {
  port: number;
  server: http.Server;
  wss: WebSocketServer;
  seen: http.IncomingHttpHeaders[];
  close(): Promise<void>;
}

/** A release stand-in: answers with its name, echoes uploads, streams, SSE, WebSocket echo. */
async function upstream(name: string, port?: number, onRequest?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean): Promise<Upstreamer> {
  const seen: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.headers);
    if (onRequest?.(req, res)) return;
    if (req.url === '/upload') {
      const h = crypto.createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        h.update(c);
      });
      req.on('end', () => res.end(JSON.stringify({ name, bytes: n, sha256: h.digest('hex') })));
      return;
    }
    if (req.url === '/stream') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first\n');
      // The second chunk only after the client confirms the first arrived: a buffering proxy deadlocks here.
      const t = setInterval(() => {
        if (streamGate.open) {
          clearInterval(t);
          res.end('second\n');
        }
      }, 10);
      return;
    }
    if (req.url === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let i = 0;
      const t = setInterval(() => {
        res.write(`data: ${name}-${i++}\n\n`);
        if (i === 3) {
          clearInterval(t);
          res.end();
        }
      }, 20);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'keep-alive': 'timeout=5', 'x-upstream': name });
    res.end(`hello from ${name}\n`);
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m: Buffer) => ws.send(`${name}:${m.toString()}`)));
  await new Promise<void>((r) => server.listen(port ?? 0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    wss,
    seen,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        server.close(() => r());
        server.closeIdleConnections();
      }),
  };
}

const streamGate = { open: false };

function request(port: number, opts: { path?: string; method?: string; headers?: Record<string, string>; body?: Buffer; agent?: http.Agent } = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: opts.path ?? '/', method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('router (in-process, real HTTP on 127.0.0.1)', () => {
  let router: Router;
  let port: number;
  let a: Upstreamer;
  const persisted: Upstream[] = [];

  beforeAll(async () => {
    port = await freePort();
    a = await upstream('A');
    router = new Router({
      app: 'frontend-dev',
      port,
      host: '127.0.0.1',
      holdMs: 3_000,
      maxHeld: 1000,
      persist: async (r) => void persisted.push(r.live),
      log: () => undefined,
    });
    await router.listen();
    await router.route({ live: { port: a.port, release: RELEASE_A } });
  });
  afterAll(async () => {
    await router?.close(1_000);
    await a?.close();
  });

  it('passes the request headers through, drops hop-by-hop ones both ways', async () => {
    const r = await request(port, {
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-custom': 'kept', connection: 'keep-alive, x-hop', 'x-hop': 'dropped', 'proxy-connection': 'x' },
    });
    expect(r.status).toBe(200);
    expect(r.body).toBe('hello from A\n');
    const h = a.seen[a.seen.length - 1];
    expect(h['x-forwarded-for']).toBe('203.0.113.9');
    expect(h['x-custom']).toBe('kept');
    expect(h['x-hop']).toBeUndefined();
    expect(h['proxy-connection']).toBeUndefined();
    expect(h.host).toBe(`127.0.0.1:${port}`);
    // The upstream's Keep-Alive hint is its connection's, not ours.
    expect(r.headers['keep-alive']).toBeUndefined();
    expect(r.headers['x-upstream']).toBe('A');
    expect(persisted).toEqual([{ port: a.port, release: RELEASE_A }]);
  });

  it('streams a response (no buffering), server-sent events and a multi-megabyte upload', async () => {
    streamGate.open = false;
    const chunks = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = [];
      http
        .get({ host: '127.0.0.1', port, path: '/stream', agent: false }, (res) => {
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            got.push(d);
            streamGate.open = true;
          });
          res.on('end', () => resolve(got));
        })
        .on('error', reject);
    });
    expect(chunks.join('')).toBe('first\nsecond\n');
    expect(chunks.length).toBeGreaterThanOrEqual(2);

    const sse = await request(port, { path: '/events' });
    expect(sse.headers['content-type']).toBe('text/event-stream');
    expect(sse.body).toBe('data: A-0\n\ndata: A-1\n\ndata: A-2\n\n');

    const body = crypto.randomBytes(8 * 1024 * 1024);
    const up = await request(port, { path: '/upload', method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    expect(JSON.parse(up.body)).toEqual({ name: 'A', bytes: body.length, sha256: crypto.createHash('sha256').update(body).digest('hex') });
  });

  it('a WebSocket echoes through; on a switch it stays on its release until the drain closes it with 1001', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const echo = (sock: WebSocket, text: string) =>
      new Promise<string>((resolve) => {
        sock.once('message', (m: Buffer) => resolve(m.toString()));
        sock.send(text);
      });
    expect(await echo(ws, 'ping')).toBe('A:ping');
    const b = await upstream('B');
    try {
      await router.route({ live: { port: b.port, release: RELEASE_B } });
      // New requests go to B; the open WebSocket still talks to A.
      expect((await request(port)).body).toBe('hello from B\n');
      expect(await echo(ws, 'still')).toBe('A:still');
      const ws2 = new WebSocket(`ws://127.0.0.1:${port}/ws`);
      await new Promise((r, j) => ws2.once('open', r).once('error', j));
      expect(await echo(ws2, 'new')).toBe('B:new');
      const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
      const drained = await router.drain(a.port, 1_000);
      expect(drained).toMatchObject({ drained: true, abandoned: 0, websocketsClosed: 1 });
      expect(await closed).toBe(1001);
      expect(ws2.readyState).toBe(WebSocket.OPEN);
      ws2.close();
      // And back to A (a rollback) is one route change.
      await router.route({ live: { port: a.port, release: RELEASE_A } });
      expect((await request(port)).body).toBe('hello from A\n');
      await router.drain(b.port, 1_000);
    } finally {
      await b.close();
    }
  });

  it('0 failed requests over 20 switches under keep-alive load plus a fresh-connection poller', async () => {
    const agents = Array.from({ length: 4 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const loop = async (agent: http.Agent | undefined) => {
      while (running) {
        try {
          const r = await request(port, { agent });
          if (r.status === 200 && r.body.startsWith('hello from')) ok++;
          else failures.push(`status ${r.status}`);
        } catch (err) {
          failures.push((err as NodeJS.ErrnoException).code ?? String(err));
        }
      }
    };
    const loops = [...agents.map((ag) => loop(ag)), loop(undefined)];
    let current = { up: a, release: RELEASE_A, stop: false };
    const spare: Upstreamer[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const next = await upstream(`S${i}`);
        spare.push(next);
        await sleep(30);
        const release = `20261201T1001${String(i).padStart(2, '0')}Z-${crypto.randomBytes(4).toString('hex').slice(0, 7)}`;
        await router.route({ live: { port: next.port, release } });
        const old = current;
        await router.drain(old.up.port, 5_000);
        // The old release stops like Next does on SIGINT: no new connections, idle ones closed.
        if (old.up !== a) await old.up.close();
        current = { up: next, release, stop: false };
      }
      await sleep(50);
    } finally {
      running = false;
      await Promise.all(loops);
      for (const ag of agents) ag.destroy();
    }
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(100);
    // back to A for the next tests
    await router.route({ live: { port: a.port, release: RELEASE_A } });
    await router.drain(current.up.port, 1_000);
    for (const s of spare) await s.close();
  });

  it('retries once, on a fresh connection, a GET whose upstream died before answering; not a POST', async () => {
    let calls = 0;
    const flaky = await upstream('F', undefined, (req, res) => {
      calls++;
      if (req.headers['x-die'] && calls % 2 === 1) {
        req.socket.destroy(); // like a process SIGKILLed mid-request
        return true;
      }
      void res;
      return false;
    });
    try {
      await router.route({ live: { port: flaky.port, release: RELEASE_B } });
      const r = await request(port, { headers: { 'x-die': '1' } });
      expect(r.status).toBe(200);
      expect(calls).toBe(2);
      calls = 0;
      const p = await request(port, { method: 'POST', path: '/upload', body: Buffer.from('x'), headers: { 'x-die': '1' } });
      expect(p.status).toBe(502);
      expect(calls).toBe(1);
    } finally {
      await router.route({ live: { port: a.port, release: RELEASE_A } });
      await router.drain(flaky.port, 1_000);
      await flaky.close();
    }
  });

  it('an upstream that dies mid-response resets the client connection (no hang) and counts as a 5xx', async () => {
    const cut = await upstream('C', undefined, (req, res) => {
      if (!req.headers['x-cut']) return false;
      // Headers and part of the body, then the process "dies": the rest never comes.
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1000' });
      res.write('partial');
      setTimeout(() => req.socket.destroy(), 50);
      return true;
    });
    try {
      await router.route({ live: { port: cut.port, release: RELEASE_B } });
      const before = router.status().stats.find((s) => s.release === RELEASE_B)?.errors5xx ?? 0;
      // Without the reset the client would wait for the other 993 bytes until its own timeout.
      const outcome = await new Promise<string>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, headers: { 'x-cut': '1' }, agent: false, timeout: 10_000 }, (res) => {
          res.on('data', () => undefined);
          res.on('end', () => resolve('end'));
          res.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
          res.on('aborted', () => resolve('aborted'));
        });
        req.on('timeout', () => {
          req.destroy();
          resolve('timeout');
        });
        req.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
      });
      expect(outcome).toMatch(/^(aborted|error ECONNRESET)$/);
      await sleep(50);
      expect(router.status().stats.find((s) => s.release === RELEASE_B)!.errors5xx).toBe(before + 1);
      // The router itself serves on: the next request answers.
      expect((await request(port)).status).toBe(200);
    } finally {
      await router.route({ live: { port: a.port, release: RELEASE_A } });
      await router.drain(cut.port, 1_000);
      await cut.close();
    }
  });

  it('holds requests while the live upstream refuses connections, then answers; past the bound: 503 + Retry-After', async () => {
    const p = await freePort();
    await router.route({ live: { port: p, release: RELEASE_B } });
    await router.drain(a.port, 1_000);
    // Nothing listens on p yet: requests wait; the upstream comes up 500 ms later (PM2 restarting the app).
    const pending = Promise.all([request(port), request(port, { method: 'POST', path: '/upload', body: Buffer.from('held body') })]);
    await sleep(500);
    expect(router.status().held).toBeGreaterThanOrEqual(1);
    const late = await upstream('L', p);
    const [g, post] = await pending;
    expect(g.status).toBe(200);
    expect(g.body).toBe('hello from L\n');
    expect(JSON.parse(post.body)).toMatchObject({ name: 'L', bytes: 9 });
    await late.close();
    // Past the hold bound (3 s here), a 503 that says when to come back.
    const r = await request(port);
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('2');
    await router.route({ live: { port: a.port, release: RELEASE_A } });
    await router.drain(p, 100);
    expect((await request(port)).status).toBe(200);
  });

  it('counts requests, 5xx and latency per release', () => {
    const stats = router.status().stats;
    const a1 = stats.find((s) => s.release === RELEASE_A)!;
    expect(a1.requests).toBeGreaterThan(0);
    expect(a1.p50Ms).not.toBeNull();
    const b1 = stats.find((s) => s.release === RELEASE_B)!;
    expect(b1.errors5xx).toBeGreaterThanOrEqual(2); // the 502 of the POST and the 503 past the bound
  });
});

/**
 * The front door: one HTTP server on the app's public port that forwards every request to the live
 * release's private port (http-proxy-3 does the HTTP and WebSocket proxying; Node's parser does the HTTP).
 *
 * - A switch is one assignment: requests that arrive after `route()` go to the new upstream; requests in
 *   flight on the old one finish there (it drains), and no connection to it is reused.
 * - A request that fails before any response byte arrived (a keep-alive connection the upstream closed as
 *   we reused it, the upstream killed mid-request) is sent again once on a fresh connection, for methods
 *   that are safe to repeat and carry no body.
 * - While the live upstream refuses connections (PM2 restarting it), requests wait up to `holdMs`, then
 *   get a 503 with Retry-After. The router answers nothing of its own on the public port otherwise.
 * - During a canary soak a share of visitors (sticky: a cookie, else a hash of the client address) goes to
 *   the canary upstream; the previous live release can stay warm and unrouted (standby) so that a route
 *   back to it is one assignment, with no boot.
 * - Nothing is logged per request; per-release counts and latency go to Metrics.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import { Metrics } from './metrics.js';
import { bucketFromAddress, bucketFromCookie, CANARY_COOKIE, inCanary, sharePercent, type Route, type RouterStatus, type Upstream } from './protocol.js';
import { Target } from './target.js';

export interface RouterOptions {
  app: string;
  port: number;
  host?: string;
  holdMs: number;
  maxHeld: number;
  /** Called (awaited) before a new route is applied: the state file must say so first. */
  persist: (route: Route) => Promise<void>;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** Methods that may be sent twice (RFC 9110 §9.2.2) when the first try failed before any answer. */
const RETRYABLE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** RFC 9110 §7.6.1: hop-by-hop fields are not forwarded (plus any listed in Connection). */
const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'trailer',
];
const RETRY_AFTER_S = '2';
/**
 * Tries after the first for a request that may be repeated: a keep-alive race needs one; a process killed
 * mid-request can also reset the connection the retry opened (its listen backlog dies with it).
 */
const MAX_RETRIES = 3;

function hasBody(req: http.IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

function hopHeaders(headers: http.IncomingHttpHeaders): string[] {
  const listed = String(headers.connection ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  return [...HOP_BY_HOP, ...listed];
}

export class Router {
  readonly metrics = new Metrics();
  readonly server: http.Server;
  private live: Target | undefined;
  private canary: { target: Target; share: number } | undefined;
  /** Warm, unrouted upstreams (the previous release during a soak), by port. */
  private readonly standby = new Map<number, Target>();
  private readonly draining = new Map<number, Target>();
  /** Per request: the visitor's bucket and whether the response should set the visitor cookie. */
  private readonly visitors = new WeakMap<http.IncomingMessage, { bucket: number; setCookie: boolean }>();
  /** Responses whose upstream died after they had begun: counted as failed (502), whatever status was sent. */
  private readonly cutShort = new WeakSet<http.ServerResponse>();
  private readonly proxy = createProxyServer({ xfwd: false, ws: true });
  private listening = false;
  /** Set by close(): every answer from now on says `Connection: close`, so clients reconnect elsewhere. */
  private closing = false;
  private readonly wsTargets = new WeakMap<Duplex, Target>();
  private readonly startedAt = new Date().toISOString();

  constructor(private readonly opts: RouterOptions) {
    this.server = http.createServer((req, res) => this.handle(req, res));
    // Longer than the usual front proxy's idle reuse, so Apache never sends on a connection we just closed.
    this.server.keepAliveTimeout = 65_000;
    this.server.headersTimeout = 66_000;
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head));
    this.server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
    // http-proxy-3 throws on errors nobody listens to; every call passes its own callback, this is a net.
    this.proxy.on('error', (err: Error) => this.opts.log('warn', `proxy error: ${err.message}`));
    // Pair each proxied WebSocket's client socket with its upstream socket, so a drain can close both.
    this.proxy.on('proxyReqWs', (proxyReq: http.ClientRequest, _req: http.IncomingMessage, socket: Duplex) => {
      proxyReq.once('upgrade', (_res: http.IncomingMessage, proxySocket: Duplex) => {
        const t = this.wsTargets.get(socket);
        if (t?.websockets.has(socket)) t.websockets.set(socket, proxySocket);
      });
    });
    this.proxy.on('proxyRes', (proxyRes: http.IncomingMessage, req: http.IncomingMessage, res: http.ServerResponse) => {
      for (const h of hopHeaders(proxyRes.headers)) if (h !== 'transfer-encoding') delete proxyRes.headers[h];
      // Closing (replaced by another router): the client's next request goes on a new connection, which the
      // port's other router accepts. http-proxy-3 only sets Connection when the answer has none.
      if (this.closing) proxyRes.headers.connection = 'close';
      // The upstream died mid-response (it was killed): the answer cannot be retried, and http-proxy-3 would
      // leave the client waiting for the rest forever. Reset the client's connection, as the upstream's was.
      proxyRes.once('close', () => {
        if (proxyRes.complete || res.writableEnded || res.destroyed) return;
        this.cutShort.add(res);
        res.destroy();
      });
      const v = this.visitors.get(req);
      if (v?.setCookie) {
        // The visitor keeps its bucket for the soak and after: its next page and chunks come from one build.
        const cookie = `${CANARY_COOKIE}=${v.bucket}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax`;
        const prev = proxyRes.headers['set-cookie'];
        proxyRes.headers['set-cookie'] = prev ? [...prev, cookie] : [cookie];
      }
    });
  }

  /** Binds the public port, retrying while another process (the app being taken over) still holds it. */
  async listen(signal?: AbortSignal): Promise<void> {
    let warned = 0;
    while (!signal?.aborted) {
      try {
        await new Promise<void>((resolve, reject) => {
          const onError = (err: Error) => {
            this.server.off('listening', onListening);
            reject(err);
          };
          const onListening = () => {
            this.server.off('error', onError);
            resolve();
          };
          this.server.once('error', onError);
          this.server.once('listening', onListening);
          this.server.listen({ port: this.opts.port, host: this.opts.host });
        });
        this.listening = true;
        this.opts.log('info', `listening on ${this.opts.host ?? '*'}:${this.opts.port}`);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        if (Date.now() - warned > 10_000) {
          warned = Date.now();
          this.opts.log('warn', `port ${this.opts.port} is in use: waiting for it to be released`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** The route at start (from the state file): applied without persisting again. */
  restore(live: Upstream | null, canary?: Route['canary']): void {
    if (live) this.live = new Target(live, this.opts);
    if (live && canary) this.canary = { target: new Target(canary.upstream, this.opts), share: canary.share };
  }

  /**
   * Routes new requests to `route.live` (and the canary's share of visitors to `route.canary`). An upstream
   * that is neither any more drains, unless its port is in `keep` (it stays warm, unrouted: standby).
   * An upstream that stays in a role, or comes back from standby, keeps its connection pool.
   */
  async route(route: Route, keep: number[] = []): Promise<void> {
    await this.opts.persist(route);
    const prev = this.live;
    const all = new Map<number, Target>();
    for (const t of [...this.draining.values(), ...this.standby.values(), ...(this.canary ? [this.canary.target] : []), ...(prev ? [prev] : [])])
      all.set(t.port, t);
    const take = (u: Upstream): Target => {
      const t = all.get(u.port);
      all.delete(u.port);
      // Same process, not draining: reuse its pool. A port that was draining (or now runs another release) gets a fresh one.
      if (t && t.release === u.release && !t.draining) return t;
      if (t) t.destroy();
      this.draining.delete(u.port);
      return new Target(u, this.opts);
    };
    this.live = take(route.live);
    this.canary = route.canary ? { target: take(route.canary.upstream), share: route.canary.share } : undefined;
    this.standby.clear();
    for (const [port, t] of all) {
      if (t.draining) continue;
      if (keep.includes(port)) this.standby.set(port, t);
      else {
        t.retire();
        this.draining.set(port, t);
      }
    }
    const canaryText = route.canary
      ? `, ${sharePercent(route.canary.share)} of visitors to ${route.canary.upstream.release} on :${route.canary.upstream.port}`
      : '';
    this.opts.log(
      'info',
      `routing to ${route.live.release} on 127.0.0.1:${route.live.port}${canaryText}${prev && prev.port !== route.live.port ? ` (was ${prev.release} on :${prev.port})` : ''}`,
    );
  }

  /** Waits for the draining upstream on `port` (bounded), closes its WebSockets and forgets it. */
  async drain(port: number, timeoutMs: number): Promise<{ drained: boolean; abandoned: number; websocketsClosed: number }> {
    if (this.live?.port === port || this.canary?.target.port === port) throw new Error(`port ${port} is routed: route elsewhere first`);
    const standby = this.standby.get(port);
    if (standby) {
      this.standby.delete(port);
      standby.retire();
      this.draining.set(port, standby);
    }
    const t = this.draining.get(port);
    if (!t) return { drained: true, abandoned: 0, websocketsClosed: 0 };
    const r = await t.drain(timeoutMs);
    this.draining.delete(port);
    t.destroy();
    this.opts.log('info', `drained ${t.release} on :${port}${r.drained ? '' : ` (timeout: ${r.abandoned} request(s) still in flight)`}`);
    return r;
  }

  status(): RouterStatus {
    const ups = [
      ...(this.live ? [[this.live, 'live'] as const] : []),
      ...(this.canary ? [[this.canary.target, 'canary'] as const] : []),
      ...[...this.standby.values()].map((t) => [t, 'standby'] as const),
      ...[...this.draining.values()].map((t) => [t, 'draining'] as const),
    ];
    return {
      ok: true,
      pid: process.pid,
      app: this.opts.app,
      listening: this.listening,
      port: this.opts.port,
      host: this.opts.host ?? null,
      live: this.live?.upstream ?? null,
      canary: this.canary ? { upstream: this.canary.target.upstream, share: this.canary.share } : null,
      upstreams: ups.map(([t, role]) => ({ ...t.upstream, role, inflight: t.inflight, websockets: t.websockets.size })),
      held: Target.heldCount,
      stats: this.metrics.stats(),
      startedAt: this.startedAt,
    };
  }

  /**
   * Stops accepting, lets requests in flight finish (bounded), closes WebSockets. Keep-alive clients are
   * not cut: each gets its next answer with `Connection: close` (a connection idle for `idleGraceMs` is
   * closed then), so a client never sends on a connection the router has just closed while another router
   * shares the port (a replacement).
   */
  async close(timeoutMs: number, idleGraceMs = 1_000): Promise<void> {
    this.closing = true;
    // net's close, not http's: http.Server.close() also closes idle keep-alive connections at once.
    const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(this.server, () => resolve()));
    const grace = setTimeout(() => this.server.closeIdleConnections(), Math.min(idleGraceMs, timeoutMs));
    const all = [...(this.live ? [this.live] : []), ...(this.canary ? [this.canary.target] : []), ...this.standby.values(), ...this.draining.values()];
    await Promise.race([closed, new Promise((r) => setTimeout(r, timeoutMs))]);
    clearTimeout(grace);
    for (const t of all) {
      t.closeWebsockets();
      t.destroy();
    }
    this.server.closeAllConnections();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const started = performance.now();
    if (this.closing) res.shouldKeepAlive = false;
    const target = this.pick(req);
    if (!target) return unavailable(res, 'no release is live yet');
    // One account per request, whichever upstream finally answers it.
    const attempt = { target };
    target.begin();
    res.once('close', () => {
      attempt.target.end();
      this.metrics.record(attempt.target.release, this.cutShort.has(res) ? 502 : res.statusCode, performance.now() - started);
    });
    const retryable = RETRYABLE.has(req.method ?? '') && !hasBody(req);
    this.forward(req, res, attempt, target.agent, retryable ? MAX_RETRIES : 0);
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, attempt: { target: Target }, agent: http.Agent, retries: number): void {
    const target = attempt.target;
    // Hop-by-hop fields are the client's connection's, not the upstream's: http-proxy-3 copies the request's
    // headers when web() is called, so they are taken out around that call and put back for the response.
    const saved: [string, string | string[] | undefined][] = [];
    for (const h of hopHeaders(req.headers)) {
      if (req.headers[h] !== undefined && h !== 'transfer-encoding') {
        saved.push([h, req.headers[h]]);
        delete req.headers[h];
      }
    }
    void this.proxy.web(req, res, { target: { host: '127.0.0.1', port: target.port, protocol: 'http:' }, agent }, (err: Error) => {
      const code = (err as NodeJS.ErrnoException).code;
      if (res.headersSent || res.writableEnded) {
        res.destroy();
        return;
      }
      const next = this.pick(req);
      // The try failed before any answer: again on a fresh connection to whatever is live now (it holds
      // while the upstream refuses connections). More than once only for an upstream that died under us.
      if (retries > 0 && next && code !== 'EHOLDTIMEOUT' && !res.destroyed) {
        target.end();
        next.begin();
        attempt.target = next;
        const again = () => this.forward(req, res, attempt, next.freshAgent, retries - 1);
        if (retries === MAX_RETRIES) return again();
        return void setTimeout(again, 50);
      }
      if (code === 'EHOLDTIMEOUT' || code === 'ECONNREFUSED' || code === 'ENOTLIVE') return unavailable(res, 'the release is not answering');
      res.writeHead(502, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end('Bad Gateway\n');
    });
    for (const [h, v] of saved) req.headers[h] = v;
  }

  /**
   * The upstream for this request: the live one, or the canary for visitors in its share. A visitor without
   * the cookie gets its bucket from its address (Apache's X-Forwarded-For, else the socket's) and the cookie.
   */
  private pick(req: http.IncomingMessage): Target | undefined {
    const canary = this.canary;
    if (!canary) return this.live;
    let v = this.visitors.get(req);
    if (!v) {
      const fromCookie = bucketFromCookie(req.headers.cookie);
      v = fromCookie !== undefined ? { bucket: fromCookie, setCookie: false } : { bucket: bucketFromAddress(clientAddress(req)), setCookie: true };
      this.visitors.set(req, v);
    }
    return inCanary(v.bucket, canary.share) ? canary.target : this.live;
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const target = this.pick(req);
    if (!target) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\nconnection: close\r\n\r\n');
      return;
    }
    target.websockets.set(socket, undefined);
    this.wsTargets.set(socket, target);
    socket.once('close', () => target.websockets.delete(socket));
    void this.proxy.ws(req, socket, head, { target: { host: '127.0.0.1', port: target.port, protocol: 'http:' } }, () => {
      if (!socket.destroyed) socket.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\n');
    });
  }
}

function clientAddress(req: http.IncomingMessage): string {
  const xff = req.headers['x-forwarded-for'];
  const first = (Array.isArray(xff) ? xff[0] : xff)?.split(',')[0]?.trim();
  return first || req.socket.remoteAddress || '';
}

function unavailable(res: http.ServerResponse, why: string): void {
  res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': RETRY_AFTER_S, 'cache-control': 'no-store' });
  res.end(`Service Unavailable: ${why}\n`);
}

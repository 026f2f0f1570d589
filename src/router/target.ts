/**
 * One upstream: a release process on a private loopback port. It owns the pool of connections to that
 * process, counts the requests in flight, and drains: once it is no longer live, no connection to it is
 * reused (its idle sockets are destroyed and every socket freed later too), in-flight requests finish,
 * and at the end its WebSockets are closed with a close frame.
 *
 * Connecting holds instead of failing: when the process refuses connections (PM2 restarting a crashed
 * app), the connect is retried until it answers or the hold deadline passes, so the request waits rather
 * than fails. All waiting connects share one probe loop.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Upstream } from './protocol.js';

const HOST = '127.0.0.1';
/** Idle pooled sockets are closed before Node's and Next's 5 s keep-alive timeout can close them under us. */
const IDLE_SOCKET_MS = 4_000;
const PROBE_MS = 25;

export class HoldTimeout extends Error {
  readonly code = 'EHOLDTIMEOUT';
  constructor(port: number, ms: number) {
    super(`upstream 127.0.0.1:${port} did not accept connections within ${ms} ms`);
  }
}

export class NotLive extends Error {
  readonly code = 'ENOTLIVE';
  constructor(port: number) {
    super(`upstream 127.0.0.1:${port} is no longer live`);
  }
}

export interface TargetOptions {
  holdMs: number;
  /** Most connects that may wait for the upstream at once; more fail at once (503). */
  maxHeld: number;
}

type CreateConnection = (options: net.NetConnectOpts, cb: (err: Error | null, socket?: Duplex) => void) => Duplex | undefined;

export class Target {
  readonly port: number;
  readonly release: string;
  /** Keep-alive pool for requests. */
  readonly agent: http.Agent;
  /** One-shot connections for retries: a fresh socket, never pooled. */
  readonly freshAgent: http.Agent;
  inflight = 0;
  draining = false;
  /** Client sockets of WebSockets proxied to this upstream, with their upstream sockets. */
  readonly websockets = new Map<Duplex, Duplex | undefined>();
  private down = false;
  private upWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private static held = 0;

  constructor(
    upstream: Upstream,
    private readonly opts: TargetOptions,
  ) {
    this.port = upstream.port;
    this.release = upstream.release;
    const connect: CreateConnection = (_options, cb) => {
      this.connect().then(
        (socket) => cb(null, socket),
        (err: Error) => cb(err),
      );
      return undefined;
    };
    this.agent = new http.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS, scheduling: 'lifo' });
    this.freshAgent = new http.Agent({ keepAlive: false });
    // Node's Agent accepts an asynchronous createConnection (it calls back once the socket exists).
    (this.agent as unknown as { createConnection: CreateConnection }).createConnection = connect;
    (this.freshAgent as unknown as { createConnection: CreateConnection }).createConnection = connect;
    // A socket that comes back to the pool of a draining upstream is never reused.
    this.agent.on('free', (socket: net.Socket) => {
      if (this.draining) socket.destroy();
    });
  }

  static get heldCount(): number {
    return Target.held;
  }

  get upstream(): Upstream {
    return { port: this.port, release: this.release };
  }

  begin(): void {
    this.inflight++;
  }

  end(): void {
    this.inflight--;
    if (this.inflight <= 0) {
      this.inflight = 0;
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  /** A TCP connection to the upstream, waiting (bounded) while it refuses connections. */
  private async connect(): Promise<net.Socket> {
    const deadline = Date.now() + this.opts.holdMs;
    let holding = false;
    try {
      while (true) {
        if (this.down) {
          if (!holding) {
            if (Target.held >= this.opts.maxHeld) throw new HoldTimeout(this.port, 0);
            holding = true;
            Target.held++;
          }
          await this.waitUp(deadline);
        }
        if (this.draining) throw new NotLive(this.port);
        try {
          return await tcpConnect(this.port);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ECONNREFUSED' && code !== 'ECONNRESET') throw err;
          if (Date.now() >= deadline) throw new HoldTimeout(this.port, this.opts.holdMs);
          this.markDown();
        }
      }
    } finally {
      if (holding) Target.held--;
    }
  }

  private markDown(): void {
    if (this.down) return;
    this.down = true;
    void this.probe();
  }

  /** One probe loop per upstream while it is down; every waiting connect resumes when it answers. */
  private async probe(): Promise<void> {
    while (this.down && !this.draining) {
      try {
        (await tcpConnect(this.port)).destroy();
        this.down = false;
      } catch {
        await sleep(PROBE_MS);
      }
    }
    this.down = false;
    const w = this.upWaiters;
    this.upWaiters = [];
    for (const f of w) f();
  }

  private waitUp(deadline: number): Promise<void> {
    if (!this.down) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          const i = this.upWaiters.indexOf(done);
          if (i >= 0) this.upWaiters.splice(i, 1);
          reject(new HoldTimeout(this.port, this.opts.holdMs));
        },
        Math.max(0, deadline - Date.now()),
      );
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.upWaiters.push(done);
    });
  }

  /** Stops reusing connections to this upstream; in-flight requests carry on. */
  retire(): void {
    if (this.draining) return;
    this.draining = true;
    this.destroyIdle();
  }

  private destroyIdle(): void {
    for (const list of Object.values(this.agent.freeSockets)) for (const s of list ?? []) s.destroy();
  }

  /**
   * Waits until no request is in flight or `timeoutMs` passed, then closes the WebSockets (close frame
   * 1001 "going away" to the client, then both sockets ended). Returns what was left.
   */
  async drain(timeoutMs: number): Promise<{ drained: boolean; abandoned: number; websocketsClosed: number }> {
    this.retire();
    let drained = this.inflight === 0;
    if (!drained) {
      drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    }
    const abandoned = this.inflight;
    const websocketsClosed = this.closeWebsockets();
    this.destroyIdle();
    return { drained, abandoned, websocketsClosed };
  }

  closeWebsockets(): number {
    let n = 0;
    for (const [client, upstream] of this.websockets) {
      n++;
      closeWebsocket(client, upstream);
    }
    this.websockets.clear();
    return n;
  }

  destroy(): void {
    this.retire();
    this.agent.destroy();
    this.freshAgent.destroy();
  }
}

// A WebSocket close frame from the server side (unmasked): FIN + opcode 8, 2-byte payload 1001 (going away).
const CLOSE_TO_CLIENT = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

/** Ends a proxied WebSocket: upstream forwarding stops, the client gets a close frame, then both sockets end. */
export function closeWebsocket(client: Duplex, upstream: Duplex | undefined): void {
  if (upstream) {
    upstream.unpipe(client);
    upstream.end();
  }
  if (!client.destroyed) {
    client.write(CLOSE_TO_CLIENT);
    client.end();
    setTimeout(() => client.destroy(), 2_000).unref();
  }
  if (upstream) setTimeout(() => upstream.destroy(), 2_000).unref();
}

function tcpConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // No Nagle: a request's head and a small body go out at once (Node's own http.Agent sets this too).
    const s = net.connect({ host: HOST, port, noDelay: true });
    const fail = (err: Error) => {
      s.destroy();
      reject(err);
    };
    s.once('error', fail);
    s.setTimeout(5_000, () => fail(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })));
    s.once('connect', () => {
      s.off('error', fail);
      s.setTimeout(0);
      resolve(s);
    });
  });
}

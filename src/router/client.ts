/**
 * pm2-release's side of the router's control channel (HTTP on the Unix socket in the releases dir), and
 * the router's state file, which pm2-release writes itself only while no router runs (the first route of
 * a take-over). The shapes come from router/protocol.ts, shared with the router.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import writeFileAtomic from 'write-file-atomic';
import {
  parseRouterState,
  ROUTER_STATE_VERSION,
  routerPaths,
  type Canary,
  type ControlRequest,
  type DrainResult,
  type RouterPaths,
  type RouterState,
  type RouterStatus,
  type Upstream,
} from './protocol.js';

export class RouterUnavailable extends Error {
  readonly code = 'ROUTER_UNAVAILABLE';
}

export class RouterControl {
  readonly paths: RouterPaths;
  constructor(
    releasesDir: string,
    readonly app: string,
  ) {
    this.paths = routerPaths(releasesDir, app);
  }

  /** One request; with `waitMs`, retried while the router is not there (PM2 restarting it). */
  async send<T>(req: ControlRequest, opts: { waitMs?: number; timeoutMs?: number } = {}): Promise<T> {
    const deadline = Date.now() + (opts.waitMs ?? 0);
    while (true) {
      try {
        return await this.once<T>(req, opts.timeoutMs ?? 10_000);
      } catch (err) {
        if (!(err instanceof RouterUnavailable) || Date.now() >= deadline) throw err;
        await sleep(100);
      }
    }
  }

  status(waitMs = 0): Promise<RouterStatus> {
    return this.send<RouterStatus>({ op: 'status' }, { waitMs });
  }

  /** Routes every visitor to `live` (a canary share to `canary`); ports in `keep` stay warm, unrouted. */
  route(live: Upstream, opts: { canary?: Canary; keep?: number[]; waitMs?: number } = {}): Promise<RouterStatus> {
    return this.send<RouterStatus>({ op: 'route', live, canary: opts.canary ?? null, keep: opts.keep ?? [] }, { waitMs: opts.waitMs ?? 10_000 });
  }

  drain(port: number, timeoutMs: number): Promise<DrainResult> {
    return this.send<DrainResult>({ op: 'drain', port, timeoutMs }, { waitMs: 10_000, timeoutMs: timeoutMs + 10_000 });
  }

  /** The routing state the router persisted (undefined when there is none or it is unreadable). */
  async readState(): Promise<RouterState | undefined> {
    try {
      return parseRouterState(await fsp.readFile(this.paths.state, 'utf8'));
    } catch {
      return undefined;
    }
  }

  /** Seeds the state file before the router first starts (it reads it at start). */
  async writeState(live: Upstream, at: Date): Promise<void> {
    await fsp.mkdir(this.paths.dir, { recursive: true, mode: 0o700 });
    const state: RouterState = { version: ROUTER_STATE_VERSION, app: this.app, live, updatedAt: at.toISOString() };
    await writeFileAtomic(this.paths.state, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  }

  socketExists(): boolean {
    return fs.existsSync(this.paths.socket);
  }

  private once<T>(body: ControlRequest, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        // A connection per request (agent: false): Node's global agent keeps connections alive, and a pooled one
        // would still reach a router that a replacement has taken the socket path from.
        {
          socketPath: this.paths.socket,
          path: '/control',
          method: 'POST',
          agent: false,
          headers: { 'content-type': 'application/json' },
          timeout: timeoutMs,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            let parsed: { ok?: boolean; error?: string } | undefined;
            try {
              parsed = JSON.parse(text) as { ok?: boolean; error?: string };
            } catch {
              return reject(new Error(`router answered ${res.statusCode} with no JSON`));
            }
            if (res.statusCode !== 200 || !parsed?.ok) return reject(new Error(`router refused ${body.op}: ${parsed?.error ?? res.statusCode}`));
            resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`router did not answer ${body.op} within ${timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
          reject(new RouterUnavailable(`the router's control socket ${this.paths.socket} does not answer (${err.code})`));
        else reject(err);
      });
      req.end(JSON.stringify(body));
    });
  }
}

/**
 * What the router and pm2-release both need, and nothing else: where the router's files live, the shape of
 * its routing state, and the control messages. Types and pure parsing only: the router imports this module
 * and no other module of the deploy code, so a bug in a deploy can never reach the front door.
 */
import path from 'node:path';

export const ROUTER_STATE_VERSION = 1;
/** Where the router keeps its state and its control socket, inside the releases dir (mode 0700). */
export const ROUTER_DIR = '.router';

/** One release process behind the router: the private loopback port it listens on, and which release it is. */
export interface Upstream {
  port: number;
  release: string;
}

/**
 * A share of visitors sent to a release on trial (the canary of a soak), sticky per visitor: each visitor
 * has a bucket 0..9999 (from the `pm2r_bucket` cookie, else a hash of the client address) and buckets below
 * `share * 10000` go to the canary.
 */
export interface Canary {
  upstream: Upstream;
  /** 0 < share < 1. */
  share: number;
}

/** The routing state: written atomically by the router on every change and read when it starts. */
export interface RouterState {
  version: typeof ROUTER_STATE_VERSION;
  app: string;
  /** The release new requests go to; null before the first deploy. */
  live: Upstream | null;
  /** During a canary soak: the release that gets a share of the visitors. */
  canary?: Canary | null;
  updatedAt: string;
}

/** A route: where every visitor goes (`live`), and the visitors of a canary share. */
export interface Route {
  live: Upstream;
  canary?: Canary | null;
}

export interface RouterPaths {
  dir: string;
  state: string;
  socket: string;
}

export function routerPaths(releasesDir: string, app: string): RouterPaths {
  const dir = path.join(releasesDir, ROUTER_DIR);
  return { dir, state: path.join(dir, `${app}.state.json`), socket: path.join(dir, `${app}.sock`) };
}

/** The router's PM2 name: beside the app's, so `pm2 status` lists them together. */
export function routerProcessName(app: string): string {
  return `${app}-router`;
}

const RELEASE_ID = /^\d{8}T\d{6}Z-[0-9a-f]{7,40}$/;
const APP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isPort(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535;
}

export function parseUpstream(v: unknown, where = 'upstream'): Upstream {
  if (!v || typeof v !== 'object') throw new Error(`${where}: must be an object`);
  const { port, release } = v as Record<string, unknown>;
  if (!isPort(port)) throw new Error(`${where}.port: must be a TCP port`);
  if (typeof release !== 'string' || !RELEASE_ID.test(release)) throw new Error(`${where}.release: must be a release id`);
  return { port, release };
}

/** Parses a state file's text; throws one line saying what is wrong. */
export function parseRouterState(text: string): RouterState {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new Error('router state: not valid JSON');
  }
  if (!v || typeof v !== 'object') throw new Error('router state: must be an object');
  const o = v as Record<string, unknown>;
  if (o.version !== ROUTER_STATE_VERSION) throw new Error(`router state: unknown version ${String(o.version)}`);
  if (typeof o.app !== 'string' || !APP_NAME.test(o.app)) throw new Error('router state: app must be a PM2 app name');
  const live = o.live === null || o.live === undefined ? null : parseUpstream(o.live, 'router state: live');
  const canary = o.canary === null || o.canary === undefined || !live ? null : parseCanary(o.canary, live, 'router state: canary');
  return { version: ROUTER_STATE_VERSION, app: o.app, live, canary, updatedAt: typeof o.updatedAt === 'string' ? o.updatedAt : '' };
}

export function parseCanary(v: unknown, live: Upstream, where = 'canary'): Canary {
  if (!v || typeof v !== 'object') throw new Error(`${where}: must be an object`);
  const { upstream, share } = v as Record<string, unknown>;
  const up = parseUpstream(upstream, `${where}.upstream`);
  if (typeof share !== 'number' || !(share > 0 && share < 1)) throw new Error(`${where}.share: must be a number between 0 and 1 (exclusive)`);
  if (up.port === live.port) throw new Error(`${where}.upstream: must be another port than live's`);
  return { upstream: up, share };
}

/** The visitor cookie that keeps one visitor on one release during a canary soak. */
export const CANARY_COOKIE = 'pm2r_bucket';
export const BUCKETS = 10_000;

/** A visitor's bucket from the cookie header (undefined when the cookie is absent or malformed). */
export function bucketFromCookie(cookieHeader: string | undefined): number | undefined {
  if (!cookieHeader) return undefined;
  const i = cookieHeader.indexOf(`${CANARY_COOKIE}=`);
  if (i < 0 || (i > 0 && !/[;\s]/.test(cookieHeader[i - 1]))) return undefined;
  const m = /^(\d{1,4})(?:;|\s|$)/.exec(cookieHeader.slice(i + CANARY_COOKIE.length + 1));
  return m ? Number(m[1]) : undefined;
}

/** A visitor's bucket from the client address (FNV-1a, 32 bits): the same address, the same bucket. */
export function bucketFromAddress(address: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < address.length; i++) {
    h ^= address.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % BUCKETS;
}

/** Whether a bucket falls in the canary's share. */
export function inCanary(bucket: number, share: number): boolean {
  return bucket < Math.round(share * BUCKETS);
}

/** A canary share as people read it: 0.1 → "10 %", 0.125 → "12.5 %". */
export function sharePercent(share: number): string {
  return `${Math.round(share * 1000) / 10} %`;
}

/** Requests on the control socket (one JSON object per HTTP POST to /control). */
export type ControlRequest =
  | { op: 'status' }
  /**
   * Routes new requests to `live` (and a share of visitors to `canary`) at once. An upstream that was live
   * or canary and is neither now starts draining, unless `keep` names its port: then it stays warm, unrouted
   * (the previous release during a soak), and a route back to it is instant.
   */
  | { op: 'route'; live: Upstream; canary?: Canary | null; keep?: number[] }
  /** Waits until the upstream on `port` has no request in flight (bounded), then closes its WebSockets. */
  | { op: 'drain'; port: number; timeoutMs: number };

export function parseControlRequest(v: unknown): ControlRequest {
  if (!v || typeof v !== 'object') throw new Error('control: request must be an object');
  const o = v as Record<string, unknown>;
  switch (o.op) {
    case 'status':
      return { op: 'status' };
    case 'route': {
      const live = parseUpstream(o.live, 'route.live');
      const canary = o.canary === null || o.canary === undefined ? null : parseCanary(o.canary, live, 'route.canary');
      if (o.keep !== undefined && (!Array.isArray(o.keep) || o.keep.length > 4 || !o.keep.every(isPort)))
        throw new Error('route.keep: must be a list of ports');
      return { op: 'route', live, canary, keep: o.keep ?? [] };
    }
    case 'drain': {
      if (!isPort(o.port)) throw new Error('drain.port: must be a TCP port');
      const t = o.timeoutMs;
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 3_600_000) throw new Error('drain.timeoutMs: must be 0..3600000');
      return { op: 'drain', port: o.port, timeoutMs: t };
    }
    default:
      throw new Error(`control: unknown op ${JSON.stringify(o.op)}`);
  }
}

/** Live numbers for one release over the last minute. */
export interface ReleaseStats {
  release: string;
  requests: number;
  /** Requests per second over the window. */
  rps: number;
  errors5xx: number;
  /** 5xx answers / requests (0..1); 0 without requests. */
  rate5xx: number;
  p50Ms: number | null;
  p99Ms: number | null;
  windowSeconds: number;
}

export interface UpstreamStatus extends Upstream {
  /** live: every visitor not in the canary share; canary: that share; standby: warm, unrouted (a soak's previous release). */
  role: 'live' | 'canary' | 'standby' | 'draining';
  inflight: number;
  websockets: number;
}

export interface RouterStatus {
  ok: true;
  pid: number;
  app: string;
  /** True once the router listens on the public port (false while it waits for the port to be released). */
  listening: boolean;
  port: number;
  host: string | null;
  live: Upstream | null;
  canary: Canary | null;
  upstreams: UpstreamStatus[];
  /** Requests held right now because the live upstream did not answer. */
  held: number;
  stats: ReleaseStats[];
  startedAt: string;
}

export interface DrainResult {
  ok: true;
  port: number;
  drained: boolean;
  /** Requests still in flight when the drain timeout ended it. */
  abandoned: number;
  websocketsClosed: number;
}

// Types of scripts/traffic.mjs: steady loopback HTTP traffic, counted one way for the tests and the bench.

/** The two kinds of client: one connection kept open per client, or a new connection per request. */
export type ClientKind = 'keepAlive' | 'poller';

/** Which statuses count as ok; every other status is a failure ("non-ok"). */
export type OkStatus = (status: number) => boolean;

/** The default: a 2xx or a 3xx is a success. */
export function isSuccess(status: number): boolean;
/** Only a 2xx is a success (the bench's switch load, whose report counts "non-2xx"). */
export function is2xx(status: number): boolean;
/** Any status below 500 is an answer (a 404 included); only a 5xx or no answer fails (the soak bench). */
export function isAnswer(status: number): boolean;

/** `url` parsed, if it is plain HTTP to 127.0.0.1, localhost or [::1] (no credentials); throws otherwise. */
export function loopbackUrl(url: string | URL): URL;

export interface TrafficOptions {
  /** The server: a loopback URL (its path is the default path), or `port` on 127.0.0.1. Exactly one of them. */
  url?: string | URL;
  port?: number;
  /** Keep-alive clients, each its own agent with one socket (default 4). */
  clients?: number;
  /** One more client that opens a new connection per request (`Connection: close`); default true. */
  poller?: boolean;
  /** Pause of the poller between its requests, in ms (default: `pauseMs`). */
  pollMs?: number;
  /** Paths, in turn (client i starts at path i); default the URL's path, or `/`. */
  paths?: readonly string[];
  /**
   * Extra headers per request: `n` is the client's request counter (it starts at the client's index),
   * `client` its index (keep-alive clients 0 … clients-1; the poller is `clients`).
   */
  headers?: (n: number, client: number) => Record<string, string> | undefined;
  /** A request that makes no progress for this long fails with ETIMEDOUT (default 10 000). */
  timeoutMs?: number;
  /** Hard bound: no request starts after this many ms (default 300 000); `done` resolves then. */
  maxMs?: number;
  /** Pause of each keep-alive client between its requests, in ms (default 0: back to back). */
  pauseMs?: number;
  /** Count ok and failed per bucket of this many ms from the start (fixed-size arrays); off by default. */
  bucketMs?: number;
  /** Default `isSuccess` (2xx, 3xx). */
  okStatus?: OkStatus;
  /** Read bodies (the first 64 KiB) and count `(release <id>)` in `releases` (default true). */
  countReleases?: boolean;
  /** How many failure strings `failures` keeps, the first ones (default 1000). */
  maxFailures?: number;
  /** How many failure records `fails` keeps per client kind, the first ones (default 20 000). */
  maxFailEvents?: number;
  /** Called once, on the first ok answer. */
  onFirstOk?: () => void;
}

/** Counts of one client kind, or of all of them. */
export interface TrafficCounts {
  /** Requests that ended (ok + failed). */
  requests: number;
  /** Complete answers whose status passed `okStatus`. */
  ok: number;
  /** Every other request: nonOk + errors + dropped. */
  failed: number;
  /** Complete answers whose status did not pass `okStatus`. */
  nonOk: number;
  /** No complete answer and not a drop: refused, timed out, another error code. */
  errors: number;
  /**
   * In-flight drops: the request was written to its connection, then the server closed or reset it before the
   * answer was complete (ECONNRESET, "socket hang up", EPIPE; a response cut short included). Also failures.
   */
  dropped: number;
  /** ECONNREFUSED (in `errors`). */
  refused: number;
  /** ETIMEDOUT: no progress for `timeoutMs` (in `errors`). */
  timeouts: number;
  /** Every failure by status or error code (drops under their code, e.g. ECONNRESET). */
  codes: Record<string, number>;
  /** The failures counted in `errors`, by code. */
  errorCodes: Record<string, number>;
  /** Longest time between two ok answers, in ms (0 before the second one): for reports, not assertions. */
  maxGapMs: number;
  /** Epoch ms of the ok answer that opened the longest gap. */
  maxGapAt: number | undefined;
  /** Longest request, from its start to its end (ok or not), in ms. */
  slowestMs: number;
}

export interface KindCounts extends TrafficCounts {
  /** How many clients of this kind ran (0 or 1 for the poller). */
  clients: number;
}

/** One failed request. */
export interface FailEvent {
  /** Epoch ms when it ended. */
  at: number;
  kind: ClientKind;
  path: string;
  /** The HTTP status, or the error code when there was no complete answer. */
  status: number | string;
}

/** Per-bucket counts from `t0`, up to the last bucket with anything in it. */
export interface TrafficBuckets {
  /** Epoch ms of the start (bucket 0 begins there). */
  t0: number;
  bucketMs: number;
  keepAliveOk: number[];
  keepAliveFail: number[];
  pollerOk: number[];
  pollerFail: number[];
}

/** Counts over every client (the fields of TrafficCounts), plus: */
export interface TrafficResult extends TrafficCounts {
  /** False once every client has stopped (after stop(), or past `maxMs`) and no request is in flight. */
  running: boolean;
  /** Epoch ms of the start. */
  startedAt: number;
  /** From the start to the end of the last request (or to now while running). */
  elapsedMs: number;
  /** Every request by `"<path> <status|code>"`, ok or not. */
  counts: Record<string, number>;
  /** The first `maxFailures` failures as `"<path>: <status|code>"`; `failed` has the full count. */
  failures: string[];
  /** The first `maxFailEvents` failures of each kind, in the order they ended. */
  fails: FailEvent[];
  /** Ok answers per release, from `(release <id>)` in the body (empty without `countReleases`). */
  releases: Map<string, number>;
  byKind: Record<ClientKind, KindCounts>;
  /** With `bucketMs` only. */
  buckets: TrafficBuckets | undefined;
}

export interface Traffic {
  /** Resolves once every client has stopped: after stop(), or by itself past `maxMs`. Never rejects. */
  readonly done: Promise<void>;
  /** Counts so far (copies). */
  snapshot(): TrafficResult;
  /** Stops starting requests, waits for those in flight (at most `timeoutMs`), closes the connections; the final counts. */
  stop(): Promise<TrafficResult>;
}

/** Starts the clients at once. Throws on a non-loopback URL or a bad option. */
export function startTraffic(opts: TrafficOptions): Traffic;

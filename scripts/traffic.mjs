// Steady HTTP traffic against one loopback server, counted one way for the tests (test/helpers/traffic.ts)
// and the bench (bench/load.mjs, bench/soak.mjs). Types and the meaning of every field: traffic.d.mts.
//
// Clients: `clients` keep-alive clients (each its own http.Agent with one socket, so each is one connection
// that stays open), plus a poller that opens a fresh connection per request (`Connection: close`, as a
// health check or a proxy without keep-alive would). Each client sends one request at a time, on `paths` in
// turn, until stop() or until `maxMs` has passed (it stops by itself). A request that got no answer is
// retried at once (after `pauseMs`): while nothing listens the keep-alive clients loop on ECONNREFUSED.
//
// What counts:
// - ok: a complete answer whose status passes `okStatus` (default isSuccess: 2xx or 3xx);
// - failed: every other request, i.e. a non-ok status, or no complete answer, which is one of
//   - dropped (in flight): the request was written to the connection, then the server closed or reset it
//     before the answer was complete (ECONNRESET, "socket hang up", EPIPE), a response cut short included;
//   - refused: ECONNREFUSED (nothing listens);
//   - timeout: no progress for `timeoutMs` (ETIMEDOUT, set by this module);
//   - any other error code (a reset before the request was written, ...);
//   `errors` counts the no-answer failures that are not drops, so failed = nonOk + errors + dropped;
// - maxGapMs: the longest time between two ok answers (any client), maxGapAt: when it opened (the epoch ms
//   of the ok answer before it); byKind holds the same per client kind.
// Memory is bounded: `failures` keeps the first `maxFailures` strings, `fails` at most `maxFailEvents`
// records per client kind, buckets are fixed-size typed arrays, bodies are read only for `countReleases`
// and only their first 64 KiB.
import http from 'node:http';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const BODY_LIMIT = 64 * 1024;
const MAX_BUCKETS = 1 << 20;
const RELEASE_RE = /\(release ([^)]+)\)/;
/** Error codes that, after the request was written, mean the server closed the connection without answering. */
const DROP_CODES = new Set(['ECONNRESET', 'EPIPE']);
const KINDS = ['keepAlive', 'poller'];

/** The default `okStatus`: a 2xx or a 3xx is a success. */
export const isSuccess = (status) => status >= 200 && status < 400;
/** Only a 2xx is a success (bench/load.mjs: its report counts "non-2xx"). */
export const is2xx = (status) => status >= 200 && status < 300;
/**
 * Any status below 500 is an answer: the visitor got a page, a 404 for a page a build lacks included; only
 * a 5xx (or no answer) is a failure (bench/soak.mjs: what a visitor would call a failed request).
 */
export const isAnswer = (status) => status >= 100 && status < 500;

/** `url` as a URL if it is plain HTTP to 127.0.0.1, localhost or [::1]; throws otherwise. */
export function loopbackUrl(url) {
  let u;
  try {
    u = new URL(String(url));
  } catch {
    throw new Error(`loopback URLs only: ${String(url)} is not a URL`);
  }
  if (u.protocol !== 'http:' || !LOOPBACK_HOSTS.has(u.hostname) || u.username || u.password)
    throw new Error(`loopback URLs only (http://127.0.0.1, localhost or [::1]): ${String(url)}`);
  return u;
}

const epoch = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const bump = (o, k) => (o[k] = (o[k] ?? 0) + 1);

function newKind(clients) {
  return {
    clients,
    requests: 0,
    ok: 0,
    failed: 0,
    nonOk: 0,
    errors: 0,
    dropped: 0,
    refused: 0,
    timeouts: 0,
    codes: {},
    errorCodes: {},
    maxGapMs: 0,
    maxGapAt: undefined,
    slowestMs: 0,
    lastOk: undefined,
  };
}

function positive(name, v, { int = false, zero = true } = {}) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!zero && v === 0) || (int && !Number.isInteger(v)))
    throw new Error(`startTraffic: ${name} must be a ${int ? 'whole ' : ''}number ${zero ? '≥ 0' : '> 0'} (got ${String(v)})`);
  return v;
}

export function startTraffic(opts = {}) {
  if (opts.url !== undefined && opts.port !== undefined) throw new Error('startTraffic: give url or port, not both');
  if (opts.url === undefined && opts.port === undefined) throw new Error('startTraffic: url or port is required');
  const target = loopbackUrl(opts.url ?? `http://127.0.0.1:${positive('port', opts.port, { int: true, zero: false })}/`);
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const port = Number(target.port || 80);
  const clients = positive('clients', opts.clients ?? 4, { int: true });
  const poller = opts.poller ?? true;
  const pauseMs = positive('pauseMs', opts.pauseMs ?? 0);
  const pollMs = positive('pollMs', opts.pollMs ?? pauseMs);
  const timeoutMs = positive('timeoutMs', opts.timeoutMs ?? 10_000, { zero: false });
  const maxMs = positive('maxMs', opts.maxMs ?? 300_000, { zero: false });
  const maxFailures = positive('maxFailures', opts.maxFailures ?? 1_000, { int: true });
  const maxFailEvents = positive('maxFailEvents', opts.maxFailEvents ?? 20_000, { int: true });
  const bucketMs = opts.bucketMs === undefined ? undefined : positive('bucketMs', opts.bucketMs, { zero: false });
  const okStatus = opts.okStatus ?? isSuccess;
  const countReleases = opts.countReleases ?? true;
  const headersOf = opts.headers;
  const paths = [...(opts.paths ?? [target.pathname + target.search])];
  if (!paths.length || paths.some((p) => typeof p !== 'string' || !p.startsWith('/')))
    throw new Error('startTraffic: paths must be a non-empty list of paths starting with /');
  if (clients === 0 && !poller) throw new Error('startTraffic: no client (clients 0 and no poller)');

  const t0 = epoch();
  const until = t0 + maxMs;
  const kinds = { keepAlive: newKind(clients), poller: newKind(poller ? 1 : 0) };
  const all = newKind(clients + (poller ? 1 : 0));
  const counts = {};
  const failures = [];
  const fails = [];
  const failEvents = { keepAlive: 0, poller: 0 };
  const releases = new Map();
  let firstOk = false;
  let running = true;
  let ended = false;
  let endedAt;
  const nBuckets = bucketMs ? Math.min(MAX_BUCKETS, Math.ceil((maxMs + timeoutMs + 1_000) / bucketMs)) : 0;
  const buckets = bucketMs
    ? {
        keepAliveOk: new Uint32Array(nBuckets),
        keepAliveFail: new Uint32Array(nBuckets),
        pollerOk: new Uint32Array(nBuckets),
        pollerFail: new Uint32Array(nBuckets),
      }
    : undefined;
  const inBucket = (arr, t) => {
    const i = Math.floor((t - t0) / bucketMs);
    if (i >= 0 && i < nBuckets) arr[i]++;
  };

  /** One GET; resolves { status, body } for a complete answer, else { code, dropped }. Never rejects. */
  const one = (agent, path, headers) =>
    new Promise((resolve) => {
      let written = false;
      let settled = false;
      let body = '';
      const done = (o) => {
        if (!settled) {
          settled = true;
          resolve(o);
        }
      };
      const fail = (err) => {
        const code = err?.code ?? 'error';
        done({ code, dropped: written && DROP_CODES.has(code) });
      };
      const req = http.request({ host, port, path, method: 'GET', agent, headers, timeout: timeoutMs }, (res) => {
        const status = res.statusCode ?? 0;
        if (countReleases) {
          res.setEncoding('utf8');
          res.on('data', (d) => {
            if (body.length < BODY_LIMIT) body += d;
          });
        } else res.resume();
        res.on('end', () => done({ status, body }));
        res.on('error', fail);
        // Closed before its end: the answer was cut short (the server died or reset the connection).
        res.on('close', () => {
          if (!res.complete) fail(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
        });
      });
      req.on('finish', () => (written = true));
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      req.on('error', fail);
      req.end();
    });

  const gap = (k, t) => {
    if (k.lastOk !== undefined && t - k.lastOk > k.maxGapMs) {
      k.maxGapMs = t - k.lastOk;
      k.maxGapAt = k.lastOk;
    }
    k.lastOk = t;
  };

  const record = (kind, path, o, t, ms) => {
    const k = kinds[kind];
    const key = o.status ?? o.code;
    bump(counts, `${path} ${key}`);
    for (const x of [k, all]) {
      x.requests++;
      x.slowestMs = Math.max(x.slowestMs, ms);
    }
    if (o.status !== undefined && okStatus(o.status)) {
      for (const x of [k, all]) {
        x.ok++;
        gap(x, t);
      }
      if (buckets) inBucket(buckets[`${kind}Ok`], t);
      if (countReleases) {
        const m = RELEASE_RE.exec(o.body);
        if (m) releases.set(m[1], (releases.get(m[1]) ?? 0) + 1);
      }
      if (!firstOk) {
        firstOk = true;
        opts.onFirstOk?.();
      }
      return;
    }
    for (const x of [k, all]) {
      x.failed++;
      bump(x.codes, key);
      if (o.status !== undefined) x.nonOk++;
      else if (o.dropped) x.dropped++;
      else {
        x.errors++;
        bump(x.errorCodes, key);
        if (key === 'ECONNREFUSED') x.refused++;
        if (key === 'ETIMEDOUT') x.timeouts++;
      }
    }
    if (buckets) inBucket(buckets[`${kind}Fail`], t);
    if (failures.length < maxFailures) failures.push(`${path}: ${key}`);
    if (failEvents[kind] < maxFailEvents) {
      failEvents[kind]++;
      fails.push({ at: t, kind, path, status: key });
    }
  };

  const agents = [];
  const loop = async (kind, index, agent) => {
    for (let n = index; running && epoch() < until; n++) {
      const path = paths[n % paths.length];
      const headers = { ...(agent === false ? { connection: 'close' } : {}), ...(headersOf?.(n, index) ?? {}) };
      const sentAt = epoch();
      const o = await one(agent, path, headers);
      const t = epoch();
      record(kind, path, o, t, t - sentAt);
      const pause = kind === 'poller' ? pollMs : pauseMs;
      if (pause > 0 && running) await sleep(pause);
    }
  };
  const loops = [];
  for (let i = 0; i < clients; i++) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    loops.push(loop('keepAlive', i, agent));
  }
  if (poller) loops.push(loop('poller', clients, false));
  const done = Promise.all(loops).finally(() => {
    running = false;
    ended = true;
    endedAt = epoch();
    for (const a of agents) a.destroy();
  });
  // stop() reports a failure of a loop (a throwing `headers`); nothing is left unhandled meanwhile.
  done.catch(() => undefined);

  const kindOut = (k) => {
    const out = { ...k, codes: { ...k.codes }, errorCodes: { ...k.errorCodes } };
    delete out.lastOk;
    return out;
  };
  const trimmed = () => {
    let last = -1;
    for (const a of Object.values(buckets)) for (let i = a.length - 1; i > last; i--) if (a[i]) last = i;
    return Object.fromEntries(Object.entries(buckets).map(([k, a]) => [k, Array.from(a.subarray(0, last + 1))]));
  };
  const snapshot = () => {
    const a = kindOut(all);
    return {
      running: !ended,
      startedAt: t0,
      elapsedMs: (endedAt ?? epoch()) - t0,
      requests: a.requests,
      ok: a.ok,
      failed: a.failed,
      nonOk: a.nonOk,
      errors: a.errors,
      dropped: a.dropped,
      refused: a.refused,
      timeouts: a.timeouts,
      maxGapMs: a.maxGapMs,
      maxGapAt: a.maxGapAt,
      slowestMs: a.slowestMs,
      codes: a.codes,
      errorCodes: a.errorCodes,
      counts: { ...counts },
      failures: [...failures],
      fails: fails.map((f) => ({ ...f })),
      releases: new Map(releases),
      byKind: Object.fromEntries(KINDS.map((k) => [k, kindOut(kinds[k])])),
      buckets: buckets ? { t0, bucketMs, ...trimmed() } : undefined,
    };
  };
  return {
    done: done.then(
      () => undefined,
      () => undefined,
    ),
    snapshot,
    async stop() {
      running = false;
      await done;
      return snapshot();
    },
  };
}

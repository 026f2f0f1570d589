// Load generator child (forked by run.mjs, IPC channel): scripts/traffic.mjs (the tests' load loop too, so
// both count the same way) with CONNECTIONS keep-alive clients plus a poller on fresh connections, against
// one loopback URL. Sends {type:'ready'} after the first 2xx, and {type:'result', ...} after {cmd:'stop'} (or
// after maxSeconds). Always exits by itself. Successes and failures of both kinds are also counted per 50 ms
// bucket (fixed-size arrays: bounded memory).
//
//   node load.mjs URL CONNECTIONS MAX_SECONDS POLL_MS: that switch load (run.mjs's underLoad).
//   node load.mjs --measure URL CONNECTIONS SECONDS RATE   (RATE 0 = no limit): one autocannon run, no
//   poller; sends {type:'result', measure:{p50, p99, mean, reqPerSec, ...}} with latencies from each response.
//   node load.mjs --measure-fresh URL CONNECTIONS SECONDS: the same measure at saturation, but every request
//   on a new connection (`Connection: close`), CONNECTIONS of them in flight at once.
import net from 'node:net';
import autocannon from 'autocannon';
import { is2xx, loopbackUrl, startTraffic } from '../scripts/traffic.mjs';

const send = (m) => process.send?.(m);

/** Every mode: loopback URLs only (the module's guard), and never outlive the bound, even if the parent vanished. */
function guard(url, seconds) {
  try {
    loopbackUrl(url ?? '');
  } catch {
    console.error('load.mjs: loopback URLs only');
    process.exit(2);
  }
  setTimeout(() => process.exit(3), (seconds + 30) * 1000).unref();
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[2] === '--measure') await measure(process.argv.slice(3));
if (process.argv[2] === '--measure-fresh') await measureFresh(process.argv.slice(3));

const [url, connectionsArg, maxSecondsArg, pollMsArg] = process.argv.slice(2);
const connections = Number(connectionsArg ?? 10);
const maxSeconds = Number(maxSecondsArg ?? 60);
const pollMs = Number(pollMsArg ?? 20);
guard(url, maxSeconds);

// Both kinds give up on a request after 10 s (Apache's ProxyTimeout defaults to 60 s): a request the router
// holds while PM2 restarts the app is slow, not failed, unless it waits longer than that.
const CLIENT_TIMEOUT_MS = 10_000;
const BUCKET_MS = 50;
// When failures happened (wall clock), so the parent can attribute them to switches: at most this many per kind.
const MAX_TIMES = 20_000;
const traffic = startTraffic({
  url,
  clients: connections,
  poller: true,
  pollMs,
  timeoutMs: CLIENT_TIMEOUT_MS,
  maxMs: maxSeconds * 1000,
  bucketMs: BUCKET_MS,
  // The report counts "non-2xx": a 3xx from the Next page would be a failure here, as it was with autocannon.
  okStatus: is2xx,
  // The bench's page says `release=<id>`, and run.mjs checks the release itself: no body is read.
  countReleases: false,
  maxFailEvents: MAX_TIMES,
  onFirstOk: () => send({ type: 'ready' }),
});

let finishing;
process.on('message', (m) => {
  if (m?.cmd === 'stop') void finish();
});
// Past maxSeconds the clients stop by themselves.
void traffic.done.then(finish);

function finish() {
  finishing ??= (async () => {
    let error;
    let r;
    try {
      r = await traffic.stop();
    } catch (err) {
      error = String(err);
      r = traffic.snapshot();
    }
    const ka = r.byKind.keepAlive;
    const po = r.byKind.poller;
    const seconds = r.elapsedMs / 1000;
    const times = (kind) => r.fails.filter((f) => f.kind === kind).map((f) => f.at);
    const b = r.buckets;
    send({
      type: 'result',
      error,
      durationS: seconds,
      // The keep-alive clients. The key is still `autocannon` (run.mjs and report.mjs read it); since
      // scripts/traffic.mjs replaced autocannon here, these are its counts:
      autocannon: {
        connections,
        // Every request started (all of them ended: stop() waits for those in flight).
        sent: ka.requests,
        ok: ka.ok,
        non2xx: ka.nonOk,
        // Requests with no answer that are not drops (refused, timed out, reset before the request was
        // written). Was autocannon's error count, which also held some resets of requests in flight.
        errors: ka.errors,
        timeouts: ka.timeouts,
        errorCodes: ka.errorCodes,
        // Requests written on a connection the server then closed or reset before the answer was complete:
        // counted one by one now (autocannon reconnected silently, so this was estimated as sent − answered −
        // errors − one in flight per connection). Not in `errors`: failed (errors + non2xx) + dropped is
        // every failed keep-alive request, as before.
        dropped: ka.dropped,
        maxGapMs: ka.maxGapMs,
        maxGapAt: ka.maxGapAt,
        // Answers (ok or not) per second over the run; was autocannon's per-second average.
        reqPerSec: seconds > 0 ? (ka.ok + ka.nonOk) / seconds : undefined,
        // Was autocannon's latency p99 (read by nothing): the slowest keep-alive request instead.
        slowestMs: ka.slowestMs,
      },
      // The fresh-connection poller: failed is every failure (drops included), codes every failure by status or code.
      poller: { ok: po.ok, failed: po.failed, codes: po.codes, dropped: po.dropped, maxGapMs: po.maxGapMs, slowestMs: po.slowestMs },
      failTimes: { autocannon: times('keepAlive'), poller: times('poller') },
      buckets: b && { t0: b.t0, bucketMs: b.bucketMs, acOk: b.keepAliveOk, acFail: b.keepAliveFail, pollOk: b.pollerOk, pollFail: b.pollerFail },
    });
    setTimeout(() => process.exit(0), 100);
  })();
  return finishing;
}

/** --measure: one autocannon run (fixed rate or saturation); latency percentiles from every response. */
async function measure([mUrl, connArg, secondsArg, rateArg]) {
  const seconds = Number(secondsArg ?? 10);
  const rate = Number(rateArg ?? 0);
  guard(mUrl, seconds);
  const MAX = 500_000;
  const lat = new Float64Array(MAX);
  let n = 0;
  let non2xx = 0;
  let errors = 0;
  const opts = { url: mUrl, connections: Number(connArg ?? 10), duration: seconds, timeout: 10 };
  if (rate > 0) opts.overallRate = rate;
  const res = await new Promise((resolve, reject) => {
    const inst = autocannon(opts, (err, r) => (err ? reject(err) : resolve(r)));
    inst.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) {
        if (n < MAX) lat[n++] = responseTime;
      } else non2xx++;
    });
    inst.on('reqError', () => errors++);
  });
  const v = lat.subarray(0, n).sort();
  const q = (p) => (n ? v[Math.min(n - 1, Math.floor(p * n))] : undefined);
  let total = 0;
  for (let i = 0; i < n; i++) total += v[i];
  send({
    type: 'result',
    measure: {
      rate,
      seconds: res.duration,
      connections: opts.connections,
      ok: n,
      non2xx,
      errors,
      p50: q(0.5),
      p90: q(0.9),
      p99: q(0.99),
      mean: n ? total / n : undefined,
      reqPerSec: res.duration ? (res['2xx'] ?? n) / res.duration : undefined,
    },
  });
  setTimeout(() => process.exit(0), 100);
  await new Promise(() => {});
}

/**
 * --measure-fresh: saturation with a new TCP connection per request (a client or proxy without keep-alive):
 * CONNECTIONS loops, each connect → `GET … Connection: close` → read until the server closes. Not autocannon:
 * its reconnectRate drops the response of every request that triggers a reconnect (none would be counted
 * at reconnectRate 1), and a `connection: close` header leaves a stale request in its pipeline queue.
 * Latency runs from connect() to the server's close, so it includes the handshake and the accept (behind a
 * PM2 cluster primary: its accept and the handoff of the connection to a worker).
 */
async function measureFresh([mUrl, connArg, secondsArg]) {
  const seconds = Number(secondsArg ?? 10);
  const connections = Number(connArg ?? 10);
  guard(mUrl, seconds);
  const u = new URL(mUrl);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || 80);
  const request = Buffer.from(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`, 'latin1');
  const MAX = 500_000;
  const lat = new Float64Array(MAX);
  let n = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  const errorCodes = {};
  const TIMEOUT_MS = 10_000;
  const one = () =>
    new Promise((resolve) => {
      const t0 = performance.now();
      let head = '';
      let settled = false;
      const sock = net.connect({ host, port });
      const done = (result) => {
        if (settled) return;
        settled = true;
        sock.destroy();
        resolve({ result, ms: performance.now() - t0 });
      };
      sock.setNoDelay(true);
      sock.setTimeout(TIMEOUT_MS, () => done('ETIMEDOUT'));
      sock.on('connect', () => sock.write(request));
      sock.on('data', (d) => {
        if (head.length < 12) head += d.toString('latin1', 0, 12 - head.length);
      });
      sock.on('end', () => {
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
        done(m ? Number(m[1]) : 'EBADRESPONSE');
      });
      sock.on('error', (e) => done(e.code ?? 'error'));
    });
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let last = started;
  const loop = async () => {
    while (performance.now() < deadline) {
      const { result, ms } = await one();
      last = performance.now();
      if (typeof result === 'number' && result >= 200 && result < 300) {
        ok++;
        if (n < MAX) lat[n++] = ms;
      } else if (typeof result === 'number') non2xx++;
      else {
        errors++;
        errorCodes[result] = (errorCodes[result] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  const elapsedS = (last - started) / 1000;
  const v = lat.subarray(0, n).sort();
  const q = (p) => (n ? v[Math.min(n - 1, Math.floor(p * n))] : undefined);
  let total = 0;
  for (let i = 0; i < n; i++) total += v[i];
  send({
    type: 'result',
    measure: {
      rate: 0,
      fresh: true,
      seconds: elapsedS,
      connections,
      ok,
      non2xx,
      errors,
      errorCodes,
      p50: q(0.5),
      p90: q(0.9),
      p99: q(0.99),
      mean: n ? total / n : undefined,
      reqPerSec: elapsedS > 0 ? ok / elapsedS : undefined,
    },
  });
  setTimeout(() => process.exit(0), 100);
  await new Promise(() => {});
}

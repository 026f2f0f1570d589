// Load generator child (forked by run.mjs, IPC channel): autocannon with keep-alive connections plus a
// tight poller on fresh connections, both against one loopback URL. Sends {type:'ready'} after the first
// 2xx, and {type:'result', ...} after {cmd:'stop'} (or after maxSeconds). Always exits by itself.
// Successes and failures of both are also counted per 50 ms bucket (fixed-size arrays: bounded memory).
//
//   node load.mjs --measure URL CONNECTIONS SECONDS RATE   (RATE 0 = no limit): one autocannon run, no
//   poller; sends {type:'result', measure:{p50, p99, mean, reqPerSec, ...}} with latencies from each response.
//   node load.mjs --measure-fresh URL CONNECTIONS SECONDS: the same measure at saturation, but every request
//   on a new connection (`Connection: close`), CONNECTIONS of them in flight at once.
import http from 'node:http';
import net from 'node:net';
import autocannon from 'autocannon';

const epoch = () => performance.timeOrigin + performance.now();
const send = (m) => process.send?.(m);
if (process.argv[2] === '--measure') await measure(process.argv.slice(3));
if (process.argv[2] === '--measure-fresh') await measureFresh(process.argv.slice(3));

const [url, connectionsArg, maxSecondsArg, pollMsArg] = process.argv.slice(2);
const connections = Number(connectionsArg ?? 10);
const maxSeconds = Number(maxSecondsArg ?? 60);
const pollMs = Number(pollMsArg ?? 20);
if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(url ?? '')) {
  console.error('load.mjs: loopback URLs only');
  process.exit(2);
}

// Self-destruct: never outlive the bound, even if the parent vanished.
setTimeout(() => process.exit(3), (maxSeconds + 30) * 1000).unref();
process.on('disconnect', () => process.exit(0));

// --- autocannon (keep-alive) ---
const ac = { ok: 0, non2xx: 0, errors: 0, errorCodes: {}, lastOk: undefined, maxGap: 0, maxGapAt: undefined, firstOk: undefined };
// When failures happened (wall clock), so the parent can attribute them to switches; bounded.
const MAX_TIMES = 20_000;
const failTimes = { autocannon: [], poller: [] };
const noteFail = (list) => list.length < MAX_TIMES && list.push(epoch());
// Per-bucket counts from the start of this process, for timelines of a switch.
const BUCKET_MS = 50;
const t0 = epoch();
const nBuckets = Math.ceil(((maxSeconds + 35) * 1000) / BUCKET_MS);
const buckets = { acOk: new Uint32Array(nBuckets), acFail: new Uint32Array(nBuckets), pollOk: new Uint32Array(nBuckets), pollFail: new Uint32Array(nBuckets) };
const count = (arr, t) => {
  const i = Math.floor((t - t0) / BUCKET_MS);
  if (i >= 0 && i < nBuckets) arr[i]++;
};
let readySent = false;
// Both clients give up on a request after 10 s (Apache's ProxyTimeout defaults to 60 s): a request the
// router holds while PM2 restarts the app is slow, not failed, unless it waits longer than that.
const CLIENT_TIMEOUT_MS = 10_000;
const inst = autocannon({ url, connections, duration: maxSeconds, timeout: CLIENT_TIMEOUT_MS / 1000 }, (err, res) => finish(err, res));
inst.on('response', (_client, statusCode) => {
  const t = epoch();
  if (statusCode >= 200 && statusCode < 300) {
    ac.ok++;
    ac.firstOk ??= t;
    if (ac.lastOk !== undefined && t - ac.lastOk > ac.maxGap) {
      ac.maxGap = t - ac.lastOk;
      ac.maxGapAt = ac.lastOk;
    }
    ac.lastOk = t;
    count(buckets.acOk, t);
    if (!readySent) {
      readySent = true;
      send({ type: 'ready' });
    }
  } else {
    ac.non2xx++;
    noteFail(failTimes.autocannon);
    count(buckets.acFail, t);
  }
});
inst.on('reqError', (err) => {
  ac.errors++;
  noteFail(failTimes.autocannon);
  count(buckets.acFail, epoch());
  const code = err?.code ?? err?.message ?? 'error';
  ac.errorCodes[code] = (ac.errorCodes[code] ?? 0) + 1;
});

// --- poller (a new connection per request, like a health check or a proxy without keep-alive) ---
const poll = { ok: 0, failed: 0, codes: {}, lastOk: undefined, maxGap: 0, slowest: 0, running: true };
function get() {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: CLIENT_TIMEOUT_MS, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', (e) => resolve(e.code ?? 'error'));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => resolve(e.code ?? 'error'));
  });
}
const pollLoop = (async () => {
  while (poll.running) {
    const sentAt = epoch();
    const r = await get();
    const t = epoch();
    poll.slowest = Math.max(poll.slowest, t - sentAt);
    if (typeof r === 'number' && r >= 200 && r < 300) {
      poll.ok++;
      if (poll.lastOk !== undefined && t - poll.lastOk > poll.maxGap) poll.maxGap = t - poll.lastOk;
      poll.lastOk = t;
      count(buckets.pollOk, t);
    } else {
      poll.failed++;
      noteFail(failTimes.poller);
      count(buckets.pollFail, t);
      poll.codes[r] = (poll.codes[r] ?? 0) + 1;
    }
    await new Promise((res) => setTimeout(res, pollMs));
  }
})();

let stopping = false;
process.on('message', (m) => {
  if (m?.cmd === 'stop' && !stopping) {
    stopping = true;
    inst.stop();
  }
});

async function finish(err, res) {
  poll.running = false;
  await pollLoop;
  const sent = res?.requests?.sent ?? 0;
  const answered = (res?.['2xx'] ?? 0) + (res?.non2xx ?? 0);
  send({
    type: 'result',
    error: err ? String(err) : undefined,
    durationS: res?.duration,
    autocannon: {
      connections,
      sent,
      ok: res?.['2xx'] ?? ac.ok,
      non2xx: res?.non2xx ?? ac.non2xx,
      errors: res?.errors ?? ac.errors,
      timeouts: res?.timeouts ?? 0,
      errorCodes: ac.errorCodes,
      // Requests written but never answered nor failed (autocannon reconnects silently when the server
      // closes a keep-alive connection with a request in flight); the last in-flight one per connection
      // at stop time is not counted.
      dropped: Math.max(0, sent - answered - (res?.errors ?? 0) - connections),
      maxGapMs: ac.maxGap,
      maxGapAt: ac.maxGapAt,
      reqPerSec: res?.requests?.average,
      latencyP99: res?.latency?.p99,
    },
    poller: { ok: poll.ok, failed: poll.failed, codes: poll.codes, maxGapMs: poll.maxGap, slowestMs: poll.slowest },
    failTimes,
    buckets: { t0, bucketMs: BUCKET_MS, ...trimBuckets() },
  });
  setTimeout(() => process.exit(0), 100);
}

/** The bucket arrays up to the last non-empty bucket, as plain arrays. */
function trimBuckets() {
  let last = 0;
  for (const a of Object.values(buckets)) for (let i = a.length - 1; i > last; i--) if (a[i]) last = i;
  return Object.fromEntries(Object.entries(buckets).map(([k, a]) => [k, Array.from(a.subarray(0, last + 1))]));
}

/** --measure: one autocannon run (fixed rate or saturation); latency percentiles from every response. */
async function measure([mUrl, connArg, secondsArg, rateArg]) {
  if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(mUrl ?? '')) {
    console.error('load.mjs: loopback URLs only');
    process.exit(2);
  }
  const seconds = Number(secondsArg ?? 10);
  const rate = Number(rateArg ?? 0);
  setTimeout(() => process.exit(3), (seconds + 30) * 1000).unref();
  process.on('disconnect', () => process.exit(0));
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
  if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(mUrl ?? '')) {
    console.error('load.mjs: loopback URLs only');
    process.exit(2);
  }
  const seconds = Number(secondsArg ?? 10);
  const connections = Number(connArg ?? 10);
  setTimeout(() => process.exit(3), (seconds + 30) * 1000).unref();
  process.on('disconnect', () => process.exit(0));
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

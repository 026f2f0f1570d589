/**
 * Per-release request counts, 5xx answers and latency over the last minute, in fixed memory: a ring of
 * one-second buckets per release, each with a log-scale latency histogram (quantiles to within ~10 %).
 * Recording a request is a few array writes: nothing is allocated per request.
 */
import type { ReleaseStats } from './protocol.js';

const WINDOW_S = 60;
// Bucket i holds latencies up to BASE * GROWTH^i ms: 0.05 ms … ~130 s in 160 buckets.
const BASE_MS = 0.05;
const GROWTH = 1.1;
const BUCKETS = 160;
const LOG_GROWTH = Math.log(GROWTH);

function bucketOf(ms: number): number {
  if (ms <= BASE_MS) return 0;
  return Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / BASE_MS) / LOG_GROWTH));
}

function upperBound(i: number): number {
  return BASE_MS * GROWTH ** i;
}

class Series {
  private readonly second = new Float64Array(WINDOW_S);
  private readonly count = new Uint32Array(WINDOW_S);
  private readonly errors = new Uint32Array(WINDOW_S);
  private readonly hist = new Uint32Array(WINDOW_S * BUCKETS);

  private slot(nowS: number): number {
    const i = nowS % WINDOW_S;
    if (this.second[i] !== nowS) {
      this.second[i] = nowS;
      this.count[i] = 0;
      this.errors[i] = 0;
      this.hist.fill(0, i * BUCKETS, (i + 1) * BUCKETS);
    }
    return i;
  }

  record(nowS: number, status: number, ms: number): void {
    const i = this.slot(nowS);
    this.count[i]++;
    if (status >= 500) this.errors[i]++;
    this.hist[i * BUCKETS + bucketOf(ms)]++;
  }

  summary(release: string, nowS: number, windowS: number): ReleaseStats {
    const merged = new Uint32Array(BUCKETS);
    let requests = 0;
    let errors5xx = 0;
    for (let i = 0; i < WINDOW_S; i++) {
      const s = this.second[i];
      if (s <= nowS - windowS || s > nowS) continue;
      requests += this.count[i];
      errors5xx += this.errors[i];
      for (let b = 0; b < BUCKETS; b++) merged[b] += this.hist[i * BUCKETS + b];
    }
    const quantile = (q: number): number | null => {
      if (requests === 0) return null;
      const rank = Math.ceil(q * requests);
      let seen = 0;
      for (let b = 0; b < BUCKETS; b++) {
        seen += merged[b];
        if (seen >= rank) return Math.round(upperBound(b) * 100) / 100;
      }
      return Math.round(upperBound(BUCKETS - 1) * 100) / 100;
    };
    return {
      release,
      requests,
      rps: Math.round((requests / windowS) * 100) / 100,
      errors5xx,
      rate5xx: requests ? errors5xx / requests : 0,
      p50Ms: quantile(0.5),
      p99Ms: quantile(0.99),
      windowSeconds: windowS,
    };
  }
}

export class Metrics {
  private readonly series = new Map<string, Series>();
  /** Releases are few (live, draining, recent); bound the map anyway. */
  private static readonly MAX_RELEASES = 16;

  record(release: string, status: number, ms: number, now = Date.now()): void {
    let s = this.series.get(release);
    if (!s) {
      if (this.series.size >= Metrics.MAX_RELEASES) this.series.delete(this.series.keys().next().value!);
      s = new Series();
      this.series.set(release, s);
    }
    s.record(Math.floor(now / 1000), status, ms);
  }

  /** Stats of every release seen in the window (the current, incomplete second included). */
  stats(now = Date.now(), windowS = WINDOW_S): ReleaseStats[] {
    const nowS = Math.floor(now / 1000);
    const w = Math.max(1, Math.min(WINDOW_S, windowS));
    return [...this.series.entries()].map(([release, s]) => s.summary(release, nowS, w)).filter((x) => x.requests > 0);
  }
}

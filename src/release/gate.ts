/**
 * The soak's traffic gate, pure: is the new release's live traffic worse than the previous release's?
 * It judges only once the new release answered `minRequests` requests in the window (a quiet site is
 * judged on its health checks alone), and trips on either signal:
 *   - 5xx share above `max5xxRate` and above twice the previous release's share;
 *   - p99 latency above `minP99Ms` and above `p99Factor` times the previous release's p99.
 */
import type { SoakConfig } from '../config.js';
import type { ReleaseStats } from '../router/protocol.js';

export type GateThresholds = Pick<SoakConfig, 'minRequests' | 'max5xxRate' | 'p99Factor' | 'minP99Ms'>;

/** The numbers a verdict is based on (a subset of the router's per-release stats). */
export interface TrafficNumbers {
  requests: number;
  errors5xx: number;
  rate5xx: number;
  p99Ms: number | null;
}

export interface GateVerdict {
  /** False while the new release has too few requests to be judged. */
  judged: boolean;
  trip: boolean;
  /** One line, with the numbers: "5xx 14 % of 212 requests vs 0.2 % before". */
  reason: string | null;
}

export function numbers(s: ReleaseStats | TrafficNumbers | undefined): TrafficNumbers | null {
  return s ? { requests: s.requests, errors5xx: s.errors5xx, rate5xx: s.rate5xx, p99Ms: s.p99Ms } : null;
}

function pct(rate: number): string {
  const p = rate * 100;
  return `${p >= 10 || p === 0 ? Math.round(p) : p.toFixed(1)} %`;
}

export function judge(candidate: TrafficNumbers | null, baseline: TrafficNumbers | null, t: GateThresholds): GateVerdict {
  if (!candidate || candidate.requests < t.minRequests) return { judged: false, trip: false, reason: null };
  // A baseline of a handful of requests says little: below the same minimum, only the absolute limits apply.
  const base = baseline && baseline.requests >= t.minRequests ? baseline : null;
  const before = base ? `${pct(base.rate5xx)} before` : 'no baseline';
  const rateLimit = Math.max(t.max5xxRate, base ? 2 * base.rate5xx : 0);
  if (candidate.errors5xx > 0 && candidate.rate5xx > rateLimit)
    return { judged: true, trip: true, reason: `5xx ${pct(candidate.rate5xx)} of ${candidate.requests} requests vs ${before}` };
  const baseP99 = base?.p99Ms ?? null;
  const p99Limit = Math.max(t.minP99Ms, baseP99 !== null ? t.p99Factor * baseP99 : 0);
  if (candidate.p99Ms !== null && candidate.p99Ms > p99Limit)
    return {
      judged: true,
      trip: true,
      reason: `p99 ${Math.round(candidate.p99Ms)} ms over ${candidate.requests} requests vs ${baseP99 !== null ? `${baseP99} ms before` : 'no baseline'} (limit ${Math.round(p99Limit)} ms)`,
    };
  return { judged: true, trip: false, reason: null };
}

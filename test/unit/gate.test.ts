/** The soak's traffic gate (release/gate.ts): pure, against a baseline, with a minimum request count. */
import { describe, expect, it } from 'vitest';
import { judge } from '../../src/release/gate.js';

const T = { minRequests: 50, max5xxRate: 0.02, p99Factor: 3, minP99Ms: 500 };
const n = (requests: number, errors5xx: number, p99Ms: number | null) => ({ requests, errors5xx, rate5xx: requests ? errors5xx / requests : 0, p99Ms });

describe('soak gate', () => {
  it('does not judge a release below the minimum request count (a quiet site)', () => {
    expect(judge(n(49, 49, 9000), n(1000, 0, 10), T)).toEqual({ judged: false, trip: false, reason: null });
    expect(judge(null, null, T).judged).toBe(false);
  });

  it('trips on a 5xx share above the limit and twice the baseline, saying the numbers', () => {
    const v = judge(n(212, 30, 12), n(1000, 2, 10), T);
    expect(v).toEqual({ judged: true, trip: true, reason: '5xx 14 % of 212 requests vs 0.2 % before' });
    // A baseline that already errs at 5 % allows up to 10 %.
    expect(judge(n(200, 18, 12), n(1000, 50, 10), T).trip).toBe(false);
    expect(judge(n(200, 22, 12), n(1000, 50, 10), T).trip).toBe(true);
    // Below the absolute limit nothing trips, however clean the baseline.
    expect(judge(n(200, 3, 12), n(1000, 0, 10), T).trip).toBe(false);
  });

  it('trips on p99 above the floor and the factor times the baseline', () => {
    expect(judge(n(60, 0, 2100), n(500, 0, 8), T)).toEqual({
      judged: true,
      trip: true,
      reason: 'p99 2100 ms over 60 requests vs 8 ms before (limit 500 ms)',
    });
    // A slow baseline raises the limit: 3 × 400 ms.
    expect(judge(n(60, 0, 1100), n(500, 0, 400), T).trip).toBe(false);
    expect(judge(n(60, 0, 1300), n(500, 0, 400), T).trip).toBe(true);
    expect(judge(n(60, 0, 450), n(500, 0, 8), T).trip).toBe(false);
  });

  it('ignores a baseline of too few requests (only the absolute limits apply)', () => {
    expect(judge(n(100, 3, 10), n(10, 0, 1), T).reason).toBe('5xx 3.0 % of 100 requests vs no baseline');
    expect(judge(n(100, 0, 600), null, T).reason).toBe('p99 600 ms over 100 requests vs no baseline (limit 500 ms)');
  });
});

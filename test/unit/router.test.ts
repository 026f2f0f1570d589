/** The router's pure parts: state and control message parsing, per-release metrics. */
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/router/metrics.js';
import {
  bucketFromAddress,
  bucketFromCookie,
  inCanary,
  parseControlRequest,
  parseRouterState,
  routerPaths,
  routerProcessName,
} from '../../src/router/protocol.js';

const ID = '20261201T100000Z-abcdef0';

describe('router protocol', () => {
  it('parses a state file and refuses anything else with one line', () => {
    const ok = parseRouterState(JSON.stringify({ version: 1, app: 'frontend-dev', live: { port: 13001, release: ID }, updatedAt: 'x' }));
    expect(ok.live).toEqual({ port: 13001, release: ID });
    expect(parseRouterState(JSON.stringify({ version: 1, app: 'frontend-dev', live: null })).live).toBeNull();
    expect(() => parseRouterState('{')).toThrow('router state: not valid JSON');
    expect(() => parseRouterState(JSON.stringify({ version: 2, app: 'a' }))).toThrow(/unknown version/);
    expect(() => parseRouterState(JSON.stringify({ version: 1, app: '../x', live: null }))).toThrow(/PM2 app name/);
    expect(() => parseRouterState(JSON.stringify({ version: 1, app: 'a', live: { port: 70000, release: ID } }))).toThrow(/port/);
    expect(() => parseRouterState(JSON.stringify({ version: 1, app: 'a', live: { port: 1, release: '../../etc' } }))).toThrow(/release id/);
  });

  it('parses control requests strictly', () => {
    expect(parseControlRequest({ op: 'status' })).toEqual({ op: 'status' });
    expect(parseControlRequest({ op: 'route', live: { port: 13002, release: ID } })).toEqual({
      op: 'route',
      live: { port: 13002, release: ID },
      canary: null,
      keep: [],
    });
    expect(parseControlRequest({ op: 'drain', port: 13001, timeoutMs: 5000 })).toEqual({ op: 'drain', port: 13001, timeoutMs: 5000 });
    expect(() => parseControlRequest({ op: 'drain', port: 13001, timeoutMs: -1 })).toThrow(/timeoutMs/);
    expect(() => parseControlRequest({ op: 'route', live: { port: '13001', release: ID } })).toThrow(/port/);
    expect(() => parseControlRequest({ op: 'exec' })).toThrow(/unknown op/);
    expect(() => parseControlRequest(null)).toThrow(/object/);
  });

  it('names its files and its PM2 process after the app', () => {
    expect(routerPaths('/r', 'frontend-dev')).toEqual({
      dir: '/r/.router',
      state: '/r/.router/frontend-dev.state.json',
      socket: '/r/.router/frontend-dev.sock',
    });
    expect(routerProcessName('frontend-dev')).toBe('frontend-dev-router');
  });
});

describe('router metrics', () => {
  it('counts requests and 5xx per release over the last minute, with p50/p99 within ~10 %', () => {
    const m = new Metrics();
    const t0 = 1_800_000_000_000;
    for (let i = 1; i <= 1000; i++) m.record('A', i % 100 === 0 ? 503 : 200, i / 10, t0 + (i % 30) * 1000);
    m.record('B', 200, 5, t0);
    const [a, b] = m.stats(t0 + 30_000);
    expect(a).toMatchObject({ release: 'A', requests: 1000, errors5xx: 10, rate5xx: 0.01 });
    expect(a.p50Ms!).toBeGreaterThan(50 * 0.9);
    expect(a.p50Ms!).toBeLessThan(50 * 1.1);
    expect(a.p99Ms!).toBeGreaterThan(99 * 0.9);
    expect(a.p99Ms!).toBeLessThan(99 * 1.1);
    expect(b).toMatchObject({ release: 'B', requests: 1 });
    // A minute later, nothing is left in the window.
    expect(m.stats(t0 + 120_000)).toEqual([]);
  });
});

describe('canary routing, pure parts', () => {
  const B = '20261201T110000Z-1234567';
  it('parses a canary route and a state with a canary, refusing a share out of (0, 1) or the live port', () => {
    const r = parseControlRequest({
      op: 'route',
      live: { port: 13001, release: ID },
      canary: { upstream: { port: 13002, release: B }, share: 0.2 },
      keep: [13003],
    });
    expect(r).toEqual({ op: 'route', live: { port: 13001, release: ID }, canary: { upstream: { port: 13002, release: B }, share: 0.2 }, keep: [13003] });
    for (const share of [0, 1, -0.1, 2, '0.2'])
      expect(() => parseControlRequest({ op: 'route', live: { port: 13001, release: ID }, canary: { upstream: { port: 13002, release: B }, share } })).toThrow(
        /share/,
      );
    expect(() =>
      parseControlRequest({ op: 'route', live: { port: 13001, release: ID }, canary: { upstream: { port: 13001, release: B }, share: 0.5 } }),
    ).toThrow(/another port/);
    expect(() => parseControlRequest({ op: 'route', live: { port: 13001, release: ID }, keep: ['x'] })).toThrow(/keep/);
    const st = parseRouterState(
      JSON.stringify({ version: 1, app: 'a', live: { port: 1, release: ID }, canary: { upstream: { port: 2, release: B }, share: 0.1 } }),
    );
    expect(st.canary).toEqual({ upstream: { port: 2, release: B }, share: 0.1 });
  });

  it('reads the visitor bucket from its cookie only when well-formed', () => {
    expect(bucketFromCookie('pm2r_bucket=42')).toBe(42);
    expect(bucketFromCookie('a=1; pm2r_bucket=9999; b=2')).toBe(9999);
    expect(bucketFromCookie('xpm2r_bucket=42')).toBeUndefined();
    expect(bucketFromCookie('pm2r_bucket=12345')).toBeUndefined();
    expect(bucketFromCookie('pm2r_bucket=abc')).toBeUndefined();
    expect(bucketFromCookie(undefined)).toBeUndefined();
  });

  it('hashes addresses into buckets evenly and stably, and a share takes the buckets below it', () => {
    expect(bucketFromAddress('10.0.0.1')).toBe(bucketFromAddress('10.0.0.1'));
    let inShare = 0;
    for (let i = 0; i < 10_000; i++) if (inCanary(bucketFromAddress(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`), 0.2)) inShare++;
    expect(inShare).toBeGreaterThan(1_800);
    expect(inShare).toBeLessThan(2_200);
    expect(inCanary(1999, 0.2)).toBe(true);
    expect(inCanary(2000, 0.2)).toBe(false);
  });
});

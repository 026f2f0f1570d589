/**
 * Human output (src/cli/format.ts): pure functions of hand-built results. Snapshots pin the exact text; the
 * alignment checks pin the table layout independently of the snapshot.
 */
import { describe, expect, it } from 'vitest';
import { BuildError, ReleaseError, ExitCode } from '../../src/errors.js';
import { formatDoctor, formatError, formatHistory, formatList, formatStatus } from '../../src/cli/format.js';
import type { DoctorResult } from '../../src/lifecycle/checks.js';
import type { HistoryResult, ListResult, ReleaseInfo, StatusResult } from '../../src/lifecycle/results.js';
import type { HistoryEntry } from '../../src/release/history.js';

const ANSI = /\x1b\[/;
const ROOT = '/srv/releases';
const SHA_A = '3f2a9c1' + 'a'.repeat(33);
const SHA_B = '9e8d7c6' + 'b'.repeat(33);
const SHA_C = '0badc0d' + 'c'.repeat(33);

function release(id: string, over: Partial<ReleaseInfo> = {}): ReleaseInfo {
  const sha = over.sha === undefined ? `${id.slice(-7)}${'f'.repeat(33)}` : over.sha;
  return {
    id,
    sha,
    shortSha: sha ? sha.slice(0, 7) : null,
    ref: 'HEAD',
    subject: 'a commit',
    status: 'ready',
    active: false,
    createdAt: `${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:${id.slice(13, 15)}.123Z`,
    finishedAt: null,
    commits: sha ? [sha] : [],
    memory: null,
    dir: `${ROOT}/${id}`,
    cwd: `${ROOT}/${id}/frontend`,
    sizeBytes: 48_234_496,
    buildLog: `${ROOT}/${id}/.pm2-release/build.log`,
    durationsMs: {},
    error: null,
    bad: null,
    elsewhere: null,
    source: 'git',
    artifact: null,
    ...over,
  };
}

const LIST: ListResult = {
  ok: true,
  changed: false,
  active: '20261121T204233Z-3f2a9c1',
  elsewhere: [],
  releases: [
    release('20261121T210000Z-0badc0d', {
      sha: SHA_C,
      status: 'failed',
      sizeBytes: 2048,
      error: { code: 'HEALTH_FAILED', phase: 'health', message: 'x' },
      bad: { reason: 'health gate reverted it: is not healthy: process exited', markedAt: '2026-11-21T21:00:30.000Z' },
    }),
    release('20261121T204233Z-3f2a9c1', { sha: SHA_A, active: true }),
    release('20261121T193000Z-9e8d7c6', { sha: SHA_B, bad: { reason: 'rolled back from by deploy', markedAt: '2026-11-21T20:50:00.000Z' } }),
    release('20261121T180000Z-1234567', { status: 'failed', sizeBytes: 512, error: { code: 'BUILD_FAILED', phase: 'build', message: 'build failed' } }),
    release('20261120T090000Z-abcdef0', { sha: null, status: 'incomplete', createdAt: null, sizeBytes: null }),
  ],
};

const STATUS: StatusResult = {
  ok: true,
  changed: false,
  app: 'frontend-dev',
  active: LIST.releases[1],
  recorded: '20261121T204233Z-3f2a9c1',
  pm2: {
    name: 'frontend-dev',
    status: 'online',
    pid: 4121,
    pmId: 0,
    cwd: `${ROOT}/20261121T204233Z-3f2a9c1/frontend`,
    restarts: 2,
    uptimeSince: '2026-11-21T20:42:40.000Z',
    releaseId: '20261121T204233Z-3f2a9c1',
    processes: 1,
  },
  health: { url: 'http://127.0.0.1:3001/', ok: true, status: 200, error: null },
  drift: { detected: false, reason: null },
  router: null,
  standby: null,
  soak: null,
  warnings: [],
};

const STATUS_DOWN: StatusResult = {
  ok: true,
  changed: false,
  app: 'frontend-dev',
  active: null,
  recorded: '20261121T204233Z-3f2a9c1',
  pm2: null,
  health: { url: 'http://127.0.0.1:3001/', ok: false, status: null, error: 'ECONNREFUSED' },
  drift: { detected: true, reason: 'PM2 has no app named frontend-dev, but 20261121T204233Z-3f2a9c1 is recorded as active' },
  router: null,
  standby: null,
  soak: null,
  warnings: ['app.build is empty: releases are not built, only installed'],
};

function entry(over: Partial<HistoryEntry>): HistoryEntry {
  return {
    time: '2026-11-21T20:42:33.789Z',
    action: 'deploy',
    trigger: 'cli',
    user: 'deploy',
    host: 'vm-front-1',
    from: null,
    to: null,
    sha: null,
    result: 'ok',
    error: null,
    durationsMs: {},
    ...over,
  };
}

const HISTORY: HistoryResult = {
  ok: true,
  changed: false,
  entries: [
    entry({ time: '2026-11-21T21:05:00.001Z', action: 'prune', trigger: 'api', detail: 'removed 20261121T180000Z-1234567' }),
    entry({
      time: '2026-11-21T21:00:41.500Z',
      from: '20261121T204233Z-3f2a9c1',
      to: '20261121T210000Z-0badc0d',
      sha: SHA_C,
      result: 'failed',
      error: { code: 'HEALTH_FAILED', phase: 'health' },
      durationsMs: { build: 4000, health: 12_345 },
    }),
    entry({
      time: '2026-11-21T21:00:40.000Z',
      action: 'revert',
      from: '20261121T210000Z-0badc0d',
      to: '20261121T204233Z-3f2a9c1',
      sha: SHA_C,
      durationsMs: { switch: 800 },
    }),
    entry({
      time: '2026-11-21T20:50:00.000Z',
      action: 'rollback',
      trigger: 'webhook',
      user: 'root',
      host: 'h',
      from: '20261121T204233Z-3f2a9c1',
      to: '20261121T193000Z-9e8d7c6',
      sha: SHA_B,
      durationsMs: { switch: 1200, health: 1550 },
    }),
    entry({ to: '20261121T204233Z-3f2a9c1', from: '20261121T193000Z-9e8d7c6', sha: SHA_A, durationsMs: { lock: 12, install: 2300, build: 700, switch: 900 } }),
  ],
};

const DOCTOR: DoctorResult = {
  ok: false,
  changed: false,
  checks: [
    { name: 'workspace', status: 'ok', message: '/home/deploy/executor/workspace is a git repository', fix: null },
    { name: 'disk', status: 'warn', message: '900 MiB free on /srv (want 1024)', fix: 'free some space: pm2-release prune --keep 1' },
    { name: 'port', status: 'fail', message: '3001 is held by pid 999 (not PM2)', fix: 'stop the process holding port 3001' },
    { name: 'pm2', status: 'ok', message: 'pm2 7.0.4, daemon running', fix: 'never shown for an ok check' },
  ],
};

/** Start offset of each header word (headers are single words; the first column of `list` has none). */
function columnStarts(header: string): number[] {
  return [...header.matchAll(/\S+/g)].map((m) => m.index);
}

/**
 * Every row has each column at the header's offset: two spaces before it, and (except a trailing empty
 * cell) a non-space character at it.
 */
function expectAligned(text: string, starts: number[]): void {
  const [, ...rows] = text.trimEnd().split('\n');
  expect(rows.length).toBeGreaterThan(0);
  for (const row of rows) {
    for (const s of starts) {
      if (row.length <= s) continue; // a trailing empty cell is trimmed
      if (s > 0) expect(row.slice(s - 2, s), `two spaces before column ${s} in ${JSON.stringify(row)}`).toBe('  ');
      expect(row[s], `column ${s} in ${JSON.stringify(row)}`).not.toBe(' ');
    }
  }
}

describe('formatList', () => {
  const out = formatList(LIST);

  it('prints one aligned row per release, newest first, active starred, BAD and errors in NOTE', () => {
    expect(out).toMatchInlineSnapshot(`
      "   ID                        SHA      STATUS      CREATED               SIZE      PEAK  NOTE
         20261121T210000Z-0badc0d  0badc0d  failed      2026-11-21 21:00:00Z  2.0 KiB   -     BAD: health gate reverted it: is not healthy: process exited
      *  20261121T204233Z-3f2a9c1  3f2a9c1  ready       2026-11-21 20:42:33Z  46.0 MiB  -
         20261121T193000Z-9e8d7c6  9e8d7c6  ready       2026-11-21 19:30:00Z  46.0 MiB  -     BAD: rolled back from by deploy
         20261121T180000Z-1234567  1234567  failed      2026-11-21 18:00:00Z  512 B     -     BUILD_FAILED in build
         20261120T090000Z-abcdef0  -        incomplete  -                     -         -
      "
    `);
  });

  it('aligns every column; the ID column starts at the same offset on every line', () => {
    const [header, ...rows] = out.trimEnd().split('\n');
    const starts = columnStarts(header);
    expect(header.trim().split(/\s+/)).toEqual(['ID', 'SHA', 'STATUS', 'CREATED', 'SIZE', 'PEAK', 'NOTE']);
    expectAligned(out, starts);
    const idAt = starts[0];
    expect(rows.map((r) => r.indexOf('2026'))).toEqual(rows.map(() => idAt));
    expect(rows.map((r) => r.slice(idAt, idAt + 24))).toEqual(LIST.releases.map((r) => r.id));
    expect(rows.map((r) => r[0])).toEqual([' ', '*', ' ', ' ', ' ']);
    expect(out).not.toMatch(ANSI);
    expect(out.endsWith('\n')).toBe(true);
    expect(out.split('\n').every((l) => l === l.trimEnd())).toBe(true);
  });

  it('says so when there are no releases', () => {
    expect(formatList({ ok: true, changed: false, active: null, releases: [], elsewhere: [] })).toBe('no releases yet (run `pm2-release deploy`)\n');
  });

  it('lists the releases of a former releases dir under elsewhere, with their dir', () => {
    const old = '/mnt/old/releases';
    const out = formatList({
      ok: true,
      changed: false,
      active: null,
      releases: [],
      elsewhere: [release('20261120T100000Z-3f2a9c1', { elsewhere: old, dir: `${old}/20261120T100000Z-3f2a9c1` })],
    });
    const lines = out.split('\n');
    expect(lines[0]).toBe('no releases yet (run `pm2-release deploy`)');
    expect(lines[2]).toMatch(/^elsewhere \(built before releasesDir moved: listed only, not rollback targets/);
    expect(lines[3]).toMatch(/ID +SHA +STATUS +CREATED +DIR$/);
    expect(lines[4]).toMatch(/20261120T100000Z-3f2a9c1 +3f2a9c1 +ready +.* \/mnt\/old\/releases$/);
  });
});

const STATUS_ROUTED: StatusResult = {
  ...STATUS,
  router: {
    running: true,
    listening: true,
    canary: null,
    port: 3001,
    live: { port: 13002, release: '20261121T204233Z-3f2a9c1' },
    upstreams: [
      { port: 13002, release: '20261121T204233Z-3f2a9c1', role: 'live', inflight: 3, websockets: 0 },
      { port: 13001, release: '20261120T101010Z-1111111', role: 'draining', inflight: 1, websockets: 0 },
    ],
    held: 0,
    stats: [{ release: '20261121T204233Z-3f2a9c1', requests: 1200, rps: 20, errors5xx: 3, rate5xx: 0.0025, p50Ms: 4.2, p99Ms: 38.5 }],
    error: null,
  },
  standby: { state: 'warm', release: '20261119T101010Z-0000000', port: 13003, reason: null },
};

describe('formatStatus', () => {
  it('prints aligned key/value lines', () => {
    const out = formatStatus(STATUS);
    expect(out).toMatchInlineSnapshot(`
      "app       frontend-dev
      pm2       online (pid 4121, id 0, restarts 2)
      cwd       /srv/releases/20261121T204233Z-3f2a9c1/frontend
      active    20261121T204233Z-3f2a9c1 (3f2a9c1)
      recorded  20261121T204233Z-3f2a9c1
      health    ok http://127.0.0.1:3001/ → 200
      drift     none
      "
    `);
    const offsets = out
      .trimEnd()
      .split('\n')
      .map((l) => /^\S+\s+/.exec(l)![0].length);
    expect(new Set(offsets).size).toBe(1);
    expect(out).not.toMatch(ANSI);
  });

  it('shows warnings first, then a stopped app, failing health and drift', () => {
    const out = formatStatus(STATUS_DOWN);
    expect(out).toMatchInlineSnapshot(`
      "warning: app.build is empty: releases are not built, only installed
      app       frontend-dev
      pm2       not running
      cwd       -
      active    -
      recorded  20261121T204233Z-3f2a9c1
      health    FAILING http://127.0.0.1:3001/ → ECONNREFUSED
      drift     YES: PM2 has no app named frontend-dev, but 20261121T204233Z-3f2a9c1 is recorded as active
      "
    `);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toBe('warning: app.build is empty: releases are not built, only installed');
    const offsets = lines.slice(1).map((l) => /^\S+\s+/.exec(l)![0].length);
    expect(new Set(offsets).size).toBe(1);
    expect(out).not.toMatch(ANSI);
  });

  it('counts PM2 processes when there are several', () => {
    const out = formatStatus({ ...STATUS, pm2: { ...STATUS.pm2!, processes: 4 } });
    expect(out).toContain('online (pid 4121, id 0, restarts 2, 4 processes)');
  });

  it('behind the router: the route, a draining release and the live numbers of the last minute', () => {
    const out = formatStatus(STATUS_ROUTED);
    expect(out).toMatch(/^router +listening on :3001 → 20261121T204233Z-3f2a9c1 on :13002$/m);
    expect(out).toMatch(/^draining +20261120T101010Z-1111111 on :13001 \(1 in flight\)$/m);
    expect(out).toMatch(/^standby +20261119T101010Z-0000000 warm on :13003: a rollback to it is a route change$/m);
    const off = formatStatus({ ...STATUS_ROUTED, standby: { state: 'off', release: null, port: null, reason: 'off in the config (router.standby: false)' } });
    expect(off).toMatch(/^standby +off \(off in the config \(router\.standby: false\)\): a rollback boots the previous release$/m);
    expect(out).toMatch(/^last minute +20 req\/s, 5xx 0\.3 %, p50 4\.2 ms, p99 38\.5 ms \(1200 requests\)$/m);
    const down = formatStatus({ ...STATUS_ROUTED, router: { ...STATUS_ROUTED.router!, running: false, error: 'not running in PM2' } });
    expect(down).toMatch(/^router +NOT RUNNING \(not running in PM2\); it would route to 20261121T204233Z-3f2a9c1 on :13002$/m);
  });
});

describe('formatHistory', () => {
  const out = formatHistory(HISTORY);

  it('prints one aligned row per entry, newest first', () => {
    expect(out).toMatchInlineSnapshot(`
      "TIME                  ACTION    RESULT  FROM                      TO                        SHA      TRIGGER  BY                 TOOK   PEAK  DETAIL
      2026-11-21 21:05:00Z  prune     ok      -                         -                         -        api      deploy@vm-front-1  0.0s   -
      2026-11-21 21:00:41Z  deploy    failed  20261121T204233Z-3f2a9c1  20261121T210000Z-0badc0d  0badc0d  cli      deploy@vm-front-1  16.3s  -     error HEALTH_FAILED in health
      2026-11-21 21:00:40Z  revert    ok      20261121T210000Z-0badc0d  20261121T204233Z-3f2a9c1  0badc0d  cli      deploy@vm-front-1  0.8s   -
      2026-11-21 20:50:00Z  rollback  ok      20261121T204233Z-3f2a9c1  20261121T193000Z-9e8d7c6  9e8d7c6  webhook  root@h             2.8s   -
      2026-11-21 20:42:33Z  deploy    ok      20261121T193000Z-9e8d7c6  20261121T204233Z-3f2a9c1  3f2a9c1  cli      deploy@vm-front-1  3.9s   -
      "
    `);
  });

  it('aligns every column; ACTION starts at the same offset on every line', () => {
    const [header, ...rows] = out.trimEnd().split('\n');
    expect(header.split(/\s+/)).toEqual(['TIME', 'ACTION', 'RESULT', 'FROM', 'TO', 'SHA', 'TRIGGER', 'BY', 'TOOK', 'PEAK', 'DETAIL']);
    const starts = columnStarts(header);
    expectAligned(out, starts);
    const actionAt = starts[1];
    expect(rows.map((r) => r.slice(actionAt).split(' ')[0])).toEqual(HISTORY.entries.map((e) => e.action));
    expect(out).not.toMatch(ANSI);
    expect(out.split('\n').every((l) => l === l.trimEnd())).toBe(true);
  });

  it('says so when there is no history', () => {
    expect(formatHistory({ ok: true, changed: false, entries: [] })).toBe('no history yet\n');
  });
});

describe('formatDoctor', () => {
  const out = formatDoctor(DOCTOR);

  it('prints status, name and message aligned, a fix under each warn/fail, and the verdict', () => {
    expect(out).toMatchInlineSnapshot(`
      "OK    workspace  /home/deploy/executor/workspace is a git repository
      WARN  disk       900 MiB free on /srv (want 1024)
            fix: free some space: pm2-release prune --keep 1
      FAIL  port       3001 is held by pid 999 (not PM2)
            fix: stop the process holding port 3001
      OK    pm2        pm2 7.0.4, daemon running
      NOT ready to deploy: fix the FAIL lines
      "
    `);
  });

  it('aligns the name and message columns', () => {
    const checkLines = out.split('\n').filter((l) => /^(OK|WARN|FAIL)\b/.test(l));
    expect(checkLines).toHaveLength(DOCTOR.checks.length);
    expect(checkLines.map((l, i) => l.indexOf(DOCTOR.checks[i].name))).toEqual(DOCTOR.checks.map(() => 6));
    const messageAt = new Set(checkLines.map((l, i) => l.indexOf(DOCTOR.checks[i].message)));
    expect(messageAt.size).toBe(1);
    expect(out).not.toContain('never shown for an ok check');
    expect(out).not.toMatch(ANSI);
    expect(out.trimEnd().split('\n').at(-1)).toBe('NOT ready to deploy: fix the FAIL lines');
    expect(
      formatDoctor({ ok: true, changed: false, checks: DOCTOR.checks.slice(0, 1) })
        .trimEnd()
        .split('\n')
        .at(-1),
    ).toBe('ready to deploy');
  });
});

describe('formatError', () => {
  it('prints the output tail, the cause with code and phase, the fix and the log', () => {
    const e = new BuildError('BUILD_FAILED', 'build failed: npm run build exited with code 1', {
      phase: 'build',
      hint: 'read the build log; the live app was not touched',
      logFile: `${ROOT}/20261121T204233Z-3f2a9c1/.pm2-release/build.log`,
      outputTail: '> example-frontend@1.0.0 build\n> node build.mjs\nbuild failed: FAIL_BUILD is present',
    });
    const out = formatError(e, false);
    expect(out).toMatchInlineSnapshot(`
      "  | > example-frontend@1.0.0 build
        | > node build.mjs
        | build failed: FAIL_BUILD is present
      error: build failed: npm run build exited with code 1 [BUILD_FAILED in build]
      fix: read the build log; the live app was not touched
      log: /srv/releases/20261121T204233Z-3f2a9c1/.pm2-release/build.log
      "
    `);
    expect(out).not.toMatch(ANSI);
  });

  it('keeps only the last 15 lines of the output tail', () => {
    const tail = Array.from({ length: 40 }, (_, i) => `line ${i + 1}`).join('\n');
    const out = formatError(new BuildError('BUILD_FAILED', 'build failed', { phase: 'build', outputTail: tail }), false);
    const piped = out.split('\n').filter((l) => l.startsWith('  | '));
    expect(piped).toEqual(Array.from({ length: 15 }, (_, i) => `  | line ${i + 26}`));
  });

  it('a bare error is one line; --verbose adds the stack', () => {
    const e = new ReleaseError('SHA_MARKED_BAD', ExitCode.refused, '0badc0d was marked bad', { phase: 'resolve' });
    expect(formatError(e, false)).toMatchInlineSnapshot(`
      "error: 0badc0d was marked bad [SHA_MARKED_BAD in resolve]
      "
    `);
    const verbose = formatError(e, true);
    expect(verbose.startsWith('error: 0badc0d was marked bad [SHA_MARKED_BAD in resolve]\n')).toBe(true);
    expect(verbose).toContain(e.stack!);
  });
});

/**
 * Automation on a real PM2 daemon (private PM2_HOME): progress events and the result of a library deploy,
 * cancellation through an AbortSignal, the history file, bad-sha marks, hooks, and the plain (non-TTY)
 * tables of the CLI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activate, deploy, history, list, prune, rollback, type HistoryEntry, type ReleaseError, type ReleaseEvent } from '../../src/index.js';
import { CLI, cli, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

const ID_RE = /^\d{8}T\d{6}Z-[0-9a-f]{7}$/;
const ANSI = '\x1b[';
/** The deploy phases, in the order a deploy (no hooks) runs them. */
const DEPLOY_PHASES = ['lock', 'preflight', 'resolve', 'archive', 'env', 'install', 'build', 'prune', 'verify', 'switch', 'health', 'save', 'retain'];

type PhaseEvent = Extract<ReleaseEvent, { type: 'phase' }>;
type OutputEvent = Extract<ReleaseEvent, { type: 'output' }>;

function frontend(sb: Sandbox) {
  return sb.jlist().find((p) => p.name === 'frontend-dev');
}

function headSha(sb: Sandbox): string {
  return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: sb.workspace, encoding: 'utf8' }).trim();
}

/** A second config file next to sb.configPath: a deep copy of the sandbox config, changed by `change`. */
function writeConfig(sb: Sandbox, name: string, change: (c: { app: Record<string, unknown>; hooks?: Record<string, unknown> }) => void): string {
  const c = structuredClone(sb.config) as { app: Record<string, unknown>; hooks?: Record<string, unknown> };
  change(c);
  const file = path.join(path.dirname(sb.configPath), name);
  fs.writeFileSync(file, JSON.stringify(c, null, 2));
  return file;
}

/** The built CLI with another config file than sb.configPath. */
function cliWith(sb: Sandbox, configPath: string, args: string[]) {
  const r = spawnSync(process.execPath, [CLI, '--config', configPath, ...args], {
    env: sb.env,
    encoding: 'utf8',
    cwd: sb.root,
    timeout: 180_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Lines of `ps -eo pid,args` that contain `token`. */
function processesWith(token: string): string[] {
  return execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(token));
}

function releaseDirs(sb: Sandbox): string[] {
  return fs.existsSync(sb.releasesDir)
    ? fs
        .readdirSync(sb.releasesDir)
        .filter((n) => ID_RE.test(n))
        .sort()
    : [];
}

/** Start offset of each header word (table headers are single words separated by two or more spaces). */
function columnStarts(header: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of header.matchAll(/\S+/g)) out[m[0]] = m.index!;
  return out;
}

/** Asserts that `row` holds `value` exactly at the column's offset, after the two-space separator. */
function expectCell(row: string, start: number, value: string): void {
  expect(row.slice(start, start + value.length), `column at ${start} of ${JSON.stringify(row)}`).toBe(value);
  if (start > 0) expect(row.slice(start - 2, start), `separator before column ${start} of ${JSON.stringify(row)}`).toBe('  ');
}

describe('library deploy: progress events, result shape, cancellation', () => {
  let sb: Sandbox;
  let first: string;
  const url = () => `http://127.0.0.1:${sb.port}/`;

  beforeAll(async () => {
    sb = await createSandbox({ keep: 2 });
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('emits start/end for every phase in order, output lines of install and build, and returns the documented result', async () => {
    const sha = headSha(sb);
    const events: ReleaseEvent[] = [];
    const r = await deploy({ configPath: sb.configPath, env: sb.env, cwd: sb.root, onEvent: (e) => events.push(e) });
    first = r.release.id;

    const phases = events.filter((e): e is PhaseEvent => e.type === 'phase');
    expect(phases.filter((e) => e.state === 'fail')).toEqual([]);
    // Phases do not nest: each 'start' is followed by the 'end' of the same phase, with a duration.
    expect(phases.length % 2).toBe(0);
    for (let i = 0; i < phases.length; i += 2) {
      expect(phases[i]).toMatchObject({ state: 'start' });
      expect(phases[i + 1]).toMatchObject({ phase: phases[i].phase, state: 'end' });
      const d = (phases[i + 1] as { durationMs: number }).durationMs;
      expect(Number.isInteger(d) && d >= 0, `durationMs of ${phases[i].phase}: ${d}`).toBe(true);
    }
    const started = phases.filter((e) => e.state === 'start').map((e) => e.phase);
    expect(started.filter((p) => DEPLOY_PHASES.includes(p))).toEqual(DEPLOY_PHASES);

    // Output lines come from install and build, each while its phase runs.
    const outputs = events.filter((e): e is OutputEvent => e.type === 'output');
    expect(outputs.filter((e) => e.phase === 'install').length).toBeGreaterThan(0);
    expect(outputs.filter((e) => e.phase === 'build').map((e) => e.line)).toContainEqual(expect.stringMatching(/built v1/));
    for (const o of outputs) {
      const before = events.slice(0, events.indexOf(o)).filter((e): e is PhaseEvent => e.type === 'phase');
      expect(before.at(-1), `output ${JSON.stringify(o)} outside its phase`).toMatchObject({ phase: o.phase, state: 'start' });
    }

    // The documented result shape.
    const dir = path.join(sb.releasesDir, r.release.id);
    expect(Object.keys(r).sort()).toEqual(['action', 'changed', 'durationsMs', 'mode', 'ok', 'previous', 'release', 'removed', 'soak', 'url', 'warnings']);
    expect(r.soak).toBeNull(); // the restart strategy has no soak
    expect(r).toMatchObject({
      ok: true,
      action: 'deploy',
      mode: 'built',
      previous: null,
      url: url(),
      removed: [],
      warnings: expect.any(Array),
      release: {
        id: expect.stringMatching(ID_RE),
        sha,
        shortSha: sha.slice(0, 7),
        ref: 'HEAD',
        subject: 'v1',
        dir,
        cwd: path.join(dir, 'frontend'),
        status: 'ready',
        active: true,
        error: null,
        bad: null,
        buildLog: expect.stringContaining(dir),
      },
    });
    expect(r.release.id.endsWith(sha.slice(0, 7))).toBe(true);
    // Every phase was timed once, and the result's durations are the events' durations.
    for (const p of DEPLOY_PHASES) {
      const end = phases.find((e) => e.phase === p && e.state === 'end') as { durationMs: number };
      expect(r.durationsMs[p], `durationsMs.${p}`).toBe(end.durationMs);
    }
    expect(fs.readFileSync(r.release.buildLog, 'utf8')).toContain('built v1');
    const res = await get(url());
    expect(res.status).toBe(200);
    expect(res.body).toContain(r.release.id);
  });

  it('an AbortSignal during the build rejects with CANCELLED, kills the build, frees the lock, and leaves the live app serving', async () => {
    const token = `p2r-cancel-${process.pid}-${Date.now()}`;
    const slowConfig = writeConfig(sb, 'slow-build.config.json', (c) => {
      c.app.build = ['node', '-e', `setTimeout(()=>{},30000)//${token}`];
    });
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const live = frontend(sb)!;
    const dirsBefore = releaseDirs(sb);

    const ac = new AbortController();
    const events: ReleaseEvent[] = [];
    let buildStarted!: () => void;
    const started = new Promise<void>((resolve) => (buildStarted = resolve));
    const running = deploy({
      configPath: slowConfig,
      env: sb.env,
      cwd: sb.root,
      signal: ac.signal,
      onEvent: (e) => {
        events.push(e);
        if (e.type === 'phase' && e.phase === 'build' && e.state === 'start') buildStarted();
      },
    });
    const outcome = running.then(
      () => null,
      (err: ReleaseError) => err,
    );
    await Promise.race([started, outcome.then((e) => Promise.reject(new Error(`deploy ended before its build started: ${e?.code} ${e?.message}`)))]);
    // The slow build is running (this proves the ps check below can see it).
    let seen: string[] = [];
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
      seen = processesWith(token);
      if (seen.length > 0) break;
    }
    expect(seen.length, 'the slow build process never showed up in ps').toBeGreaterThan(0);
    await sleep(300);
    ac.abort();

    const err = await outcome;
    expect(err).not.toBeNull();
    expect(err).toMatchObject({ code: 'CANCELLED', exitCode: 130, phase: 'build' });
    expect(events).toContainEqual(expect.objectContaining({ type: 'phase', phase: 'build', state: 'fail', code: 'CANCELLED' }));
    expect(events.filter((e) => e.type === 'phase' && ['verify', 'switch', 'health', 'save'].includes(e.phase))).toEqual([]);
    // No process of the build is left.
    expect(processesWith(token)).toEqual([]);
    // The live app was never touched and still serves the first release.
    const res = await get(url());
    expect(res.body).toContain(first);
    const after = frontend(sb)!;
    expect(after.pid).toBe(live.pid);
    expect(after.pm2_env.restart_time).toBe(live.pm2_env.restart_time);
    // The lock is free.
    expect(fs.existsSync(path.join(sb.releasesDir, '.lock'))).toBe(false);
    expect(fs.existsSync(path.join(sb.releasesDir, '.lock.json'))).toBe(false);
    // The aborted release is recorded as failed.
    const newDirs = releaseDirs(sb).filter((d) => !dirsBefore.includes(d));
    expect(newDirs).toHaveLength(1);
    const l = await list({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
    expect(l.active).toBe(first);
    expect(l.releases.find((x) => x.id === newDirs[0])).toMatchObject({ status: 'failed', active: false, error: { code: 'CANCELLED', phase: 'build' } });
    // A following locked operation works.
    const p = await prune({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
    expect(p).toMatchObject({ ok: true, action: 'prune', dryRun: false });
    expect(p.kept).toContain(first);
  });
});

describe('history and bad-sha marks', () => {
  let sb: Sandbox;
  const url = () => `http://127.0.0.1:${sb.port}/`;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  let r1: string;
  let r2: string;
  let v1sha: string;
  let crashSha: string;
  let crashId: string;

  beforeAll(async () => {
    sb = await createSandbox({ keep: 5 });
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('one history line per deploy, failed deploy, activate, rollback, automatic revert and prune', async () => {
    v1sha = headSha(sb);
    r1 = (await deploy(opts())).release.id;
    const failSha = sb.commit('broken build', { FAIL_BUILD: 'yes\n' });
    const buildErr = await deploy(opts()).catch((e: ReleaseError) => e);
    expect(buildErr).toMatchObject({ code: 'BUILD_FAILED', phase: 'build' });
    const failedId = (buildErr as ReleaseError).releaseId!;
    const v2sha = sb.commit('v2', { FAIL_BUILD: null, 'version.txt': 'v2\n' });
    r2 = (await deploy(opts())).release.id;
    const act = await activate({ ...opts(), id: r1 });
    expect(act).toMatchObject({ action: 'activate', release: { id: r1 }, previous: r2 });
    const rb = await rollback(opts());
    expect(rb).toMatchObject({ action: 'rollback', release: { id: r2 }, previous: r1 });
    // The automatic revert: a release that crashes at boot, verify skipped, the health gate reverts it.
    crashSha = sb.commit('crashes at boot', { CRASH_ON_BOOT: '1' });
    const healthErr = await deploy({ ...opts(), verify: false }).catch((e: ReleaseError) => e);
    expect(healthErr).toMatchObject({ code: 'HEALTH_FAILED', phase: 'health', exitCode: 5 });
    crashId = (healthErr as ReleaseError).releaseId!;
    expect(crashId).toMatch(ID_RE);
    expect((await get(url())).body).toContain(r2);
    const pr = await prune(opts());
    expect(pr.removed.map((x) => x.id)).toEqual([failedId]);

    const h = await history(opts());
    expect(h.ok).toBe(true);
    const oldestFirst = [...h.entries].reverse();
    expect(oldestFirst).toMatchObject([
      { action: 'deploy', result: 'ok', from: null, to: r1, sha: v1sha, error: null },
      { action: 'deploy', result: 'failed', from: r1, to: failedId, sha: failSha, error: { code: 'BUILD_FAILED', phase: 'build' } },
      { action: 'deploy', result: 'ok', from: r1, to: r2, sha: v2sha, error: null },
      { action: 'activate', result: 'ok', from: r2, to: r1, sha: v1sha, error: null },
      { action: 'rollback', result: 'ok', from: r1, to: r2, sha: v2sha, error: null },
      { action: 'revert', result: 'ok', from: crashId, to: r2, sha: crashSha, error: null, detail: expect.stringContaining('not healthy') },
      { action: 'deploy', result: 'failed', from: r2, to: crashId, sha: crashSha, error: { code: 'HEALTH_FAILED', phase: 'health' } },
      { action: 'prune', result: 'ok', from: null, to: null, sha: null, error: null, detail: `removed ${failedId}` },
    ]);
    const { user, host } = { user: os.userInfo().username, host: os.hostname() };
    for (const e of h.entries) {
      for (const k of ['time', 'action', 'trigger', 'user', 'host', 'from', 'to', 'sha', 'result', 'error', 'durationsMs'] as const)
        expect(e, `${e.action}.${k}`).toHaveProperty(k);
      expect(e).toMatchObject({ trigger: 'api', user, host });
      expect(new Date(e.time).toISOString()).toBe(e.time);
      for (const v of Object.values(e.durationsMs)) expect(v).toBeGreaterThanOrEqual(0);
    }
    expect(Object.keys(oldestFirst[0].durationsMs)).toEqual(expect.arrayContaining(DEPLOY_PHASES));
    expect(oldestFirst[1].durationsMs).toHaveProperty('build');
    expect(oldestFirst[1].durationsMs).not.toHaveProperty('switch');
    // Times never go backwards.
    const times = oldestFirst.map((e) => e.time);
    expect([...times].sort()).toEqual(times);

    // The file: one JSON line per action, oldest first.
    const lines = fs.readFileSync(path.join(sb.releasesDir, 'history.jsonl'), 'utf8').split('\n');
    expect(lines.at(-1)).toBe('');
    expect(lines.slice(0, -1).map((l) => JSON.parse(l) as HistoryEntry)).toEqual(oldestFirst);

    // The CLI prints the same entries (reading the history adds none).
    const c = cli(sb, ['history', '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout)).toEqual({ ok: true, changed: false, entries: h.entries });
    const limited = cli(sb, ['history', '--json', '--limit', '2']);
    expect(JSON.parse(limited.stdout).entries).toEqual(h.entries.slice(0, 2));
  });

  it('a sha the health gate reverted is refused by a plain deploy (SHA_MARKED_BAD, exit 7), and list shows it BAD', async () => {
    expect(headSha(sb)).toBe(crashSha);
    const live = frontend(sb)!;
    const dirsBefore = releaseDirs(sb);
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(7);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: false, error: { code: 'SHA_MARKED_BAD', phase: 'resolve' } });
    expect(out.error.message).toContain(crashSha.slice(0, 7));
    expect(out.error.hint).toContain('--force');
    // Nothing was built, PM2 was not touched.
    expect(releaseDirs(sb)).toEqual(dirsBefore);
    expect(frontend(sb)!.pid).toBe(live.pid);
    // The human form: exit 7 and the hint.
    const human = cli(sb, ['deploy']);
    expect(human.code).toBe(7);
    expect(human.stderr).toContain('[SHA_MARKED_BAD in resolve]');
    expect(human.stderr).toContain('fix: ');

    const l = await list(opts());
    const crashed = l.releases.find((x) => x.id === crashId)!;
    expect(crashed).toMatchObject({ status: 'failed', bad: { reason: expect.stringContaining('health gate reverted it'), markedAt: expect.any(String) } });
    expect(l.releases.filter((x) => x.bad && x.sha !== crashSha && x.sha !== v1sha)).toEqual([]);
    const text = cli(sb, ['list']);
    expect(text.code).toBe(0);
    const row = text.stdout.split('\n').find((line) => line.includes(crashId));
    expect(row).toMatch(/BAD: health gate reverted it/);
  });

  it('a sha rolled back from is refused too; --force deploys it and clears its mark', async () => {
    // The rollback above went from r1 (v1, healthy) to r2: v1's sha is marked.
    let l = await list(opts());
    expect(l.releases.find((x) => x.id === r1)!.bad).toMatchObject({ reason: expect.stringContaining('rolled back from') });
    const refused = cli(sb, ['deploy', '--ref', v1sha, '--json']);
    expect(refused.code, refused.stderr).toBe(7);
    expect(JSON.parse(refused.stdout).error.code).toBe('SHA_MARKED_BAD');
    expect((await get(url())).body).toContain(r2);

    const forced = cli(sb, ['deploy', '--ref', v1sha, '--force', '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    const out = JSON.parse(forced.stdout);
    // r1 (v1) is still retained and ready: --force switches back to it without a build.
    expect(out).toMatchObject({ ok: true, mode: 'reactivated', release: { id: r1, sha: v1sha, active: true, bad: null }, previous: r2 });
    const res = await get(url());
    expect(res.body).toContain(r1);
    expect(res.body).toContain('v1');
    l = await list(opts());
    expect(l.active).toBe(r1);
    expect(l.releases.find((x) => x.id === r1)!.bad).toBeNull();
    const marks = JSON.parse(fs.readFileSync(path.join(sb.releasesDir, 'bad-shas.json'), 'utf8'));
    expect(Object.keys(marks)).toEqual([crashSha]);
  });

  it('a new commit deploys normally (no --force needed)', async () => {
    const sha = sb.commit('v4: boot fixed', { CRASH_ON_BOOT: null, 'version.txt': 'v4\n' });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.release).toMatchObject({ sha, active: true, bad: null });
    expect((await get(url())).body).toContain('v4');
    // The old mark stays: that sha is still refused.
    const again = cli(sb, ['deploy', '--ref', crashSha, '--json']);
    expect(again.code).toBe(7);
  });

  it('a newer commit with the same inputs as a build marked bad (an empty commit) is built and gated anew, not reused', async () => {
    const v4 = (await list(opts())).active!;
    const back = await rollback(opts());
    expect(back.release.id).not.toBe(v4);
    // v4's sha is marked (rolled back from); an empty commit on top has the very same app tree.
    execFileSync('git', ['commit', '-q', '--allow-empty', '-m', 'retry v4'], { cwd: sb.workspace, env: sb.env });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.mode).toBe('built');
    expect(out.release.id).not.toBe(v4);
    expect(out.release.sha).toBe(headSha(sb));
    expect((await get(url())).body).toContain('v4');
  });

  it('CLI list, status and history when not a TTY: no ANSI codes, aligned tables', async () => {
    const lj = JSON.parse(cli(sb, ['list', '--json']).stdout) as Awaited<ReturnType<typeof list>>;
    const hj = JSON.parse(cli(sb, ['history', '--json']).stdout) as Awaited<ReturnType<typeof history>>;

    const l = cli(sb, ['list']);
    expect(l.code, l.stderr).toBe(0);
    expect(l.stdout + l.stderr).not.toContain(ANSI);
    const [lh, ...lrows] = l.stdout.trimEnd().split('\n');
    expect(lh).toMatch(/^\s+ID\s+SHA\s+STATUS\s+CREATED\s+SIZE\s+PEAK\s+NOTE$/);
    expect(lrows).toHaveLength(lj.releases.length);
    const lc = columnStarts(lh);
    lj.releases.forEach((x, i) => {
      const row = lrows[i];
      expect(row.startsWith(x.active ? '*' : ' ')).toBe(true);
      expectCell(row, lc.ID, x.id);
      expectCell(row, lc.SHA, x.shortSha ?? '-');
      expectCell(row, lc.STATUS, x.status);
      expectCell(row, lc.CREATED, x.createdAt!.replace('T', ' ').slice(0, 19));
      expect(row.slice(lc.SIZE)).toMatch(/^\d/);
      // The step closest to its memory budget ("build 312.0 MiB 26 %"), "-" when neither recorded a peak.
      const m = x.memory;
      const peak = [m?.build, m?.install].some((p) => p && p.peakBytes !== null && p.budgetBytes > 0);
      expect(row.slice(lc.PEAK)).toMatch(peak ? /^(build|install) \d+(\.\d)? (B|KiB|MiB|GiB) \d+ %/ : /^-(\s|$)/);
      if (x.bad) expectCell(row, lc.NOTE, `BAD: ${x.bad.reason}`);
      else if (x.error) expectCell(row, lc.NOTE, `${x.error.code} in ${x.error.phase}`);
    });
    expect(lrows.some((r) => r.includes('BAD'))).toBe(true);

    const h = cli(sb, ['history']);
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout + h.stderr).not.toContain(ANSI);
    const [hh, ...hrows] = h.stdout.trimEnd().split('\n');
    expect(hh).toMatch(/^TIME\s+ACTION\s+RESULT\s+FROM\s+TO\s+SHA\s+TRIGGER\s+BY\s+TOOK\s+PEAK\s+DETAIL$/);
    expect(hrows).toHaveLength(hj.entries.length);
    const hc = columnStarts(hh);
    hj.entries.forEach((e, i) => {
      const row = hrows[i];
      expectCell(row, hc.TIME, e.time.replace('T', ' ').slice(0, 19));
      expectCell(row, hc.ACTION, e.action);
      expectCell(row, hc.RESULT, e.result);
      expectCell(row, hc.FROM, e.from ?? '-');
      expectCell(row, hc.TO, e.to ?? '-');
      expectCell(row, hc.SHA, e.sha ? e.sha.slice(0, 7) : '-');
      expectCell(row, hc.TRIGGER, e.trigger);
      expectCell(row, hc.BY, `${e.user}@${e.host}`);
      expect(row.slice(hc.TOOK)).toMatch(/^\d+\.\ds/);
      if (e.error) expectCell(row, hc.DETAIL, `error ${e.error.code} in ${e.error.phase}`);
    });
    expect(hrows.map((r) => r.slice(hc.ACTION).split(' ')[0])).toEqual(expect.arrayContaining(['deploy', 'activate', 'rollback', 'revert', 'prune']));

    const s = cli(sb, ['status']);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout + s.stderr).not.toContain(ANSI);
    const slines = s.stdout
      .trimEnd()
      .split('\n')
      .filter((x) => !x.startsWith('warning: '));
    // The memory row: the active release's install and build peaks against their budgets (issue 18).
    expect(slines.map((x) => x.split(' ')[0])).toEqual(['app', 'pm2', 'cwd', 'active', 'recorded', 'health', 'drift', 'memory']);
    const valueAt = new Set(slines.map((x) => /^\S+\s+/.exec(x)![0].length));
    expect(valueAt.size, s.stdout).toBe(1);
    const col = [...valueAt][0];
    const active = lj.releases.find((x) => x.active)!;
    const value = (k: string) => slines.find((x) => x.startsWith(`${k} `))!.slice(col);
    expect(value('app')).toBe('frontend-dev');
    expect(value('pm2')).toMatch(/^online \(pid \d+, id \d+, restarts \d+\)$/);
    expect(value('active')).toBe(`${active.id} (${active.shortSha})`);
    expect(value('cwd')).toBe(active.cwd);
    expect(value('health')).toBe(`ok ${url()} → 200`);
    expect(value('drift')).toBe('none');
    expect(value('memory')).toMatch(/^peak (install|build) \d+(\.\d)? (B|KiB|MiB|GiB) \(\d+ % of \d+(\.\d)? (KiB|MiB|GiB)\)/);
  });
});

describe('hooks', () => {
  let sb: Sandbox;
  let r1: string;
  let r2: string;
  let recordFile: string;
  const url = () => `http://127.0.0.1:${sb.port}/`;
  // Appends one JSON line per run: which hook, with which variables, in which directory.
  const RECORDER =
    "require('fs').appendFileSync(process.argv[1], JSON.stringify({hook: process.env.RELEASE_HOOK, id: process.env.RELEASE_ID, sha: process.env.RELEASE_SHA, dir: process.env.RELEASE_DIR, prev: process.env.PREVIOUS_RELEASE_ID, app: process.env.PM2_APP, code: process.env.FAILURE_CODE, phase: process.env.FAILURE_PHASE, cwd: process.cwd()})+'\\n')";
  const recorder = () => ['node', '-e', RECORDER, recordFile];
  const records = (): Record<string, string | undefined>[] =>
    fs.existsSync(recordFile)
      ? fs
          .readFileSync(recordFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l))
      : [];

  beforeAll(async () => {
    sb = await createSandbox({ keep: 3 });
    recordFile = path.join(sb.root, 'hooks.jsonl');
    r1 = (await deploy({ configPath: sb.configPath, env: sb.env, cwd: sb.root })).release.id;
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('preDeploy, postBuild, postSwitch and postDeploy run in order with the release variables', async () => {
    const cfg = writeConfig(sb, 'hooks.config.json', (c) => {
      c.hooks = { preDeploy: recorder(), postBuild: recorder(), postSwitch: recorder(), postDeploy: recorder() };
    });
    const sha = sb.commit('v2', { 'version.txt': 'v2\n' });
    const events: ReleaseEvent[] = [];
    const r = await deploy({ configPath: cfg, env: sb.env, cwd: sb.root, onEvent: (e) => events.push(e) });
    r2 = r.release.id;
    expect(r.previous).toBe(r1);

    const recs = records();
    expect(recs.map((x) => x.hook)).toEqual(['preDeploy', 'postBuild', 'postSwitch', 'postDeploy']);
    for (const x of recs) expect(x).toMatchObject({ id: r2, sha, dir: r.release.cwd, prev: r1, app: 'frontend-dev' });
    for (const x of recs) expect(x.code).toBeUndefined();
    expect(recs[0].cwd).toBe(fs.realpathSync(sb.workspace));
    for (const x of recs.slice(1)) expect(x.cwd).toBe(fs.realpathSync(r.release.cwd));

    // Where they run among the phases: preDeploy before the build, postBuild before verify,
    // postSwitch after the save, postDeploy last.
    const starts = events.filter((e): e is PhaseEvent => e.type === 'phase' && e.state === 'start').map((e) => e.phase);
    expect(starts.filter((p) => p !== 'lock' && p !== 'preflight')).toEqual([
      'resolve',
      'hook',
      'archive',
      'env',
      'install',
      'build',
      'prune',
      // The release's node_modules is hard-linked to the previous one's: the build is checked for writes into it.
      'isolation',
      'hook',
      'verify',
      'switch',
      'health',
      'save',
      'hook',
      'retain',
      'hook',
    ]);
    expect(events.filter((e) => e.type === 'phase' && e.phase === 'hook' && e.state === 'end')).toHaveLength(4);
    expect(Object.keys(r.durationsMs)).toEqual(expect.arrayContaining(['hook:preDeploy', 'hook:postBuild', 'hook:postSwitch', 'hook:postDeploy']));
    expect(r.warnings.filter((w) => w.includes('hook'))).toEqual([]);
  });

  it('a failing postBuild hook stops the deploy before the switch (HOOK_FAILED, exit 4); onFailure gets FAILURE_CODE and FAILURE_PHASE', async () => {
    fs.rmSync(recordFile, { force: true });
    const cfg = writeConfig(sb, 'hooks-fail.config.json', (c) => {
      c.hooks = { postBuild: ['node', '-e', 'process.exit(3)'], onFailure: recorder() };
    });
    const sha = sb.commit('v3', { 'version.txt': 'v3\n' });
    const live = frontend(sb)!;
    const r = cliWith(sb, cfg, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(4);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: false, error: { code: 'HOOK_FAILED', phase: 'hook', releaseId: expect.stringMatching(ID_RE) } });
    expect(out.error.message).toContain('postBuild hook failed');
    expect(out.error.message).toContain('exited with code 3');
    const failedId: string = out.error.releaseId;
    // PM2 untouched, the live release still serving.
    const after = frontend(sb)!;
    expect(after.pid).toBe(live.pid);
    expect(after.pm2_env.restart_time).toBe(live.pm2_env.restart_time);
    expect((await get(url())).body).toContain(r2);
    const l = await list({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
    expect(l.active).toBe(r2);
    expect(l.releases.find((x) => x.id === failedId)).toMatchObject({ status: 'failed', error: { code: 'HOOK_FAILED', phase: 'hook' } });
    // onFailure ran once, with the failure and the release variables.
    expect(records()).toEqual([
      {
        hook: 'onFailure',
        id: failedId,
        sha,
        dir: path.join(sb.releasesDir, failedId, 'frontend'),
        prev: r2,
        app: 'frontend-dev',
        code: 'HOOK_FAILED',
        phase: 'hook',
        cwd: fs.realpathSync(sb.workspace),
      },
    ]);
    // The human form exits 4 too.
    const human = cliWith(sb, cfg, ['deploy']);
    expect(human.code).toBe(4);
    expect(human.stderr).toContain('[HOOK_FAILED in hook]');
  });

  it('a failing postDeploy hook is reported as a warning; the deploy still succeeds', async () => {
    fs.rmSync(recordFile, { force: true });
    const cfg = writeConfig(sb, 'hooks-warn.config.json', (c) => {
      c.hooks = { postDeploy: ['node', '-e', 'process.exit(5)'], postSwitch: recorder(), onFailure: recorder() };
    });
    const events: ReleaseEvent[] = [];
    const r = await deploy({ configPath: cfg, env: sb.env, cwd: sb.root, onEvent: (e) => events.push(e) });
    expect(r.ok).toBe(true);
    expect(r.previous).toBe(r2);
    expect(r.warnings).toContainEqual(expect.stringMatching(/postDeploy hook failed.*exited with code 5/));
    expect(events).toContainEqual({ type: 'warning', message: expect.stringContaining('postDeploy hook failed') });
    expect(events).toContainEqual(expect.objectContaining({ type: 'phase', phase: 'hook', state: 'fail', code: 'HOOK_FAILED' }));
    expect((await get(url())).body).toContain(r.release.id);
    // postSwitch ran; onFailure did not (the deploy did not fail).
    expect(records().map((x) => x.hook)).toEqual(['postSwitch']);
    const h = await history({ configPath: sb.configPath, env: sb.env, cwd: sb.root, limit: 1 });
    expect(h.entries[0]).toMatchObject({ action: 'deploy', result: 'ok', to: r.release.id });
  });

  let cancelled: ReleaseError | null = null;
  const cancelWarnings: string[] = [];

  it('a deploy cancelled during its build rejects with CANCELLED and leaves no build process', async () => {
    fs.rmSync(recordFile, { force: true });
    const token = `p2r-hookcancel-${process.pid}-${Date.now()}`;
    const cfg = writeConfig(sb, 'hooks-cancel.config.json', (c) => {
      c.app.build = ['node', '-e', `setTimeout(()=>{},30000)//${token}`];
      c.hooks = { onFailure: recorder() };
    });
    sb.commit('v5', { 'version.txt': 'v5\n' });
    const live = frontend(sb)!;
    const activeBefore = (await list({ configPath: sb.configPath, env: sb.env, cwd: sb.root })).active!;
    expect(activeBefore).toMatch(ID_RE);
    const ac = new AbortController();
    const running = deploy({
      configPath: cfg,
      env: sb.env,
      cwd: sb.root,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'phase' && e.phase === 'build' && e.state === 'start') setTimeout(() => ac.abort(), 300);
        if (e.type === 'warning') cancelWarnings.push(e.message);
      },
    });
    cancelled = await running.then(
      () => null,
      (e: ReleaseError) => e,
    );
    expect(cancelled).toMatchObject({ code: 'CANCELLED', phase: 'build', releaseId: expect.stringMatching(ID_RE) });
    expect(processesWith(token)).toEqual([]);
    expect(frontend(sb)!.pid).toBe(live.pid);
    expect((await get(url())).body).toContain(activeBefore);
  });

  // onFailure runs for every failure but LOCKED, a cancellation included: it must not inherit the aborted signal.
  it('onFailure also runs when a deploy is cancelled (FAILURE_CODE=CANCELLED, FAILURE_PHASE=build)', () => {
    expect(cancelled, 'the cancel test above did not run').not.toBeNull();
    expect(records(), `warnings: ${JSON.stringify(cancelWarnings)}`).toMatchObject([
      { hook: 'onFailure', code: 'CANCELLED', phase: 'build', id: cancelled!.releaseId },
    ]);
  });
});

/**
 * Fault injection: every failpoint of a deploy × {fail, kill}, on one sandbox that always serves a release.
 *
 * Each case commits a new version, runs `deploy --json` through the built CLI with
 * PM2_RELEASE_FAILPOINT=<point>:<action> while polling the live app every ~100 ms, checks what the
 * interrupted run left (live app, PM2, dump, release statuses), then runs a plain deploy, which must
 * succeed on its own, serve the new version and leave no drift. That deploy is the next case's "previous".
 *
 * The app is probed with a fresh connection per request (no keep-alive pool): the sandbox `get()` shares
 * undici's pool, and after a blocking spawnSync (cli) it can pick a socket the old server already closed
 * and report an outage that never happened.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAILPOINTS, type Failpoint } from '../../src/failpoint.js';
import { list } from '../../src/index.js';
import { cli, createSandbox, startCli, type Sandbox } from '../helpers/sandbox.js';

type Action = 'fail' | 'kill';
const ACTIONS: Action[] = ['fail', 'kill'];
const matrix: [Failpoint, Action][] = FAILPOINTS.flatMap((p) => ACTIONS.map((a): [Failpoint, Action] => [p, a]));

/** Failpoints before the switch: the live app must never notice them. */
const BEFORE_SWITCH: Failpoint[] = ['archive', 'env', 'install', 'build', 'prune', 'verify'];
/** Failpoints inside switchToRelease: a failure there puts the previous release back. */
const IN_SWITCH: Failpoint[] = ['switch', 'health', 'save'];

const APP = 'frontend-dev';

/**
 * Cases whose "next deploy" test is expected to fail because of a known bug in src (none at the moment).
 * They run as it.fails so the suite stays green and flags the fix (an it.fails that passes fails the suite).
 */
const KNOWN_BUGS: Record<string, string> = {};
const KEEP = 3;

interface Probe {
  status?: number;
  body?: string;
  error?: string;
  /** The release id the app reported, when it answered 200. */
  release: string | null;
}

/** One GET on a fresh connection (agent: false → `Connection: close`), 2 s timeout. */
function probe(url: string): Promise<Probe> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 2_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        const m = res.statusCode === 200 ? /\(release ([^)]+)\)/.exec(body) : null;
        resolve({ status: res.statusCode, body, release: m ? m[1] : null });
      });
      res.on('error', (err) => resolve({ error: err.message, release: null }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message, release: null }));
  });
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  polls: (Probe & { t: number })[];
}

/** Spawns the built CLI without blocking the event loop; with `pollUrl`, probes it every ~100 ms until exit. */
async function runCli(sb: Sandbox, args: string[], extraEnv: Record<string, string> = {}, pollUrl?: string): Promise<Run> {
  const { child, done: finished } = startCli(sb, args, extraEnv);
  let done = false;
  child.once('exit', () => (done = true));
  // If it hangs, only the child we started is killed, by its handle.
  const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const polls: Run['polls'] = [];
  const poller = (async () => {
    if (!pollUrl) return;
    while (!done) {
      const t = Date.now();
      polls.push({ t, ...(await probe(pollUrl)) });
      await sleep(100);
    }
  })();
  const { code, signal, stdout, stderr } = await finished;
  clearTimeout(guard);
  await poller;
  return { code, signal, stdout, stderr, polls };
}

/** Collapses polls into runs of the same answer: e.g. [prev, null, new] (null = no answer). */
function segments(polls: { release: string | null }[]): (string | null)[] {
  const out: (string | null)[] = [];
  for (const p of polls) if (out.length === 0 || out[out.length - 1] !== p.release) out.push(p.release);
  return out;
}

/**
 * Processes of this sandbox's app (PM2_HOME and RELEASE_ID in their environment) that run outside PM2: their
 * parent chain does not reach the sandbox's PM2 daemon. Linux /proc; elsewhere it finds nothing.
 */
function appOrphans(sb: Sandbox): { pid: number; cwd: string; release: string }[] {
  let daemon = -1;
  try {
    daemon = Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8'));
  } catch {
    /* no daemon: every app process is an orphan */
  }
  const parent = new Map<number, number>();
  const candidates: { pid: number; cwd: string; release: string }[] = [];
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  for (const d of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      const env = fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0');
      if (!env.includes(`PM2_HOME=${sb.pm2Home}`)) continue;
      const release = env.find((e) => e.startsWith('RELEASE_ID='));
      if (release) candidates.push({ pid: Number(d), cwd: fs.readlinkSync(`/proc/${d}/cwd`), release: release.slice('RELEASE_ID='.length) });
    } catch {
      /* gone, or not ours to read */
    }
  }
  return candidates.filter(({ pid }) => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = parent.get(p) ?? 0, hops++) if (p === daemon) return false;
    return true;
  });
}

/** Orphans that are still there after ~2 s (a process PM2 just deleted may take a moment to exit). */
async function lastingOrphans(sb: Sandbox): Promise<{ pid: number; cwd: string; release: string }[]> {
  let found = appOrphans(sb);
  for (let i = 0; i < 10 && found.length > 0; i++) {
    await sleep(200);
    found = appOrphans(sb);
  }
  return found;
}

/** Ends the given processes by pid (only ones appOrphans found: this sandbox's app, outside PM2). */
function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

interface ReleaseJson {
  id: string;
  status: string;
  cwd: string;
  active: boolean;
  error: { code: string; phase: string; message: string } | null;
}

describe('fault injection: every deploy failpoint × {fail, kill}', () => {
  let sb: Sandbox;
  let n = 1;
  /** The JSON error of the save:fail case, for the it.fails below. */
  let saveFailJson: { error: { message: string } } | undefined;
  const url = () => `http://127.0.0.1:${sb.port}/`;

  const listJson = async (): Promise<{ active: string | null; releases: ReleaseJson[] }> => {
    const r = await runCli(sb, ['list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };
  /** frontend-dev and leftover verify processes, from one `pm2 jlist`. */
  const pm2State = () => {
    const procs = sb.jlist();
    return {
      app: procs.filter((p) => p.name === APP),
      verify: procs.filter((p) => p.name.startsWith(`${APP}.verify-`)).map((p) => p.name),
    };
  };
  const dumpCwd = (): string => {
    const procs = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string; pm_cwd: string }[];
    const apps = procs.filter((p) => p.name === APP);
    expect(
      apps.map((p) => p.pm_cwd),
      'the dump holds exactly one frontend-dev',
    ).toHaveLength(1);
    return apps[0].pm_cwd;
  };
  /** A `ready` release must be complete: its runtime build is there. */
  const expectReadyComplete = (releases: ReleaseJson[]) => {
    for (const r of releases.filter((x) => x.status === 'ready'))
      expect(fs.existsSync(path.join(r.cwd, 'build/build.json')), `ready release ${r.id} has build/build.json`).toBe(true);
  };
  const removalLeftovers = () => fs.readdirSync(sb.releasesDir).filter((f) => f.startsWith('.removing-'));

  /**
   * When a test fails (a known bug), it must not leak into the next case: kill app processes PM2 lost track
   * of, and if PM2, the dump and the record disagree or nothing healthy serves, deploy a new commit (which
   * repairs an interrupted switch, switches, saves and records) so the next case starts clean.
   */
  const repairIfInconsistent = async (key: string) => {
    try {
      const orphans = appOrphans(sb);
      if (orphans.length > 0) {
        console.warn(`after ${key}: killing app processes PM2 lost track of: ${JSON.stringify(orphans)}`);
        killPids(orphans.map((o) => o.pid));
      }
      const st = JSON.parse((await runCli(sb, ['status', '--json'])).stdout);
      const procs = pm2State();
      const consistent =
        !st.drift?.detected && st.health?.ok && procs.app.length === 1 && procs.verify.length === 0 && dumpCwd() === procs.app[0].pm2_env.pm_cwd;
      if (consistent) return;
      sb.commit(`repair after ${key}`, { 'version.txt': `repair-${key}\n` });
      const r = await runCli(sb, ['deploy', '--json']);
      console.warn(`state after ${key} was inconsistent (${st.drift?.reason ?? 'dump/PM2 disagree'}); repair deploy exited ${r.code}`);
    } catch (err) {
      console.warn(`repair after ${key} failed: ${(err as Error).message}`);
    }
  };

  beforeAll(async () => {
    // Shorter settle times than the sandbox default keep 40 deploys within budget; the gates still apply.
    sb = await createSandbox({ keep: KEEP, app: { healthcheck: { timeoutMs: 20_000, settleMs: 300 }, verify: { settleMs: 300 } } });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((await probe(url())).release).toBe(JSON.parse(r.stdout).release.id);
  }, 120_000);

  afterAll(async () => {
    if (!sb) return;
    await sb.close();
    // close() kills the sandbox's daemon; app processes PM2 lost track of (see appOrphans) would outlive it.
    killPids(appOrphans(sb).map((o) => o.pid));
  });

  describe.each(matrix)('%s:%s', (point, action) => {
    const key = `${point}:${action}`;
    /** What the injected run started from and left; read by the second test. */
    let prev = '';
    let fresh: ReleaseJson | undefined;
    let version = '';

    it(`deploy with PM2_RELEASE_FAILPOINT=${key} → ${
      BEFORE_SWITCH.includes(point) ? 'live app untouched' : action === 'fail' && point !== 'retain' ? 'previous release put back' : 'a ready release serves'
    }, no half-done release`, async () => {
      let passed = false;
      try {
        await injectedRun();
        passed = true;
      } finally {
        if (!passed) await repairIfInconsistent(key);
      }
    });

    const injectedRun = async () => {
      // ---- before: what serves now
      const before = await list({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
      prev = before.active!;
      expect(prev, 'a release is active before the injected deploy').toBeTruthy();
      const prevCwd = before.releases.find((r) => r.id === prev)!.cwd;
      expect((await probe(url())).release).toBe(prev);
      const pm2Before = pm2State();
      expect(pm2Before.app).toHaveLength(1);
      const pidBefore = pm2Before.app[0].pid;
      const idsBefore = new Set(before.releases.map((r) => r.id));

      n += 1;
      version = `v${n}-${point}-${action}`;
      sb.commit(version, { 'version.txt': `${version}\n` });

      // ---- the injected deploy, polled while it runs
      const run = await runCli(sb, ['deploy', '--json'], { PM2_RELEASE_FAILPOINT: key }, url());
      const ctx = `${key}\nstdout: ${run.stdout}\nstderr (tail): ${run.stderr.slice(-3000)}`;

      if (action === 'kill') {
        expect(run.signal, ctx).toBe('SIGKILL');
        expect(run.code, ctx).toBeNull();
        expect(run.stdout, 'a killed run prints no result').toBe('');
      } else if (point === 'retain') {
        // The new release is live when retention runs: its failure is a warning, the deploy succeeds.
        expect(run.code, ctx).toBe(0);
        const out = JSON.parse(run.stdout);
        expect(out.ok).toBe(true);
        expect(out.warnings.join('\n'), ctx).toContain('injected failure at retain');
      } else {
        const expectedExit = IN_SWITCH.includes(point) ? 5 : 4;
        expect(run.code, ctx).toBe(expectedExit);
        const out = JSON.parse(run.stdout);
        expect(out.ok).toBe(false);
        // The health gate and the save step report the injected error under their own codes.
        const expectedCode = point === 'health' ? 'HEALTH_FAILED' : point === 'save' ? 'SAVE_FAILED' : 'INJECTED_FAILURE';
        expect(out.error, ctx).toMatchObject({ code: expectedCode, phase: point });
        if (point === 'save') expect(run.stderr, 'the injected cause is logged').toContain('injected failure at save');
        else expect(out.error.message, ctx).toContain(`injected failure at ${point}`);
        // health:fail deletes the new app right after `pm2 start`; a server child that escapes the tree kill
        // would hold the port: the switch stops such an orphan (it runs from inside the releases dir) by pid.
        if (point === 'health' || point === 'save') expect(out.error.message, ctx).toContain(`${prev} is serving again`);
        if (point === 'save') saveFailJson = out;
      }

      // ---- what the interrupted run left
      const after = await listJson();
      const created = after.releases.filter((r) => !idsBefore.has(r.id));
      expect(
        created.map((r) => r.id),
        'the injected run created exactly one release',
      ).toHaveLength(1);
      fresh = created[0]!;
      const expectedStatus =
        action === 'fail'
          ? point === 'retain'
            ? 'ready' // switched and saved; only the clean-up failed
            : 'failed'
          : BEFORE_SWITCH.includes(point) && point !== 'verify'
            ? 'incomplete' // killed mid-build: the manifest still says building, and its builder is gone
            : 'ready';
      expect(fresh.status, ctx).toBe(expectedStatus);
      if (fresh.status === 'failed') expect(fresh.error).toMatchObject({ phase: point });
      expectReadyComplete(after.releases);
      const readyIds = new Set(after.releases.filter((r) => r.status === 'ready').map((r) => r.id));

      // Every answer during the run came from the previous or the new release.
      const polls = run.polls;
      expect(polls.length, 'the app was polled during the run').toBeGreaterThanOrEqual(3);
      const failedPolls = polls.filter((p) => p.release === null);
      const served = new Set(polls.map((p) => p.release).filter((x): x is string => x !== null));
      for (const id of served) expect([prev, fresh.id], `served ${id}`).toContain(id);
      const seq = segments(polls);
      const outages = seq.filter((s) => s === null).length;

      // Killed right after `pm2 start` (health), the new process may still be booting, and the switch-phase
      // revert does not wait for the old one to answer: give them a moment.
      let now = await probe(url());
      const mayBoot = (action === 'kill' && point === 'health') || (action === 'fail' && point === 'switch');
      for (let i = 0; i < 25 && mayBoot && now.release === null; i++) {
        await sleep(200);
        now = await probe(url());
      }
      const pm2After = pm2State();

      if (BEFORE_SWITCH.includes(point)) {
        // The live app never noticed: every poll answered by the previous release, PM2 untouched.
        expect(failedPolls.slice(0, 3), `${failedPolls.length} failed polls`).toEqual([]);
        expect([...served]).toEqual([prev]);
        expect(
          pm2After.app.map((p) => p.pid),
          'PM2 pid of frontend-dev unchanged',
        ).toEqual([pidBefore]);
        expect(now.release).toBe(prev);
        expect(dumpCwd()).toBe(prevCwd);
        if (action === 'fail') expect(pm2After.verify, 'a failed verify removes its process').toEqual([]);
        // SIGKILLed while its verify process runs: that process is left for the next run to remove.
        if (point === 'verify' && action === 'kill') expect(pm2After.verify).toEqual([`${APP}.verify-${fresh.id}`]);
      } else if (action === 'fail' && IN_SWITCH.includes(point)) {
        // Reverted: the previous release serves again, and the dump points at it. Outages only around the
        // two switches (there and back).
        expect(now.release, ctx).toBe(prev);
        expect(pm2After.app.map((p) => p.pm2_env.pm_cwd)).toEqual([prevCwd]);
        expect(dumpCwd()).toBe(prevCwd);
        expect(after.active).toBe(prev);
        expect(seq[0]).toBe(prev);
        expect(outages, `outages: ${JSON.stringify(seq)}`).toBeLessThanOrEqual(2);
        // health/save wait until the previous release answers before they report "serving again".
        if (point !== 'switch') expect(seq[seq.length - 1], `the run ends with the previous release serving: ${JSON.stringify(seq)}`).toBe(prev);
        if (point === 'switch') expect([...served], 'the new release never started').toEqual([prev]);
      } else if (action === 'fail' && point === 'retain') {
        // The switch succeeded; only the clean-up was interrupted.
        expect(now.release).toBe(fresh.id);
        expect(now.body).toContain(version);
        expect(after.active).toBe(fresh.id);
        expect(dumpCwd()).toBe(fresh.cwd);
        expect(outages, `one switch: ${JSON.stringify(seq)}`).toBeLessThanOrEqual(1);
        expect(seq.filter((s) => s !== null)).toEqual([prev, fresh.id]);
      } else {
        // kill at switch / health / save / retain: at most one outage (the switch), the previous release
        // never comes back within the run, and afterwards whatever serves is a ready release.
        expect(seq[0]).toBe(prev);
        expect(outages, `outages: ${JSON.stringify(seq)}`).toBeLessThanOrEqual(1);
        expect(
          seq.filter((s) => s === prev),
          `the previous release never comes back: ${JSON.stringify(seq)}`,
        ).toHaveLength(1);
        if (now.release !== null) expect(readyIds.has(now.release), `now serving ${now.release}`).toBe(true);
        if (point === 'switch') {
          // Killed between `pm2 delete` and `pm2 start`: nothing serves until the next run repairs it.
          expect(pm2After.app).toEqual([]);
          expect(now.release).toBeNull();
        } else {
          expect(now.release, ctx).toBe(fresh.id);
          expect(pm2After.app.map((p) => p.pm2_env.pm_cwd)).toEqual([fresh.cwd]);
        }
        // The dump is saved only after the health gate passed.
        expect(dumpCwd()).toBe(point === 'retain' ? fresh.cwd : prevCwd);
        if (point === 'retain') expect(removalLeftovers().length, 'killed after the first rename').toBeGreaterThan(0);
      }
      // Whatever a resurrect would bring back is a ready release.
      const dc = dumpCwd();
      expect(
        after.releases.some((r) => r.status === 'ready' && r.cwd === dc),
        `dump cwd ${dc} is a ready release`,
      ).toBe(true);
      // Nothing of the app runs behind PM2's back (e.g. the npm child of a deleted app holding the port).
      expect(await lastingOrphans(sb), 'app processes outside PM2').toEqual([]);
    };

    (KNOWN_BUGS[key] ? it.fails : it)(
      `next plain deploy after ${key} succeeds, serves the new version, no drift${KNOWN_BUGS[key] ? ` [known bug: ${KNOWN_BUGS[key]}]` : ''}`,
      async () => {
        let passed = false;
        try {
          expect(fresh, 'the injected run left a release').toBeDefined();
          if (key === 'health:fail') {
            // The health gate marked this sha bad: a plain deploy of it is refused and changes nothing...
            const refused = await runCli(sb, ['deploy', '--json']);
            expect(refused.code, refused.stdout + refused.stderr.slice(-2000)).toBe(7);
            expect(JSON.parse(refused.stdout).error).toMatchObject({ code: 'SHA_MARKED_BAD' });
            expect((await probe(url())).release).toBe(prev);
            // ...and a fix (a newer commit) deploys normally.
            version = `${version}-fix`;
            sb.commit(version, { 'version.txt': `${version}\n` });
          }
          const next = await runCli(sb, ['deploy', '--json']);
          expect(next.code, `next deploy after ${key}\n${next.stdout}\n${next.stderr.slice(-3000)}`).toBe(0);
          const res = JSON.parse(next.stdout);
          expect(res).toMatchObject({ ok: true, action: 'deploy', release: { status: 'ready' } });
          const nowNext = await probe(url());
          expect(nowNext.release, JSON.stringify(nowNext)).toBe(res.release.id);
          expect(nowNext.body).toContain(version);
          const [final, st] = await Promise.all([listJson(), runCli(sb, ['status', '--json'])]);
          expect(st.code, st.stderr).toBe(0);
          const status = JSON.parse(st.stdout);
          const pm2Next = pm2State();
          // PM2, the dump, the record and `status` all agree on the release the deploy reported.
          expect({
            pm2Cwd: pm2Next.app.map((p) => p.pm2_env.pm_cwd),
            dumpCwd: dumpCwd(),
            listActive: final.active,
            statusActive: status.active?.id,
            recorded: status.recorded,
            drift: status.drift,
            healthOk: status.health?.ok,
          }).toEqual({
            pm2Cwd: [res.release.cwd],
            dumpCwd: res.release.cwd,
            listActive: res.release.id,
            statusActive: res.release.id,
            recorded: res.release.id,
            drift: { detected: false, reason: null },
            healthOk: true,
          });
          expect(pm2Next.verify, 'no leftover verify processes').toEqual([]);
          expect(removalLeftovers(), 'no half-removed releases').toEqual([]);
          expect(await lastingOrphans(sb), 'app processes outside PM2').toEqual([]);
          expectReadyComplete(final.releases);
          expect(final.releases.filter((r) => r.status === 'incomplete' || r.status === 'building').map((r) => r.id)).toEqual([]);
          // Retention runs when a release is built (a retained release re-activated without a build skips it).
          if (res.mode === undefined || res.mode === 'built') expect(final.releases.filter((r) => r.status === 'ready').length).toBeLessThanOrEqual(KEEP);
          passed = true;
        } finally {
          if (!passed) await repairIfInconsistent(key);
        }
      },
    );
  });

  it('save:fail → the JSON error names the cause of the failed save', () => {
    expect(saveFailJson, 'the save:fail case ran').toBeDefined();
    expect(saveFailJson!.error.message).toContain('injected failure at save');
  });
});

/**
 * Fault injection: every failpoint of a deploy × {fail, kill}, on one sandbox that always serves a release.
 *
 * Each case commits a new version, runs `deploy --json` through the built CLI with
 * PM2_RELEASE_FAILPOINT=<point>:<action> while polling the live app every ~100 ms, checks what the
 * interrupted run left (live app, PM2, dump, release statuses), then runs a plain deploy, which must
 * succeed on its own and serve the new version with no drift. That deploy is the next case's "previous".
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAILPOINTS, type Failpoint } from '../../src/failpoint.js';
import { CLI, cli, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

type Action = 'fail' | 'kill';
const ACTIONS: Action[] = ['fail', 'kill'];
const matrix: [Failpoint, Action][] = FAILPOINTS.flatMap((p) => ACTIONS.map((a) => [p, a] as [Failpoint, Action]));

/** Failpoints before the switch: the live app must never notice them. */
const BEFORE_SWITCH: Failpoint[] = ['archive', 'env', 'install', 'build', 'prune', 'verify'];
/** Failpoints inside switchToRelease: a failure there puts the previous release back. */
const IN_SWITCH: Failpoint[] = ['switch', 'health', 'save'];

const APP = 'frontend-dev';

interface Poll {
  t: number;
  /** Release id the app answered with, or null when the request failed / was not a 200. */
  release: string | null;
  body?: string;
  error?: string;
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  polls: Poll[];
}

interface ReleaseJson {
  id: string;
  status: string;
  cwd: string;
  active: boolean;
  error: { code: string; phase: string; message: string } | null;
}

/** Runs the CLI without blocking the event loop, polling the live app every ~100 ms until it exits. */
async function runPolling(sb: Sandbox, args: string[], extraEnv: Record<string, string>, url: string): Promise<Run> {
  const child = spawn(process.execPath, [CLI, '--config', sb.configPath, ...args], {
    env: { ...sb.env, ...extraEnv } as NodeJS.ProcessEnv,
    cwd: sb.root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  // Only the child we started, by its handle, if it hangs.
  const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const polls: Poll[] = [];
  const poller = (async () => {
    while (!done) {
      const t = Date.now();
      const r = await get(url);
      const m = r.status === 200 ? /\(release ([^)]+)\)/.exec(r.body ?? '') : null;
      polls.push({ t, release: m ? m[1]! : null, body: r.body, error: r.error ?? (r.status !== undefined && r.status !== 200 ? `HTTP ${r.status}` : undefined) });
      await sleep(100);
    }
  })();
  const { code, signal } = await exited;
  clearTimeout(guard);
  await poller;
  await Promise.race([closed, sleep(2_000)]); // an orphan could hold the pipes; don't wait on it
  return { code, signal, stdout, stderr, polls };
}

/** Collapses the poll sequence into runs: e.g. [prev, null, new] (null = outage). */
function segments(polls: Poll[]): (string | null)[] {
  const out: (string | null)[] = [];
  for (const p of polls) if (out.length === 0 || out[out.length - 1] !== p.release) out.push(p.release);
  return out;
}

describe('fault injection: every deploy failpoint × {fail, kill}', () => {
  let sb: Sandbox;
  const url = () => `http://127.0.0.1:${sb.port}/`;

  const frontend = () => sb.jlist().find((p) => p.name === APP);
  const verifyProcs = () => sb.jlist().filter((p) => p.name.startsWith(`${APP}.verify-`));
  const listJson = (): { active: string | null; releases: ReleaseJson[] } => {
    const r = cli(sb, ['list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };
  const dumpCwd = (): string | undefined => {
    const procs = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string; pm_cwd: string }[];
    const apps = procs.filter((p) => p.name === APP);
    expect(apps.length, 'the dump holds exactly one frontend-dev').toBe(1);
    return apps[0]!.pm_cwd;
  };
  /** Every `ready` release must be complete: its runtime build is there. */
  const expectReadyComplete = (releases: ReleaseJson[]) => {
    for (const r of releases.filter((x) => x.status === 'ready'))
      expect(fs.existsSync(path.join(r.cwd, 'build/build.json')), `ready release ${r.id} has build/build.json`).toBe(true);
  };
  const removalLeftovers = () => fs.readdirSync(sb.releasesDir).filter((n) => n.startsWith('.removing-'));

  beforeAll(async () => {
    sb = await createSandbox({ keep: 3 });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((await get(url())).body).toContain(JSON.parse(r.stdout).release.id);
  }, 120_000);

  afterAll(async () => {
    await sb?.close();
  });

  let n = 1;
  it.each(matrix)(
    '%s:%s → live app kept or reverted, nothing half-done, next deploy succeeds',
    async (point, action) => {
      // ---- before: what serves now
      const before = listJson();
      const prev = before.active!;
      expect(prev, 'a release is active before the injected deploy').toBeTruthy();
      const prevCwd = before.releases.find((r) => r.id === prev)!.cwd;
      expect((await get(url())).body).toContain(prev);
      const pidBefore = frontend()!.pid;
      const idsBefore = new Set(before.releases.map((r) => r.id));

      n += 1;
      const version = `v${n}-${point}-${action}`;
      sb.commit(version, { 'version.txt': `${version}\n` });

      // ---- the injected deploy, polled while it runs
      const run = await runPolling(sb, ['deploy', '--json'], { PM2_RELEASE_FAILPOINT: `${point}:${action}` }, url());
      const ctx = `${point}:${action}\nstdout: ${run.stdout}\nstderr (tail): ${run.stderr.slice(-3000)}`;

      if (action === 'kill') {
        expect(run.signal, ctx).toBe('SIGKILL');
        expect(run.code, ctx).toBeNull();
        expect(run.stdout, 'a killed run prints no result').toBe('');
      } else {
        const expectedExit = point === 'retain' ? 6 : IN_SWITCH.includes(point) ? 5 : 4;
        expect(run.code, ctx).toBe(expectedExit);
        const out = JSON.parse(run.stdout);
        expect(out.ok).toBe(false);
        expect(out.error.phase, ctx).toBe(point);
        // The health gate and the save step wrap the injected error in their own codes.
        const expectedCode = point === 'health' ? 'HEALTH_FAILED' : point === 'save' ? 'SAVE_FAILED' : 'INJECTED_FAILURE';
        expect(out.error.code, ctx).toBe(expectedCode);
        if (point === 'save') expect(run.stderr, 'the injected cause is logged').toContain('injected failure at save');
        else expect(out.error.message, ctx).toContain(`injected failure at ${point}`);
        if (IN_SWITCH.includes(point)) expect(out.error.message, ctx).toContain(`${prev} is serving again`);
      }

      // ---- what the interrupted run left
      const after = listJson();
      const created = after.releases.filter((r) => !idsBefore.has(r.id));
      expect(created.map((r) => r.id), 'the injected run created exactly one release').toHaveLength(1);
      const fresh = created[0]!;
      const expectedStatus =
        action === 'fail'
          ? point === 'retain'
            ? 'ready'
            : 'failed'
          : BEFORE_SWITCH.includes(point) && point !== 'verify'
            ? 'incomplete'
            : 'ready';
      expect(fresh.status, ctx).toBe(expectedStatus);
      if (fresh.status === 'failed') expect(fresh.error).toMatchObject({ phase: point });
      expectReadyComplete(after.releases);
      const readyIds = new Set(after.releases.filter((r) => r.status === 'ready').map((r) => r.id));

      // Every answer during the run came from the previous or the new release, never anything else.
      const polls = run.polls;
      expect(polls.length, 'the app was polled during the run').toBeGreaterThanOrEqual(3);
      const served = new Set(polls.map((p) => p.release).filter((x): x is string => x !== null));
      for (const id of served) expect([prev, fresh.id], `served ${id}`).toContain(id);
      const seq = segments(polls);
      const failedPolls = polls.filter((p) => p.release === null);
      // Killed right after `pm2 start` (health), the new process may still be booting: give it a moment.
      let now = await get(url());
      for (let i = 0; i < 50 && action === 'kill' && point === 'health' && now.status !== 200; i++) {
        await sleep(200);
        now = await get(url());
      }
      const nowRelease = now.status === 200 ? (/\(release ([^)]+)\)/.exec(now.body ?? '')?.[1] ?? null) : null;

      if (BEFORE_SWITCH.includes(point)) {
        // The live app never noticed.
        expect(failedPolls, `failed polls: ${JSON.stringify(failedPolls.slice(0, 3))}`).toEqual([]);
        expect([...served]).toEqual([prev]);
        expect(frontend()!.pid, 'PM2 pid of frontend-dev unchanged').toBe(pidBefore);
        expect(nowRelease).toBe(prev);
        expect(dumpCwd()).toBe(prevCwd);
        if (action === 'fail') expect(verifyProcs(), 'a failed verify removes its process').toEqual([]);
        // SIGKILLed while the verify process runs: it is left for the next run to remove.
        if (point === 'verify' && action === 'kill') expect(verifyProcs().map((p) => p.name)).toEqual([`${APP}.verify-${fresh.id}`]);
      } else if (action === 'fail' && IN_SWITCH.includes(point)) {
        // Reverted: the previous release serves again, from the dump too. Downtime only around the two switches.
        expect(nowRelease, ctx).toBe(prev);
        expect(frontend()!.pm2_env.pm_cwd).toBe(prevCwd);
        expect(dumpCwd()).toBe(prevCwd);
        expect(seq[0]).toBe(prev);
        expect(seq[seq.length - 1], 'the last poll of the run is answered by the previous release').toBe(prev);
        expect(seq.filter((s) => s === null).length, `outages: ${JSON.stringify(seq)}`).toBeLessThanOrEqual(2);
        if (point === 'switch') expect([...served]).toEqual([prev]);
        expect(after.active).toBe(prev);
      } else if (action === 'fail' && point === 'retain') {
        // The switch succeeded; only the clean-up was interrupted.
        expect(nowRelease).toBe(fresh.id);
        expect(now.body).toContain(version);
        expect(dumpCwd()).toBe(fresh.cwd);
        expect(seq, `one switch: ${JSON.stringify(seq)}`).toEqual(seq.length === 2 ? [prev, fresh.id] : [prev, null, fresh.id]);
      } else {
        // kill at switch / health / save / retain: one switch at most; afterwards only a ready release serves.
        expect(seq[0]).toBe(prev);
        expect(seq.filter((s) => s === null).length, `outages: ${JSON.stringify(seq)}`).toBeLessThanOrEqual(1);
        expect(seq.filter((s) => s === prev).length, `the previous release never comes back: ${JSON.stringify(seq)}`).toBe(1);
        if (nowRelease !== null) expect(readyIds.has(nowRelease), `now serving ${nowRelease}`).toBe(true);
        if (point === 'switch') {
          // Killed between `pm2 delete` and `pm2 start`: nothing serves until the next run repairs it.
          expect(frontend()).toBeUndefined();
          expect(nowRelease).toBeNull();
        } else {
          expect(nowRelease, ctx).toBe(fresh.id);
          expect(frontend()!.pm2_env.pm_cwd).toBe(fresh.cwd);
        }
        // The dump is saved only after the health gate.
        expect(dumpCwd()).toBe(point === 'retain' ? fresh.cwd : prevCwd);
        if (point === 'retain') expect(removalLeftovers().length, 'killed after the first rename').toBeGreaterThan(0);
      }
      // Whatever the dump would resurrect is a ready release.
      const dc = dumpCwd();
      expect(
        after.releases.some((r) => r.status === 'ready' && r.cwd === dc),
        `dump cwd ${dc} is a ready release`,
      ).toBe(true);

      // ---- the next plain deploy repairs what is left and succeeds on its own
      const next = cli(sb, ['deploy', '--json']);
      expect(next.code, `next deploy after ${point}:${action}\n${next.stdout}\n${next.stderr.slice(-3000)}`).toBe(0);
      const res = JSON.parse(next.stdout);
      expect(res).toMatchObject({ ok: true, action: 'deploy' });
      const body = (await get(url())).body;
      expect(body).toContain(version);
      expect(body).toContain(res.release.id);
      expect(verifyProcs(), 'no leftover verify processes').toEqual([]);
      expect(sb.jlist().filter((p) => p.name === APP)).toHaveLength(1);
      expect(frontend()!.pm2_env.pm_cwd).toBe(res.release.cwd);
      expect(dumpCwd()).toBe(res.release.cwd);
      expect(removalLeftovers(), 'no half-removed releases').toEqual([]);
      const final = listJson();
      expect(final.active).toBe(res.release.id);
      expectReadyComplete(final.releases);
      expect(final.releases.filter((r) => r.status === 'incomplete' || r.status === 'building')).toEqual([]);
      expect(final.releases.filter((r) => r.status === 'ready').length).toBeLessThanOrEqual(3);
      const st = cli(sb, ['status', '--json']);
      expect(st.code, st.stderr).toBe(0);
      expect(JSON.parse(st.stdout)).toMatchObject({ ok: true, active: { id: res.release.id }, recorded: res.release.id, drift: { detected: false }, health: { ok: true } });
    },
    90_000,
  );
});

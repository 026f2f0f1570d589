/**
 * No build outlives its deploy: a deploy SIGKILLed while `npm run build` runs leaves that build's process
 * group running (it is detached). The next deploy must stop it (SIGTERM, then SIGKILL) before it removes the
 * release or starts its own build, so two builds never run at once, and must never signal a recorded group
 * whose processes do not run in that release.
 *
 * Real PM2 daemon (private PM2_HOME), real npm ci, the built CLI. The example app's build.mjs, with a
 * committed SLOW_BUILD marker, starts a child `node -e setTimeout(…, 60000)` and waits for it; with
 * BUILD_TRACE set it appends "start|end|stopped <release> <ms> <pid>" lines, the order of builds.
 * Linux only (/proc). Everything the test starts is ended by pid; the sandbox's close() kills its daemon.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createSandbox, get, startCli, type Sandbox } from '../helpers/sandbox.js';

const LINUX = fs.existsSync('/proc/self/stat');

interface Proc {
  pid: number;
  pgid: number;
  state: string;
  cwd: string | null;
}

/** Every process /proc shows, with its process group and cwd (null when unreadable). */
function procs(): Proc[] {
  const out: Proc[] = [];
  for (const d of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      let cwd: string | null = null;
      try {
        cwd = fs.readlinkSync(`/proc/${d}/cwd`);
      } catch {
        /* a zombie, or gone */
      }
      out.push({ pid: Number(d), state: f[0], pgid: Number(f[2]), cwd });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** Live (not zombie) processes of a group. */
const groupOf = (pgid: number) => procs().filter((p) => p.pgid === pgid && p.state !== 'Z');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return procs().some((p) => p.pid === pid && p.state !== 'Z');
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 90_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = fn();
    if (v !== undefined) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface TraceLine {
  what: 'start' | 'end' | 'stopped';
  release: string;
  t: number;
  pid: number;
}
const readTrace = (file: string): TraceLine[] =>
  fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const [what, release, t, pid] = l.split(' ');
          return { what: what as TraceLine['what'], release, t: Number(t), pid: Number(pid) };
        })
    : [];

describe.skipIf(!LINUX)('orphaned builds of a killed deploy', () => {
  let sb: Sandbox;
  let trace: string;
  /** Processes this file started or found in its own recorded groups: ended by pid in afterAll. */
  const started = new Set<number>();

  beforeAll(async () => {
    sb = await createSandbox();
    trace = path.join(sb.root, 'trace.log');
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    for (const pid of started) killPid(pid);
    await sb?.close();
  });

  it('the next deploy stops the orphaned build (and only then builds), then serves', async () => {
    const before = new Set(fs.readdirSync(sb.releasesDir));
    sb.commit('slow build', { SLOW_BUILD: '1\n', 'version.txt': 'v2-slow\n' });
    const slow = startCli(sb, ['deploy', '--json'], { BUILD_TRACE: trace });
    started.add(slow.child.pid!);

    // The build step is running at the stable build path (.build, renamed to the id when it ends): its record is
    // in the meta dir there and the slow child is up.
    const releaseDir = path.join(sb.releasesDir, '.build');
    const { id, rec } = await until('the build step of the slow deploy', () => {
      try {
        const r = JSON.parse(fs.readFileSync(path.join(releaseDir, '.pm2-release', 'build-process.json'), 'utf8'));
        if (
          !before.has(r.release) &&
          r.step === 'build' &&
          readTrace(trace).some((l) => l.what === 'start' && l.release === r.release) &&
          groupOf(r.pgid).length >= 2
        )
          return { id: r.release as string, rec: r };
      } catch {
        /* not written yet */
      }
      return undefined;
    });
    expect(rec).toMatchObject({ release: id, releaseDir, deployPid: slow.child.pid, step: 'build' });
    const group = groupOf(rec.pgid);
    for (const p of group) started.add(p.pid);
    expect(group.map((p) => p.pid)).toContain(rec.pgid); // the step's leader is the group leader
    for (const p of group) expect(p.cwd, `pid ${p.pid} runs in the release`).toContain(releaseDir);

    // The OOM killer / systemd stop: only the deploy process dies; its build keeps running.
    process.kill(slow.child.pid!, 'SIGKILL');
    expect((await slow.done).code).toBeNull();
    await sleep(300);
    expect(groupOf(rec.pgid).length, 'the orphaned build outlived its deploy').toBeGreaterThanOrEqual(2);

    sb.commit('fixed', { SLOW_BUILD: null, 'version.txt': 'v3\n' });
    const next = startCli(sb, ['deploy', '--json'], { BUILD_TRACE: trace });
    started.add(next.child.pid!);
    const r = await next.done;
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { ok: boolean; release: { id: string }; warnings: string[] };
    expect(out.ok).toBe(true);
    const warning = out.warnings.find((w) => w.startsWith('stopped the orphaned build'));
    expect(warning, JSON.stringify(out.warnings)).toMatch(
      new RegExp(
        `^stopped the orphaned build of ${id} \\(build step, process group ${rec.pgid}, \\d+ process(es)?\\) left by a killed deploy \\(pid ${slow.child.pid}\\)`,
      ),
    );

    // Nothing of the old group is left, and nothing runs in a deleted directory or in the old release.
    expect(groupOf(rec.pgid), 'processes of the orphaned group').toEqual([]);
    for (const p of group) expect(alive(p.pid), `old build process ${p.pid}`).toBe(false);
    const strays = procs().filter((p) => p.cwd && (p.cwd.includes(releaseDir) || (p.cwd.endsWith(' (deleted)') && p.cwd.startsWith(sb.root))));
    expect(strays).toEqual([]);
    expect(fs.existsSync(releaseDir), 'the killed build was removed').toBe(false);
    expect(fs.existsSync(path.join(sb.releasesDir, id)), 'and no release of it is left').toBe(false);
    expect(fs.existsSync(path.join(sb.releasesDir, '.build')), 'the new build was renamed to its id').toBe(false);

    // One build at a time: the orphan got SIGTERM (its handler wrote "stopped") before the new build started.
    const lines = readTrace(trace);
    const stopped = lines.find((l) => l.what === 'stopped' && l.release === id);
    const newStart = lines.find((l) => l.what === 'start' && l.release === out.release.id);
    expect(stopped, JSON.stringify(lines)).toBeDefined();
    expect(newStart, JSON.stringify(lines)).toBeDefined();
    expect(stopped!.t).toBeLessThanOrEqual(newStart!.t);
    expect(lines.some((l) => l.what === 'end' && l.release === id)).toBe(false);

    // The step's record is gone once the step ended, and the new release serves.
    expect(fs.existsSync(path.join(sb.releasesDir, out.release.id, '.pm2-release', 'build-process.json'))).toBe(false);
    const res = await get(`http://127.0.0.1:${sb.port}/`);
    expect(res.status).toBe(200);
    expect(res.body).toContain('v3');
    expect(res.body).toContain(out.release.id);
  });

  it('never signals a recorded group whose processes run outside that release', async () => {
    // A dead deploy pid: a process that has exited.
    const gone = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    await new Promise((resolve) => gone.on('exit', resolve));
    // A stranger leading its own group outside the release (as if the recorded pgid were reused).
    const stranger = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { cwd: sb.root, detached: true, stdio: 'ignore' });
    started.add(stranger.pid!);
    try {
      const id = '20200101T000000Z-0000000';
      const dir = path.join(sb.releasesDir, id);
      fs.mkdirSync(path.join(dir, '.pm2-release'), { recursive: true });
      const rec = {
        version: 1,
        release: id,
        releaseDir: dir,
        step: 'build',
        pgid: stranger.pid,
        deployPid: gone.pid,
        host: (await import('node:os')).hostname(),
        startedAt: new Date().toISOString(),
      };
      fs.writeFileSync(path.join(dir, '.pm2-release', 'build-process.json'), JSON.stringify(rec));
      await until('the stranger to start', () => (groupOf(stranger.pid!).length > 0 ? true : undefined), 5_000);

      sb.commit('after stranger', { 'version.txt': 'v4\n' });
      const r = await startCli(sb, ['deploy', '--json'], {}).done;
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { warnings: string[] };
      expect(out.warnings.some((w) => w.startsWith('stopped the orphaned build'))).toBe(false);
      expect(out.warnings).toContainEqual(
        expect.stringMatching(
          new RegExp(`^not stopping process group ${stranger.pid} recorded for the build of ${id}: not all of its processes run in that release`),
        ),
      );
      expect(alive(stranger.pid!), 'the stranger is still running').toBe(true);
      expect(fs.existsSync(dir), 'the incomplete release was still removed').toBe(false);
    } finally {
      killPid(stranger.pid!);
    }
  });
});

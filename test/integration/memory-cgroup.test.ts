/**
 * The memory guard inside a small VM's PM2 unit (issue 18): the PM2 daemon, the live app and the deploy in one
 * memory cgroup with a limit (cgroup v1 `memory.limit_in_bytes` or v2 `memory.max`, whichever this machine
 * has), and a build that grows past it (examples/app/hog.mjs: Buffers in two processes).
 *   - guard on: the deploy fails with BUILD_MEMORY and the cgroup's kernel OOM-kill count stays 0;
 *   - guard off (build.memoryGuard: false): the kernel acts, and its victim is the build (oom_score_adj 1000),
 *     not the live app or the PM2 daemon.
 * Needs root and a writable memory hierarchy; otherwise skipped with a one-line reason, unless
 * PM2_RELEASE_CGROUP_REQUIRED=1 (CI), where it fails instead. Teardown moves every pid left in the cgroup back
 * to its parent and removes it.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cli, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

const MiB = 2 ** 20;
const LIMIT = 450 * MiB;

interface Cgroup {
  version: 1 | 2;
  dir: string;
  parent: string;
  oomKills(): number;
}

const readInt = (file: string, key: string) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(fs.readFileSync(file, 'utf8'))?.[1] ?? NaN);

/** Creates a memory cgroup with LIMIT, synchronously (the skip is decided when the file is collected). */
function createCgroup(): { cg?: Cgroup; skip?: string } {
  if (process.platform !== 'linux') return { skip: 'needs Linux cgroups' };
  if (process.getuid?.() !== 0) return { skip: 'needs root to create a memory cgroup' };
  const name = `p2r-memory-${process.pid}`;
  try {
    if (fs.existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')) {
      const parent = '/sys/fs/cgroup/memory';
      const dir = path.join(parent, name);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(LIMIT));
      // The daemon's and the app's pages move with them, as they would be charged to the unit all along.
      try {
        fs.writeFileSync(path.join(dir, 'memory.move_charge_at_immigrate'), '3');
      } catch {
        /* newer kernels dropped it: only new pages are charged */
      }
      return { cg: { version: 1, dir, parent, oomKills: () => readInt(path.join(dir, 'memory.oom_control'), 'oom_kill') } };
    }
    const root = '/sys/fs/cgroup';
    if (
      fs.existsSync(path.join(root, 'cgroup.controllers')) &&
      fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory')
    ) {
      if (!fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8').includes('memory'))
        fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), '+memory');
      const dir = path.join(root, name);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'memory.max'), String(LIMIT));
      if (fs.existsSync(path.join(dir, 'memory.swap.max'))) fs.writeFileSync(path.join(dir, 'memory.swap.max'), '0');
      return { cg: { version: 2, dir, parent: root, oomKills: () => readInt(path.join(dir, 'memory.events'), 'oom_kill') } };
    }
    return { skip: 'no memory controller: neither cgroup v1 /sys/fs/cgroup/memory nor v2 /sys/fs/cgroup with memory' };
  } catch (err) {
    return { skip: `cannot create a memory cgroup: ${(err as Error).message.split('\n')[0]}` };
  }
}

const required = process.env.PM2_RELEASE_CGROUP_REQUIRED === '1';
const made = createCgroup();

function join(cg: Cgroup, pid: number): void {
  fs.writeFileSync(path.join(cg.dir, 'cgroup.procs'), String(pid));
}

/** Every pid left goes back to the parent, then the cgroup is removed. */
async function removeCgroup(cg: Cgroup): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const pids = fs.readFileSync(path.join(cg.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    for (const p of pids) {
      try {
        fs.writeFileSync(path.join(cg.parent, 'cgroup.procs'), p);
      } catch {
        /* exited meanwhile */
      }
    }
    try {
      fs.rmdirSync(cg.dir);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`could not remove ${cg.dir}`);
}

function running(pid: number): boolean {
  try {
    return !/\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The CLI started inside the cgroup: a shell joins it, then execs node (so no child is forked outside it). */
function deployInCgroup(sb: Sandbox, cg: Cgroup, trace: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(
    'sh',
    ['-c', 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', 'sh', cg.dir, process.execPath, CLI, '--config', sb.configPath, 'deploy', '--json'],
    { env: { ...sb.env, BUILD_TRACE: trace }, cwd: sb.root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe.skipIf(!made.cg && !required)(`the guard inside a memory cgroup${made.skip ? ` (skipped: ${made.skip})` : ''}`, () => {
  let sb: Sandbox;
  let live: string;
  let daemonPid: number;
  let appPid: number;
  let appRestarts: number;
  const cg = made.cg!;

  const writeConfig = (build: Record<string, unknown>) =>
    fs.writeFileSync(sb.configPath, JSON.stringify({ ...sb.config, build: { memoryReserveMB: 64, ...build } }, null, 2));

  beforeAll(async () => {
    if (!made.cg) throw new Error(`PM2_RELEASE_CGROUP_REQUIRED=1 but ${made.skip}`);
    sb = await createSandbox();
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    live = JSON.parse(r.stdout).release.id;
    daemonPid = Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8'));
    const app = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    appPid = app.pid;
    appRestarts = Number(app.pm2_env.restart_time);
    // The small VM's PM2 unit: the daemon and the app it runs, in one cgroup with a limit.
    join(cg, daemonPid);
    join(cg, appPid);
    sb.commit('a build that outgrows the unit', { BUILD_MEMORY_MB: '500\n', 'version.txt': 'v2-hog\n' });
  }, 180_000);

  afterAll(async () => {
    await sb?.close();
    if (made.cg) await removeCgroup(made.cg);
  });

  const expectLiveUntouched = async () => {
    expect(running(daemonPid)).toBe(true);
    expect(Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8'))).toBe(daemonPid);
    const app = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect({ pid: app.pid, restarts: Number(app.pm2_env.restart_time) }).toEqual({ pid: appPid, restarts: appRestarts });
    const res = await get(`http://127.0.0.1:${sb.port}/`);
    expect(res.status).toBe(200);
    expect(res.body).toContain(live);
  };

  const hogPids = (trace: string) =>
    fs
      .readFileSync(trace, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('hog '))
      .map((l) => Number(l.split(' ')[2]));

  it('guard on: BUILD_MEMORY from the budget under the cgroup limit, and no kernel OOM kill', async () => {
    writeConfig({});
    const before = cg.oomKills();
    const trace = path.join(sb.root, 'trace-on.log');
    const r = await deployInCgroup(sb, cg, trace);
    expect(r.code, r.stderr).toBe(4);
    const { error } = JSON.parse(r.stdout) as {
      error: { code: string; phase: string; message: string; memory: { cgroupLimitBytes: number; stopped: boolean } };
    };
    expect(error).toMatchObject({ code: 'BUILD_MEMORY', phase: 'build', memory: { cgroupLimitBytes: LIMIT, stopped: true } });
    expect(error.message).toMatch(/over the budget of [\d.]+ MiB \(available .*, cgroup limit 450\.0 MiB with [\d.]+ MiB free, minus reserve 64\.0 MiB\)/);
    expect(cg.oomKills() - before, 'kernel OOM kills in the cgroup').toBe(0);
    expect(hogPids(trace).filter(running)).toEqual([]);
    await expectLiveUntouched();
  }, 180_000);

  it("guard off: the kernel's OOM victim is the build (oom_score_adj 1000), not the live app or the PM2 daemon", async () => {
    writeConfig({ memoryGuard: false });
    const before = cg.oomKills();
    const trace = path.join(sb.root, 'trace-off.log');
    const r = await deployInCgroup(sb, cg, trace);
    expect(r.code, r.stderr).toBe(4);
    const { error } = JSON.parse(r.stdout) as { error: { code: string; phase: string; message: string; hint: string } };
    expect(error).toMatchObject({ code: 'BUILD_FAILED', phase: 'build' });
    // Which of the hog's two processes the kernel picks varies: npm exits 137 when it was the script's own
    // process, 1 when it was its child (the script fails on it). Either way the host's count says it acted.
    expect(error.message).toMatch(/(killed by SIGKILL|exited with code (137|1)); the kernel's OOM killer killed [1-9]\d* process(es)? on this host meanwhile$/);
    expect(error.hint).toMatch(/OOM killer acted/);
    expect(cg.oomKills() - before, 'kernel OOM kills in the cgroup').toBeGreaterThanOrEqual(1);
    expect(hogPids(trace).filter(running)).toEqual([]);
    await expectLiveUntouched();
  }, 180_000);
});

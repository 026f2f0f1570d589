/**
 * The memory guard (issue 18) on real processes: a build, then an install, that holds native memory (Buffers,
 * which no heap cap bounds; examples/app/hog.mjs, half in a child process so only the tree's sum crosses)
 * past a small fixed budget must fail with BUILD_MEMORY in its phase (exit 4), while the live release keeps
 * answering, the PM2 daemon keeps its pid and no process of the stopped step is left; the failed release
 * gives its space back; the next deploy of a normal commit works, and list, status and history show peaks.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createSandbox, get, startCli, type Sandbox } from '../helpers/sandbox.js';

const BUDGET_MB = 160;
const HOG_MB = '400\n';

interface MemoryJson {
  peakBytes: number | null;
  budgetBytes: number;
  budgetSource: string;
  guard: boolean;
  stopped: boolean;
  biggest?: { pid: number; command: string; bytes: number };
  stopMs?: number;
}

interface ErrorJson {
  code: string;
  phase: string;
  message: string;
  hint: string;
  releaseId: string;
  memory: MemoryJson;
}

/** A pid still running (a zombie is dead, only not reaped yet). */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

describe.skipIf(process.platform !== 'linux')('the memory guard stops an install or build that outgrows its budget', () => {
  let sb: Sandbox;
  let live: string;
  let daemonPid: number;
  let originalPkg: string;
  const trace = () => path.join(sb.root, 'trace.log');

  beforeAll(async () => {
    sb = await createSandbox({ config: { build: { memoryBudgetMB: BUDGET_MB } } });
    originalPkg = fs.readFileSync(path.join(sb.appDir, 'package.json'), 'utf8');
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    live = JSON.parse(r.stdout).release.id;
    daemonPid = Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8'));
  }, 180_000);

  afterAll(async () => {
    await sb?.close();
  });

  /** Deploys while asking the live release every 100 ms; returns the result and the answers that were not 200 from it. */
  async function deployWatched(): Promise<{ code: number | null; out: { error: ErrorJson }; stderr: string; misses: string[] }> {
    fs.rmSync(trace(), { force: true });
    const { done } = startCli(sb, ['deploy', '--json'], { BUILD_TRACE: trace() });
    let finished = false;
    const misses: string[] = [];
    const poll = (async () => {
      while (!finished) {
        const res = await get(`http://127.0.0.1:${sb.port}/`);
        if (res.status !== 200 || !res.body?.includes(live)) misses.push(res.error ?? `${res.status}`);
        await sleep(100);
      }
    })();
    const r = await done;
    finished = true;
    await poll;
    return { code: r.code, out: JSON.parse(r.stdout) as { error: ErrorJson }, stderr: r.stderr, misses };
  }

  async function expectStopped(phase: 'install' | 'build') {
    const r = await deployWatched();
    expect(r.code, r.stderr).toBe(4);
    const error = r.out.error;
    expect(error.code).toBe('BUILD_MEMORY');
    expect(error.phase).toBe(phase);
    expect(error.message).not.toContain('\n');
    expect(error.message).toMatch(
      new RegExp(
        `^${phase} stopped by the memory guard: its processes held [\\d.]+ MiB, over the budget of 160\\.0 MiB \\(build\\.memoryBudgetMB; available .*\\); biggest: pid \\d+ \`(\\S*/)?node .*\``,
      ),
    );
    expect(error.hint).toMatch(/raise the budget .*add swap.*build elsewhere/);
    expect(error.memory).toMatchObject({ budgetBytes: BUDGET_MB * 2 ** 20, budgetSource: 'configured', guard: true, stopped: true });
    expect(error.memory.peakBytes!).toBeGreaterThan(BUDGET_MB * 2 ** 20);
    // The live release answered throughout, and the PM2 daemon is the same process.
    expect(r.misses).toEqual([]);
    expect(Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8'))).toBe(daemonPid);
    expect(running(daemonPid)).toBe(true);
    // Every process of the step that allocated (the hog and its child, seen in the trace) is gone.
    const pids = fs
      .readFileSync(trace(), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('hog '))
      .map((l) => Number(l.split(' ')[2]));
    expect(pids).toHaveLength(2);
    expect(pids.filter(running)).toEqual([]);
    // The failed release gave its space back but keeps its manifest and log; list says what happened.
    const dir = path.join(sb.releasesDir, error.releaseId);
    expect(fs.readdirSync(dir)).toEqual(['.pm2-release']);
    const list = JSON.parse(cli(sb, ['list', '--json']).stdout) as {
      releases: { id: string; status: string; error: unknown; memory: Record<string, MemoryJson | null> }[];
    };
    const failed = list.releases.find((x) => x.id === error.releaseId)!;
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'BUILD_MEMORY', phase } });
    expect(failed.memory[phase]).toMatchObject({ stopped: true });
    expect(cli(sb, ['list']).stdout).toMatch(new RegExp(`${error.releaseId} .* ${phase} [\\d.]+ MiB \\d+ % STOPPED\\s+BUILD_MEMORY in ${phase}`));
    const res = await get(`http://127.0.0.1:${sb.port}/`);
    expect(res.status).toBe(200);
    expect(res.body).toContain(live);
  }

  it('a build holding native memory past the budget fails as BUILD_MEMORY in build; the live app and PM2 untouched, nothing of it left', async () => {
    sb.commit('a build that outgrows the VM', { BUILD_MEMORY_MB: HOG_MB, 'version.txt': 'v2-hog\n' });
    await expectStopped('build');
  }, 180_000);

  it('an install doing the same fails as BUILD_MEMORY in install', async () => {
    const pkg = JSON.parse(originalPkg);
    pkg.scripts.preinstall = 'node hog.mjs INSTALL_MEMORY_MB';
    sb.commit('an install that outgrows the VM', {
      BUILD_MEMORY_MB: null,
      INSTALL_MEMORY_MB: HOG_MB,
      'package.json': JSON.stringify(pkg, null, 2) + '\n',
      'version.txt': 'v3-hog-install\n',
    });
    await expectStopped('install');
  }, 180_000);

  it('the next deploy of a normal commit works; list, status and history show its peaks', async () => {
    sb.commit('normal again', { INSTALL_MEMORY_MB: null, 'package.json': originalPkg, 'version.txt': 'v4\n' });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const id = JSON.parse(r.stdout).release.id as string;
    const res = await get(`http://127.0.0.1:${sb.port}/`);
    expect(res.body).toContain('v4');

    const list = JSON.parse(cli(sb, ['list', '--json']).stdout) as {
      releases: { id: string; memory: { install: MemoryJson | null; build: MemoryJson | null } }[];
    };
    const m = list.releases.find((x) => x.id === id)!.memory;
    for (const step of [m.install!, m.build!]) {
      expect(step).toMatchObject({ guard: true, stopped: false, budgetBytes: BUDGET_MB * 2 ** 20 });
      expect(step.peakBytes!).toBeGreaterThan(0);
      expect(step.peakBytes!).toBeLessThan(BUDGET_MB * 2 ** 20);
    }
    const status = JSON.parse(cli(sb, ['status', '--json']).stdout) as { active: { id: string; memory: unknown } };
    expect(status.active).toMatchObject({ id, memory: { install: { stopped: false }, build: { stopped: false } } });
    expect(cli(sb, ['status']).stdout).toMatch(/^memory\s+peak install [\d.]+ [KM]iB \(\d+ % of 160\.0 MiB\), build [\d.]+ [KM]iB \(\d+ % of 160\.0 MiB\)$/m);

    const history = JSON.parse(cli(sb, ['history', '--json']).stdout) as {
      entries: { result: string; error: { code: string } | null; memory?: Record<string, MemoryJson> }[];
    };
    expect(history.entries[0]).toMatchObject({ result: 'ok', memory: { install: { stopped: false }, build: { stopped: false } } });
    expect(history.entries.slice(1, 3).map((e) => [e.error?.code, Object.values(e.memory ?? {}).some((x) => x.stopped)])).toEqual([
      ['BUILD_MEMORY', true],
      ['BUILD_MEMORY', true],
    ]);
    const human = cli(sb, ['history']).stdout.split('\n');
    expect(human[0]).toMatch(/\bPEAK\b/);
    expect(human[1]).toMatch(/ (install|build) [\d.]+ [KM]iB \d+ %( |$)/);
    expect(human[2]).toMatch(/ install [\d.]+ MiB \d+ % STOPPED +error BUILD_MEMORY in install/);

    // doctor: the guard is on and the last build was far from its budget.
    const doc = JSON.parse(cli(sb, ['doctor', '--json']).stdout) as { checks: { name: string; status: string; message: string }[] };
    expect(doc.checks.find((c) => c.name === 'memory-guard')).toMatchObject({
      status: 'ok',
      message: expect.stringMatching(/^on: budget now 160\.0 MiB .*; last (install|build) \(/),
    });
  }, 180_000);
});

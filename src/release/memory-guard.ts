/**
 * The memory guard's IO (issue 18): reads what the process can use (/proc/meminfo, its cgroup), watches the
 * whole process tree of one install or build in /proc, and stops it when it holds more than the budget:
 * SIGTERM to its process group, SIGKILL after a short grace, before the kernel has to choose a victim. The
 * decisions are pure, in release/memory-budget.ts.
 *
 * /proc is read by hand, not through a process-tree package (pidtree, ps-tree run `ps` for every sample: a
 * process start each time). A full /proc scan reads one file per process on the host (~5 ms on the VM for
 * 130 processes), too dear ten times a second: each sample reads the directory listing, the stat of pids
 * it has not seen before, and the status of the tree's own members; a full scan runs every 2 s in case a pid
 * was reused between two listings.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import { run } from '../exec.js';
import type { Logger } from '../log.js';
import { BuildMemoryError } from '../errors.js';
import { bytes } from '../units.js';
import { parseProcStat } from './orphans.js';
import {
  belongsToTree,
  budgetAboveRoom,
  cgroupDirs,
  deriveBudget,
  describeBudget,
  heapCapMB as heapCapMB_,
  MIN_BUDGET,
  cgroupMounts,
  inactiveFile,
  memoryCgroupOf,
  nextSampleMs,
  overBudget,
  parseLimit,
  parseMeminfo,
  parseOomKills,
  parseStatus,
  scopePlan,
  STOP_GRACE_MS,
  summarize,
  tightestCgroup,
  type Budget,
  type CgroupLevel,
  type MemoryFacts,
  type ProcStatus,
  type StepMemory,
  type TreeSample,
} from './memory-budget.js';

const readBuf = Buffer.allocUnsafe(16 * 1024);

/** A small /proc or cgroup file, synchronously (open/read/close: no stat, no thread pool hop). */
function readSmall(file: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const n = fs.readSync(fd, readBuf, 0, readBuf.length, 0);
    return readBuf.toString('latin1', 0, n);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** MemAvailable and the tightest memory limit on this process's own cgroup (v1 or v2, whichever holds the memory controller). */
export function readMemoryFacts(procDir = '/proc'): MemoryFacts {
  const meminfo = parseMeminfo(readSmall(`${procDir}/meminfo`) ?? '') ?? { total: os.totalmem(), available: os.freemem() };
  const own = memoryCgroupOf(readSmall(`${procDir}/self/cgroup`) ?? '');
  if (!own) return { meminfo };
  const mounts = cgroupMounts(fs.existsSync(`${procDir}/self/mountinfo`) ? fs.readFileSync(`${procDir}/self/mountinfo`, 'utf8') : '');
  const mount = own.version === 1 ? mounts.v1 : mounts.v2;
  if (!mount) return { meminfo };
  const levels: CgroupLevel[] = [];
  for (const dir of cgroupDirs(mount, own.path)) {
    const v1 = own.version === 1;
    const limit = parseLimit(readSmall(path.join(dir, v1 ? 'memory.limit_in_bytes' : 'memory.max')) ?? '');
    if (limit === undefined) continue;
    const usage = Number(readSmall(path.join(dir, v1 ? 'memory.usage_in_bytes' : 'memory.current'))?.trim() ?? NaN);
    if (!Number.isFinite(usage)) continue;
    levels.push({ version: own.version, dir, limit, usage, inactiveFile: inactiveFile(readSmall(path.join(dir, 'memory.stat')) ?? '', own.version) });
  }
  const t = tightestCgroup(levels);
  return t ? { meminfo, cgroup: { version: t.level.version, dir: t.level.dir, limit: t.level.limit, free: t.free } } : { meminfo };
}

/** The host's OOM-kill count (/proc/vmstat oom_kill), or undefined where the kernel does not keep it. */
export function readOomKills(procDir = '/proc'): number | undefined {
  return parseOomKills(readSmall(`${procDir}/vmstat`) ?? '');
}

/** Node's own default heap limit (MiB), as this process runs it. */
export function defaultHeapMB(): number {
  return Math.floor(v8.getHeapStatistics().heap_size_limit / 2 ** 20);
}

function onPath(bin: string, pathVar: string | undefined): boolean {
  return (pathVar ?? '').split(path.delimiter).some((d) => d && fs.existsSync(path.join(d, bin)));
}

/**
 * `choom -n 1000 --`: the step and every process it starts are the kernel's first choice if it must OOM-kill
 * anyway (an unprivileged process may raise its own score). Undefined when choom (util-linux) is missing:
 * the guard then writes /proc/<pid>/oom_score_adj of each process it finds in the tree.
 */
export function oomScorePrefix(pathVar: string | undefined): string[] | undefined {
  return onPath('choom', pathVar) ? ['choom', '-n', '1000', '--'] : undefined;
}

let scopeCache: Promise<{ prefix: (budget: number) => string[] } | { skip: string }> | undefined;

/**
 * Whether install and build can run in a transient systemd scope with MemoryMax and OOMPolicy=continue, so
 * even a kernel OOM kill there cannot stop the PM2 unit. Tried once per process with `true`: a scope that
 * cannot be created must not fail a build.
 */
export function systemdScope(env: Record<string, string | undefined>, logger: Logger): Promise<{ prefix: (budget: number) => string[] } | { skip: string }> {
  scopeCache ??= (async () => {
    const uid = process.getuid?.() ?? 0;
    const runtime = env.XDG_RUNTIME_DIR ?? `/run/user/${uid}`;
    const plan = scopePlan({
      systemdRunning: fs.existsSync('/run/systemd/system'),
      hasSystemdRun: onPath('systemd-run', env.PATH),
      uid,
      userManager: fs.existsSync(path.join(runtime, 'systemd', 'private')),
      userControllers: (readSmall(`/sys/fs/cgroup/user.slice/user-${uid}.slice/user@${uid}.service/cgroup.controllers`) ?? '').trim().split(/\s+/),
    });
    if ('skip' in plan) return plan;
    try {
      await run([...plan.prefix(256 * 2 ** 20), 'true'], { cwd: os.tmpdir(), logger, baseEnv: env, timeoutMs: 10_000 });
      return plan;
    } catch (err) {
      return { skip: `systemd-run could not create a scope (${(err as Error).message.split('\n')[0]})` };
    }
  })();
  return scopeCache;
}

export interface GuardOptions {
  budget: Budget;
  /** Watch and stop (build.memoryGuard); false: nothing is sampled. */
  enabled: boolean;
  /** Write oom_score_adj 1000 for each process found (when no choom wrapper did it at the start). */
  raiseOomScore: boolean;
  redact: (text: string) => string;
  logger: Logger;
  /** Tests and the bench: the /proc to read. */
  procDir?: string;
}

interface Member {
  startTime: number;
  status?: ProcStatus;
}

/**
 * Watches one step's process tree from `watch(pid)` until `finish()`. When its sum crosses the budget the
 * tree is stopped (once); `tripped` then holds the sample that crossed it.
 */
export class MemoryGuard {
  tripped: (TreeSample & { command: string }) | undefined;
  private root = 0;
  private members = new Map<number, Member>();
  private listed = new Set<number>();
  private peak: (TreeSample & { command: string }) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  private stopMs: number | undefined;
  private ticks = 0;
  private finished = false;
  private readonly proc: string;
  /** The host's OOM-kill count when the guard was made (just before the step starts). */
  private readonly oomKillsBefore: number | undefined;

  constructor(private readonly opts: GuardOptions) {
    this.proc = opts.procDir ?? '/proc';
    this.oomKillsBefore = readOomKills(this.proc);
  }

  watch(pid: number): void {
    if (!this.opts.enabled) {
      if (this.opts.raiseOomScore) this.raiseOomScore(pid);
      return;
    }
    this.root = pid;
    const st = parseProcStat(readSmall(`${this.proc}/${pid}/stat`) ?? '');
    this.members.set(pid, { startTime: st?.startTime ?? 0 });
    if (this.opts.raiseOomScore) this.raiseOomScore(pid);
    this.tick();
  }

  /** Stops sampling; waits for a stop in progress to finish. What the step used, for the manifest. */
  async finish(extra: { scope: boolean; heapCapMB?: number }): Promise<StepMemory> {
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    await this.stopping;
    const b = this.opts.budget;
    const top = this.tripped ?? this.peak;
    const oomAfter = readOomKills(this.proc);
    const oomKills = this.oomKillsBefore !== undefined && oomAfter !== undefined ? oomAfter - this.oomKillsBefore : undefined;
    return {
      peakBytes: this.opts.enabled ? (this.peak?.totalBytes ?? 0) : null,
      budgetBytes: b.bytes,
      budgetSource: b.source,
      availableBytes: b.availableBytes,
      cgroupLimitBytes: b.cgroupLimitBytes,
      reserveBytes: b.reserveBytes,
      guard: this.opts.enabled,
      stopped: this.tripped !== undefined,
      ...(top?.biggest ? { biggest: { pid: top.biggest.pid, command: top.command, bytes: top.biggest.bytes } } : {}),
      scope: extra.scope,
      ...(extra.heapCapMB !== undefined ? { heapCapMB: extra.heapCapMB } : {}),
      ...(this.stopMs !== undefined ? { stopMs: this.stopMs } : {}),
      ...(oomKills !== undefined ? { oomKills } : {}),
    };
  }

  private tick(): void {
    if (this.finished) return;
    let sample: TreeSample | undefined;
    try {
      sample = this.sample();
    } catch (err) {
      this.opts.logger.debug({ err: (err as Error).message }, 'memory guard: sample failed');
    }
    if (sample && (!this.peak || sample.totalBytes > this.peak.totalBytes)) this.peak = { ...sample, command: this.commandOf(sample.biggest?.pid) };
    if (sample && !this.tripped && overBudget(sample, this.opts.budget.bytes)) {
      this.tripped = { ...sample, command: this.commandOf(sample.biggest?.pid) };
      if (this.tripped.totalBytes > (this.peak?.totalBytes ?? 0)) this.peak = this.tripped;
      this.stopping = this.stopTree();
      return;
    }
    if (this.members.size === 0) return;
    this.timer = setTimeout(() => this.tick(), nextSampleMs(sample?.totalBytes ?? 0, this.opts.budget.bytes));
    this.timer.unref();
  }

  /** One sample: find new members, read every member's status, sum. */
  private sample(): TreeSample {
    this.ticks++;
    const full = this.ticks % 20 === 0;
    const now = new Set<number>();
    for (const name of fs.readdirSync(this.proc)) {
      const c = name.charCodeAt(0);
      if (c < 48 || c > 57) continue;
      now.add(Number(name));
    }
    const fresh = [...now].filter((p) => (full || !this.listed.has(p)) && !this.members.has(p)).sort((a, b) => a - b);
    this.listed = now;
    // Two passes: a grandchild may carry a lower pid than its parent after the pid counter wrapped.
    for (let pass = 0; pass < 2 && fresh.length > 0; pass++) {
      let added = false;
      for (let i = 0; i < fresh.length; i++) {
        const st = parseProcStat(readSmall(`${this.proc}/${fresh[i]}/stat`) ?? '');
        if (!st || st.state === 'Z') continue;
        if (!belongsToTree({ ppid: st.ppid, pgid: st.pgid, session: st.session }, this.root, new Set(this.members.keys()))) continue;
        this.members.set(st.pid, { startTime: st.startTime });
        if (this.opts.raiseOomScore) this.raiseOomScore(st.pid);
        fresh.splice(i--, 1);
        added = true;
      }
      if (!added) break;
    }
    const live: { pid: number; status: ProcStatus }[] = [];
    for (const [pid, m] of this.members) {
      const status = parseStatus(readSmall(`${this.proc}/${pid}/status`) ?? '');
      if (!status || status.state === 'Z') {
        this.members.delete(pid);
        continue;
      }
      m.status = status;
      live.push({ pid, status });
    }
    return summarize(live);
  }

  private commandOf(pid: number | undefined): string {
    if (pid === undefined) return '';
    const raw = readSmall(`${this.proc}/${pid}/cmdline`) ?? '';
    const text = raw.replace(/\0+$/, '').replaceAll('\0', ' ');
    return this.opts.redact(text.length > 120 ? `${text.slice(0, 117)}...` : text);
  }

  private raiseOomScore(pid: number): void {
    try {
      fs.writeFileSync(`${this.proc}/${pid}/oom_score_adj`, '1000');
    } catch {
      /* gone, or not ours to change */
    }
  }

  /** True while the member is the process we found (same start time) and not a zombie. */
  private alive(pid: number, m: Member): boolean {
    const st = parseProcStat(readSmall(`${this.proc}/${pid}/stat`) ?? '');
    return st !== undefined && st.startTime === m.startTime && st.state !== 'Z' && st.state !== 'X';
  }

  private signal(sig: NodeJS.Signals): void {
    const alive: { pid: number; pgid: number }[] = [];
    for (const [pid, m] of this.members) {
      const st = parseProcStat(readSmall(`${this.proc}/${pid}/stat`) ?? '');
      if (st && st.startTime === m.startTime && st.state !== 'Z' && st.state !== 'X') alive.push({ pid, pgid: st.pgid });
    }
    // The group first (a process group id is not reused while the group has a member), then anyone of the
    // tree who left the group, by pid after checking its start time.
    if (alive.some((p) => p.pgid === this.root)) {
      try {
        process.kill(-this.root, sig);
      } catch {
        /* the group is empty */
      }
    }
    for (const p of alive) {
      if (p.pgid === this.root) continue;
      try {
        process.kill(p.pid, sig);
      } catch {
        /* gone */
      }
    }
  }

  private async stopTree(): Promise<void> {
    const started = performance.now();
    const t = this.tripped!;
    this.opts.logger.warn(
      { peak: t.totalBytes, budget: this.opts.budget.bytes, processes: t.processes },
      `memory guard: the tree of pid ${this.root} holds ${t.totalBytes} bytes, over its budget of ${this.opts.budget.bytes}: SIGTERM to its group`,
    );
    const gone = async (ms: number) => {
      const until = performance.now() + ms;
      for (;;) {
        this.sample(); // picks up a child started while stopping, drops the dead
        if (![...this.members].some(([pid, m]) => this.alive(pid, m))) return true;
        if (performance.now() >= until) return false;
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    this.signal('SIGTERM');
    if (!(await gone(STOP_GRACE_MS))) {
      this.signal('SIGKILL');
      await gone(5_000);
    }
    this.stopMs = Math.round(performance.now() - started);
  }
}

export interface GuardSettings {
  memoryGuard: boolean;
  memoryBudgetMB?: number;
  memoryReserveMB?: number;
}

export interface StepGuard {
  guard: MemoryGuard;
  budget: Budget;
  /** The derived heap cap (MiB), when one is applied. */
  heapCapMB?: number;
  /** Wrappers before the step's argv: the systemd scope, choom. */
  prefix: string[];
  scope: boolean;
  /** One line for the build log: the budget, where it came from, the heap cap, the scope or why not. */
  note: string;
}

/**
 * Everything the guard decides at the start of one install or build: the budget (from the facts now), the
 * heap cap unless the user set one (app.buildMaxOldSpaceMB, or --max-old-space-size in NODE_OPTIONS), the
 * wrappers. Throws BUILD_MEMORY when the budget leaves the step nothing to run in.
 */
export async function prepareStepGuard(o: {
  step: 'install' | 'build';
  settings: GuardSettings;
  userHeapMB?: number;
  env: Record<string, string | undefined>;
  logger: Logger;
  redact: (text: string) => string;
  logFile?: string;
}): Promise<StepGuard> {
  const budget = deriveBudget(readMemoryFacts(), { budgetMB: o.settings.memoryBudgetMB, reserveMB: o.settings.memoryReserveMB });
  const guardOn = o.settings.memoryGuard;
  if (guardOn && budget.bytes < MIN_BUDGET)
    throw new BuildMemoryError(
      `${o.step} not started: its memory budget is ${describeBudget(budget)}, below the ${bytes(MIN_BUDGET)} it needs to start`,
      { budgetBytes: budget.bytes, availableBytes: budget.availableBytes, cgroupLimitBytes: budget.cgroupLimitBytes, reserveBytes: budget.reserveBytes },
      { phase: o.step, hint: MEMORY_HINT, logFile: o.logFile },
    );
  const userCap = o.userHeapMB !== undefined || /--max-old-space-size/.test(o.env.NODE_OPTIONS ?? '');
  const heapCapMB = userCap ? undefined : heapCapMB_(budget.bytes, defaultHeapMB());
  const scopeP = await systemdScope(o.env, o.logger);
  const choom = oomScorePrefix(o.env.PATH);
  const scope = 'prefix' in scopeP;
  const prefix = [...('prefix' in scopeP ? scopeP.prefix(Math.max(budget.bytes, MIN_BUDGET)) : []), ...(choom ?? [])];
  const guard = new MemoryGuard({ budget, enabled: guardOn, raiseOomScore: !choom, redact: o.redact, logger: o.logger });
  const note =
    `memory guard: ${o.step} budget ${describeBudget(budget)}${guardOn ? '' : ', not watched (build.memoryGuard: false)'}` +
    `; heap cap ${heapCapMB !== undefined ? `${heapCapMB} MiB` : userCap ? 'as set' : 'none (above Node default)'}` +
    `; oom_score_adj 1000 (${choom ? 'choom' : '/proc'})` +
    `; systemd scope: ${'prefix' in scopeP ? `MemoryMax=${Math.max(budget.bytes, MIN_BUDGET)} OOMPolicy=continue` : `not used: ${scopeP.skip}`}`;
  if (budgetAboveRoom(budget)) o.logger.warn(`build.memoryBudgetMB is above the memory this host has left now: the kernel may act before the guard`);
  return { guard, budget, heapCapMB, prefix, scope, note };
}

export const MEMORY_HINT =
  'raise the budget (build.memoryBudgetMB, or a smaller build.memoryReserveMB), add swap, stop other memory-heavy jobs, or build elsewhere; the live app was not touched';

/** The operator's one line when the guard stopped a step. */
export function memoryStoppedError(step: 'install' | 'build', m: StepMemory, budget: Budget, opts: { logFile?: string; outputTail?: string; cause?: unknown }) {
  const big = m.biggest ? `; biggest: pid ${m.biggest.pid} \`${m.biggest.command}\` ${bytes(m.biggest.bytes)}` : '';
  return new BuildMemoryError(
    `${step} stopped by the memory guard: its processes held ${bytes(m.peakBytes ?? 0)}, over the budget of ${describeBudget(budget)}${big}; ` +
      `SIGTERM to its group, SIGKILL after ${STOP_GRACE_MS} ms${m.stopMs !== undefined ? `, gone in ${m.stopMs} ms` : ''}`,
    m,
    { phase: step, hint: MEMORY_HINT, ...opts },
  );
}

/**
 * The memory the processes `roots` and all their descendants hold now (heldBytes, as the guard counts it):
 * a release under PM2 is often `npm start` with the server as its child, so PM2's own figure (the pid it
 * started) misses most of it. Processes that vanish while being read count as nothing.
 */
export function processTreeBytes(roots: number[], procDir = '/proc'): number {
  const parent = new Map<number, number>();
  const status = new Map<number, ProcStatus>();
  for (const name of fs.readdirSync(procDir)) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const st = parseStatus(readSmall(`${procDir}/${name}/status`) ?? '');
    if (!st) continue;
    parent.set(Number(name), st.ppid);
    status.set(Number(name), st);
  }
  const inTree = new Set(roots.filter((p) => status.has(p)));
  // Walk up from each process to a root (or init); a cycle cannot occur but the walk is bounded anyway.
  for (const pid of status.keys()) {
    const chain: number[] = [];
    let at: number | undefined = pid;
    for (let i = 0; at !== undefined && at > 1 && i < 64 && !inTree.has(at); i++) {
      chain.push(at);
      at = parent.get(at);
    }
    if (at !== undefined && inTree.has(at)) for (const p of chain) inTree.add(p);
  }
  return summarize([...inTree].map((pid) => ({ pid, status: status.get(pid)! }))).totalBytes;
}

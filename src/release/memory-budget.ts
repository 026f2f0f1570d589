/**
 * The memory guard's pure part (issue 18): how much memory install and build may use, read from the numbers
 * the kernel gives (/proc/meminfo, the cgroup's files), and what the sampler makes of /proc/<pid>/status.
 * No IO here: release/memory-guard.ts reads the files and signals the processes.
 *
 * Why a budget at all: pm2-release runs inside the PM2 unit's cgroup (the executor is a PM2 app). A kernel
 * OOM kill anywhere in that cgroup makes systemd stop the whole unit under its default `OOMPolicy=stop`: every
 * app PM2 runs goes down (the runbook's incident). So the build is stopped by us, below what the kernel
 * would act on, and the live apps keep a reserve.
 */
import { bytes } from '../units.js';

export const MiB = 2 ** 20;

/** Below this, the build would be stopped as soon as npm started: refuse before starting it. */
export const MIN_BUDGET = 64 * MiB;
/** The default reserve for the live apps: this floor, or RESERVE_SHARE of the memory there is, whichever is more. */
export const RESERVE_FLOOR = 512 * MiB;
export const RESERVE_SHARE = 0.15;
/** …but never more than half of it (a 512 MiB container still gets a budget). */
export const RESERVE_CAP_SHARE = 0.5;
/** A cgroup v1 limit this high (PAGE_COUNTER_MAX pages) means "no limit". */
const UNLIMITED = 2 ** 60;

export interface Meminfo {
  total: number;
  available: number;
}

/** /proc/meminfo → bytes. MemAvailable is missing only on kernels older than 3.14: MemFree stands in. */
export function parseMeminfo(text: string): Meminfo | undefined {
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kb('MemTotal');
  const available = kb('MemAvailable') ?? kb('MemFree');
  return total === undefined || available === undefined ? undefined : { total, available };
}

/** Which memory cgroup a process is in, from /proc/<pid>/cgroup: the v1 memory hierarchy's line, else v2's `0::`. */
export function memoryCgroupOf(procCgroup: string): { version: 1 | 2; path: string } | undefined {
  let v2: string | undefined;
  for (const line of procCgroup.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[2].split(',').includes('memory')) return { version: 1, path: m[3] };
    if (m[1] === '0' && m[2] === '') v2 = m[3];
  }
  return v2 === undefined ? undefined : { version: 2, path: v2 };
}

export interface CgroupMount {
  version: 1 | 2;
  /** Where it is mounted. */
  mountPoint: string;
  /** The hierarchy path the mount shows at its root (not `/` inside a container's cgroup namespace). */
  root: string;
}

/** The mounts of the v1 memory hierarchy and of cgroup2, from /proc/self/mountinfo. */
export function cgroupMounts(mountinfo: string): { v1?: CgroupMount; v2?: CgroupMount } {
  const out: { v1?: CgroupMount; v2?: CgroupMount } = {};
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const f = pre.split(' ');
    const [fstype, , superOpts = ''] = post.split(' ');
    const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const mount = { root: unescape(f[3] ?? '/'), mountPoint: unescape(f[4] ?? '') };
    if (fstype === 'cgroup' && superOpts.split(',').includes('memory')) out.v1 ??= { version: 1, ...mount };
    if (fstype === 'cgroup2') out.v2 ??= { version: 2, ...mount };
  }
  return out;
}

/**
 * The directories of a cgroup and each of its ancestors up to the mount's root, innermost first: the
 * tightest limit on the way up is the one that counts.
 */
export function cgroupDirs(mount: CgroupMount, cgPath: string): string[] {
  let rel = cgPath;
  if (mount.root !== '/' && (rel === mount.root || rel.startsWith(mount.root + '/'))) rel = rel.slice(mount.root.length);
  const parts = rel.split('/').filter(Boolean);
  const dirs: string[] = [];
  for (let i = parts.length; i >= 0; i--) dirs.push([mount.mountPoint, ...parts.slice(0, i)].join('/'));
  return dirs;
}

/** memory.max (v2: a number or `max`) or memory.limit_in_bytes (v1: a huge number for none) → bytes, or undefined for no limit. */
export function parseLimit(text: string): number | undefined {
  const t = text.trim();
  if (t === '' || t === 'max') return undefined;
  const n = Number(t);
  return Number.isFinite(n) && n < UNLIMITED ? n : undefined;
}

/**
 * Page cache the kernel drops before it OOM-kills: memory.stat's inactive file pages (v1 hierarchical
 * `total_inactive_file`, v2 `inactive_file`). Usage minus it is the working set (what kubelet and docker use).
 */
export function inactiveFile(memoryStat: string, version: 1 | 2): number {
  const key = version === 1 ? 'total_inactive_file' : 'inactive_file';
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(memoryStat);
  return m ? Number(m[1]) : 0;
}

export interface CgroupLevel {
  version: 1 | 2;
  dir: string;
  limit: number;
  usage: number;
  inactiveFile: number;
}

/** The level with the least room under its limit, and that room (limit minus working set). */
export function tightestCgroup(levels: CgroupLevel[]): { level: CgroupLevel; free: number } | undefined {
  let best: { level: CgroupLevel; free: number } | undefined;
  for (const level of levels) {
    const free = Math.max(0, level.limit - Math.max(0, level.usage - level.inactiveFile));
    if (!best || free < best.free) best = { level, free };
  }
  return best;
}

export interface MemoryFacts {
  meminfo: Meminfo;
  /** The tightest limit on pm2-release's own cgroup, when there is one. */
  cgroup?: { version: 1 | 2; dir: string; limit: number; free: number };
}

export interface BudgetSettings {
  /** build.memoryBudgetMB: a fixed budget. */
  budgetMB?: number;
  /** build.memoryReserveMB: what the live apps keep. */
  reserveMB?: number;
}

export interface Budget {
  bytes: number;
  /** `derived` from the facts below, or `configured` (build.memoryBudgetMB). */
  source: 'derived' | 'configured';
  /** MemAvailable when the step started. */
  availableBytes: number;
  cgroupLimitBytes: number | null;
  /** The cgroup's limit minus its working set when the step started. */
  cgroupFreeBytes: number | null;
  reserveBytes: number;
}

/** The default reserve: max(512 MiB, 15 % of the memory there is), at most half of it. */
export function defaultReserve(totalBytes: number): number {
  return Math.min(Math.max(RESERVE_FLOOR, RESERVE_SHARE * totalBytes), RESERVE_CAP_SHARE * totalBytes);
}

/**
 * The budget for one install or build: what the process can really get (MemAvailable, or the room left
 * under its cgroup's limit when that is less) minus the reserve. The memory "there is" for the default
 * reserve is the cgroup's limit when it is below the machine's total.
 */
export function deriveBudget(facts: MemoryFacts, settings: BudgetSettings): Budget {
  const { meminfo, cgroup } = facts;
  const total = cgroup ? Math.min(meminfo.total, cgroup.limit) : meminfo.total;
  const reserve = settings.reserveMB !== undefined ? settings.reserveMB * MiB : Math.round(defaultReserve(total));
  const room = cgroup ? Math.min(meminfo.available, cgroup.free) : meminfo.available;
  const common = {
    availableBytes: meminfo.available,
    cgroupLimitBytes: cgroup?.limit ?? null,
    cgroupFreeBytes: cgroup?.free ?? null,
    reserveBytes: reserve,
  };
  if (settings.budgetMB !== undefined) return { bytes: settings.budgetMB * MiB, source: 'configured', ...common };
  return { bytes: Math.max(0, Math.floor(room - reserve)), source: 'derived', ...common };
}

/** "1.2 GiB (available 3.1 GiB, cgroup limit 3.0 GiB with 2.0 GiB free, reserve 614.4 MiB)": where a budget came from. */
export function describeBudget(b: Budget): string {
  const cg = b.cgroupLimitBytes === null ? 'no cgroup limit' : `cgroup limit ${bytes(b.cgroupLimitBytes)} with ${bytes(b.cgroupFreeBytes ?? 0)} free`;
  if (b.source === 'configured') return `${bytes(b.bytes)} (build.memoryBudgetMB; available ${bytes(b.availableBytes)}, ${cg})`;
  return `${bytes(b.bytes)} (available ${bytes(b.availableBytes)}, ${cg}, minus reserve ${bytes(b.reserveBytes)})`;
}

/** A configured budget above what the process can get: the kernel may act before the guard does. */
export function budgetAboveRoom(b: Budget): boolean {
  const room = b.cgroupFreeBytes === null ? b.availableBytes : Math.min(b.availableBytes, b.cgroupFreeBytes);
  return b.source === 'configured' && b.bytes > room;
}

/**
 * The heap cap (MiB) derived from a budget: three quarters of it, so V8 collects garbage before the tree as
 * a whole reaches the budget (a heap far from its limit grows lazily). Undefined when that would not be below
 * Node's own default limit (`defaultHeapMB`, v8's heap_size_limit): then the cap would change nothing.
 */
export function heapCapMB(budgetBytes: number, defaultHeapMB: number): number | undefined {
  const cap = Math.max(128, Math.floor((budgetBytes * 0.75) / MiB));
  return cap < defaultHeapMB ? cap : undefined;
}

/** What the sampler needs of /proc/<pid>/status: the name, the parent, and the resident memory by kind (bytes). */
export interface ProcStatus {
  name: string;
  ppid: number;
  state: string;
  rssAnon: number;
  rssFile: number;
  rssShmem: number;
}

export function parseStatus(text: string): ProcStatus | undefined {
  const field = (key: string) => {
    const at = text.indexOf(`\n${key}:`);
    if (at < 0) return undefined;
    const end = text.indexOf('\n', at + 1);
    return text.slice(at + key.length + 2, end < 0 ? undefined : end).trim();
  };
  const name = text.startsWith('Name:') ? text.slice(5, text.indexOf('\n')).trim() : undefined;
  const ppid = Number(field('PPid'));
  if (name === undefined || !Number.isInteger(ppid)) return undefined;
  const kb = (key: string) => Number(/^(\d+)/.exec(field(key) ?? '')?.[1] ?? 0) * 1024;
  return { name, ppid, state: (field('State') ?? '?').charAt(0), rssAnon: kb('RssAnon'), rssFile: kb('RssFile'), rssShmem: kb('RssShmem') };
}

/**
 * The memory a process holds that the kernel cannot drop under pressure: anonymous pages (heaps, Buffers,
 * native allocations) and shared memory. File pages (the node binary, libraries) are page cache, counted
 * once however many processes map them, and reclaimed before an OOM kill: summing them per process would
 * count the node binary once per worker. PSS would split them fairly but costs a page-table walk per read.
 */
export function heldBytes(s: Pick<ProcStatus, 'rssAnon' | 'rssShmem'>): number {
  return s.rssAnon + s.rssShmem;
}

export interface TreeSample {
  /** Summed heldBytes of every live process of the tree. */
  totalBytes: number;
  processes: number;
  biggest: { pid: number; name: string; bytes: number } | null;
}

export function summarize(procs: { pid: number; status: ProcStatus }[]): TreeSample {
  let total = 0;
  let biggest: TreeSample['biggest'] = null;
  let n = 0;
  for (const { pid, status } of procs) {
    if (status.state === 'Z') continue; // a zombie holds no memory
    const b = heldBytes(status);
    total += b;
    n++;
    if (!biggest || b > biggest.bytes) biggest = { pid, name: status.name, bytes: b };
  }
  return { totalBytes: total, processes: n, biggest };
}

/** Stop the tree: it holds more than the budget. */
export function overBudget(sample: Pick<TreeSample, 'totalBytes'>, budgetBytes: number): boolean {
  return sample.totalBytes > budgetBytes;
}

/** Far from the budget the tree is sampled less often: the cost stays low, the reaction fast where it matters. */
export const SAMPLE_MS = { far: 250, near: 100 } as const;
export function nextSampleMs(totalBytes: number, budgetBytes: number): number {
  return totalBytes < budgetBytes / 2 ? SAMPLE_MS.far : SAMPLE_MS.near;
}

/** Between SIGTERM to the group and SIGKILL: long enough for npm to pass the signal on, short enough that memory does not keep growing. */
export const STOP_GRACE_MS = 500;

/**
 * Whether a process belongs to the watched tree: a child of a member, or in the step's session or process
 * group (the step starts detached, as its own session and group leader, so a grandchild whose parent
 * already exited is still found).
 */
export function belongsToTree(p: { ppid: number; pgid: number; session: number }, root: number, members: ReadonlySet<number>): boolean {
  return p.session === root || p.pgid === root || members.has(p.ppid);
}

/** What one install or build used, kept in the manifest and shown by list, status and history. */
export interface StepMemory {
  /** The highest sum seen (null when the guard was off: nothing sampled). */
  peakBytes: number | null;
  budgetBytes: number;
  budgetSource: 'derived' | 'configured';
  availableBytes: number;
  cgroupLimitBytes: number | null;
  reserveBytes: number;
  /** The guard watched (build.memoryGuard). */
  guard: boolean;
  /** The guard stopped the step for crossing the budget. */
  stopped: boolean;
  /** The biggest process at the peak. */
  biggest?: { pid: number; command: string; bytes: number };
  /** It ran in a transient systemd scope with MemoryMax=budget. */
  scope: boolean;
  /** Derived heap cap applied (MiB). */
  heapCapMB?: number;
  /** From the sample that crossed the budget to the tree gone (ms). */
  stopMs?: number;
  /**
   * Processes the kernel's OOM killer killed on this host while the step ran (/proc/vmstat oom_kill, which
   * counts cgroup OOM kills too); absent when the kernel does not say. A build whose grandchild was killed
   * often exits 1, not 137: this is what tells the operator the kernel acted.
   */
  oomKills?: number;
}

/** The host's OOM-kill count from /proc/vmstat (Linux 4.13+), or undefined. */
export function parseOomKills(vmstat: string): number | undefined {
  const m = /^oom_kill (\d+)$/m.exec(vmstat);
  return m ? Number(m[1]) : undefined;
}

/** "312.0 MiB (26 % of 1.2 GiB)". */
export function peakText(m: Pick<StepMemory, 'peakBytes' | 'budgetBytes'> | undefined): string {
  if (!m || m.peakBytes === null) return '-';
  return `${bytes(m.peakBytes)} (${Math.round((m.peakBytes / m.budgetBytes) * 100)} % of ${bytes(m.budgetBytes)})`;
}

/** The step of a release that came closest to its budget (build before install on a tie). */
export function closestToBudget(memory: { install?: StepMemory; build?: StepMemory } | undefined): { step: 'install' | 'build'; m: StepMemory } | undefined {
  const steps = (['build', 'install'] as const).flatMap((step) => {
    const m = memory?.[step];
    return m && m.peakBytes !== null && m.budgetBytes > 0 ? [{ step, m, share: m.peakBytes / m.budgetBytes }] : [];
  });
  steps.sort((a, b) => b.share - a.share);
  return steps[0] ? { step: steps[0].step, m: steps[0].m } : undefined;
}

/** The share of its budget past which doctor warns: the next build may be stopped. */
export const WARN_SHARE = 0.8;

// ---------- systemd ----------

/** Whether install and build can run in a transient systemd scope, and with which argv prefix; else why not. */
export function scopePlan(facts: {
  systemdRunning: boolean;
  hasSystemdRun: boolean;
  uid: number;
  /** The user manager's bus ($XDG_RUNTIME_DIR/systemd/private) exists. */
  userManager: boolean;
  /** Controllers delegated to the user manager (cgroup.controllers of user@UID.service). */
  userControllers: string[];
}): { prefix: (budgetBytes: number) => string[] } | { skip: string } {
  if (!facts.systemdRunning) return { skip: 'systemd is not running here (no /run/systemd/system)' };
  if (!facts.hasSystemdRun) return { skip: 'systemd-run is not on PATH' };
  const base = ['systemd-run', '--scope', '--quiet', '--collect'];
  const props = (budget: number) => ['-p', `MemoryMax=${budget}`, '-p', 'OOMPolicy=continue', '--'];
  if (facts.uid === 0) return { prefix: (b) => [...base, ...props(b)] };
  if (!facts.userManager) return { skip: `no systemd user manager for uid ${facts.uid} (loginctl enable-linger)` };
  if (!facts.userControllers.includes('memory')) return { skip: `the memory controller is not delegated to user@${facts.uid}.service` };
  return { prefix: (b) => [...base, '--user', ...props(b)] };
}

/** `systemctl show -p LoadState -p OOMPolicy -p FragmentPath` → its values. */
export function parseSystemctlShow(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

/** The one-time fix: a drop-in beside the unit file with `OOMPolicy=continue`, then a reload. Runs as printed. */
export function oomPolicyFix(unit: string, fragmentPath: string | undefined, root: boolean): string {
  const unitFile = `${unit}.service`;
  const dir =
    fragmentPath && fragmentPath.startsWith('/')
      ? `${fragmentPath.slice(0, fragmentPath.lastIndexOf('/'))}/${unitFile}.d`
      : `/etc/systemd/system/${unitFile}.d`;
  const sudo = root ? '' : 'sudo ';
  const q = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`);
  return (
    `${sudo}mkdir -p ${q(dir)} && printf '[Service]\\nOOMPolicy=continue\\n' | ${sudo}tee ${q(`${dir}/oom-policy.conf`)} >/dev/null && ` +
    `${sudo}systemctl daemon-reload`
  );
}

/** Doctor's verdict on the guard: off, a budget too small to build in, or a last build that came close to its budget. */
export function guardVerdict(o: { enabled: boolean; budgetNow: Budget; last?: { id: string; memory: { install?: StepMemory; build?: StepMemory } } }): {
  status: 'ok' | 'warn';
  message: string;
  fix: string | null;
} {
  const fix = 'raise build.memoryBudgetMB (or lower build.memoryReserveMB), add swap, or stop other memory-heavy jobs while deploying';
  if (!o.enabled)
    return {
      status: 'warn',
      message: 'off (build.memoryGuard: false): a build that outgrows the host is left to the kernel, whose OOM kill can stop the PM2 unit',
      fix: 'set build.memoryGuard to true (the default)',
    };
  if (o.budgetNow.bytes < MIN_BUDGET)
    return { status: 'warn', message: `the budget now is ${describeBudget(o.budgetNow)}: install and build would not start`, fix };
  const c = o.last ? closestToBudget(o.last.memory) : undefined;
  const lastText = c && o.last ? `; last ${c.step} (${o.last.id}) peaked at ${peakText(c.m)}` : '';
  if (c && o.last && c.m.peakBytes !== null && c.m.peakBytes > WARN_SHARE * c.m.budgetBytes)
    return {
      status: 'warn',
      message: `the last ${c.step} (${o.last.id}) ${c.m.stopped ? 'was stopped at' : 'peaked at'} ${peakText(c.m)}, past ${Math.round(WARN_SHARE * 100)} %: the next one may be stopped`,
      fix,
    };
  return { status: 'ok', message: `on: budget now ${describeBudget(o.budgetNow)}${lastText}`, fix: null };
}

/** Doctor's verdict on the PM2 unit's OOMPolicy, from `systemctl show`: undefined values mean systemctl could not tell. */
export function oomPolicyVerdict(
  unit: string,
  show: Record<string, string>,
  root: boolean,
): { status: 'ok' | 'warn' | 'skip'; message: string; fix: string | null } {
  if (show.LoadState !== 'loaded') return { status: 'skip', message: `no systemd unit ${unit} (LoadState ${show.LoadState || 'unknown'})`, fix: null };
  const policy = show.OOMPolicy || 'stop';
  if (policy === 'continue') return { status: 'ok', message: `${unit} has OOMPolicy=continue: an OOM kill of one process does not stop the unit`, fix: null };
  return {
    status: 'warn',
    message:
      `${unit} has OOMPolicy=${policy}: one kernel OOM kill inside it (a build, say) makes systemd stop the whole unit and every app PM2 runs ` +
      `(the runbook's incident: "failed with Result: oom-kill", Apache answering 503)`,
    fix: oomPolicyFix(unit, show.FragmentPath, root),
  };
}

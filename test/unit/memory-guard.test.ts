/** The memory guard's pure part (release/memory-budget.ts): the kernel's numbers in, a budget and verdicts out. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { memoryCell, memoryLine } from '../../src/cli/format.js';
import {
  belongsToTree,
  cgroupDirs,
  cgroupMounts,
  closestToBudget,
  defaultReserve,
  deriveBudget,
  describeBudget,
  guardVerdict,
  heapCapMB,
  inactiveFile,
  memoryCgroupOf,
  MiB,
  nextSampleMs,
  oomPolicyFix,
  oomPolicyVerdict,
  overBudget,
  parseLimit,
  parseMeminfo,
  parseOomKills,
  parseStatus,
  parseSystemctlShow,
  scopePlan,
  summarize,
  tightestCgroup,
  type Budget,
  type StepMemory,
} from '../../src/release/memory-budget.js';

const GiB = 1024 * MiB;

describe('what the kernel says', () => {
  it('reads MemTotal and MemAvailable from /proc/meminfo (MemFree on kernels without MemAvailable)', () => {
    expect(parseMeminfo('MemTotal:        4026532 kB\nMemFree:          201000 kB\nMemAvailable:    2621440 kB\n')).toEqual({
      total: 4026532 * 1024,
      available: 2621440 * 1024,
    });
    expect(parseMeminfo('MemTotal:  1000 kB\nMemFree:  10 kB\n')).toEqual({ total: 1024000, available: 10240 });
    expect(parseMeminfo('')).toBeUndefined();
  });

  it("reads the host's OOM-kill count from /proc/vmstat (absent on kernels before 4.13)", () => {
    expect(parseOomKills('pgfault 1200\noom_kill 3\nnr_free_pages 10\n')).toBe(3);
    expect(parseOomKills('oom_kill_x 9\npgfault 1\n')).toBeUndefined();
    expect(parseOomKills('')).toBeUndefined();
  });

  it("finds the process's memory cgroup: the v1 memory hierarchy's line, else v2's 0::", () => {
    const v1 = '9:name=systemd:/\n4:memory:/process_api/28ab\n0::/\n';
    expect(memoryCgroupOf(v1)).toEqual({ version: 1, path: '/process_api/28ab' });
    expect(memoryCgroupOf('5:cpu,memory:/x\n')).toEqual({ version: 1, path: '/x' });
    expect(memoryCgroupOf('0::/system.slice/pm2-ubuntu.service\n')).toEqual({ version: 2, path: '/system.slice/pm2-ubuntu.service' });
    expect(memoryCgroupOf('')).toBeUndefined();
  });

  it('finds the v1 memory and the cgroup2 mounts in mountinfo, with the root a namespace shows', () => {
    const mi = [
      '30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset',
      '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '40 30 0:37 /docker/abc /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    expect(cgroupMounts(mi)).toEqual({
      v1: { version: 1, mountPoint: '/sys/fs/cgroup/memory', root: '/' },
      v2: { version: 2, mountPoint: '/sys/fs/cgroup/unified', root: '/docker/abc' },
    });
  });

  it('walks from the own cgroup up to the mount root, innermost first (a namespace root is cut off)', () => {
    expect(cgroupDirs({ version: 2, mountPoint: '/sys/fs/cgroup', root: '/' }, '/system.slice/pm2-ubuntu.service')).toEqual([
      '/sys/fs/cgroup/system.slice/pm2-ubuntu.service',
      '/sys/fs/cgroup/system.slice',
      '/sys/fs/cgroup',
    ]);
    expect(cgroupDirs({ version: 2, mountPoint: '/sys/fs/cgroup', root: '/docker/abc' }, '/docker/abc/app')).toEqual(['/sys/fs/cgroup/app', '/sys/fs/cgroup']);
    expect(cgroupDirs({ version: 1, mountPoint: '/sys/fs/cgroup/memory', root: '/' }, '/')).toEqual(['/sys/fs/cgroup/memory']);
  });

  it('reads limits: v2 max and the v1 page-counter maximum are no limit', () => {
    expect(parseLimit('max\n')).toBeUndefined();
    expect(parseLimit('9223372036854771712\n')).toBeUndefined();
    expect(parseLimit('536870912\n')).toBe(512 * MiB);
    expect(parseLimit('')).toBeUndefined();
  });

  it('takes inactive file pages off the usage (v1 total_inactive_file, v2 inactive_file): the kernel drops them before an OOM kill', () => {
    expect(inactiveFile('cache 1\ninactive_file 4096\ntotal_inactive_file 8192\n', 1)).toBe(8192);
    expect(inactiveFile('anon 1\ninactive_file 4096\n', 2)).toBe(4096);
    const lv = (dir: string, limit: number, usage: number, inact = 0) => ({ version: 2 as const, dir, limit, usage, inactiveFile: inact });
    const t = tightestCgroup([lv('/a/b', 2 * GiB, 1.5 * GiB, 0.5 * GiB), lv('/a', 4 * GiB, 3.75 * GiB)]);
    expect(t).toEqual({ level: lv('/a', 4 * GiB, 3.75 * GiB), free: 0.25 * GiB });
    expect(tightestCgroup([])).toBeUndefined();
  });
});

describe('the budget', () => {
  const vm = { meminfo: { total: 4 * GiB, available: 2.5 * GiB } };

  it('default reserve: max(512 MiB, 15 % of the memory there is), at most half of it', () => {
    expect(defaultReserve(4 * GiB)).toBeCloseTo(0.15 * 4 * GiB);
    expect(defaultReserve(2 * GiB)).toBe(512 * MiB);
    expect(defaultReserve(512 * MiB)).toBe(256 * MiB);
  });

  it('a 4 GiB VM: MemAvailable minus the reserve', () => {
    const b = deriveBudget(vm, {});
    expect(b).toMatchObject({ source: 'derived', availableBytes: 2.5 * GiB, cgroupLimitBytes: null, reserveBytes: Math.round(0.6 * GiB) });
    expect(b.bytes).toBe(Math.floor(2.5 * GiB - Math.round(0.6 * GiB)));
    expect(describeBudget(b)).toBe('1.9 GiB (available 2.5 GiB, no cgroup limit, minus reserve 614.4 MiB)');
  });

  it("the PM2 unit's cgroup with less room than MemAvailable: the room under its limit, and the reserve from the limit", () => {
    const b = deriveBudget({ ...vm, cgroup: { version: 2, dir: '/sys/fs/cgroup/system.slice/pm2-ubuntu.service', limit: 2 * GiB, free: 1.2 * GiB } }, {});
    expect(b.reserveBytes).toBe(512 * MiB);
    expect(b.bytes).toBe(Math.floor(1.2 * GiB - 512 * MiB));
    expect(describeBudget(b)).toMatch(/cgroup limit 2\.0 GiB with 1\.2 GiB free, minus reserve 512\.0 MiB/);
  });

  it('a configured reserve and a fixed budget', () => {
    expect(deriveBudget(vm, { reserveMB: 100 }).bytes).toBe(2.5 * GiB - 100 * MiB);
    const fixed = deriveBudget(vm, { budgetMB: 1024 });
    expect(fixed).toMatchObject({ bytes: GiB, source: 'configured' });
    expect(describeBudget(fixed)).toBe('1.0 GiB (build.memoryBudgetMB; available 2.5 GiB, no cgroup limit)');
  });

  it('never below 0 (the guard then refuses to start the step)', () => {
    expect(deriveBudget({ meminfo: { total: 4 * GiB, available: 300 * MiB } }, {}).bytes).toBe(0);
  });

  it('a heap cap of three quarters of the budget, only when below Node default limit', () => {
    expect(heapCapMB(2 * GiB, 4096)).toBe(1536);
    expect(heapCapMB(100 * MiB, 4096)).toBe(128);
    expect(heapCapMB(20 * GiB, 4096)).toBeUndefined();
  });
});

describe('sampling the tree', () => {
  const status = (name: string, ppid: number, anonKB: number, state = 'S (sleeping)') =>
    `Name:\t${name}\nUmask:\t0022\nState:\t${state}\nTgid:\t1\nPid:\t1\nPPid:\t${ppid}\nVmRSS:\t   ${anonKB + 40000} kB\nRssAnon:\t   ${anonKB} kB\nRssFile:\t   40000 kB\nRssShmem:\t       16 kB\n`;

  it('reads name, parent, state and resident memory by kind from /proc/<pid>/status', () => {
    expect(parseStatus(status('node', 42, 1000))).toEqual({
      name: 'node',
      ppid: 42,
      state: 'S',
      rssAnon: 1000 * 1024,
      rssFile: 40000 * 1024,
      rssShmem: 16 * 1024,
    });
    // A kernel thread has no Rss lines.
    expect(parseStatus('Name:\tkthreadd\nState:\tS (sleeping)\nPPid:\t0\n')).toMatchObject({ rssAnon: 0, rssFile: 0 });
    expect(parseStatus('')).toBeUndefined();
  });

  it('sums anonymous and shared memory (file pages are the node binary, once for all), skips zombies, names the biggest', () => {
    const procs = [
      { pid: 10, status: parseStatus(status('npm', 1, 50_000))! },
      { pid: 11, status: parseStatus(status('node', 10, 300_000))! },
      { pid: 12, status: parseStatus(status('node', 11, 900_000, 'Z (zombie)'))! },
    ];
    const s = summarize(procs);
    expect(s).toEqual({ totalBytes: (350_000 + 32) * 1024, processes: 2, biggest: { pid: 11, name: 'node', bytes: (300_000 + 16) * 1024 } });
    expect(overBudget(s, 300 * MiB)).toBe(true);
    expect(overBudget(s, 400 * MiB)).toBe(false);
  });

  it('the tree: children of members, and anyone in the step’s session or group (an orphaned grandchild)', () => {
    const members = new Set([100, 101]);
    expect(belongsToTree({ ppid: 101, pgid: 555, session: 555 }, 100, members)).toBe(true);
    expect(belongsToTree({ ppid: 1, pgid: 100, session: 100 }, 100, members)).toBe(true);
    expect(belongsToTree({ ppid: 1, pgid: 777, session: 100 }, 100, members)).toBe(true);
    expect(belongsToTree({ ppid: 1, pgid: 777, session: 777 }, 100, members)).toBe(false);
  });

  it('samples more often near the budget', () => {
    expect(nextSampleMs(100, 1000)).toBe(250);
    expect(nextSampleMs(600, 1000)).toBe(100);
  });
});

describe('systemd', () => {
  const base = { systemdRunning: true, hasSystemdRun: true, uid: 0, userManager: false, userControllers: [] as string[] };

  it('a transient scope as root, or through a user manager with memory delegated; else why not', () => {
    const root = scopePlan(base);
    expect('prefix' in root && root.prefix(GiB)).toEqual([
      'systemd-run',
      '--scope',
      '--quiet',
      '--collect',
      '-p',
      `MemoryMax=${GiB}`,
      '-p',
      'OOMPolicy=continue',
      '--',
    ]);
    const user = scopePlan({ ...base, uid: 1000, userManager: true, userControllers: ['cpu', 'memory', 'pids'] });
    expect('prefix' in user && user.prefix(GiB)).toContain('--user');
    expect(scopePlan({ ...base, systemdRunning: false })).toEqual({ skip: 'systemd is not running here (no /run/systemd/system)' });
    expect(scopePlan({ ...base, hasSystemdRun: false })).toEqual({ skip: 'systemd-run is not on PATH' });
    expect(scopePlan({ ...base, uid: 1000 })).toMatchObject({ skip: expect.stringMatching(/no systemd user manager/) });
    expect(scopePlan({ ...base, uid: 1000, userManager: true, userControllers: ['cpu'] })).toMatchObject({ skip: expect.stringMatching(/not delegated/) });
  });

  it("the PM2 unit's OOMPolicy: stop (systemd's default) warns with the one-time fix, continue is ok, no unit is skipped", () => {
    const show = (policy: string, load = 'loaded') =>
      parseSystemctlShow(`LoadState=${load}\nOOMPolicy=${policy}\nFragmentPath=/etc/systemd/system/pm2-ubuntu.service\n`);
    const stop = oomPolicyVerdict('pm2-ubuntu', show('stop'), false);
    expect(stop.status).toBe('warn');
    expect(stop.message).toMatch(/OOMPolicy=stop: .*stop the whole unit/);
    expect(stop.message).not.toContain('\n');
    expect(stop.fix).toBe(
      "sudo mkdir -p /etc/systemd/system/pm2-ubuntu.service.d && printf '[Service]\\nOOMPolicy=continue\\n' | sudo tee /etc/systemd/system/pm2-ubuntu.service.d/oom-policy.conf >/dev/null && sudo systemctl daemon-reload",
    );
    expect(oomPolicyVerdict('pm2-ubuntu', show('kill'), false).status).toBe('warn');
    expect(oomPolicyVerdict('pm2-ubuntu', show('continue'), false)).toMatchObject({ status: 'ok', fix: null });
    expect(oomPolicyVerdict('pm2-ubuntu', show('stop', 'not-found'), false)).toMatchObject({ status: 'skip' });
    expect(oomPolicyFix('pm2-root', undefined, true)).toMatch(
      /^mkdir -p \/etc\/systemd\/system\/pm2-root\.service\.d && printf .* \| tee .* && systemctl daemon-reload$/,
    );
  });
});

describe('what an operator sees', () => {
  const budget: Budget = { bytes: GiB, source: 'derived', availableBytes: 2 * GiB, cgroupLimitBytes: null, cgroupFreeBytes: null, reserveBytes: 512 * MiB };
  const step = (peak: number | null, stopped = false): StepMemory => ({
    peakBytes: peak,
    budgetBytes: GiB,
    budgetSource: 'derived',
    availableBytes: 2 * GiB,
    cgroupLimitBytes: null,
    reserveBytes: 512 * MiB,
    guard: true,
    stopped,
    scope: false,
  });

  it('the step closest to its budget, as a list cell and a status line', () => {
    const memory = { install: step(100 * MiB), build: step(512 * MiB) };
    expect(closestToBudget(memory)?.step).toBe('build');
    expect(memoryCell(memory)).toBe('build 512.0 MiB 50 %');
    expect(memoryCell({ build: step(1100 * MiB, true) })).toBe('build 1.1 GiB 107 % STOPPED');
    expect(memoryCell(undefined)).toBe('-');
    expect(memoryLine(memory)).toBe('install 100.0 MiB (10 % of 1.0 GiB), build 512.0 MiB (50 % of 1.0 GiB)');
  });

  it('doctor: ok with the budget now; warns when the last build passed 80 % of its budget, or the guard is off', () => {
    expect(guardVerdict({ enabled: true, budgetNow: budget, last: { id: 'r1', memory: { build: step(512 * MiB) } } })).toMatchObject({
      status: 'ok',
      message: expect.stringMatching(/^on: budget now 1\.0 GiB .*; last build \(r1\) peaked at 512\.0 MiB \(50 % of 1\.0 GiB\)$/),
    });
    const close = guardVerdict({ enabled: true, budgetNow: budget, last: { id: 'r1', memory: { build: step(0.85 * GiB) } } });
    expect(close.status).toBe('warn');
    expect(close.message).toMatch(/past 80 %/);
    expect(close.fix).toMatch(/swap/);
    expect(guardVerdict({ enabled: false, budgetNow: budget }).status).toBe('warn');
    expect(guardVerdict({ enabled: true, budgetNow: { ...budget, bytes: 10 * MiB } }).status).toBe('warn');
  });

  it('config: build.memoryGuard on by default, the budget keys validated', () => {
    const load = (config: unknown) => loadConfig({ config, cwd: '/home/u', env: {}, home: '/home/u' }).config.build;
    expect(load({})).toMatchObject({ memoryGuard: true, memoryBudgetMB: undefined, memoryReserveMB: undefined });
    expect(load({ build: { memoryGuard: false, memoryBudgetMB: 1500, memoryReserveMB: 256 } })).toMatchObject({
      memoryGuard: false,
      memoryBudgetMB: 1500,
      memoryReserveMB: 256,
    });
    expect(() => load({ build: { memoryBudgetMB: 10 } })).toThrow(/build\.memoryBudgetMB/);
    expect(() => load({ build: { memoryGuardd: true } })).toThrow(/unknown key "memoryGuardd"/);
  });
});

/**
 * The host checks: all of them for `doctor` (and `init` on its proposal); the blocking ones, the pre-flight,
 * at the start of deploy and build. Each check is ok / warn / fail with a one-line fix. Deploy refuses to
 * start on a failed blocking check, so a full disk or a squatted port stops it before building, not half-way.
 */
import { BuildCache } from '../release/build-cache.js';
import { bytes } from '../units.js';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { appPort } from '../config.js';
import { EnvironmentError } from '../errors.js';
import { formatCommand, run } from '../exec.js';
import { ensureRepository } from '../git.js';
import { isLoopbackAddress, listenAddresses, portHolder } from '../health.js';
import { phase, warn, type Context } from './context.js';
import { routerProcessName } from '../router/protocol.js';
import { routerControl } from './switch-release.js';
import { deriveBudget, guardVerdict, oomPolicyVerdict, parseSystemctlShow } from '../release/memory-budget.js';
import { readMemoryFacts, systemdScope } from '../release/memory-guard.js';
import { checkRouterConfig } from './router-config.js';
import { standbyText, standbyView } from './standby.js';

/** `skip`: the check does not apply on this host (e.g. no systemd); it never blocks a deploy. */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface Check {
  name: string;
  status: CheckStatus;
  message: string;
  fix: string | null;
}

export interface DoctorResult {
  ok: boolean;
  /** Always false: doctor only reads. */
  changed: false;
  checks: Check[];
}

const ok = (name: string, message: string): Check => ({ name, status: 'ok', message, fix: null });
const bad = (name: string, status: CheckStatus, message: string, fix: string): Check => ({ name, status, message, fix });

/** Every check, as `doctor` reports them (`init` runs them on its proposal too). */
export async function checkAll(ctx: Context): Promise<DoctorResult> {
  const checks = await runChecks(ctx, 'all');
  return { ok: !checks.some((c) => c.status === 'fail'), changed: false, checks };
}

/** The blocking checks, run at the start of deploy/build: a fail throws, a warn is reported. */
export async function preflight(ctx: Context): Promise<Check[]> {
  return phase(ctx, 'preflight', async () => {
    const checks = await runChecks(ctx, 'preflight');
    for (const c of checks) if (c.status === 'warn') warn(ctx, `${c.name}: ${c.message}${c.fix ? ` (${c.fix})` : ''}`);
    const failed = checks.filter((c) => c.status === 'fail');
    if (failed.length > 0)
      throw new EnvironmentError('PREFLIGHT_FAILED', `pre-flight failed: ${failed.map((c) => `${c.name}: ${c.message}`).join('; ')}`, {
        phase: 'preflight',
        hint:
          failed
            .map((c) => c.fix)
            .filter(Boolean)
            .join('; ') || 'run `pm2-release doctor`',
      });
    return checks;
  });
}

async function runChecks(ctx: Context, scope: 'all' | 'preflight'): Promise<Check[]> {
  const checks: Check[] = [];
  const add = async (fn: () => Promise<Check | Check[]>) => {
    try {
      const r = await fn();
      checks.push(...(Array.isArray(r) ? r : [r]));
    } catch (err) {
      checks.push(bad(fn.name || 'check', 'fail', (err as Error).message.split('\n')[0], 'see the message'));
    }
  };
  // In deploy the workspace is checked by resolve, with a usage error (exit 2): it is a config mistake.
  if (scope === 'all') await add(() => checkWorkspace(ctx));
  await add(() => checkReleasesDir(ctx));
  await add(() => checkDisk(ctx));
  await add(() => checkMemory(ctx));
  await add(() => checkPm2(ctx, scope));
  await add(() => checkPort(ctx));
  if (scope === 'all') {
    await add(() => checkRouter(ctx));
    await add(() => checkRouterDefinition(ctx));
    await add(() => checkStandby(ctx));
    await add(() => checkReleaseHost(ctx));
    await add(() => checkNode(ctx));
    await add(() => checkBuildCache(ctx));
    await add(() => checkDump(ctx));
    await add(() => checkSystemd(ctx));
    await add(() => checkMemoryGuard(ctx));
    await add(() => checkOomPolicy(ctx));
  }
  return checks;
}

/** Informational: what the build cache holds (release/build-cache.ts). Never fails. */
async function checkBuildCache(ctx: Context): Promise<Check> {
  const { build } = ctx.config;
  const entries = await new BuildCache(ctx.config.releasesDir).describe();
  const held = entries.length ? entries.map((e) => `${e.entry} ${bytes(e.bytes)}`).join(', ') : 'nothing cached yet';
  if (!build.cache) return ok('build-cache', `off (build.cache: false)${entries.length ? `; left on disk: ${held}` : ''}`);
  return ok('build-cache', `${build.cachePaths.join(', ')} carried between builds (at most ${bytes(build.cacheMaxBytes)}): ${held}`);
}

async function checkWorkspace(ctx: Context): Promise<Check> {
  try {
    await ensureRepository(ctx.config.workspace, ctx.logger);
    return ok('workspace', `${ctx.config.workspace} is a git work tree`);
  } catch (err) {
    return bad('workspace', 'fail', (err as Error).message, `set "workspace" to the git checkout that holds ${ctx.config.app.dir}/`);
  }
}

async function checkReleasesDir(ctx: Context): Promise<Check> {
  const dir = ctx.config.releasesDir;
  try {
    // A check creates nothing: if the dir does not exist yet, its nearest existing parent must be writable.
    const target = existingParent(dir);
    const probe = path.join(target, `.pm2-release-write-test-${process.pid}`);
    await fsp.writeFile(probe, '');
    await fsp.rm(probe);
    return ok('releases-dir', target === dir ? `${dir} is writable` : `${dir} will be created in ${target} (writable)`);
  } catch (err) {
    return bad(
      'releases-dir',
      'fail',
      `${dir} is not writable (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      `create it and give ${os.userInfo().username} write access`,
    );
  }
}

function existingParent(p: string): string {
  let cur = p;
  while (!fs.existsSync(cur) && path.dirname(cur) !== cur) cur = path.dirname(cur);
  return cur;
}

async function checkDisk(ctx: Context): Promise<Check[]> {
  const dir = existingParent(ctx.config.releasesDir);
  const st = await fsp.statfs(dir);
  const freeMB = Math.floor((st.bavail * st.bsize) / 2 ** 20);
  const { minFreeDiskMB, minFreeInodes } = ctx.config.preflight;
  const out: Check[] = [];
  out.push(
    freeMB >= minFreeDiskMB
      ? ok('disk', `${freeMB} MiB free in ${dir} (minimum ${minFreeDiskMB})`)
      : bad(
          'disk',
          'fail',
          `only ${freeMB} MiB free in ${dir}, below the minimum of ${minFreeDiskMB} MiB`,
          'free space (`pm2-release prune --keep 1`, `npm cache clean --force`, old logs) or lower preflight.minFreeDiskMB',
        ),
  );
  // Some filesystems (btrfs) report no inode limit at all.
  if (st.files > 0)
    out.push(
      st.ffree >= minFreeInodes
        ? ok('inodes', `${st.ffree} inodes free (minimum ${minFreeInodes})`)
        : bad(
            'inodes',
            'fail',
            `only ${st.ffree} inodes free, below the minimum of ${minFreeInodes}`,
            'remove small files (old releases, node_modules caches) or lower preflight.minFreeInodes',
          ),
    );
  return out;
}

async function checkMemory(ctx: Context): Promise<Check> {
  const meminfo = await fsp.readFile('/proc/meminfo', 'utf8').catch(() => '');
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo);
  const availMB = m ? Math.floor(Number(m[1]) / 1024) : Math.floor(os.freemem() / 2 ** 20);
  const min = ctx.config.preflight.minFreeMemoryMB;
  return availMB >= min
    ? ok('memory', `${availMB} MiB available (minimum ${min})`)
    : bad('memory', 'warn', `only ${availMB} MiB available: the build may be OOM-killed`, 'stop memory-heavy jobs before deploying, or add swap');
}

async function checkPm2(ctx: Context, scope: 'all' | 'preflight'): Promise<Check[]> {
  let cli: string;
  try {
    cli = await ctx.pm2.version();
  } catch (err) {
    return [bad('pm2', 'fail', `pm2 is not reachable at ${ctx.pm2.bin}: ${(err as Error).message}`, 'install pm2 or set PM2_RELEASE_PM2 to its path')];
  }
  if (!ctx.pm2.daemonRunning()) {
    // Under systemd, a deploy must not start a second, unmanaged daemon: PM2 being down is the incident.
    const unit = `pm2-${os.userInfo().username}`;
    if (await unitEnabled(ctx, unit))
      return [bad('pm2', 'fail', `the PM2 daemon (systemd unit ${unit}) is not running`, `sudo systemctl start ${unit}, then pm2 status`)];
    return [
      bad(
        'pm2',
        'warn',
        `pm2 ${cli} is installed but no daemon runs for PM2_HOME ${ctx.pm2.home}: the deploy will start one`,
        'under systemd, enable it with `pm2 startup`',
      ),
    ];
  }
  // The daemon/CLI version comparison costs a PM2 round trip: doctor only, not every deploy.
  const daemon = scope === 'all' ? await ctx.pm2.daemonVersion().catch(() => undefined) : undefined;
  if (daemon && daemon !== cli)
    return [bad('pm2', 'warn', `pm2 CLI ${cli} talks to an in-memory daemon ${daemon}`, 'run `pm2 update` to restart the daemon on the installed version')];
  return [ok('pm2', `pm2 ${cli} at ${ctx.pm2.bin} (PM2_HOME ${ctx.pm2.home})`)];
}

async function checkPort(ctx: Context): Promise<Check> {
  const port = appPort(ctx.config.app);
  if (port === undefined) return ok('port', 'no app port configured');
  const holder = await portHolder(port);
  if (holder === undefined) return ok('port', `port ${port} is free or held by a process we cannot see`);
  const daemonPid = Number(await fsp.readFile(path.join(ctx.pm2.home, 'pm2.pid'), 'utf8').catch(() => '0'));
  if (daemonPid > 0 && (await descendsFrom(holder, daemonPid))) return ok('port', `port ${port} is served by PM2 (pid ${holder})`);
  return bad(
    'port',
    'fail',
    `port ${port} is held by pid ${holder}, which PM2 (PM2_HOME ${ctx.pm2.home}) does not manage`,
    `stop it (\`ps -o pid,args -p ${holder}\`) so the app can bind its port`,
  );
}

/** Walks the parent chain in /proc. */
async function descendsFrom(pid: number, ancestor: number): Promise<boolean> {
  let cur = pid;
  for (let i = 0; i < 16 && cur > 1; i++) {
    if (cur === ancestor) return true;
    const stat = await fsp.readFile(`/proc/${cur}/stat`, 'utf8').catch(() => '');
    const m = /\)\s+\S+\s+(\d+)/.exec(stat);
    if (!m) return false;
    cur = Number(m[1]);
  }
  return cur === ancestor;
}

async function checkRouter(ctx: Context): Promise<Check> {
  if (ctx.config.app.strategy !== 'router') return ok('router', `strategy ${ctx.config.app.strategy}: no router`);
  const name = routerProcessName(ctx.config.app.name);
  const online = ctx.pm2.daemonRunning() ? (await ctx.pm2.processes(name)).some((p) => p.status === 'online') : false;
  if (!online)
    return bad(
      'router',
      'warn',
      `${name} is not running: the next deploy starts it and takes port ${appPort(ctx.config.app)} over (one short gap)`,
      'nothing to do before the first deploy; later, `pm2 restart ' + name + '`',
    );
  try {
    const s = await routerControl(ctx).status();
    if (!s.listening)
      return bad('router', 'fail', `${name} runs but waits for port ${s.port} (another process holds it)`, `find it with \`ss -ltnp\` and stop it`);
    return ok('router', `${name} listens on :${s.port} → ${s.live ? `${s.live.release} on :${s.live.port}` : 'no release yet'}`);
  } catch (err) {
    return bad('router', 'fail', `${name} runs but its control socket does not answer (${(err as Error).message})`, `pm2 restart ${name}; pm2 logs ${name}`);
  }
}

/** The warm standby behind the router: a rollback is a route change only while it runs. */
async function checkStandby(ctx: Context): Promise<Check> {
  if (ctx.config.app.strategy !== 'router') return { name: 'standby', status: 'skip', message: `strategy ${ctx.config.app.strategy}: no standby`, fix: null };
  const procs = ctx.pm2.daemonRunning() ? await ctx.pm2.processes(ctx.config.app.name) : [];
  const v = standbyView(await ctx.store.readState(), procs, ctx.config.app.portEnv);
  const text = standbyText(v);
  if (v.state === 'warm' || v.state === 'none') return ok('standby', text);
  if (v.state === 'off' && !ctx.config.router.standby) return { name: 'standby', status: 'skip', message: text, fix: null };
  return bad(
    'standby',
    'warn',
    text,
    v.state === 'down'
      ? `the next deploy keeps the release it replaces; \`pm2 logs ${ctx.config.app.name}\` says why this one stopped`
      : 'free memory (or lower router.standbyReserveMB); the next deploy checks again',
  );
}

/** The router PM2 runs against the config's definition (a moved releases dir, a new port, a renamed app, another hold). */
async function checkRouterDefinition(ctx: Context): Promise<Check> {
  const c = await checkRouterConfig(ctx);
  if (!c?.running) return ok('router-config', c ? 'no router runs yet' : 'no router');
  if (c.differences.length === 0) return ok('router-config', `${c.running.name} runs with the config's definition`);
  const each = c.differences.map((d) => `${d.key}: running ${d.running}, config ${d.config}`).join('; ');
  return c.plan.action === 'replace'
    ? bad(
        'router-config',
        'warn',
        `${c.running.name} differs from the config (${each})`,
        'the next deploy, activate or rollback replaces it, routing state carried over',
      )
    : bad(
        'router-config',
        'fail',
        `${c.running.name} differs from the config (${each}); ${c.plan.action === 'refuse' ? c.plan.reason : ''}`,
        `apply it with: ${c.command}`,
      );
}

/**
 * Behind the router a release must be reachable on loopback only: one listening on every interface lets
 * visitors reach it around the router (its gate, its numbers). pm2-release binds `next start` itself; any
 * other server must take its host from its own option. Also shown by `status`.
 */
export async function checkReleaseHost(ctx: Context): Promise<Check> {
  if (ctx.config.app.strategy !== 'router')
    return { name: 'release-host', status: 'skip', message: `strategy ${ctx.config.app.strategy}: the app itself holds the public port`, fix: null };
  if (!ctx.pm2.daemonRunning()) return { name: 'release-host', status: 'skip', message: 'no PM2 daemon: no release runs', fix: null };
  const exposed: string[] = [];
  const seen: string[] = [];
  for (const p of await ctx.pm2.processes(ctx.config.app.name)) {
    const port = Number(p.vars[ctx.config.app.portEnv]);
    if (!Number.isInteger(port) || port <= 0) continue;
    const addrs = await listenAddresses(port);
    const shown = (list: string[]) => list.map((a) => (a.includes(':') ? `[${a}]` : a)).join(', ');
    seen.push(`${p.releaseId ?? p.name} on ${addrs.length ? shown(addrs) : '(not listening)'}:${port}`);
    const open = addrs.filter((a) => !isLoopbackAddress(a));
    if (open.length) exposed.push(`${p.releaseId ?? p.name} listens on ${shown(open)}:${port}`);
  }
  if (exposed.length)
    return bad(
      'release-host',
      'warn',
      `${exposed.join('; ')}: not loopback only, so visitors can reach it around the router (no gate, no numbers)`,
      'bind the release to 127.0.0.1: pm2-release adds `-H 127.0.0.1` to a plain `next start`; any other server needs its own host option (e.g. HOST=127.0.0.1 in app.env)',
    );
  return ok('release-host', seen.length ? `loopback only: ${seen.join('; ')}` : 'no release runs');
}

async function checkNode(ctx: Context): Promise<Check> {
  const version = async (bin: string) => (await run([bin, '--version'], { cwd: os.tmpdir(), logger: ctx.logger, baseEnv: ctx.env })).stdout.trim();
  const build = await version('node').catch(() => undefined);
  if (!build) return bad('node', 'fail', 'no `node` on PATH for builds', 'install Node.js 20 LTS');
  const interpreter = ctx.pm2.daemonRunning() ? await ctx.pm2.interpreter(ctx.config.app.name).catch(() => undefined) : undefined;
  const runtime = interpreter ? await version(interpreter).catch(() => undefined) : undefined;
  const major = (v: string) => v.replace(/^v/, '').split('.')[0];
  if (runtime && major(runtime) !== major(build))
    return bad(
      'node',
      'warn',
      `builds run on node ${build} but PM2 runs ${ctx.config.app.name} with ${interpreter} (${runtime})`,
      'align them: native modules and Next.js builds must match the runtime major',
    );
  if (major(build) !== '20') return bad('node', 'warn', `builds run on node ${build}; the project requires Node 20 LTS`, 'install Node 20 LTS');
  return ok('node', runtime ? `builds and PM2 both use node ${major(build)} (${build}, ${runtime})` : `builds use node ${build}`);
}

/**
 * The chmod that makes PM2's dump private, naming only the files there are: `chmod` exits 1 on a missing
 * file (there is no `dump.pm2.bak` before the second `pm2 save`), which breaks `&&` and `set -e` chains.
 */
export function dumpChmod(dump: string, bakExists: boolean): string {
  return `chmod 600 ${formatCommand([dump])}${bakExists ? ` ${formatCommand([`${dump}.bak`])}` : ''}`;
}

async function checkDump(ctx: Context): Promise<Check> {
  const dump = ctx.pm2.dumpPath;
  const st = await fsp.stat(dump).catch(() => undefined);
  if (!st) return bad('pm2-dump', 'warn', `${dump} does not exist: a reboot brings no app back`, 'run `pm2 save` (pm2-release does after every switch)');
  const bak = await fsp.stat(`${dump}.bak`).catch(() => undefined);
  const fix = dumpChmod(dump, bak !== undefined);
  if (st.mode & 0o004) return bad('pm2-dump', 'fail', `${dump} is world-readable and holds the apps' env (tokens, passwords)`, fix);
  if (st.mode & 0o040) return bad('pm2-dump', 'warn', `${dump} is group-readable and holds the apps' env`, fix);
  if (bak && bak.mode & 0o044) return bad('pm2-dump', 'warn', `${dump}.bak is readable by others and holds the apps' env`, fix);
  return ok('pm2-dump', `${dump} exists, mode ${(st.mode & 0o777).toString(8)}`);
}

async function unitEnabled(ctx: Context, unit: string): Promise<boolean> {
  if (!fs.existsSync('/run/systemd/system')) return false;
  try {
    await run(['systemctl', 'is-enabled', '--quiet', unit], { cwd: os.tmpdir(), logger: ctx.logger, baseEnv: ctx.env, timeoutMs: 5_000 });
    return true;
  } catch {
    return false;
  }
}

async function checkSystemd(ctx: Context): Promise<Check> {
  if (!fs.existsSync('/run/systemd/system'))
    return { name: 'systemd', status: 'skip', message: 'systemd is not running here: nothing brings PM2 back on boot but you', fix: null };
  const unit = `pm2-${os.userInfo().username}`;
  try {
    const { stdout } = await run(['systemctl', 'is-enabled', unit], { cwd: os.tmpdir(), logger: ctx.logger, baseEnv: ctx.env });
    return ok('systemd', `${unit} is ${stdout.trim()}`);
  } catch {
    return bad(
      'systemd',
      'warn',
      `${unit} is not enabled: PM2 will not come back after a reboot`,
      'run `pm2 startup` and the command it prints, then `pm2 save`',
    );
  }
}

/** The memory guard (release/memory-guard.ts): on, a budget to build in, and the last build not close to it. */
async function checkMemoryGuard(ctx: Context): Promise<Check> {
  const { build } = ctx.config;
  const budgetNow = deriveBudget(readMemoryFacts(), { budgetMB: build.memoryBudgetMB, reserveMB: build.memoryReserveMB });
  const last = (await ctx.store.list()).find((r) => r.manifest?.memory && (r.manifest.memory.build || r.manifest.memory.install));
  const v = guardVerdict({ enabled: build.memoryGuard, budgetNow, last: last?.manifest?.memory ? { id: last.id, memory: last.manifest.memory } : undefined });
  return { name: 'memory-guard', ...v };
}

/**
 * Whether a kernel OOM kill of a build can stop the PM2 unit: not when install and build run in a transient
 * scope of their own; otherwise the unit's OOMPolicy says (systemd's default, stop, is the runbook's incident).
 */
async function checkOomPolicy(ctx: Context): Promise<Check> {
  const scope = await systemdScope(ctx.env, ctx.logger);
  if ('prefix' in scope)
    return ok(
      'oom-policy',
      'install and build run in a transient systemd scope (MemoryMax=budget, OOMPolicy=continue): an OOM kill there cannot stop the PM2 unit',
    );
  const unit = `pm2-${os.userInfo().username}`;
  let out: string;
  try {
    out = (
      await run(['systemctl', 'show', unit, '-p', 'LoadState', '-p', 'OOMPolicy', '-p', 'FragmentPath'], {
        cwd: os.tmpdir(),
        logger: ctx.logger,
        baseEnv: ctx.env,
        timeoutMs: 5_000,
      })
    ).stdout;
  } catch (err) {
    const why = (err as Error).message.includes('could not start') ? 'no systemctl' : 'systemctl cannot answer (systemd is not running)';
    return { name: 'oom-policy', status: 'skip', message: `${why}: no PM2 unit for an OOM kill to stop; no transient scope either: ${scope.skip}`, fix: null };
  }
  const v = oomPolicyVerdict(unit, parseSystemctlShow(out), process.getuid?.() === 0);
  return { name: 'oom-policy', ...v, message: v.status === 'skip' ? `${v.message}; no transient scope: ${scope.skip}` : v.message };
}

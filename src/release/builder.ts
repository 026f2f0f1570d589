/**
 * Turns an archived commit into a ready release: env files, install, build, cache pruning, size.
 * Everything happens inside the new release directory; nothing here touches PM2 or the live app.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CommandFailure, formatCommand, run } from '../exec.js';
import { BuildError, UsageError, type Phase, type ReleaseError } from '../errors.js';
import { isInside } from '../config.js';
import { childEnv, type Context } from '../lifecycle/context.js';
import { bytes } from '../units.js';
import { clearBuildProcess, writeBuildProcess } from './orphans.js';
import { META_DIR } from './store.js';
import { SharedDeps } from './shared-deps.js';
import { memoryStoppedError, prepareStepGuard } from './memory-guard.js';
import type { StepMemory } from './memory-budget.js';

export interface EnvFile {
  name: string;
  /** The file actually read (the symlink's target when it is a link inside the workspace). */
  source: string;
  mode: number;
  text: string;
}

/**
 * Reads the env files that exist in `dir`, refusing a symlink that leaves the workspace and anything that
 * is not a regular file. Their values are secrets: every value is registered with the redactor.
 */
export async function readEnvFiles(ctx: Context, dir: string): Promise<EnvFile[]> {
  const workspaceReal = await fsp.realpath(ctx.config.workspace);
  const files: EnvFile[] = [];
  for (const name of ctx.config.app.envFiles) {
    const src = path.join(dir, name);
    const lst = await fsp.lstat(src).catch(() => undefined);
    if (!lst) continue;
    let real = src;
    if (lst.isSymbolicLink()) {
      real = await fsp.realpath(src).catch(() => '');
      if (!real || !isInside(real, workspaceReal))
        throw new UsageError('ENV_FILE_UNSAFE', `env file ${name} is a symlink pointing outside the workspace`, {
          phase: 'env',
          hint: `replace ${src} with a regular file (or a link inside the workspace)`,
        });
    }
    const st = await fsp.stat(real);
    if (!st.isFile()) throw new UsageError('ENV_FILE_UNSAFE', `env file ${name} is not a regular file`, { phase: 'env', hint: `check ${src}` });
    const text = await fsp.readFile(real, 'utf8');
    for (const v of Object.values(parseEnvFile(text))) ctx.redactor.add(v);
    files.push({ name, source: real, mode: st.mode & 0o777, text });
  }
  return files;
}

/**
 * Copies the env files into the release app dir. Mode is kept but never looser than 0600: they hold secrets.
 * The live workspace's copy wins over a tracked file of the same name.
 */
export async function copyEnvFiles(files: EnvFile[], toDir: string): Promise<string[]> {
  for (const f of files) {
    const dest = path.join(toDir, f.name);
    await fsp.rm(dest, { force: true });
    await fsp.writeFile(dest, f.text, { mode: 0o600 });
    await fsp.chmod(dest, f.mode & 0o600);
  }
  return files.map((f) => f.name);
}

/** Variables from `app.requiredEnv` that neither the env files nor `app.env` provide. */
export function missingRequiredEnv(ctx: Context, files: EnvFile[]): string[] {
  const have = new Set(Object.keys(ctx.config.app.env));
  for (const f of files) for (const [k, v] of Object.entries(parseEnvFile(f.text))) if (v !== '') have.add(k);
  return ctx.config.app.requiredEnv.filter((k) => !have.has(k));
}

export function requireEnv(ctx: Context, files: EnvFile[], where: string): void {
  const missing = missingRequiredEnv(ctx, files);
  if (missing.length > 0)
    throw new UsageError('REQUIRED_ENV_MISSING', `required env ${missing.join(', ')} not set by ${where} or app.env`, {
      phase: 'env',
      hint: `add ${missing.join(', ')} to one of ${ctx.config.app.envFiles.join(', ')} (a server started without them may run unauthenticated)`,
    });
}

/** KEY=VALUE lines (dotenv syntax, enough to know which values to redact). */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)\s*$/.exec(raw);
    if (!m) continue;
    let v = m[2].trim();
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1);
    else v = v.replace(/\s+#.*$/, '');
    out[m[1]] = v;
  }
  return out;
}

export async function lockfileHash(appCwd: string): Promise<string | undefined> {
  const text = await fsp.readFile(path.join(appCwd, 'package-lock.json')).catch(() => undefined);
  return text ? crypto.createHash('sha256').update(text).digest('hex') : undefined;
}

/**
 * Environment for install: the caller's, without the app's configured env (NODE_ENV=production there would
 * make `npm ci` leave out the devDependencies the build needs).
 */
export function installEnv(ctx: Context, releaseId: string, sha: string): Record<string, string | undefined> {
  const env = buildEnv(ctx, releaseId, sha);
  for (const k of Object.keys(ctx.config.app.env)) env[k] = ctx.env[k];
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env;
}

/**
 * Environment for the build: the app's configured env (build-time config must match run time:
 * Next.js inlines NEXT_PUBLIC_* at build), quiet npm, no update checks, no network audit on every deploy.
 */
export function buildEnv(ctx: Context, releaseId: string, sha: string): Record<string, string | undefined> {
  return {
    ...childEnv(ctx.env),
    ...ctx.config.app.env,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    RELEASE_ID: releaseId,
    RELEASE_SHA: sha,
  };
}

/**
 * Install and build run at lower CPU and IO priority (nice, ionice when present) and with an optional heap
 * cap, so on a 4 GiB VM the kernel's OOM killer and the scheduler pick the build, not the live app or PM2.
 */
export function lean(
  ctx: Context,
  argv: string[],
  env: Record<string, string | undefined>,
  /** The heap cap: the user's, else the one the memory guard derived from the budget. */
  cap = ctx.config.app.buildMaxOldSpaceMB,
): { argv: string[]; env: Record<string, string | undefined> } {
  let out = argv;
  if (ctx.config.app.buildLowPriority) {
    if (onPath('ionice', env.PATH)) out = ['ionice', '-c2', '-n7', ...out];
    if (onPath('nice', env.PATH)) out = ['nice', '-n', '10', ...out];
  }
  if (!cap) return { argv: out, env };
  return { argv: out, env: { ...env, NODE_OPTIONS: [env.NODE_OPTIONS, `--max-old-space-size=${cap}`].filter(Boolean).join(' ') } };
}

function onPath(bin: string, pathVar: string | undefined): boolean {
  return (pathVar ?? '').split(path.delimiter).some((d) => d && fs.existsSync(path.join(d, bin)));
}

export async function runStep(
  ctx: Context,
  step: Phase,
  command: string[],
  cwd: string,
  logFile: string,
  baseEnv: Record<string, string | undefined>,
  /** The release the step builds: its process group is recorded there while it runs (release/orphans.ts). */
  release?: { id: string; dir: string },
  /** Gets what the step used (the memory guard's record), whether it passed or not. */
  onMemory?: (m: StepMemory) => void,
): Promise<void> {
  // Install and build only (hooks run through here too, unguarded): release/memory-guard.ts.
  const guarded = step === 'install' || step === 'build' ? step : undefined;
  const sg = guarded
    ? await prepareStepGuard({
        step: guarded,
        settings: ctx.config.build,
        userHeapMB: ctx.config.app.buildMaxOldSpaceMB,
        env: baseEnv,
        logger: ctx.logger,
        redact: (t) => ctx.redactor.redact(t),
        logFile,
      })
    : undefined;
  if (sg) {
    ctx.logger.info(sg.note);
    await fsp.appendFile(logFile, `${sg.note}\n`);
  }
  const leaned = lean(ctx, command, baseEnv, ctx.config.app.buildMaxOldSpaceMB ?? sg?.heapCapMB);
  const argv = [...(sg?.prefix ?? []), ...leaned.argv];
  const metaDir = release ? path.join(release.dir, META_DIR) : undefined;
  let failure: unknown;
  try {
    await run(argv, {
      cwd,
      logger: ctx.logger,
      baseEnv: leaned.env,
      logFile,
      redactor: ctx.redactor,
      signal: ctx.signal,
      captureStdout: false,
      onLine: (line, stream) => ctx.emit({ type: 'output', phase: step, stream, line }),
      onStart: async (pid) => {
        sg?.guard.watch(pid);
        if (release && metaDir) await writeBuildProcess(metaDir, { release: release.id, releaseDir: release.dir, step, pgid: pid, deployPid: process.pid });
      },
    });
  } catch (err) {
    failure = err;
  } finally {
    // The group has exited (run() waits for it): nothing of this step is left to stop.
    if (metaDir) await clearBuildProcess(metaDir).catch(() => undefined);
  }
  let oomKills = 0;
  if (sg && guarded) {
    const memory = await sg.guard.finish({ scope: sg.scope, heapCapMB: sg.heapCapMB });
    ctx.memory[guarded] = memory;
    onMemory?.(memory);
    oomKills = memory.oomKills ?? 0;
    if (sg.guard.tripped) {
      const tail = failure instanceof CommandFailure ? ctx.redactor.redact(failure.tail) : undefined;
      const e = memoryStoppedError(guarded, memory, sg.budget, { logFile, outputTail: tail, cause: failure });
      await fsp.appendFile(logFile, `${e.message}\n`).catch(() => undefined);
      throw e;
    }
  }
  if (failure === undefined) return;
  if (failure instanceof CommandFailure) {
    // 137: npm's own exit when a script it ran was SIGKILLed. When the kernel killed a grandchild (a build
    // worker), the script usually exits 1: the host's OOM-kill count is what says the kernel acted.
    const killed = failure.reason === 'killed by SIGKILL' || failure.exitCode === 137;
    const oom = oomKills > 0 ? `; the kernel's OOM killer killed ${oomKills} process${oomKills === 1 ? '' : 'es'} on this host meanwhile` : '';
    throw new BuildError(step === 'install' ? 'INSTALL_FAILED' : 'BUILD_FAILED', `${step} failed: ${formatCommand(command)} ${failure.reason}${oom}`, {
      phase: step,
      hint:
        oomKills > 0
          ? "the kernel's OOM killer acted while it ran (`dmesg | grep -i oom`): see build.memoryGuard; the live app was not touched"
          : killed
            ? "killed by SIGKILL, likely by the kernel's OOM killer (`dmesg | grep -i oom`): see build.memoryGuard; the live app was not touched"
            : `read the build log; the live app was not touched`,
      logFile,
      outputTail: ctx.redactor.redact(failure.tail),
      cause: failure,
    });
  }
  throw asError(failure);
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(typeof err === 'string' ? err : JSON.stringify(err));
}

/** Gives a failed release's space back: everything but its meta dir (manifest, build log). */
export async function giveBackSpace(releaseDir: string): Promise<void> {
  await freeRelease(releaseDir);
}

const NO_SPACE = /\bENOSPC\b|no space left on device/i;

/**
 * True when a failure was a full disk: ENOSPC from one of our own fs writes (anywhere in the cause chain),
 * or in the output tail of a failed command (npm and Node print "ENOSPC: no space left on device").
 */
export function isNoSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (typeof e !== 'object') return typeof e === 'string' && NO_SPACE.test(e);
    const o = e as { code?: unknown; outputTail?: unknown; tail?: unknown; message?: unknown };
    if (o.code === 'ENOSPC') return true;
    for (const text of [o.outputTail, o.tail, o.message]) if (typeof text === 'string' && NO_SPACE.test(text)) return true;
  }
  return false;
}

/**
 * After a build failed on a full disk: gives the failed release's space back at once (everything but its
 * meta dir, so the manifest and build log still say what happened), then describes the disk in one line:
 * free space now and the biggest releases, which is what an operator frees first.
 */
export async function diskFullError(ctx: Context, id: string, e: ReleaseError): Promise<BuildError> {
  const { store } = ctx;
  const free = async () => {
    const st = await fsp.statfs(store.releasesDir).catch(() => undefined);
    return st ? st.bavail * st.bsize : undefined;
  };
  const before = await free();
  // Its node_modules may hold links to a shared set: the set is re-recorded around the unlinks.
  const shares = new SharedDeps(store.releasesDir, (rid) => path.join(store.appCwd(rid), 'node_modules'));
  await shares
    .removing(id, () => freeRelease(store.releaseDir(id)))
    .catch((err: Error) => ctx.logger.warn(`could not empty the failed release ${id}: ${err.message}`));
  const after = await free();
  const biggest = (await store.list().catch(() => []))
    .filter((r) => r.id !== id && typeof r.manifest?.sizeBytes === 'number')
    .sort((a, b) => (b.manifest?.sizeBytes ?? 0) - (a.manifest?.sizeBytes ?? 0))
    .slice(0, 3)
    .map((r) => `${r.id} ${bytes(r.manifest?.sizeBytes ?? 0)}${r.status === 'ready' ? '' : ` ${r.status}`}`);
  const freed = before !== undefined && after !== undefined && after > before ? `gave back ${bytes(after - before)} of ${id}, ` : '';
  const message =
    `the disk holding ${store.releasesDir} is full (${e.phase} failed with ENOSPC): ${freed}${after === undefined ? 'free space unknown' : `${bytes(after)} free now`}; ` +
    `biggest releases: ${biggest.length ? biggest.join(', ') : 'none'}`;
  return new BuildError('DISK_FULL', message, {
    phase: e.phase,
    hint: 'free space (`pm2-release prune --keep 1`, `npm cache clean --force`, old logs), then deploy again; the live app was not touched',
    logFile: e.logFile,
    outputTail: e.outputTail,
    releaseId: id,
    cause: e,
  });
}

/** Removes everything in a release directory except its meta dir (manifest, build log). */
async function freeRelease(releaseDir: string): Promise<void> {
  for (const name of await fsp.readdir(releaseDir)) {
    if (name === META_DIR) continue;
    await fsp.rm(path.join(releaseDir, name), { recursive: true, force: true, maxRetries: 3, retryDelay: 100 });
  }
}

/**
 * What pruning one configured path does: a directory that holds a Next.js production build (its `BUILD_ID`)
 * is the release itself, so only its `cache/` goes (`.next` is both the default prune entry and the build dir
 * of every Next app without `distDir`). Pure.
 */
export function prunePlan(rel: string, exists: (p: string) => boolean): { remove: string | undefined; note?: string } {
  if (!exists(rel)) return { remove: undefined };
  if (!exists(path.join(rel, 'BUILD_ID'))) return { remove: rel };
  const cache = path.join(rel, 'cache');
  return {
    remove: exists(cache) ? cache : undefined,
    note: `prune: kept ${rel}: it holds the Next.js build (${rel}/BUILD_ID)${exists(cache) ? `; pruned ${cache} instead` : ''}`,
  };
}

/**
 * Removes non-runtime caches; each path is relative to the app dir and must stay inside it. A directory that
 * holds a Next.js build is kept and only its `cache/` removed, said in the build log.
 */
export async function pruneCaches(ctx: Context, appCwd: string, logFile?: string): Promise<string[]> {
  const removed: string[] = [];
  for (const rel of ctx.config.app.prune) {
    if (!isInside(path.resolve(appCwd, rel), appCwd)) continue;
    const plan = prunePlan(path.normalize(rel), (p) => fs.existsSync(path.join(appCwd, p)));
    if (plan.note) {
      ctx.logger.info(plan.note);
      if (logFile) await fsp.appendFile(logFile, `${plan.note}\n`);
    }
    if (plan.remove === undefined) continue;
    await fsp.rm(path.join(appCwd, plan.remove), { recursive: true, force: true });
    removed.push(plan.remove);
  }
  return removed;
}

export async function toolVersions(ctx: Context, cwd: string): Promise<{ node: string; npm?: string }> {
  const get = async (argv: string[]) => {
    try {
      return (await run(argv, { cwd, logger: ctx.logger, baseEnv: ctx.env })).stdout.trim();
    } catch {
      return undefined;
    }
  };
  const [node, npm] = await Promise.all([get(['node', '--version']), npmVersionFromDisk(ctx.env.PATH).then((v) => v ?? get(['npm', '--version']))]);
  return { node: node ?? process.version, npm };
}

/**
 * The version of the npm on PATH from its package.json: `npm --version` starts npm (~300 ms), and every
 * deploy asks, including one that finds nothing to do. Undefined when the layout is not npm's own.
 */
async function npmVersionFromDisk(pathVar: string | undefined): Promise<string | undefined> {
  for (const dir of (pathVar ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const real = await fsp.realpath(path.join(dir, 'npm')).catch(() => undefined);
    if (!real) continue;
    // <prefix>/lib/node_modules/npm/bin/npm-cli.js
    try {
      const pkg = JSON.parse(await fsp.readFile(path.join(path.dirname(real), '..', 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      return pkg.name === 'npm' && typeof pkg.version === 'string' && /^\d+\.\d+\.\d+/.test(pkg.version) ? pkg.version : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

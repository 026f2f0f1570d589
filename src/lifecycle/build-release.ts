/** Build a release: resolve + pre-checks → archive → env → install → build → prune. Never touches PM2. */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { appTree, archive, commitHas, commitSubject, ensureRepository, isDirty, resolveRef } from '../git.js';
import { asReleaseError, ReleaseError, UsageError } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { makeReleaseId } from '../release/naming.js';
import { inputKey } from '../release/inputs.js';
import { cloneDirectory, dependencyKey, dependencyMethod, supportsReflink } from '../release/dependencies.js';
import { NO_LINK_FILE, SharedDeps } from '../release/shared-deps.js';
import { BuildCache, frameworkVersion, type CacheKey } from '../release/build-cache.js';
import { diskUsage, existsSync, MANIFEST_VERSION, type Manifest, type ReleaseRecord } from '../release/store.js';
import {
  buildEnv,
  installEnv,
  copyEnvFiles,
  diskFullError,
  giveBackSpace,
  isNoSpace,
  lockfileHash,
  parseEnvFile,
  pruneCaches,
  readEnvFiles,
  requireEnv,
  runStep,
  toolVersions,
  type EnvFile,
} from '../release/builder.js';
import { childEnv, phase, warn, type Context } from './context.js';
import { publicEnv } from '../release/artifact.js';
import type { HeldLock } from '../lock.js';

export interface Resolved {
  sha: string;
  envFiles: EnvFile[];
  /** The app dir's tree id at the commit. */
  tree: string;
  versions: { node: string; npm?: string };
  /** Everything that shapes the build, hashed (release/inputs.ts). */
  inputKey: string;
}

/**
 * Everything that can be known before a release directory exists: the ref, the app dir and lockfile in
 * that commit, the env files and required variables. A bad input stops here and changes nothing.
 */
export async function resolveRelease(ctx: Context, ref: string): Promise<Resolved> {
  const { config } = ctx;
  return phase(ctx, 'resolve', async () => {
    // Started at once: a deploy that finds nothing to do should cost little more than these lookups.
    const versionsP = toolVersions(ctx, config.workspace);
    versionsP.catch(() => undefined);
    await ensureRepository(config.workspace, ctx.logger);
    const sha = await resolveRef(config.workspace, ref, ctx.logger);
    const appPath = (f: string) => (config.app.dir === '.' ? f : `${config.app.dir}/${f}`);
    if (!(await commitHas(config.workspace, sha, appPath('package.json'), ctx.logger)))
      throw new UsageError('APP_DIR_MISSING', `commit ${sha.slice(0, 7)} has no ${appPath('package.json')}`, {
        phase: 'resolve',
        hint: 'check app.dir in the config against the repository layout',
      });
    const [cmd, sub] = config.app.install;
    if (cmd === 'npm' && (sub === 'ci' || sub === 'clean-install') && !(await commitHas(config.workspace, sha, appPath('package-lock.json'), ctx.logger)))
      throw new UsageError('LOCKFILE_MISSING', `commit ${sha.slice(0, 7)} has no ${appPath('package-lock.json')}: npm ci cannot install`, {
        phase: 'resolve',
        hint: 'commit package-lock.json (npm install --package-lock-only) or change app.install',
      });
    const liveAppDir = path.join(config.workspace, config.app.dir);
    if (!existsSync(liveAppDir)) warn(ctx, `the live app dir ${liveAppDir} does not exist: no env files will be copied`);
    const envFiles = existsSync(liveAppDir) ? await readEnvFiles(ctx, liveAppDir) : [];
    requireEnv(ctx, envFiles, `the env files in ${liveAppDir}`);
    if (await isDirty(config.workspace, ctx.logger))
      warn(ctx, `the workspace has uncommitted changes; they are not part of the release (it is built from ${sha.slice(0, 7)})`);
    const [tree, versions] = await Promise.all([appTree(config.workspace, sha, config.app.dir, ctx.logger), versionsP]);
    const key = inputKey({
      tree,
      envFiles: envFiles.map((f) => ({ name: f.name, text: f.text })),
      install: config.app.install,
      build: config.app.build,
      node: versions.node,
      npm: versions.npm,
      platform: `${process.platform}-${process.arch}`,
      appDir: config.app.dir,
      prune: config.app.prune,
      buildMaxOldSpaceMB: config.app.buildMaxOldSpaceMB,
      nodeEnv: config.app.env.NODE_ENV,
    });
    return { sha, envFiles, tree, versions, inputKey: key };
  });
}

/**
 * The build-time public variables a build of this host bakes in (release/artifact.ts publicEnv): from the
 * process env and app.env, then the env files. Names and hashes only.
 */
export function bakedPublicEnv(ctx: Context, envFiles: Pick<EnvFile, 'name' | 'text'>[]): { name: string; hash: string }[] {
  return publicEnv(
    envFiles.map((f) => ({ name: f.name, vars: parseEnvFile(f.text) })),
    { ...childEnv(ctx.env), ...ctx.config.app.env },
    ctx.config.build.publicEnv,
  );
}

/**
 * A fresh release id. Ids sort by their one-second timestamp, and two releases of the same second would
 * sort by sha instead of by age: wait for a second no existing release uses.
 */
export async function allocateId(ctx: Context, sha: string): Promise<string> {
  const taken = new Set((await fsp.readdir(ctx.store.releasesDir).catch(() => [] as string[])).map((n) => n.split('-')[0]));
  let id = makeReleaseId(ctx.now(), sha);
  while (taken.has(id.split('-')[0])) {
    await sleep(250);
    id = makeReleaseId(ctx.now(), sha);
  }
  return id;
}

export async function buildRelease(ctx: Context, ref: string, resolved: Resolved, lock?: HeldLock, preallocated?: string): Promise<ReleaseRecord> {
  const { config, store } = ctx;
  const { sha } = resolved;
  const id = preallocated ?? (await allocateId(ctx, sha));
  await lock?.setRelease(id);
  const subject = await commitSubject(config.workspace, sha, ctx.logger);
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    id,
    sha,
    ref,
    subject,
    status: 'building',
    appDir: config.app.dir,
    createdAt: ctx.now().toISOString(),
    durationsMs: {},
    builder: { pid: process.pid, host: os.hostname() },
    node: resolved.versions.node,
    npm: resolved.versions.npm,
    envFiles: [],
    inputKey: resolved.inputKey,
    tree: resolved.tree,
    commits: [sha],
    source: 'git',
    publicEnv: bakedPublicEnv(ctx, resolved.envFiles),
  };
  return makeRelease(ctx, manifest, async ({ cwd, logFile, track }) => {
    await phase(ctx, 'archive', async () => {
      await store.create(manifest);
      await archive(config.workspace, sha, store.releaseDir(id), ctx.logger, ctx.signal);
      failpoint(ctx.env, 'archive');
    });
    manifest.envFiles = await phase(ctx, 'env', async () => {
      const copied = await copyEnvFiles(resolved.envFiles, cwd);
      failpoint(ctx.env, 'env');
      return copied;
    });
    const env = buildEnv(ctx, id, sha);
    const versions = resolved.versions;
    const { key, shares, freshInstall } = await installDependencies(ctx, { id, sha, cwd, logFile, track, manifest, versions, nodeEnv: env.NODE_ENV });
    const buildAndPrune = async () => {
      if (config.app.build.length > 0)
        await phase(ctx, 'build', async () => {
          const cache = config.build.cache ? await cacheIn(ctx, cwd, logFile, versions.node) : undefined;
          try {
            await runStep(ctx, 'build', config.app.build, cwd, logFile, env, track, (m) => (manifest.memory = { ...manifest.memory, build: m }));
          } finally {
            // Out again whether the build passed or not: the release is pruned, the cache kept for the next build.
            if (cache) manifest.buildCache = { ...cache.info, ...(await cacheOut(ctx, cwd, logFile, cache.key)) };
          }
          failpoint(ctx.env, 'build');
        });
      await phase(ctx, 'prune', async () => {
        await pruneCaches(ctx, cwd, logFile);
        failpoint(ctx.env, 'prune');
      });
    };
    let buildError: ReleaseError | undefined;
    await buildAndPrune().catch((err: unknown) => {
      if (manifest.dependencies?.method !== 'link') throw err;
      buildError = asReleaseError(err);
    });
    if (buildError?.code === 'CANCELLED' && key) {
      // Cancelled: no fresh install now, but a build that wrote through a shared file must not be shared from
      // again. The check runs outside a phase (a phase refuses to start once cancelled).
      const broken = await isolationBroken(ctx, shares, key, id, undefined).catch(() => undefined);
      if (broken) {
        warn(ctx, `${broken.message.split(':')[0]}: sharing node_modules is off for this app`);
        await shares.disable(broken.message, ctx.now()).catch(() => undefined);
      }
      throw buildError;
    }
    if (manifest.dependencies?.method === 'link' && key) {
      // Hard links share every write: prove this build wrote through none (release/shared-deps.ts).
      const broken = await phase(ctx, 'isolation', () => isolationBroken(ctx, shares, key, id, buildError));
      if (broken) {
        warn(ctx, broken.message);
        await fsp.appendFile(logFile, `${broken.message}\n`);
        await shares.disable(broken.message, ctx.now());
        await phase(ctx, 'install', async () => {
          await fsp.rm(path.join(cwd, 'node_modules'), { recursive: true, force: true });
          await freshInstall(broken.message);
        });
        // The record still holds the changed files' old stats until repair() replaced them: a run killed in
        // between finds them changed again next time.
        const set = await shares.read(key);
        if (set && broken.changed.length === 0) await shares.leave(key, id);
        else if (set) {
          const { repaired, missing } = await phase(ctx, 'isolation', () => shares.repair(set, broken.changed, id));
          const note = `repaired ${repaired.length} shared file(s) in other releases from the fresh install of ${id}${missing.length ? `; not in it: ${missing.slice(0, 3).join(', ')}` : ''}`;
          ctx.logger.warn(note);
          await fsp.appendFile(logFile, `${note}\n`);
          if (missing.length > 0) warn(ctx, note);
        }
        // The build runs again on a node_modules of its own.
        await buildAndPrune();
      } else if (buildError) throw buildError;
    }
  });
}

/**
 * The life of a release directory, whatever lays it out: built in `<releasesDir>/.build` (the same absolute
 * path for every build: the framework's cache keys on it), renamed to `<id>` when the steps end, failed or
 * not; ready only once its manifest says so (written last, atomically). A failure marks it failed, gives a
 * full disk's or a memory stop's space back, and keeps its manifest and log under its id.
 */
export async function makeRelease(
  ctx: Context,
  manifest: Manifest,
  steps: (at: { cwd: string; logFile: string; track: { id: string; dir: string } }) => Promise<void>,
): Promise<ReleaseRecord> {
  const { store } = ctx;
  const { id } = manifest;
  store.beginBuild(id);
  const logFile = store.buildLog(id);
  const cwd = store.appCwd(id);
  const track = { id, dir: store.releaseDir(id) };
  const before = { ...ctx.durations };
  const ownDurations = () => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(ctx.durations)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
    return out;
  };
  try {
    await steps({ cwd, logFile, track });
    manifest.lockfileHash = await lockfileHash(cwd);
    manifest.sizeBytes = await diskUsage(store.releaseDir(id));
    // Renamed to its id before it is marked ready: a run killed in between leaves a `building` release whose
    // builder is dead (incomplete, removed by the next run), never a ready one in `.build`.
    await store.finishBuild(id);
    manifest.durationsMs = ownDurations();
    manifest.finishedAt = ctx.now().toISOString();
    manifest.status = 'ready';
    // The manifest is written last and atomically: a release is ready only once this rename happened.
    await store.writeManifest(manifest);
    ctx.logger.info({ release: id }, `release ${id} is ready`);
  } catch (err) {
    let e = asReleaseError(err);
    // A full disk is told as such (not as a random failed write), and the half-built release gives its space back.
    if (isNoSpace(e) && existsSync(store.releaseDir(id))) e = await diskFullError(ctx, id, e);
    // A build stopped for memory gives its space back too: it is not going to be activated.
    else if (e.code === 'BUILD_MEMORY' && existsSync(store.releaseDir(id))) await giveBackSpace(store.releaseDir(id)).catch(() => undefined);
    e.releaseId ??= id;
    await markFailed(ctx, manifest, e, ownDurations()).catch(() => undefined);
    // The failed release keeps its manifest and log under its own id, as before; `.build` is free again.
    await store.finishBuild(id).catch((err: Error) => ctx.logger.warn(`could not move ${store.buildRoot} to ${store.finalDir(id)}: ${err.message}`));
    const finalLog = store.buildLog(id);
    if (e.logFile === logFile || (e.logFile === undefined && existsSync(finalLog))) e.logFile = existsSync(finalLog) ? finalLog : logFile;
    throw e;
  }
  const record = await store.get(id);
  if (!record) throw new Error(`release ${id} vanished after its build`);
  return record;
}

/**
 * The install phase of a release whose app dir is laid out (built from git, or unpacked from an artifact):
 * node_modules from a retained release with the same dependency key (lockfile, install command, NODE_ENV,
 * node, npm), else the install command under the memory guard. Records it in the manifest. Returns the key,
 * the shared set and the fresh install (a build that wrote through shared files installs again).
 */
export async function installDependencies(
  ctx: Context,
  a: {
    id: string;
    sha: string;
    cwd: string;
    logFile: string;
    track: { id: string; dir: string };
    manifest: Manifest;
    versions: { node: string; npm?: string };
    nodeEnv: string | undefined;
  },
): Promise<{ key: string | undefined; shares: SharedDeps; freshInstall: (note?: string) => Promise<void> }> {
  const { config, store } = ctx;
  const { id, sha, cwd, logFile, track, manifest, versions } = a;
  const lockfile = await fsp.readFile(path.join(cwd, 'package-lock.json')).catch(() => undefined);
  // Reuse only when installing would do nothing but lay out the lockfile: the app's own install
  // lifecycle scripts (postinstall, prepare…) must run, so such apps always install.
  const lifecycle = await installScripts(cwd);
  if (lifecycle.length && config.app.reuseDependencies) ctx.logger.info(`package.json has ${lifecycle.join(', ')}: node_modules is installed, not reused`);
  const key =
    lockfile && lifecycle.length === 0
      ? dependencyKey(Buffer.concat([lockfile, Buffer.from(`\0${config.app.install.join('\0')}\0${a.nodeEnv ?? ''}`)]), versions.node, versions.npm)
      : undefined;
  const shares = new SharedDeps(store.releasesDir, (rid) => path.join(store.appCwd(rid), 'node_modules'));
  const freshInstall = async (note?: string) => {
    const started = performance.now();
    await runStep(
      ctx,
      'install',
      config.app.install,
      cwd,
      logFile,
      installEnv(ctx, id, sha),
      track,
      (m) => (manifest.memory = { ...manifest.memory, install: m }),
    );
    // The install's end: a node_modules file changed after it was written by the build and is never shared.
    manifest.dependencies = {
      method: 'install',
      key,
      installedAt: Date.now(),
      durationMs: Math.round(performance.now() - started),
      ...(note ? { note } : {}),
    };
  };
  await phase(ctx, 'install', async () => {
    const started = performance.now();
    if (manifest.source === 'artifact' && existsSync(path.join(cwd, 'node_modules'))) {
      // Packed with its dependencies (for a host without registry access): nothing to install.
      // No key: installed on another host (its exact node and npm unknown here), it is never reused from.
      manifest.dependencies = { method: 'artifact', durationMs: 0 };
      ctx.logger.info('node_modules came with the artifact: nothing to install');
    } else {
      const reused = key && config.app.reuseDependencies ? await reuseDependencies(ctx, key, cwd, logFile, id, shares) : undefined;
      if (!reused) await freshInstall();
      else manifest.dependencies = { method: reused.method, key, from: reused.from, durationMs: Math.round(performance.now() - started) };
    }
    failpoint(ctx.env, 'install');
  });
  return { key, shares, freshInstall };
}

/** Moves the carried build cache into the app dir before its build (release/build-cache.ts). */
async function cacheIn(ctx: Context, cwd: string, logFile: string, node: string): Promise<{ key: CacheKey; info: { key: string; warm: boolean } } | undefined> {
  const { build } = ctx.config;
  const key: CacheKey = {
    framework: build.cacheFramework,
    version: await frameworkVersion(cwd, build.cacheFramework),
    node,
    platform: `${process.platform}-${process.arch}`,
    paths: build.cachePaths,
  };
  try {
    const r = await new BuildCache(ctx.store.releasesDir).restore(cwd, key);
    const note = r.warm
      ? `build cache: restored ${r.entry} into ${build.cachePaths.join(', ')}`
      : `build cache: none for ${key.framework} ${key.version} yet (cold build)${r.dropped.length ? `; dropped ${r.dropped.join(', ')}` : ''}`;
    ctx.logger.info(note);
    await fsp.appendFile(logFile, `${note}\n`);
    return { key, info: { key: r.entry, warm: r.warm } };
  } catch (err) {
    // A cache is an optimisation: a build without it is correct, only slower.
    warn(ctx, `build cache not used: ${(err as Error).message}`);
    return undefined;
  }
}

async function cacheOut(ctx: Context, cwd: string, logFile: string, key: CacheKey): Promise<{ bytes?: number; dropped?: string }> {
  try {
    const r = await new BuildCache(ctx.store.releasesDir).save(cwd, key, ctx.config.build.cacheMaxBytes);
    const note = r.dropped ? `build cache: not kept: ${r.dropped}` : `build cache: kept ${r.entry} (${r.bytes} bytes) outside the release`;
    ctx.logger.info(note);
    await fsp.appendFile(logFile, `${note}\n`);
    return { bytes: r.bytes, ...(r.dropped ? { dropped: r.dropped } : {}) };
  } catch (err) {
    warn(ctx, `build cache not kept: ${(err as Error).message}`);
    return { dropped: (err as Error).message };
  }
}

async function installScripts(cwd: string): Promise<string[]> {
  try {
    const pkg = JSON.parse(await fsp.readFile(path.join(cwd, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
    return ['preinstall', 'install', 'postinstall', 'prepare'].filter((k) => pkg.scripts?.[k]);
  } catch {
    return [];
  }
}

/**
 * node_modules from the newest retained ready release with the same dependency key: hard links to the
 * shared read-only set, a reflink clone or a copy (dependencyMethod). Returns undefined (and leaves no partial
 * node_modules) when there is none, sharing is off or it fails: the caller installs instead.
 */
async function reuseDependencies(
  ctx: Context,
  key: string,
  cwd: string,
  logFile: string,
  id: string,
  shares: SharedDeps,
): Promise<{ method: 'reflink' | 'copy' | 'link'; from: string } | undefined> {
  const target = path.join(cwd, 'node_modules');
  if (existsSync(target)) return undefined; // committed node_modules: leave it to the installer
  const off = await shares.disabled();
  const method = dependencyMethod({ mode: ctx.config.app.dependencyMode, reuse: true, reflink: await supportsReflink(cwd), sharingOff: off !== undefined });
  if (method === 'install') {
    if (off) ctx.logger.info(`node_modules is installed, not shared: ${off} (remove ${path.join(shares.dir, NO_LINK_FILE)} to share again)`);
    return undefined;
  }
  const candidates = (await ctx.store.list()).filter(
    (r) => r.status === 'ready' && r.manifest?.dependencies?.key === key && existsSync(path.join(r.cwd, 'node_modules')),
  );
  const set = method === 'link' ? await shares.read(key) : undefined;
  // Linking extends the existing set from one of its members; the first share starts from a fresh install.
  const donor =
    method === 'link'
      ? set
        ? candidates.find((r) => set.members.includes(r.id))
        : candidates.find((r) => r.manifest?.dependencies?.method === 'install' && r.manifest.dependencies.installedAt !== undefined)
      : candidates[0];
  if (!donor) return undefined;
  try {
    if (method === 'link') {
      // A shared file changed since the last check (a write from the live app, say) is never linked into another release.
      const changed = set ? await shares.check(set) : [];
      if (changed.length > 0) {
        warn(ctx, `shared node_modules of ${set!.members.join(', ')} changed (${changed.slice(0, 3).join(', ')}): installing ${id} instead of linking`);
        return undefined;
      }
      await shares.link(key, donor.id, id, set, donor.manifest?.dependencies?.installedAt, ctx.logger);
    } else await cloneDirectory(path.join(donor.cwd, 'node_modules'), target, method === 'reflink', ctx.logger);
    const note = `reused node_modules from ${donor.id} (${method}): same package-lock.json, node, npm and platform`;
    await fsp.appendFile(logFile, `${note}\n`);
    ctx.emit({ type: 'output', phase: 'install', stream: 'stdout', line: note });
    ctx.logger.info(note);
    return { method, from: donor.id };
  } catch (err) {
    warn(ctx, `could not reuse node_modules from ${donor.id} (${(err as Error).message}); installing instead`);
    await fsp.rm(target, { recursive: true, force: true });
    if (method === 'link') await shares.leave(key, id).catch(() => undefined);
    return undefined;
  }
}

/**
 * After the build of a release whose node_modules is linked: the shared files it changed (written through a
 * link, as root can), or a build that failed on a write the read-only mode refused. Undefined: independent.
 */
async function isolationBroken(
  ctx: Context,
  shares: SharedDeps,
  key: string,
  id: string,
  buildError: ReleaseError | undefined,
): Promise<{ message: string; changed: string[] } | undefined> {
  const set = await shares.read(key);
  const changed = set ? await shares.check(set) : [];
  if (changed.length > 0)
    return {
      changed,
      message:
        `the build of ${id} changed ${changed.length} shared node_modules file(s) (${changed.slice(0, 3).join(', ')}): ` +
        'installing it fresh, repairing the releases that share them, and not sharing node_modules for this app any more',
    };
  const tail = buildError ? `${buildError.outputTail ?? ''} ${buildError.message}` : '';
  if (buildError && /\b(EACCES|EPERM)\b/.test(tail) && tail.includes('node_modules'))
    return {
      changed: [],
      message: `the build of ${id} tried to write into a shared read-only node_modules file: installing it fresh and not sharing node_modules for this app any more`,
    };
  return undefined;
}

export async function markFailed(
  ctx: Context,
  manifest: Manifest,
  err: { code: string; phase: string; message: string },
  durationsMs?: Record<string, number>,
): Promise<void> {
  if (!existsSync(ctx.store.metaDir(manifest.id))) return;
  manifest.status = 'failed';
  manifest.finishedAt = ctx.now().toISOString();
  manifest.error = { code: err.code, phase: err.phase, message: ctx.redactor.redact(err.message) };
  if (durationsMs) manifest.durationsMs = { ...manifest.durationsMs, ...durationsMs };
  if (manifest.sizeBytes === undefined) manifest.sizeBytes = await diskUsage(ctx.store.releaseDir(manifest.id)).catch(() => undefined);
  await ctx.store.writeManifest(manifest);
}

/** Build a release: resolve → archive → env → install → build → prune. Never touches PM2. */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureRepository, archive, commitSubject, isDirty, resolveRef } from '../git.js';
import { asReleaseError, BuildError } from '../errors.js';
import { makeReleaseId } from '../release/naming.js';
import { diskUsage, existsSync, MANIFEST_VERSION, type Manifest, type ReleaseRecord } from '../release/store.js';
import { buildEnv, copyEnvFiles, lockfileHash, pruneCaches, requireAppDir, requireLockfile, runStep, toolVersions } from '../release/builder.js';
import { phase, warn, type Context } from './context.js';
import type { HeldLock } from '../lock.js';
import os from 'node:os';

export async function buildRelease(ctx: Context, ref: string, lock?: HeldLock): Promise<ReleaseRecord> {
  const { config, store } = ctx;
  const sha = await phase(ctx, 'resolve', async () => {
    await ensureRepository(config.workspace, ctx.logger);
    const resolved = await resolveRef(config.workspace, ref, ctx.logger);
    if (await isDirty(config.workspace, ctx.logger))
      warn(ctx, `the workspace has uncommitted changes; they are not part of the release (it is built from ${resolved.slice(0, 7)})`);
    return resolved;
  });

  // Ids have one-second resolution: two builds of one sha in the same second wait for the next.
  let id = makeReleaseId(ctx.now(), sha);
  while (existsSync(store.releaseDir(id))) {
    await sleep(250);
    id = makeReleaseId(ctx.now(), sha);
  }
  await lock?.setRelease(id);
  const logFile = store.buildLog(id);
  const cwd = store.appCwd(id);
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    id,
    sha,
    ref,
    subject: await commitSubject(config.workspace, sha, ctx.logger),
    status: 'building',
    appDir: config.app.dir,
    createdAt: ctx.now().toISOString(),
    durationsMs: {},
    builder: { pid: process.pid, host: os.hostname() },
    node: process.version,
    envFiles: [],
  };
  const started = { ...ctx.durations };
  const ownDurations = () => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(ctx.durations)) if (k !== 'resolve' && v - (started[k] ?? 0) > 0) out[k] = v - (started[k] ?? 0);
    return out;
  };

  try {
    await phase(ctx, 'archive', async () => {
      await store.create(manifest);
      await archive(config.workspace, sha, store.releaseDir(id), ctx.logger, ctx.signal);
      await requireAppDir(cwd, config.app.dir, sha);
    });
    manifest.envFiles = await phase(ctx, 'env', () => copyEnvFiles(ctx, path.join(config.workspace, config.app.dir), cwd));
    const env = buildEnv(ctx, id, sha);
    await phase(ctx, 'install', async () => {
      await requireLockfile(ctx, cwd, logFile);
      await runStep(ctx, 'install', config.app.install, cwd, logFile, env);
    });
    if (config.app.build.length > 0) await phase(ctx, 'build', () => runStep(ctx, 'build', config.app.build, cwd, logFile, env));
    await phase(ctx, 'prune', () => pruneCaches(ctx, cwd));

    const versions = await toolVersions(ctx, cwd);
    manifest.node = versions.node;
    manifest.npm = versions.npm;
    manifest.lockfileHash = await lockfileHash(cwd);
    manifest.sizeBytes = await diskUsage(store.releaseDir(id));
    manifest.durationsMs = ownDurations();
    manifest.finishedAt = ctx.now().toISOString();
    manifest.status = 'ready';
    // The manifest is written last and atomically: a release is ready only once this rename happened.
    await store.writeManifest(manifest);
    ctx.logger.info({ release: id }, `release ${id} is ready`);
  } catch (err) {
    const e = asReleaseError(err);
    e.releaseId ??= id;
    if (e instanceof BuildError || e.phase !== 'internal') e.logFile ??= logFile;
    await markFailed(ctx, manifest, e, ownDurations()).catch(() => undefined);
    throw e;
  }
  const record = await store.get(id);
  if (!record) throw new Error(`release ${id} vanished after its build`);
  return record;
}

export async function markFailed(ctx: Context, manifest: Manifest, err: { code: string; phase: string; message: string }, durationsMs?: Record<string, number>): Promise<void> {
  if (!existsSync(ctx.store.metaDir(manifest.id))) return;
  manifest.status = 'failed';
  manifest.finishedAt = ctx.now().toISOString();
  manifest.error = { code: err.code, phase: err.phase, message: ctx.redactor.redact(err.message) };
  if (durationsMs) manifest.durationsMs = durationsMs;
  await ctx.store.writeManifest(manifest);
}

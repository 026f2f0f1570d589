/** deploy: lock → clean up → build → switch → health → save → retain. Undo on failure. */
import { asReleaseError, ExitCode } from '../errors.js';
import { acquireLock } from '../lock.js';
import { buildRelease, markFailed } from './build.js';
import { createContext, phase, type CommonOptions, type Context } from './context.js';
import { applyRetention, cleanupInterrupted, retentionPlan } from './retain.js';
import { releaseInfo, type BuildResult, type DeployResult } from './results.js';
import { switchToRelease } from './switch-release.js';

export interface DeployOptions extends CommonOptions {
  /** Git ref to release (default HEAD of the workspace). */
  ref?: string;
  /** Wait this long for another operation's lock (default: fail at once). */
  waitMs?: number;
}

export async function deploy(opts: DeployOptions = {}): Promise<DeployResult> {
  const ctx = createContext(opts);
  return withLock(ctx, 'deploy', opts.waitMs, async (lock) => {
    await cleanupInterrupted(ctx);
    const release = await buildRelease(ctx, opts.ref ?? 'HEAD', lock);
    let switched;
    try {
      switched = await switchToRelease(ctx, release);
    } catch (err) {
      const e = asReleaseError(err);
      // A release that could not take over (health gate, switch) is never a rollback target.
      if (release.manifest && e.exitCode === ExitCode.switch) await markFailed(ctx, release.manifest, e).catch(() => undefined);
      throw e;
    }
    const removed = await phase(ctx, 'retain', async () => applyRetention(ctx, await retentionPlan(ctx, [release.id])));
    const fresh = (await ctx.store.get(release.id)) ?? release;
    return {
      ok: true,
      action: 'deploy',
      release: releaseInfo(fresh, release.id, ctx.store.buildLog(release.id)),
      previous: switched.previous,
      url: switched.url,
      durationsMs: { ...ctx.durations },
      removed,
      warnings: ctx.warnings,
    };
  });
}

export interface BuildOptions extends CommonOptions {
  ref?: string;
  waitMs?: number;
}

/** build: the release becomes ready but not active. */
export async function build(opts: BuildOptions = {}): Promise<BuildResult> {
  const ctx = createContext(opts);
  return withLock(ctx, 'build', opts.waitMs, async (lock) => {
    await cleanupInterrupted(ctx);
    const release = await buildRelease(ctx, opts.ref ?? 'HEAD', lock);
    const state = await ctx.store.readState();
    return {
      ok: true,
      action: 'build',
      release: releaseInfo(release, state?.active ?? null, ctx.store.buildLog(release.id)),
      durationsMs: { ...ctx.durations },
      warnings: ctx.warnings,
    };
  });
}

export async function withLock<T>(ctx: Context, command: string, waitMs: number | undefined, fn: (lock: Awaited<ReturnType<typeof acquireLock>>) => Promise<T>): Promise<T> {
  const lock = await phase(ctx, 'lock', () =>
    acquireLock({ releasesDir: ctx.config.releasesDir, command, logger: ctx.logger, waitMs, signal: ctx.signal }),
  );
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/**
 * deploy: lock → clean up what interrupted runs left → pre-flight → resolve → build → verify →
 * switch → health → save → retain. Any failure before the switch leaves PM2 untouched; a failure at or
 * after it puts the previous app back.
 */
import { asReleaseError, ExitCode } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { acquireLock, type HeldLock } from '../lock.js';
import { buildRelease, markFailed, resolveRelease } from './build.js';
import { createContext, phase, warn, type CommonOptions, type Context } from './context.js';
import { preflight } from './doctor.js';
import { applyRetention, cleanupInterrupted, retentionPlan } from './retain.js';
import { releaseInfo, type BuildResult, type DeployResult } from './results.js';
import { switchToRelease } from './switch-release.js';
import { removeVerifyLeftovers, verifyRelease } from './verify.js';

export interface DeployOptions extends CommonOptions {
  /** Git ref to release (default HEAD of the workspace). */
  ref?: string;
  /** Wait this long for another operation's lock (default: fail at once). */
  waitMs?: number;
  /** Skip the verify-before-switch run (the health gate after the switch still applies). */
  verify?: boolean;
}

export async function deploy(opts: DeployOptions = {}): Promise<DeployResult> {
  const ctx = createContext(opts);
  return withLock(ctx, 'deploy', opts.waitMs, async (lock) => {
    await recoverInterrupted(ctx);
    await preflight(ctx);
    const ref = opts.ref ?? 'HEAD';
    const resolved = await resolveRelease(ctx, ref);
    const release = await buildRelease(ctx, ref, resolved, lock);
    let switched;
    try {
      if (opts.verify ?? ctx.config.app.verify.enabled) await verifyRelease(ctx, release);
      switched = await switchToRelease(ctx, release);
    } catch (err) {
      const e = asReleaseError(err);
      // A release that could not take over (verify, health gate, save) is never a rollback target.
      // (A PM2 or filesystem failure says nothing about the release itself: it stays ready.)
      if (release.manifest && (e.exitCode === ExitCode.switch || e.exitCode === ExitCode.build || e.code === 'CANCELLED'))
        await markFailed(ctx, release.manifest, e).catch(() => undefined);
      e.releaseId ??= release.id;
      throw e;
    }
    const removed = await phase(ctx, 'retain', async () => applyRetention(ctx, await retentionPlan(ctx, [release.id]), () => failpoint(ctx.env, 'retain')));
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
    await preflight(ctx);
    const ref = opts.ref ?? 'HEAD';
    const release = await buildRelease(ctx, ref, await resolveRelease(ctx, ref), lock);
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

/**
 * What a killed run can leave behind, put right before anything else: incomplete release directories,
 * half-removed ones, temporary verify processes, and (killed between `pm2 delete` and `pm2 start`) an app
 * that is not running at all while a ready release is recorded as active.
 */
export async function recoverInterrupted(ctx: Context): Promise<void> {
  await cleanupInterrupted(ctx);
  await removeVerifyLeftovers(ctx);
  const state = await ctx.store.readState();
  if (!state) return;
  const procs = await ctx.pm2.processes(ctx.config.app.name);
  if (procs.length > 0) return;
  const record = await ctx.store.get(state.active);
  if (record?.status !== 'ready') return;
  warn(ctx, `${ctx.config.app.name} is not running in PM2 (an interrupted switch?): starting the recorded active release ${state.active} first`);
  try {
    await switchToRelease(ctx, record);
  } catch (err) {
    warn(ctx, `could not restart ${state.active}: ${asReleaseError(err).message}`);
  }
}

export async function withLock<T>(ctx: Context, command: string, waitMs: number | undefined, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const lock = await phase(ctx, 'lock', () =>
    acquireLock({ releasesDir: ctx.config.releasesDir, command, logger: ctx.logger, waitMs, signal: ctx.signal }),
  );
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

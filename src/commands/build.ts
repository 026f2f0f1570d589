/**
 * build: lock → clean up incomplete releases → pre-flight → resolve → build. The release becomes ready but
 * not active: no bad-sha check, no hooks, no PM2, no retention. One line in the history.
 * With `artifact`: check the artifact whole (before the lock) → lock → clean up → pre-flight → unpack, env,
 * install: a release staged for a later `activate`, or the one this very artifact became before (unchanged).
 */
import { allocateId, buildRelease, resolveRelease } from '../lifecycle/build-release.js';
import { preflight } from '../lifecycle/checks.js';
import { createContext, type CommonOptions } from '../lifecycle/context.js';
import { audited } from '../lifecycle/audit.js';
import { cleanupInterrupted } from '../lifecycle/retain.js';
import { releaseInfo, type BuildResult } from '../lifecycle/results.js';
import { withLock } from '../lifecycle/with-lock.js';
import { checkArtifact, noteSigner, releaseFromArtifact, sameArtifact, type ArtifactOptions } from '../lifecycle/artifact-release.js';
import { UsageError } from '../errors.js';
import type { ReleaseRecord } from '../release/store.js';

export interface BuildOptions extends CommonOptions, Partial<ArtifactOptions> {
  ref?: string;
  waitMs?: number;
}

/** build: the release becomes ready but not active. */
export async function build(opts: BuildOptions = {}): Promise<BuildResult> {
  const ctx = createContext(opts);
  let to: string | null = null;
  let sha: string | null = null;
  const runArtifact = async (artifact: string): Promise<BuildResult> => {
    if (opts.ref) throw new UsageError('ARTIFACT_WITH_REF', '--artifact stages the commit the artifact was built from: drop --ref', { phase: 'config' });
    const checked = await checkArtifact(ctx, { artifact, allowedSigners: opts.allowedSigners, allowEnvMismatch: opts.allowEnvMismatch, cwd: opts.cwd });
    sha = checked.verified.manifest.sha;
    return withLock(ctx, 'build', opts.waitMs, async (lock): Promise<BuildResult> => {
      await cleanupInterrupted(ctx);
      await preflight(ctx);
      const state = await ctx.store.readState();
      const found = sameArtifact(await ctx.store.list(), checked);
      if (found) {
        const same = await noteSigner(ctx, found, checked);
        to = same.id;
        ctx.logger.info(`the same artifact was unpacked as ${same.id}: nothing to do`);
        return result(same, state?.active ?? null, false);
      }
      to = await allocateId(ctx, checked.verified.manifest.sha);
      const release = await releaseFromArtifact(ctx, checked, lock, to);
      return result(release, state?.active ?? null, true);
    });
  };
  const result = (release: ReleaseRecord, active: string | null, changed: boolean): BuildResult => ({
    ok: true as const,
    changed,
    action: 'build' as const,
    release: releaseInfo(release, active, ctx.store.buildLog(release.id)),
    durationsMs: { ...ctx.durations },
    warnings: ctx.warnings,
  });
  const run = () =>
    withLock(ctx, 'build', opts.waitMs, async (lock): Promise<BuildResult> => {
      await cleanupInterrupted(ctx);
      await preflight(ctx);
      const ref = opts.ref ?? 'HEAD';
      const resolved = await resolveRelease(ctx, ref);
      sha = resolved.sha;
      to = await allocateId(ctx, resolved.sha);
      const release = await buildRelease(ctx, ref, resolved, lock, to);
      const state = await ctx.store.readState();
      return {
        ok: true as const,
        changed: true as const,
        action: 'build' as const,
        release: releaseInfo(release, state?.active ?? null, ctx.store.buildLog(release.id)),
        durationsMs: { ...ctx.durations },
        warnings: ctx.warnings,
      };
    });
  return audited(
    ctx,
    'build',
    () => ({ from: null, to, sha }),
    opts.artifact !== undefined ? () => runArtifact(opts.artifact!) : run,
    (r) => ({ to: r.release.id, sha: r.release.sha }),
  );
}

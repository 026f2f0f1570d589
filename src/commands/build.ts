/**
 * build: lock → clean up incomplete releases → pre-flight → resolve → build. The release becomes ready but
 * not active: no bad-sha check, no hooks, no PM2, no retention. One line in the history.
 */
import { allocateId, buildRelease, resolveRelease } from '../lifecycle/build-release.js';
import { preflight } from '../lifecycle/checks.js';
import { createContext, type CommonOptions } from '../lifecycle/context.js';
import { audited } from '../lifecycle/audit.js';
import { cleanupInterrupted } from '../lifecycle/retain.js';
import { releaseInfo, type BuildResult } from '../lifecycle/results.js';
import { withLock } from '../lifecycle/with-lock.js';

export interface BuildOptions extends CommonOptions {
  ref?: string;
  waitMs?: number;
}

/** build: the release becomes ready but not active. */
export async function build(opts: BuildOptions = {}): Promise<BuildResult> {
  const ctx = createContext(opts);
  let to: string | null = null;
  let sha: string | null = null;
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
    run,
    (r) => ({ to: r.release.id, sha: r.release.sha }),
  );
}

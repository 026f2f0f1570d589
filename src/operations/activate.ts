/** activate <id> and rollback: switch to a retained ready release, no install, no build. */
import { UsageError } from '../errors.js';
import { clearBad, markBad, whoAmI } from '../release/history.js';
import { audited } from './audit.js';
import { rollbackTarget } from '../release/naming.js';
import { createContext, type CommonOptions, type Context } from './context.js';
import { withLock } from './deploy.js';
import { releaseInfo, type ActivateResult } from './results.js';
import { currentRelease, switchToRelease } from './switch-release.js';
import type { ReleaseRecord } from '../release/store.js';

export interface ActivateOptions extends CommonOptions {
  id: string;
  waitMs?: number;
}

export async function activate(opts: ActivateOptions): Promise<ActivateResult> {
  const ctx = createContext(opts);
  // Validate before taking the lock: a bad id changes nothing, not even the lock file.
  const target = await ctx.store.resolveId(opts.id);
  let from: string | null = null;
  return audited(
    ctx,
    'activate',
    () => ({ from, to: target.id, sha: target.manifest?.sha ?? null }),
    () =>
      withLock(ctx, 'activate', opts.waitMs, async (lock) => {
        await lock.setRelease(target.id);
        from = await currentRelease(ctx);
        const fresh = await ctx.store.resolveId(target.id);
        const result = await switchTo(ctx, fresh, 'activate');
        // An operator chose this release explicitly: it is not "bad" any more.
        if (fresh.manifest?.sha) await clearBad(ctx.config.releasesDir, fresh.manifest.sha);
        return result;
      }),
    previousAsFrom,
  );
}

export interface RollbackOptions extends CommonOptions {
  waitMs?: number;
}

export async function rollback(opts: RollbackOptions = {}): Promise<ActivateResult> {
  const ctx = createContext(opts);
  let from: string | null = null;
  let to: string | null = null;
  let sha: string | null = null;
  const run = () =>
    withLock(ctx, 'rollback', opts.waitMs, async (lock) => {
      const state = await ctx.store.readState();
      const active = await currentRelease(ctx);
      const releases = await ctx.store.list();
      const ready = new Set(releases.filter((r) => r.status === 'ready').map((r) => r.id));
      const target = rollbackTarget(state?.activations ?? [], active ?? undefined, (id) => ready.has(id));
      if (!target)
        throw new UsageError('NO_ROLLBACK_TARGET', `no retained ready release was active before ${active ?? 'the current one'}`, {
          phase: 'activate',
          hint: 'see `pm2-release list`; `pm2-release activate <id>` switches to any ready release',
        });
      from = active;
      to = target;
      await lock.setRelease(target);
      const targetRecord = await ctx.store.resolveId(target);
      sha = targetRecord.manifest?.sha ?? null;
      const result = await switchTo(ctx, targetRecord, 'rollback');
      // An operator rolled back from it: automation must not deploy that sha again until a newer commit.
      const fromRecord = active ? releases.find((r) => r.id === active) : undefined;
      if (fromRecord?.manifest?.sha && fromRecord.manifest.sha !== sha)
        await markBad(ctx.config.releasesDir, {
          sha: fromRecord.manifest.sha,
          release: fromRecord.id,
          reason: `rolled back from by ${whoAmI().user}`,
          markedAt: ctx.now().toISOString(),
          by: whoAmI().user,
        });
      return result;
    });
  return audited(ctx, 'rollback', () => ({ from, to, sha }), run, previousAsFrom);
}

/** The history's `from` is the release that served before the switch, as the switch itself found it. */
const previousAsFrom = (r: ActivateResult) => (r.previous ? { from: r.previous } : {});

async function switchTo(ctx: Context, rel: ReleaseRecord, action: 'activate' | 'rollback'): Promise<ActivateResult> {
  if (rel.status !== 'ready')
    throw new UsageError('RELEASE_NOT_READY', `release ${rel.id} is ${rel.status}, not ready: it cannot be activated`, {
      phase: 'activate',
      hint:
        rel.status === 'failed'
          ? `it failed in ${rel.manifest?.error?.phase ?? 'its build'} (${rel.manifest?.error?.code ?? 'see the build log'}); see ${ctx.store.buildLog(rel.id)}`
          : 'see `pm2-release list`',
    });
  const switched = await switchToRelease(ctx, rel);
  return {
    ok: true,
    action,
    release: releaseInfo(rel, rel.id, ctx.store.buildLog(rel.id)),
    previous: switched.previous,
    url: switched.url,
    durationsMs: { ...ctx.durations },
    warnings: ctx.warnings,
  };
}

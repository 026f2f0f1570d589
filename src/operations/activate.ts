/** activate <id> and rollback: switch to a retained ready release, no install, no build. */
import { UsageError } from '../errors.js';
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
  const record = await ctx.store.resolveId(opts.id);
  return withLock(ctx, 'activate', opts.waitMs, async (lock) => {
    await lock.setRelease(record.id);
    const fresh = await ctx.store.resolveId(record.id);
    return switchTo(ctx, fresh, 'activate');
  });
}

export interface RollbackOptions extends CommonOptions {
  waitMs?: number;
}

export async function rollback(opts: RollbackOptions = {}): Promise<ActivateResult> {
  const ctx = createContext(opts);
  return withLock(ctx, 'rollback', opts.waitMs, async (lock) => {
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
    await lock.setRelease(target);
    return switchTo(ctx, await ctx.store.resolveId(target), 'rollback');
  });
}

async function switchTo(ctx: Context, record: ReleaseRecord, action: 'activate' | 'rollback'): Promise<ActivateResult> {
  if (record.status !== 'ready')
    throw new UsageError('RELEASE_NOT_READY', `release ${record.id} is ${record.status}, not ready: it cannot be activated`, {
      phase: 'activate',
      hint: record.status === 'failed' ? `its build failed; see ${ctx.store.buildLog(record.id)}` : 'see `pm2-release list`',
    });
  const switched = await switchToRelease(ctx, record);
  return {
    ok: true,
    action,
    release: releaseInfo(record, record.id, ctx.store.buildLog(record.id)),
    previous: switched.previous,
    url: switched.url,
    durationsMs: { ...ctx.durations },
    warnings: ctx.warnings,
  };
}

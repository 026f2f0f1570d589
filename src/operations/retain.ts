/** Retention and clean-up of interrupted work. */
import { planRetention, rollbackTarget, type RetentionPlan } from '../release/naming.js';
import type { Context } from './context.js';
import { currentRelease } from './switch-release.js';

export async function retentionPlan(ctx: Context, inProgress: string[] = []): Promise<RetentionPlan> {
  const releases = await ctx.store.list();
  const state = await ctx.store.readState();
  const active = (await currentRelease(ctx)) ?? undefined;
  const ready = new Set(releases.filter((r) => r.status === 'ready').map((r) => r.id));
  const previous = rollbackTarget(state?.activations ?? [], active, (id) => ready.has(id));
  // The recorded active release is protected too: if PM2 and the record disagree, keep both until an
  // operator (or the next deploy) settles it.
  const protect = [...inProgress, ...(state?.active ? [state.active] : [])];
  return planRetention({
    releases: releases.map((r) => ({ id: r.id, status: r.status })),
    keep: ctx.config.keep,
    active,
    previous,
    inProgress: protect,
  });
}

export async function applyRetention(ctx: Context, plan: RetentionPlan, afterFirst?: () => void): Promise<{ id: string; reason: string }[]> {
  const removed: { id: string; reason: string }[] = [];
  for (const r of plan.remove) {
    await ctx.store.remove(r.id, removed.length === 0 ? afterFirst : undefined);
    ctx.logger.info({ release: r.id }, `removed release ${r.id}: ${r.reason}`);
    removed.push(r);
  }
  await ctx.store.sweepRemovals();
  return removed;
}

/** Removes what interrupted runs left behind: incomplete releases and half-done removals. */
export async function cleanupInterrupted(ctx: Context): Promise<string[]> {
  await ctx.store.ensureDir();
  const swept = await ctx.store.sweepRemovals();
  const active = await currentRelease(ctx);
  const cleaned: string[] = [];
  for (const r of await ctx.store.list()) {
    if (r.status === 'incomplete' && r.id !== active) {
      await ctx.store.remove(r.id);
      ctx.logger.warn({ release: r.id }, `removed incomplete release ${r.id} (left by an interrupted run)`);
      cleaned.push(r.id);
    }
  }
  return [...swept, ...cleaned];
}

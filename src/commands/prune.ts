/** prune: retention under the lock, one line in the history; a dry run changes nothing, so it takes no lock and leaves no line. */
import { audited } from '../lifecycle/audit.js';
import { createContext, phase, type CommonOptions } from '../lifecycle/context.js';
import { applyRetention, retentionPlan } from '../lifecycle/retain.js';
import type { PruneResult } from '../lifecycle/results.js';
import { withLock } from '../lifecycle/with-lock.js';

export interface PruneOptions extends CommonOptions {
  keep?: number;
  dryRun?: boolean;
  waitMs?: number;
}

export async function prune(opts: PruneOptions = {}): Promise<PruneResult> {
  const ctx = createContext(opts, { keep: opts.keep });
  const run = async (): Promise<PruneResult> => {
    const plan = await retentionPlan(ctx);
    const removed = opts.dryRun ? plan.remove : await phase(ctx, 'retain', () => applyRetention(ctx, plan));
    return { ok: true, changed: !opts.dryRun && removed.length > 0, action: 'prune', dryRun: !!opts.dryRun, keep: ctx.config.keep, kept: plan.keep, removed };
  };
  // A dry run changes nothing, so it needs no lock (and works while a deploy runs), and is not audited.
  if (opts.dryRun) return run();
  return audited(
    ctx,
    'prune',
    () => ({ from: null, to: null, sha: null }),
    () => withLock(ctx, 'prune', opts.waitMs, run),
    (r) => ({ detail: r.removed.length ? `removed ${r.removed.map((x) => x.id).join(', ')}` : 'nothing to remove' }),
  );
}

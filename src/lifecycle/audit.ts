/** Appends one history line per operation; never lets a history write failure mask the operation's result. */
import { asReleaseError, type ReleaseError } from '../errors.js';
import { appendHistory, soakVerdict, whoAmI, type HistoryAction, type SoakVerdict } from '../release/history.js';
import type { Context } from './context.js';

export async function record(
  ctx: Context,
  e: {
    action: HistoryAction;
    from: string | null;
    to: string | null;
    sha: string | null;
    result: 'ok' | 'failed';
    error?: ReleaseError;
    detail?: string;
    soak?: SoakVerdict;
  },
): Promise<void> {
  try {
    await appendHistory(ctx.config.releasesDir, {
      time: ctx.now().toISOString(),
      action: e.action,
      trigger: ctx.trigger,
      ...whoAmI(),
      from: e.from,
      to: e.to,
      sha: e.sha,
      result: e.result,
      error: e.error ? { code: e.error.code, phase: e.error.phase } : null,
      durationsMs: { ...ctx.durations },
      ...(e.detail ? { detail: ctx.redactor.redact(e.detail) } : {}),
      ...(e.soak ? { soak: soakVerdict(e.soak) } : {}),
      ...(Object.keys(ctx.memory).length ? { memory: { ...ctx.memory } } : {}),
    });
  } catch (err) {
    ctx.logger.warn({ err: (err as Error).message }, 'could not append to the history file');
  }
}

export interface AuditFacts {
  from: string | null;
  to: string | null;
  sha: string | null;
  detail?: string;
  soak?: SoakVerdict;
}

/**
 * Runs an operation and appends its history line: `facts` is read when it ends (the operation fills in what
 * it learnt), `okFacts` refines them from the result (`recordOk` may skip it). A LOCKED refusal did nothing and is not audited;
 * `onFailure` runs before the failure is recorded.
 */
export async function audited<T>(
  ctx: Context,
  action: HistoryAction,
  facts: () => AuditFacts,
  fn: () => Promise<T>,
  okFacts?: (result: T) => Partial<AuditFacts>,
  onFailure?: (e: ReleaseError) => Promise<unknown>,
  /** False for a result that did nothing worth a line (a skipped `rollback --if-current`). */
  recordOk: (result: T) => boolean = () => true,
): Promise<T> {
  try {
    const result = await fn();
    if (recordOk(result)) await record(ctx, { action, ...facts(), ...okFacts?.(result), result: 'ok' });
    return result;
  } catch (err) {
    const e = asReleaseError(err);
    if (e.code !== 'LOCKED') {
      await onFailure?.(e);
      await record(ctx, { action, ...facts(), result: 'failed', error: e });
    }
    throw e;
  }
}

/** Appends one history line per operation; never lets a history write failure mask the operation's result. */
import type { ReleaseError } from '../errors.js';
import { appendHistory, whoAmI, type HistoryAction } from '../release/history.js';
import type { Context } from './context.js';

export async function record(
  ctx: Context,
  e: { action: HistoryAction; from: string | null; to: string | null; sha: string | null; result: 'ok' | 'failed'; error?: ReleaseError; detail?: string },
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
    });
  } catch (err) {
    ctx.logger.warn({ err: (err as Error).message }, 'could not append to the history file');
  }
}

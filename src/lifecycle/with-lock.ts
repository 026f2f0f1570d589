/**
 * The releases lock (lock.ts) held around one operation, taken as its `lock` phase: deploy, build, activate,
 * rollback and prune each change the releases dir or PM2 only inside it.
 */
import { acquireLock, type HeldLock } from '../lock.js';
import { phase, type Context } from './context.js';

export async function withLock<T>(ctx: Context, command: string, waitMs: number | undefined, fn: (lock: HeldLock) => Promise<T>): Promise<T> {
  const lock = await phase(ctx, 'lock', () => acquireLock({ releasesDir: ctx.config.releasesDir, command, logger: ctx.logger, waitMs, signal: ctx.signal }));
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

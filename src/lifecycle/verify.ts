/**
 * Verify before switch: start the new release as a temporary PM2 process on a free loopback port, wait
 * for its health checks there, require it online with no restart for a settle time, then remove it.
 * The live app is never touched; a release that fails here never becomes active.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { healthChecks } from '../config.js';
import { BuildError } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, portHolder } from '../health.js';
import { stopOrphan } from '../pm2/switch.js';
import type { ReleaseRecord } from '../release/store.js';
import { childEnv, phase, type Context } from './context.js';
import { appDefinition, waitForApp } from './switch-release.js';

/** Temporary verify processes are named `<app>.verify-<release id>`; leftovers are removed by the next run. */
export function verifyName(appName: string, releaseId: string): string {
  return `${appName}.verify-${releaseId}`;
}

export function isVerifyName(appName: string, name: string): boolean {
  return name.startsWith(`${appName}.verify-`);
}

export async function verifyRelease(ctx: Context, release: ReleaseRecord): Promise<void> {
  const app = ctx.config.app;
  await phase(ctx, 'verify', async () => {
    const port = await freePort();
    const def = appDefinition(ctx, release);
    def.name = verifyName(app.name, release.id);
    def.env = { ...def.env, [app.portEnv]: String(port) };
    const pm2 = ctx.pm2.withEnv(childEnv(ctx.env));
    await pm2.delete(def.name).catch(() => undefined);
    let deleted = false;
    try {
      await pm2.start(def);
      failpoint(ctx.env, 'verify');
      const outcome = await waitForApp(ctx, { name: def.name, checks: healthChecks(app, port, true), settleMs: app.verify.settleMs, signal: ctx.signal });
      if (!outcome.ok)
        throw new BuildError('VERIFY_FAILED', `release ${release.id} failed verification on port ${port}: ${outcome.reason}`, {
          phase: 'verify',
          hint: `the live app was not touched; see the app's output in ${ctx.pm2.home}/logs/${def.name}-error*.log`,
          releaseId: release.id,
        });
      // Passed: its PM2 log files have nothing worth keeping (a failed one keeps them for the operator).
      await ctx.pm2.delete(def.name).catch(() => undefined);
      deleted = true;
      // fork mode: <name>-out.log; cluster mode: <name>-out-<pm_id>.log
      const logs = await fsp.readdir(path.join(ctx.pm2.home, 'logs')).catch(() => [] as string[]);
      for (const f of logs) if (f.startsWith(`${def.name}-`) && f.endsWith('.log')) await fsp.rm(path.join(ctx.pm2.home, 'logs', f), { force: true });
    } finally {
      if (!deleted) {
        await ctx.pm2.delete(def.name).catch(() => undefined);
        await stopEscapedServer(ctx, port);
      }
    }
  });
}

/**
 * A verify process deleted while `npm start` was still spawning its server can leave that server running
 * outside PM2 (PM2's tree kill ran before the child existed). It binds the spare port a moment later: watch
 * the port briefly and stop such a holder when it runs from inside the releases dir (by pid, never by name).
 */
async function stopEscapedServer(ctx: Context, port: number): Promise<void> {
  for (let i = 0; i < 15; i++) {
    const pid = await portHolder(port);
    if (pid !== undefined) {
      await stopOrphan(pid, ctx.config.releasesDir, ctx.logger);
      return;
    }
    await sleep(200);
  }
}

/** Removes verify processes an interrupted run left in PM2. */
export async function removeVerifyLeftovers(ctx: Context): Promise<string[]> {
  const procs = await ctx.pm2.list();
  const names = [...new Set(procs.filter((p) => isVerifyName(ctx.config.app.name, p.name)).map((p) => p.name))];
  for (const n of names) {
    await ctx.pm2.delete(n);
    ctx.logger.warn(`removed the leftover verify process ${n} (an interrupted run)`);
  }
  return names;
}

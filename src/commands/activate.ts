/** activate <id> and rollback: switch to a retained ready release, no install, no build. */
import { SwitchError, UsageError } from '../errors.js';
import { clearBad, markBad, whoAmI } from '../release/history.js';
import { audited } from '../lifecycle/audit.js';
import { rollbackTarget } from '../release/naming.js';
import { createContext, type CommonOptions, type Context } from '../lifecycle/context.js';
import { withLock } from '../lifecycle/with-lock.js';
import { releaseInfo, type ActivateResult, type RollbackResult, type RollbackSkipped } from '../lifecycle/results.js';
import { currentRelease, switchToRelease } from '../lifecycle/switch-release.js';
import { ReleaseStore, type ReleaseRecord } from '../release/store.js';
import fsp from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import writeFileAtomic from 'write-file-atomic';
import { appPort, healthUrl } from '../config.js';
import { readSoak, soakPaths, soakRunning, type SoakRecord } from '../lifecycle/soak.js';
import { applyRouterChange, configFlag, refuseRouterChange } from '../lifecycle/router-config.js';

export interface ActivateOptions extends CommonOptions {
  id: string;
  waitMs?: number;
  /** Apply a router change that costs a short gap (a fork-mode router, a new host): the operator's choice. */
  replaceRouter?: boolean;
}

export async function activate(opts: ActivateOptions): Promise<ActivateResult> {
  const ctx = createContext(opts);
  // Validate before taking the lock: a bad id changes nothing, not even the lock file.
  const target = await ctx.store.resolveId(opts.id);
  let from: string | null = null;
  const routerOpts = { allowGap: !!opts.replaceRouter };
  await refuseRouterChange(ctx, routerOpts);
  return audited(
    ctx,
    'activate',
    () => ({ from, to: target.id, sha: target.manifest?.sha ?? null }),
    () =>
      withLock(ctx, 'activate', opts.waitMs, async (lock) => {
        await lock.setRelease(target.id);
        await applyRouterChange(ctx, routerOpts);
        from = await currentRelease(ctx);
        const fresh = await ctx.store.resolveId(target.id);
        const result = await switchTo(ctx, fresh, 'activate', from);
        // An operator chose this release explicitly: it is not "bad" any more.
        if (fresh.manifest?.sha) await clearBad(ctx.config.releasesDir, fresh.manifest.sha);
        return result;
      }),
    previousAsFrom,
  );
}

export interface RollbackOptions extends CommonOptions {
  waitMs?: number;
  /**
   * Roll back only when the active release serves this commit (a full sha or a prefix of 7+ hex): else do
   * nothing and say why. A fleet rollback of one bad sha can then run on every host, and run again.
   */
  ifCurrent?: string;
  /** Apply a router change that costs a short gap (a fork-mode router, a new host): the operator's choice. */
  replaceRouter?: boolean;
}

export async function rollback(opts?: RollbackOptions & { ifCurrent?: undefined }): Promise<ActivateResult>;
export async function rollback(opts: RollbackOptions): Promise<RollbackResult>;
export async function rollback(opts: RollbackOptions = {}): Promise<RollbackResult> {
  if (opts.ifCurrent !== undefined && !SHA_PREFIX.test(opts.ifCurrent))
    throw new UsageError('REF_INVALID', `--if-current needs a commit sha (7 to 40 hex digits), not ${JSON.stringify(opts.ifCurrent)}`, { phase: 'config' });
  const ctx = createContext(opts);
  // A deploy is soaking with the previous release warm: the rollback is its revert, a route change.
  const soaking = await readSoak(ctx.config.releasesDir, ctx.config.app.name);
  if (soaking && soakRunning(soaking) && (opts.ifCurrent === undefined || soaking.sha.startsWith(opts.ifCurrent.toLowerCase()))) {
    const r = await stopSoak(ctx, soaking);
    if (r) return r;
  }
  let from: string | null = null;
  let to: string | null = null;
  let sha: string | null = null;
  const routerOpts = { allowGap: !!opts.replaceRouter };
  await refuseRouterChange(ctx, routerOpts);
  const run = () =>
    withLock(ctx, 'rollback', opts.waitMs, async (lock): Promise<RollbackResult> => {
      await applyRouterChange(ctx, routerOpts);
      const state = await ctx.store.readState();
      const active = await currentRelease(ctx);
      const releases = await ctx.store.list();
      if (opts.ifCurrent !== undefined) {
        const skipped = notServing(
          ctx,
          opts.ifCurrent.toLowerCase(),
          releases.find((r) => r.id === active),
        );
        if (skipped) return skipped;
      }
      const ready = new Set(releases.filter((r) => r.status === 'ready').map((r) => r.id));
      const target = rollbackTarget(state?.activations ?? [], active ?? undefined, (id) => ready.has(id));
      if (!target) {
        // After a releasesDir move the releases from before it are in the former dir: say how to go back.
        const before = await lastLiveElsewhere(ctx);
        throw new UsageError('NO_ROLLBACK_TARGET', `no retained ready release was active before ${active ?? 'the current one'}`, {
          phase: 'activate',
          hint: before
            ? `releases from before the releasesDir move are in ${before.elsewhere} (\`pm2-release list\` shows them under elsewhere); to go back to ${before.id}: set "releasesDir" back to ${before.elsewhere}, then run \`pm2-release activate ${before.id}${configFlag(ctx)}\``
            : 'see `pm2-release list`; `pm2-release activate <id>` switches to any ready release',
        });
      }
      from = active;
      to = target;
      await lock.setRelease(target);
      const targetRecord = await ctx.store.resolveId(target);
      sha = targetRecord.manifest?.sha ?? null;
      const result = await switchTo(ctx, targetRecord, 'rollback', active);
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
  // A skipped rollback did nothing: no history line (a fleet's "same history" stays the same on every host).
  return audited(
    ctx,
    'rollback',
    () => ({ from, to, sha }),
    run,
    (r) => ('skipped' in r ? {} : previousAsFrom(r)),
    undefined,
    (r) => !('skipped' in r),
  );
}

const SHA_PREFIX = /^[0-9a-fA-F]{7,40}$/;

/** The skip result when the active release does not serve `sha` (its own sha or a later commit it serves), else undefined. */
function notServing(ctx: Context, sha: string, active: ReleaseRecord | undefined): RollbackSkipped | undefined {
  const commits = active?.manifest ? (active.manifest.commits ?? [active.manifest.sha]) : [];
  if (commits.some((c) => c.startsWith(sha))) return undefined;
  const short = sha.slice(0, 7);
  return {
    ok: true,
    changed: false,
    action: 'rollback',
    skipped: true,
    reason: active
      ? `${active.id} serves ${active.manifest?.sha?.slice(0, 7) ?? 'an unknown commit'}, not ${short}: nothing to roll back`
      : `no release is active, so none serves ${short}: nothing to roll back`,
    active: active ? releaseInfo(active, active.id, ctx.store.buildLog(active.id)) : null,
    durationsMs: { ...ctx.durations },
    warnings: ctx.warnings,
  };
}

/**
 * Asks the running soak to revert (its deploy holds the lock and owns the route) and waits for it to say
 * so. Returns undefined when the soak ended by itself meanwhile (then a normal rollback follows).
 */
async function stopSoak(ctx: Context, soak: SoakRecord): Promise<ActivateResult | undefined> {
  const started = performance.now();
  const paths = soakPaths(ctx.config.releasesDir, ctx.config.app.name);
  await writeFileAtomic(paths.stop, JSON.stringify({ by: whoAmI().user, at: ctx.now().toISOString() }) + '\n', { mode: 0o600 });
  ctx.logger.info(`${soak.release} is soaking (deploy pid ${soak.pid}): asking it to route back to ${soak.previous}`);
  const deadline = Date.now() + 30_000;
  let now = soak;
  while (now.state === 'running' && soakRunning(now)) {
    if (Date.now() > deadline)
      throw new SwitchError('SOAK_STOP_TIMEOUT', `the soaking deploy (pid ${soak.pid}) did not revert within 30 s`, {
        phase: 'soak',
        hint: `see its log; \`pm2-release activate ${soak.previous}\` once it ends`,
      });
    await sleep(25);
    now = (await readSoak(ctx.config.releasesDir, ctx.config.app.name)) ?? now;
  }
  await fsp.rm(paths.stop, { force: true });
  if (now.state === 'passed' || now.state === 'running') return undefined;
  const rel = await ctx.store.get(now.previous);
  if (!rel) return undefined;
  return {
    ok: true,
    changed: true,
    action: 'rollback',
    release: releaseInfo(rel, rel.id, ctx.store.buildLog(rel.id)),
    previous: now.release,
    url: healthUrl(ctx.config.app, appPort(ctx.config.app)),
    durationsMs: { soakStop: Math.round(performance.now() - started) },
    warnings: ctx.warnings,
  };
}

/** The history's `from` is the release that served before the switch, as the switch itself found it. */
const previousAsFrom = (r: ActivateResult) => (r.previous ? { from: r.previous } : {});

async function switchTo(ctx: Context, rel: ReleaseRecord, action: 'activate' | 'rollback', from: string | null): Promise<ActivateResult> {
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
    // Re-activating the active release restarts it, but the live release stays the same.
    changed: from !== rel.id,
    action,
    release: releaseInfo(rel, rel.id, ctx.store.buildLog(rel.id)),
    previous: switched.previous,
    url: switched.url,
    durationsMs: { ...ctx.durations },
    warnings: ctx.warnings,
  };
}

/** After a releasesDir move: the release that was live in the former dir (its state), else its newest ready one. */
async function lastLiveElsewhere(ctx: Context): Promise<ReleaseRecord | undefined> {
  const ready = (await ctx.store.listElsewhere()).filter((r) => r.status === 'ready');
  if (!ready[0]?.elsewhere) return undefined;
  const live = (await new ReleaseStore(ready[0].elsewhere, ctx.config.app.dir).readState())?.active;
  return ready.find((r) => r.id === live) ?? ready[0];
}

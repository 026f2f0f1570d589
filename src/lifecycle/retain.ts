/** Retention and clean-up of interrupted work. */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isReleaseId, planRetention, rollbackTarget, type RetentionPlan } from '../release/naming.js';
import { clearBuildProcess, groupMembers, judgeOrphan, readBuildProcess, stopGroup } from '../release/orphans.js';
import { BUILD_DIR, META_DIR, pidAlive } from '../release/store.js';
import { SharedDeps } from '../release/shared-deps.js';
import { warn, type Context } from './context.js';
import { currentRelease } from './switch-release.js';

export async function retentionPlan(ctx: Context, inProgress: string[] = []): Promise<RetentionPlan> {
  const releases = await ctx.store.list();
  const state = await ctx.store.readState();
  const active = (await currentRelease(ctx)) ?? undefined;
  const ready = new Set(releases.filter((r) => r.status === 'ready').map((r) => r.id));
  const previous = rollbackTarget(state?.activations ?? [], active, (id) => ready.has(id));
  // The recorded active release is protected too: if PM2 and the record disagree, keep both until an
  // operator (or the next deploy) settles it.
  // The standby runs under PM2 from its directory: removing it would pull the files from under a process
  // that a rollback routes to.
  const protect = [...inProgress, ...(state?.active ? [state.active] : []), ...(state?.standby ? [state.standby.id] : [])];
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
  // prune removes incomplete releases too: never from under a build that is still running in them.
  if (plan.remove.length > 0) await stopOrphanedBuilds(ctx);
  for (const r of plan.remove) {
    await removeRelease(ctx, r.id, removed.length === 0 ? afterFirst : undefined);
    ctx.logger.info({ release: r.id }, `removed release ${r.id}: ${r.reason}`);
    removed.push(r);
  }
  await ctx.store.sweepRemovals();
  return removed;
}

/**
 * Deletes a release; the shared node_modules sets it belonged to are re-recorded around it (each unlink moves
 * the ctime of the inodes the other releases keep).
 */
export async function removeRelease(ctx: Context, id: string, afterRename?: () => void): Promise<void> {
  await sharedDeps(ctx).removing(id, () => ctx.store.remove(id, afterRename));
}

export function sharedDeps(ctx: Context): SharedDeps {
  return new SharedDeps(ctx.store.releasesDir, (id) => path.join(ctx.store.appCwd(id), 'node_modules'));
}

/** Removes what interrupted runs left behind: incomplete releases and half-done removals. */
export async function cleanupInterrupted(ctx: Context): Promise<string[]> {
  await ctx.store.ensureDir();
  // First: removing a release (or building a new one) while a killed deploy's build still runs in it would
  // run two builds at once and leave the old one writing into a deleted directory.
  await stopOrphanedBuilds(ctx);
  const cleaned: string[] = [];
  // A `.build` left by a killed run (its build stopped just above) goes back under its id, so it is removed
  // below as the incomplete release it is: through removeRelease, which keeps a shared node_modules set it
  // joined correct. Without a readable manifest it never got that far and is just removed.
  const build = ctx.store.buildRoot;
  if (await fsp.lstat(build).catch(() => undefined)) {
    const id = await leftoverBuildId(build);
    const to = id && !(await fsp.lstat(ctx.store.finalDir(id)).catch(() => undefined)) ? ctx.store.finalDir(id) : undefined;
    await fsp.rename(build, to ?? path.join(ctx.store.releasesDir, `.removing-build-${process.pid}`));
    ctx.logger.warn(`found ${build} left by an interrupted run${to ? `: back under ${id}, removed as incomplete` : ': removed'}`);
  }
  const swept = await ctx.store.sweepRemovals();
  const active = await currentRelease(ctx);
  for (const r of await ctx.store.list()) {
    if (r.status === 'incomplete' && r.id !== active) {
      await removeRelease(ctx, r.id);
      ctx.logger.warn({ release: r.id }, `removed incomplete release ${r.id} (left by an interrupted run)`);
      cleaned.push(r.id);
    }
  }
  return [...swept, ...cleaned];
}

async function leftoverBuildId(dir: string): Promise<string | undefined> {
  try {
    const m = JSON.parse(await fsp.readFile(path.join(dir, META_DIR, 'manifest.json'), 'utf8')) as { id?: unknown };
    return typeof m.id === 'string' && isReleaseId(m.id) ? m.id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Stops the install/build process groups that killed runs left behind (see release/orphans.ts). Looks at
 * every release dir and half-removed `.removing-<id>-<pid>` dir that holds a build-process record whose run
 * is dead. A group is signalled only when /proc shows all of its processes inside that release.
 */
export async function stopOrphanedBuilds(ctx: Context): Promise<string[]> {
  const { releasesDir } = ctx.store;
  const names = await fsp.readdir(releasesDir).catch(() => [] as string[]);
  const stopped: string[] = [];
  for (const name of names) {
    // `.build` holds the release being built (release/store.ts): its id is in the record.
    const building = name === BUILD_DIR;
    const named = isReleaseId(name) ? name : /^\.removing-(.+)-\d+$/.exec(name)?.[1];
    if (!building && (!named || !isReleaseId(named))) continue;
    const dir = path.join(releasesDir, name);
    const st = await fsp.lstat(dir).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    const metaDir = path.join(dir, META_DIR);
    const rec = await readBuildProcess(metaDir);
    const id = building ? rec?.release : named;
    if (!rec || !id || !isReleaseId(id) || rec.release !== id) continue;
    // Where the group may run: the release under its name now, its real path (releasesDir may be reached
    // through a symlink; /proc shows real paths), and where it was when the step started, if that was here
    // (under its id, or in `.build`).
    const dirs = new Set([dir, await fsp.realpath(dir).catch(() => dir)]);
    if (path.dirname(rec.releaseDir) === releasesDir && [id, BUILD_DIR].includes(path.basename(rec.releaseDir))) dirs.add(rec.releaseDir);
    const verdict = judgeOrphan(rec, groupMembers(rec.pgid), [...dirs], { host: os.hostname(), deployAlive: pidAlive(rec.deployPid) });
    if (!verdict.stop && (verdict.reason === 'deploy-alive' || verdict.reason === 'other-host')) continue; // not ours to judge
    if (verdict.stop) {
      const how = await stopGroup(rec.pgid);
      const n = verdict.pids.length;
      const note = how === 'killed' ? '; it ignored SIGTERM for 5 s and was killed' : '';
      warn(
        ctx,
        `stopped the orphaned build of ${id} (${rec.step} step, process group ${rec.pgid}, ${n} process${n === 1 ? '' : 'es'}) left by a killed deploy (pid ${rec.deployPid})${note}`,
      );
      stopped.push(id);
    } else if (verdict.reason !== 'gone') {
      const why: Record<string, string> = {
        outside: 'not all of its processes run in that release',
        'pid-reused': 'its leader pid now belongs to a newer process',
        unreadable: 'its processes cannot be inspected',
      };
      warn(
        ctx,
        `not stopping process group ${rec.pgid} recorded for the ${rec.step} of ${id}: ${why[verdict.reason] ?? verdict.reason}${verdict.detail ? ` (${verdict.detail})` : ''}`,
      );
    }
    await clearBuildProcess(metaDir).catch(() => undefined);
  }
  return stopped;
}

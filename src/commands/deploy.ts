/**
 * deploy: lock → clean up what interrupted runs left → pre-flight → (pull) → resolve → preDeploy hook →
 * build → postBuild hook → verify → switch → health → save → postSwitch hook → retain → postDeploy hook.
 * Any failure before the switch leaves PM2 untouched; a failure at or after it puts the previous app back.
 * Every run appends one line to the history. A deploy that finds the active release already serving HEAD
 * (and PM2 running it) says so after one look, without the lock or the pre-flight (nothingToDo).
 */
import { existsSync } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { asReleaseError, ExitCode, ReleaseError, UsageError } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { currentBranch, pullBranch, resolveRef } from '../git.js';
import { clearBad, readBadShas } from '../release/history.js';
import { findSameInputs, unchangedReason, withCommit } from '../release/inputs.js';
import { appPort, healthUrl } from '../config.js';
import { allocateId, buildRelease, markFailed, resolveRelease, type Resolved } from '../lifecycle/build-release.js';
import { checkArtifact, noteSigner, releaseFromArtifact, sameArtifact } from '../lifecycle/artifact-release.js';
import { childEnv, createContext, phase, warn, type CommonOptions, type Context } from '../lifecycle/context.js';
import { preflight } from '../lifecycle/checks.js';
import { audited } from '../lifecycle/audit.js';
import { runHook } from '../lifecycle/hooks.js';
import { applyRetention, cleanupInterrupted, retentionPlan } from '../lifecycle/retain.js';
import { releaseInfo, type DeployResult } from '../lifecycle/results.js';
import { adoptRunning, currentRelease, routerControl, routerDefinition, switchToRelease } from '../lifecycle/switch-release.js';
import { routerRunning } from '../pm2/routed-switch.js';
import { routerProcessName } from '../router/protocol.js';
import { removeVerifyLeftovers, verifyRelease } from '../lifecycle/verify.js';
import { applyRouterChange, checkRouterConfig, refuseRouterChange } from '../lifecycle/router-config.js';
import { readSoak, soakRunning, writeSoakRecord, type SoakRecord } from '../lifecycle/soak.js';
import { BUILD_DIR, type ReleaseRecord } from '../release/store.js';
import { withLock } from '../lifecycle/with-lock.js';
import { refuseBadSha } from '../lifecycle/bad-sha.js';
import { isStandbyProcess } from '../lifecycle/standby.js';
import { LOCK_DIR } from '../lock.js';

export interface DeployOptions extends CommonOptions {
  /** Git ref to release (default HEAD of the workspace). */
  ref?: string;
  /**
   * Fetch and reset the workspace to origin/<branch> first (`true`: the checked-out branch). With `ref` (then
   * a commit sha), that commit is deployed, refused unless origin/<branch> contains it.
   */
  pull?: string | boolean;
  /** Deploy a sha marked bad, and let --pull discard uncommitted changes. */
  force?: boolean;
  /** Wait this long for another operation's lock (default: fail at once). */
  waitMs?: number;
  /** Skip the verify-before-switch run (the health gate after the switch still applies). */
  verify?: boolean;
  /** Build a fresh release even when a ready release of this sha (or of the same inputs) is retained. */
  rebuild?: boolean;
  /** Soak length in ms (overrides soak.durationMs; 0: no soak). */
  soakMs?: number;
  /** Share of visitors (0 < share <= 1) the new release gets during the soak (overrides soak.canaryPercent). */
  canaryShare?: number;
  /**
   * false: return once the soak has started (`soak.state: "running"`); the soak goes on in this process
   * and its verdict reaches `status`, `history` and, on a revert, the onFailure hook. Default true.
   */
  waitSoak?: boolean;
  /** Called once the soak started (the CLI's --no-wait-soak hands the result to its caller then). */
  onSoakStarted?: (result: DeployResult) => void;
  /** Apply a router change that costs a short gap (a fork-mode router, a new host): the operator's choice. */
  replaceRouter?: boolean;
  /** Deploy this artifact (pm2-release pack) instead of building: no git, no build (lifecycle/artifact-release.ts). */
  artifact?: string;
  /** With `artifact`: an OpenSSH allowed_signers file; the artifact must be signed by one of its keys. */
  allowedSigners?: string;
  /** With `artifact`: deploy although this host's build-time public values differ from the artifact's. */
  allowEnvMismatch?: boolean;
}

/**
 * Deploys; with `waitSoak: false` the promise resolves when the soak starts, and the deploy (its lock
 * held) finishes the soak in the background of this process.
 */
export function deploy(opts: DeployOptions = {}): Promise<DeployResult> {
  if (opts.waitSoak !== false) return deployNow(opts);
  return new Promise<DeployResult>((resolve, reject) => {
    let early = false;
    deployNow({
      ...opts,
      onSoakStarted: (r) => {
        early = true;
        opts.onSoakStarted?.(r);
        resolve(r);
      },
    }).then(resolve, (err: unknown) => {
      // After the early answer, a failed soak is told by the history, status and the onFailure hook.
      if (!early) reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}

async function deployNow(opts: DeployOptions): Promise<DeployResult> {
  const ctx = createContext(opts, { soakMs: opts.soakMs, canaryShare: opts.canaryShare });
  let from: string | null = null;
  let to: string | null = null;
  let sha: string | null = null;
  let reason: string | undefined;
  const routerOpts = { allowGap: !!opts.replaceRouter };
  const run = async () => {
    const quick = await nothingToDo(ctx, opts);
    if (quick && 'result' in quick) {
      ({ from, to, sha } = { from: quick.release.id, to: quick.release.id, sha: quick.sha });
      reason = quick.result.reason;
      return quick.result;
    }
    const early = quick?.resolved;
    // A router that differs from the config in a way this run would not apply: refused before the lock.
    await refuseRouterChange(ctx, routerOpts);
    return withLock(ctx, 'deploy', opts.waitMs, async (lock): Promise<DeployResult> => {
      // Pre-flight first: recovery may start the app, which must not happen on a VM whose PM2 is down.
      await preflight(ctx);
      await applyRouterChange(ctx, routerOpts);
      await recoverInterrupted(ctx);
      let ref = opts.ref ?? 'HEAD';
      if (opts.pull) {
        const branch = opts.pull === true ? await currentBranch(ctx.config.workspace, ctx.logger) : opts.pull;
        if (!branch) throw new ReleaseError('REF_INVALID', ExitCode.usage, 'the workspace is on a detached HEAD: name the branch to pull', { phase: 'pull' });
        // With a ref (a sha: the fleet's pinned commit) the pull checks that the branch contains it.
        await phase(ctx, 'pull', () => pullBranch(ctx.config.workspace, branch, !!opts.force, ctx.logger, ctx.signal, opts.ref));
        ref = opts.ref ?? 'HEAD';
      }
      // Resolved already when the commit was the active release's but something else was not (its inputs).
      const resolved = early ?? (await resolveRelease(ctx, ref));
      sha = resolved.sha;
      await refuseBadSha(ctx, resolved.sha, !!opts.force);
      from = await currentRelease(ctx);
      if (!opts.rebuild) {
        // Content-addressed: a ready release built from the same inputs (release/inputs.ts) is retained, so
        // there is nothing to archive, install or build. When it is the active one, nothing is switched either.
        // A build whose commit is marked bad is not reused for a newer commit with the same inputs (an empty
        // commit, a change outside the app dir): the mark holds until a newer commit is built and gated anew.
        const marks = opts.force ? {} : await readBadShas(ctx.config.releasesDir);
        const releases = (await ctx.store.list()).filter((r) => !r.manifest || r.id === from || !marks[r.manifest.sha]);
        const hit = findSameInputs(releases, from, resolved.sha, resolved.inputKey);
        const same = hit ? releases.find((r) => r.id === hit.id) : undefined;
        if (hit && same?.manifest) {
          to = same.id;
          reason = hit.by === 'inputs' ? unchangedReason(ctx.config.app.dir, same.manifest.sha) : undefined;
          if (!(same.manifest.commits ?? [same.manifest.sha]).includes(resolved.sha)) {
            // The release now also serves this commit: list, status and history say so.
            await ctx.store.writeManifest({ ...same.manifest, commits: withCommit(same.manifest.commits ?? [same.manifest.sha], resolved.sha) });
          }
          return activateRetained(ctx, opts, same, from, resolved.sha, reason);
        }
      }
      const id = await allocateId(ctx, resolved.sha);
      to = id;
      const vars = { RELEASE_ID: id, RELEASE_SHA: resolved.sha, RELEASE_DIR: ctx.store.appCwd(id), PREVIOUS_RELEASE_ID: from };
      await runHook(ctx, 'preDeploy', vars, ctx.config.workspace);
      const release = await buildRelease(ctx, ref, resolved, lock, id);
      return switchToNew(ctx, opts, release, from, vars, 'built');
    });
  };
  const runArtifact = async (artifact: string) => {
    if (opts.ref || opts.pull)
      throw new UsageError('ARTIFACT_WITH_REF', '--artifact deploys the commit the artifact was built from: drop --ref and --pull', { phase: 'config' });
    // Checked whole (checksum, members, schema, signature, runtime, public env) before the lock and the releases dir.
    const checked = await checkArtifact(ctx, { artifact, allowedSigners: opts.allowedSigners, allowEnvMismatch: opts.allowEnvMismatch, cwd: opts.cwd });
    const m = checked.verified.manifest;
    sha = m.sha;
    await refuseRouterChange(ctx, routerOpts);
    return withLock(ctx, 'deploy', opts.waitMs, async (lock): Promise<DeployResult> => {
      await preflight(ctx);
      await applyRouterChange(ctx, routerOpts);
      await recoverInterrupted(ctx);
      await refuseBadSha(ctx, m.sha, !!opts.force);
      from = await currentRelease(ctx);
      // Content-addressed: the same file (its sha256) unpacked before is that release, not a new one.
      const found = opts.rebuild ? undefined : sameArtifact(await ctx.store.list(), checked);
      if (found) {
        const same = await noteSigner(ctx, found, checked);
        to = same.id;
        reason = `the same artifact (sha256 ${checked.verified.sha256.slice(0, 12)}) was unpacked as ${same.id}`;
        return activateRetained(ctx, opts, same, from, m.sha, reason);
      }
      const id = await allocateId(ctx, m.sha);
      to = id;
      const vars = { RELEASE_ID: id, RELEASE_SHA: m.sha, RELEASE_DIR: ctx.store.appCwd(id), PREVIOUS_RELEASE_ID: from };
      await runHook(ctx, 'preDeploy', vars, ctx.config.workspace);
      const release = await releaseFromArtifact(ctx, checked, lock, id);
      return switchToNew(ctx, opts, release, from, vars, 'unpacked');
    });
  };
  return audited(
    ctx,
    'deploy',
    () => ({ from, to, sha }),
    opts.artifact !== undefined ? () => runArtifact(opts.artifact!) : run,
    // The deployed commit, not the release's own sha: the history shows each commit a release came to serve.
    (r) => ({
      from: r.previous,
      to: r.release.id,
      sha: sha ?? r.release.sha,
      ...(r.reason || r.soak ? { detail: [r.reason, r.soak ? `soak ${r.soak.state}: ${r.soak.reason}` : undefined].filter(Boolean).join('; ') } : {}),
      ...(r.soak ? { soak: r.soak } : {}),
    }),
    (e) =>
      runHook(
        ctx,
        'onFailure',
        {
          RELEASE_ID: to ?? '',
          RELEASE_SHA: sha ?? '',
          RELEASE_DIR: to ? ctx.store.appCwd(to) : '',
          PREVIOUS_RELEASE_ID: from,
          FAILURE_CODE: e.code,
          FAILURE_PHASE: e.phase,
        },
        ctx.config.workspace,
      ).catch(() => false),
  );
}

/**
 * A retained ready release serves this deploy (the same inputs, or the same artifact): when it is the active
 * one nothing is switched (`unchanged`), else it is activated without a build (`reactivated`).
 */
async function activateRetained(
  ctx: Context,
  opts: DeployOptions,
  same: ReleaseRecord,
  from: string | null,
  sha: string,
  reason: string | undefined,
): Promise<DeployResult> {
  let unchanged = same.id === from;
  // PM2 serves it but the record or the dump may not say so (a run killed after its switch): settle that.
  if (unchanged && (await ctx.store.readState())?.active !== same.id) {
    warn(ctx, `PM2 serves ${same.id} but it was not recorded as active (an interrupted deploy): saving it`);
    if (!(await adoptRunning(ctx, same))) unchanged = false;
  }
  const short = sha.slice(0, 7);
  let url = healthUrl(ctx.config.app, appPort(ctx.config.app));
  let previous: string | null = null;
  let soak: SoakRecord | null = null;
  if (unchanged) {
    ctx.logger.info(`${short} is already served by the active ${same.id}${reason ? ` (${reason})` : ''}: nothing to do`);
    if (opts.force && (await clearBad(ctx.config.releasesDir, sha))) warn(ctx, `${short} is active: its bad mark is cleared (--force)`);
  } else {
    ctx.logger.info(`${short} is retained as ${same.id}${reason ? ` (${reason})` : ''}: activating it without a build`);
    const switched = await switchToRelease(ctx, same, {
      soak: true,
      onSoakStarted: (soakRec) => opts.onSoakStarted?.(soakStartedResult(ctx, 'reactivated', same, from, soakRec, reason)),
    });
    soak = switched.soak;
    if (opts.force && (await clearBad(ctx.config.releasesDir, sha))) warn(ctx, `deployed ${short} with --force: its bad mark is cleared`);
    url = switched.url;
    previous = switched.previous;
    const vars = { RELEASE_ID: same.id, RELEASE_SHA: sha, RELEASE_DIR: same.cwd, PREVIOUS_RELEASE_ID: from };
    await runHook(ctx, 'postSwitch', vars, same.cwd);
    await runHook(ctx, 'postDeploy', vars, same.cwd);
  }
  const marks = await readBadShas(ctx.config.releasesDir);
  return {
    ok: true as const,
    changed: !unchanged,
    action: 'deploy' as const,
    mode: unchanged ? ('unchanged' as const) : ('reactivated' as const),
    ...(reason ? { reason } : {}),
    release: releaseInfo((await ctx.store.get(same.id)) ?? same, same.id, ctx.store.buildLog(same.id), marks),
    previous,
    url,
    durationsMs: { ...ctx.durations },
    removed: [],
    soak,
    warnings: ctx.warnings,
  };
}

/**
 * A new ready release (built, or unpacked from an artifact) takes over: postBuild hook → verify (restart and
 * cluster strategies) → switch → health → save (→ soak) → postSwitch hook → retain → postDeploy hook.
 */
async function switchToNew(
  ctx: Context,
  opts: DeployOptions,
  release: ReleaseRecord,
  from: string | null,
  vars: Record<string, string | null>,
  mode: 'built' | 'unpacked',
): Promise<DeployResult> {
  const sha = release.manifest?.sha ?? '';
  let switched;
  try {
    await runHook(ctx, 'postBuild', vars, release.cwd);
    // Behind the router the health gate runs on the new release's private port before any visitor reaches
    // it: that is the verify run, so a deploy boots the release once.
    if (ctx.config.app.strategy !== 'router' && (opts.verify ?? ctx.config.app.verify.enabled)) await verifyRelease(ctx, release);
    switched = await switchToRelease(ctx, release, {
      soak: true,
      onSoakStarted: (soakRec) => opts.onSoakStarted?.(soakStartedResult(ctx, mode, release, from, soakRec)),
    });
  } catch (err) {
    const e = asReleaseError(err);
    // A release that could not take over (hook, verify, health gate, save) is never a rollback target.
    // (A PM2 or filesystem failure says nothing about the release itself: it stays ready.)
    if (release.manifest && (e.exitCode === ExitCode.switch || e.exitCode === ExitCode.build || e.code === 'CANCELLED'))
      await markFailed(ctx, release.manifest, e).catch(() => undefined);
    e.releaseId ??= release.id;
    throw e;
  }
  if (opts.force && (await clearBad(ctx.config.releasesDir, sha))) warn(ctx, `deployed ${sha.slice(0, 7)} with --force: its bad mark is cleared`);
  await runHook(ctx, 'postSwitch', vars, release.cwd);
  // The new release is live: a failure to delete old ones is worth a warning, not a failed deploy.
  const removed = await phase(ctx, 'retain', async () => applyRetention(ctx, await retentionPlan(ctx, [release.id]), () => failpoint(ctx.env, 'retain'))).catch(
    (err: Error) => {
      warn(ctx, `removing old releases failed (${err.message}); the next deploy or \`pm2-release prune\` retries`);
      return [] as { id: string; reason: string }[];
    },
  );
  await runHook(ctx, 'postDeploy', vars, release.cwd);
  const fresh = (await ctx.store.get(release.id)) ?? release;
  return {
    ok: true as const,
    changed: true,
    action: 'deploy' as const,
    mode,
    release: releaseInfo(fresh, release.id, ctx.store.buildLog(release.id)),
    previous: switched.previous,
    url: switched.url,
    durationsMs: { ...ctx.durations },
    removed,
    soak: switched.soak,
    warnings: ctx.warnings,
  };
}

/** The early answer of a deploy whose soak has just started (`waitSoak: false`, `--no-wait-soak`). */
function soakStartedResult(
  ctx: Context,
  mode: 'built' | 'reactivated' | 'unpacked',
  release: ReleaseRecord,
  previous: string | null,
  soak: SoakRecord,
  reason?: string,
): DeployResult {
  return {
    ok: true,
    changed: true,
    action: 'deploy',
    mode,
    ...(reason ? { reason } : {}),
    release: releaseInfo(release, release.id, ctx.store.buildLog(release.id)),
    previous,
    url: healthUrl(ctx.config.app, appPort(ctx.config.app)),
    durationsMs: { ...ctx.durations },
    removed: [],
    soak,
    warnings: ctx.warnings,
  };
}

/**
 * A deploy with nothing to do, found with one look at the state and nothing written but its history line:
 * no lock holder and no soak, HEAD's inputs are the active release's (which already lists the commit), PM2
 * runs that release online (behind the router: routed to, by a router as the config defines it), and the
 * commit is not marked bad. Anything else (or any doubt) takes the full path: lock, pre-flight, recovery.
 * The executor calls deploy after every pull; most find nothing to do.
 */
async function nothingToDo(
  ctx: Context,
  opts: DeployOptions,
): Promise<{ result: DeployResult; release: ReleaseRecord; sha: string } | { resolved: Resolved } | undefined> {
  if (opts.rebuild || opts.pull || opts.force) return undefined;
  const dir = ctx.config.releasesDir;
  if (existsSync(path.join(dir, LOCK_DIR))) return undefined;
  const state = await ctx.store.readState();
  if (!state || !ctx.pm2.daemonRunning()) return undefined;
  const active = await ctx.store.get(state.active);
  if (!active?.manifest || active.status !== 'ready') return undefined;
  // The commit first (one git call): a deploy of a new commit goes the full way without resolving twice.
  const sha = await resolveRef(ctx.config.workspace, opts.ref ?? 'HEAD', ctx.logger).catch(() => undefined);
  if (!sha || !(active.manifest.commits ?? [active.manifest.sha]).includes(sha)) return undefined;
  const soak = await readSoak(dir, ctx.config.app.name);
  if (soak && soakRunning(soak)) return undefined;
  // What an interrupted run left (a build dir, a half-done removal, an incomplete release, a verify process)
  // is the full path's to clean up.
  if ((await fsp.readdir(dir)).some((n) => n === BUILD_DIR || n.startsWith('.removing-'))) return undefined;
  if ((await ctx.store.list()).some((r) => r.status !== 'ready' && r.status !== 'failed')) return undefined;
  if ((await ctx.pm2.list({ fresh: true })).some((p) => p.name.startsWith(`${ctx.config.app.name}.verify-`))) return undefined;
  // The inputs (env files, tool versions) may still differ: then the full path reuses this resolution.
  const resolved = await resolveRelease(ctx, sha);
  const hit = findSameInputs([active], active.id, resolved.sha, resolved.inputKey);
  if (hit?.id !== active.id) return { resolved };
  const marks = await readBadShas(dir);
  if (marks[resolved.sha]) return { resolved };
  if ((await currentRelease(ctx)) !== active.id) return { resolved };
  const procs = (await ctx.pm2.processes(ctx.config.app.name, { fresh: true })).filter((p) => p.releaseId === active.id);
  if (procs.length === 0 || !procs.every((p) => p.status === 'online')) return { resolved };
  if (ctx.config.app.strategy === 'router') {
    if (!(await routerRunning(ctx.pm2, routerProcessName(ctx.config.app.name)))) return { resolved };
    if ((await checkRouterConfig(ctx))?.differences.length !== 0) return { resolved };
  }
  const reason = hit.by === 'inputs' ? unchangedReason(ctx.config.app.dir, active.manifest.sha) : undefined;
  ctx.logger.info(`${resolved.sha.slice(0, 7)} is already served by the active ${active.id}${reason ? ` (${reason})` : ''}: nothing to do`);
  return {
    release: active,
    sha: resolved.sha,
    result: {
      ok: true as const,
      changed: false,
      action: 'deploy' as const,
      mode: 'unchanged' as const,
      ...(reason ? { reason } : {}),
      release: releaseInfo(active, active.id, ctx.store.buildLog(active.id), marks),
      previous: null,
      url: healthUrl(ctx.config.app, appPort(ctx.config.app)),
      durationsMs: { ...ctx.durations },
      removed: [],
      soak: null,
      warnings: ctx.warnings,
    },
  };
}

/**
 * What a killed run can leave behind, put right before anything else: incomplete release directories,
 * half-removed ones, temporary verify processes, and (killed between `pm2 delete` and `pm2 start`) an app
 * that is not running at all while a ready release is recorded as active.
 */
export async function recoverInterrupted(ctx: Context): Promise<void> {
  await cleanupInterrupted(ctx);
  await removeVerifyLeftovers(ctx);
  if (ctx.config.app.strategy === 'router') await recoverRouted(ctx);
  const state = await ctx.store.readState();
  if (!state) return;
  const procs = await ctx.pm2.processes(ctx.config.app.name);
  if (procs.length > 0) return;
  const rec = await ctx.store.get(state.active);
  if (rec?.status !== 'ready') return;
  warn(ctx, `${ctx.config.app.name} is not running in PM2 (an interrupted switch?): starting the recorded active release ${state.active} first`);
  try {
    await switchToRelease(ctx, rec);
  } catch (err) {
    warn(ctx, `could not restart ${state.active}: ${asReleaseError(err).message}`);
  }
}

/**
 * Behind the router, the router's state file says which release is live. A run killed mid-switch can leave
 * a release process that is not routed (killed before the route change) or the previous one still running
 * and the record not yet saved (killed after it): the unrouted processes are deleted, a router that is not
 * running is started (it reads its state), and a routed release that was not recorded is adopted.
 */
async function recoverRouted(ctx: Context): Promise<void> {
  const name = ctx.config.app.name;
  const routedState = await routerControl(ctx).readState();
  const live = routedState?.live;
  if (!live) return;
  await endInterruptedSoak(ctx, routedState.canary ?? null, live);
  // The list removeVerifyLeftovers just read (under a second old; its deletes invalidated it): another
  // `pm2 jlist` would cost a deploy that finds nothing to do ~0.5 s of its 1 s.
  const procs = await ctx.pm2.processes(name);
  const portEnv = ctx.config.app.portEnv;
  const serving = procs.filter((p) => p.vars[portEnv] === String(live.port));
  if (serving.length === 0) return; // nothing serves the routed port: the generic recovery below starts the record
  // The recorded standby runs unrouted by design (a rollback routes to it): not a leftover.
  const standby = (await ctx.store.readState())?.standby;
  for (const p of procs.filter((x) => !serving.includes(x) && !isStandbyProcess(standby, x, portEnv))) {
    warn(ctx, `${name} (pm2 id ${p.pmId}, ${p.releaseId ?? p.cwd}) is not routed (an interrupted switch): deleting it`);
    await ctx.pm2.delete(p.pmId);
  }
  const pm2 = ctx.pm2.withEnv(childEnv(ctx.env));
  if (!(await routerRunning(pm2, routerProcessName(name)))) {
    warn(ctx, `the router ${routerProcessName(name)} is not running: starting it (it routes to ${live.release})`);
    for (const p of await pm2.processes(routerProcessName(name))) await pm2.delete(p.pmId);
    await pm2.start(routerDefinition(ctx));
    await routerControl(ctx).status(15_000);
  }
  const recorded = (await ctx.store.readState())?.active;
  const rec = await ctx.store.get(live.release);
  if (recorded !== live.release && rec?.status === 'ready') {
    warn(ctx, `the router serves ${live.release} but it was not recorded as active (an interrupted switch): saving it`);
    await adoptRunning(ctx, rec);
  }
}

/**
 * A deploy killed during its soak left the router with a canary share or the previous release on standby:
 * the canary share goes back to the live release (the new one was still on trial), the soak record says
 * it was interrupted. The unrouted process is then deleted by the recovery like any other.
 */
async function endInterruptedSoak(
  ctx: Context,
  canary: { upstream: { release: string; port: number } } | null,
  live: { port: number; release: string },
): Promise<void> {
  const soak = await readSoak(ctx.config.releasesDir, ctx.config.app.name);
  if (soak?.state === 'running' && !soakRunning(soak)) {
    warn(
      ctx,
      `the soak of ${soak.release} (pid ${soak.pid}) was interrupted: ${canary ? `its canary share goes back to ${live.release}` : `${live.release} stays live`}`,
    );
    await writeSoakRecord(ctx.config.releasesDir, ctx.config.app.name, {
      ...soak,
      state: 'interrupted',
      endedAt: ctx.now().toISOString(),
      reason: 'the deploy ended before its soak did',
    });
  }
  if (!canary) return;
  const pm2 = ctx.pm2.withEnv(childEnv(ctx.env));
  if (await routerRunning(pm2, routerProcessName(ctx.config.app.name))) await routerControl(ctx).route(live);
  else await routerControl(ctx).writeState(live, ctx.now());
}

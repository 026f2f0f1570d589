/**
 * The one path by which a ready release becomes the live one (deploy, activate and rollback all use it):
 * switch PM2 → health gate → pm2 save → record as active. If the switch or the health gate fails, the app
 * is put back as it was, the dump is saved again, and a SwitchError naming the phase is thrown.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { appPort, healthChecks, healthUrl, isInside } from '../config.js';
import { failpoint } from '../failpoint.js';
import { EnvironmentError, ReleaseError, SwitchError } from '../errors.js';
import { probeAll, waitHealthy, type HealthOutcome, type StabilitySample } from '../health.js';
import { ProcessWatch } from '../pm2/watch.js';
import { strategyFor, type StandbyOutcome, type SwitchStrategy } from '../pm2/switch.js';
import { loopbackArgs, routedStrategy, routerRunning } from '../pm2/routed-switch.js';
import { RouterControl } from '../router/client.js';
import { routerProcessName } from '../router/protocol.js';
import type { AppDefinition, ReleaseRecord, StandbyRecord } from '../release/store.js';
import { childEnv, phase, warn, type Context } from './context.js';
import { record } from './audit.js';
import { markBad } from '../release/history.js';
import { runSoak, type SoakRecord } from './soak.js';
import { linkRetainedAssets } from '../release/assets.js';
import { standbyVerdict, standbyView } from './standby.js';

export interface SwitchResult {
  app: AppDefinition;
  previous: string | null;
  health: HealthOutcome;
  url: string;
  /** The soak (router strategy, deploy only): passed, or still running when the caller did not wait. */
  soak: SoakRecord | null;
}

export interface SwitchOptions {
  /** Keep the previous release warm for `soak.durationMs` and judge the new one on live traffic (deploy). */
  soak?: boolean;
  /** Called once the soak started (the caller may return then: the soak goes on in this process). */
  onSoakStarted?: (soak: SoakRecord) => void;
}

export function appDefinition(ctx: Context, release: ReleaseRecord): AppDefinition {
  const sha = release.manifest?.sha ?? '';
  // A script given as a path inside the app (server.mjs, node_modules/next/dist/bin/next) is made absolute:
  // PM2 resolves relative scripts against the CLI's cwd, not --cwd. A bare command (npm) stays as it is.
  const script = ctx.config.app.script;
  const local = path.resolve(release.cwd, script);
  const resolvedScript = !path.isAbsolute(script) && (script.includes('/') || fs.existsSync(local)) && isInside(local, release.cwd) ? local : script;
  // Behind the router a release needs no other address than loopback: bind it there where the start
  // command takes a host, so visitors cannot bypass the router (its gate, its numbers) on a private port.
  const args = (ctx.config.app.strategy === 'router' ? loopbackArgs(resolvedScript, ctx.config.app.args, releaseScripts(release.cwd)) : undefined) ?? [
    ...ctx.config.app.args,
  ];
  return {
    name: ctx.config.app.name,
    script: resolvedScript,
    args,
    cwd: release.cwd,
    env: { ...ctx.config.app.env, RELEASE_ID: release.id, RELEASE_SHA: sha },
    ...(ctx.config.app.strategy === 'cluster' ? { execMode: 'cluster' as const, instances: ctx.config.app.instances } : { execMode: 'fork' as const }),
  };
}

/** The release's package.json scripts (empty when it has none or it does not parse). */
function releaseScripts(cwd: string): Record<string, string> {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(cwd, 'package.json'), 'utf8')) as { scripts?: Record<string, unknown> };
    return Object.fromEntries(Object.entries(pkg.scripts ?? {}).filter((e): e is [string, string] => typeof e[1] === 'string'));
  } catch {
    return {};
  }
}

/** The compiled router entry (dist/router/main.js), from src/ (tests) or dist/ alike. */
export const ROUTER_MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/router/main.js');

/** How PM2 runs the app's router (the same definition goes into active.json for the reboot path). */
export function routerDefinition(ctx: Context): AppDefinition {
  const { app, router, releasesDir } = ctx.config;
  const args = ['--app', app.name, '--port', String(appPort(app)), '--releases-dir', releasesDir, '--hold-ms', String(router.holdMs)];
  if (router.host) args.push('--host', router.host);
  return {
    name: routerProcessName(app.name),
    script: ROUTER_MAIN,
    args,
    cwd: releasesDir,
    env: {},
    // Cluster mode: PM2's daemon holds the public port, so a replacement router (a changed config) shares it
    // with the old one while the old one finishes (pm2/router-drift.ts).
    execMode: 'cluster',
    instances: 1,
    killTimeoutMs: 10_000,
    // A small young generation keeps the router's resident memory low; it allocates little per request.
    nodeArgs: ['--max-semi-space-size=2', '--max-old-space-size=128'],
  };
}

export function routerControl(ctx: Context): RouterControl {
  return new RouterControl(ctx.config.releasesDir, ctx.config.app.name);
}

/** The release PM2 serves now, by its cwd (the ground truth), else by the recorded state. */
export async function currentRelease(ctx: Context): Promise<string | null> {
  if (ctx.config.app.strategy === 'router') {
    // Behind a running router, the live release is the one it routes to.
    const routed = (await routerControl(ctx).readState())?.live?.release;
    const routerUp = (await ctx.pm2.processes(routerProcessName(ctx.config.app.name)).catch(() => [])).length > 0;
    if (routed && routerUp && (await ctx.store.get(routed))) return routed;
  }
  const procs = await ctx.pm2.processes(ctx.config.app.name).catch(() => []);
  if (procs.length > 0) {
    const records = await ctx.store.list();
    for (const p of procs) {
      const hit = records.find((r) => samePath(r.cwd, p.cwd));
      if (hit) return hit.id;
    }
  }
  return (await ctx.store.readState())?.active ?? null;
}

export function samePath(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
}

export interface WaitForAppOptions {
  name: string;
  checks: { url: string; expectStatus: number[] }[];
  settleMs: number;
  signal?: AbortSignal;
  /** Watch only these PM2 ids (a cluster switch's new processes); default: every process of `name`. */
  only?: () => Promise<number[]>;
  /** Restart counts to subtract: restarts from before we looked are history, not a crash loop. */
  restartsBefore?: Map<number, number>;
}

/** With PM2's bus watched, how often the gate still reads the process list (a backstop, not the watch). */
const GATE_LIST_MS = 1_000;

/**
 * The app's health gate: its HTTP checks answer and its PM2 processes stay online without restarting. The
 * processes are watched on PM2's bus (a crash fails the gate the moment PM2 reports it); where the bus cannot
 * be used, their list is read on every round instead.
 */
export async function waitForApp(ctx: Context, o: WaitForAppOptions): Promise<HealthOutcome> {
  const watch = await ProcessWatch.start(ctx.pm2, o.name);
  let listed: { ids: number[]; samples: StabilitySample[] } | undefined;
  let nextList = 0;
  try {
    return await waitHealthy({
      checks: o.checks,
      timeoutMs: ctx.config.app.healthcheck.timeoutMs,
      settleMs: o.settleMs,
      signal: o.signal,
      sample: async () => {
        if (!watch || !listed || Date.now() >= nextList) {
          const ids = o.only ? new Set(await o.only()) : undefined;
          const procs = (await ctx.pm2.processes(o.name, { fresh: true })).filter((p) => !ids || ids.has(p.pmId));
          listed = {
            ids: procs.map((p) => p.pmId),
            samples: procs.map((p) => ({ status: p.status, restarts: p.restarts - (o.restartsBefore?.get(p.pmId) ?? 0) })),
          };
          nextList = Date.now() + GATE_LIST_MS;
        }
        if (!watch) return listed.samples;
        // PM2 stopping them on a command (its own kill included) is said as PM2 says it; a crash counts as a restart.
        if (watch.stoppingOf(listed.ids)) return listed.samples.map((x) => ({ ...x, status: 'stopping' }));
        const crashes = watch.crashesOf(listed.ids);
        return crashes > 0 ? listed.samples.map((x) => ({ ...x, restarts: Math.max(x.restarts, crashes) })) : listed.samples;
      },
    });
  } finally {
    watch?.close();
  }
}

export async function switchToRelease(ctx: Context, release: ReleaseRecord, opts: SwitchOptions = {}): Promise<SwitchResult> {
  if (release.status !== 'ready') throw new Error(`release ${release.id} is ${release.status}, not ready`);
  const routed = ctx.config.app.strategy === 'router';
  // The target is the standby behind the router: one route change, no boot.
  if (routed) {
    const flipped = await flipToStandby(ctx, release);
    if (flipped) return flipped;
  }
  const app = appDefinition(ctx, release);
  const port = appPort(ctx.config.app);
  const url = healthUrl(ctx.config.app, port);
  const checks = healthChecks(ctx.config.app, port);
  const previous = await currentRelease(ctx);
  const strategy: SwitchStrategy = routed
    ? routedStrategy({
        control: routerControl(ctx),
        router: routerDefinition(ctx),
        portEnv: ctx.config.app.portEnv,
        releasePorts: ctx.config.router.releasePorts,
        drainTimeoutMs: ctx.config.router.drainTimeoutMs,
        ...(opts.soak && ctx.config.soak.durationMs > 0 ? { soak: { share: ctx.config.soak.canaryShare } } : {}),
        beforeRoute: () => failpoint(ctx.env, 'route'),
        beforeDrain: () => failpoint(ctx.env, 'drain'),
        now: () => ctx.now(),
        warn: (m) => warn(ctx, m),
        formerApps: ctx.formerApps,
        standby: (prev) => standbyVerdict(ctx, prev),
      })
    : strategyFor(ctx.config.app.strategy);

  // Pages rendered by the other retained builds keep getting their hashed chunks from whichever one serves.
  try {
    const others = (await ctx.store.list()).filter((r) => r.status === 'ready' && r.id !== release.id);
    const a = await linkRetainedAssets(release, others, ctx.config.app.staticAssets);
    if (a.linked > 0) ctx.logger.info(`linked ${a.linked} hashed asset(s) of ${a.from.join(', ')} into ${release.id} (no version skew)`);
  } catch (err) {
    warn(ctx, `could not link older builds' assets into ${release.id} (${(err as Error).message}): pages of older builds may miss chunks`);
  }

  // The env we hand to the pm2 CLI becomes the app's env: the caller's, minus the outer npm run's variables.
  const pm2Env = childEnv(ctx.env);
  const handle = await phase(ctx, 'switch', async () => {
    try {
      return await strategy.switch({
        pm2: ctx.pm2.withEnv(pm2Env),
        logger: ctx.logger,
        target: app,
        port,
        portWaitMs: ctx.config.app.portReleaseTimeoutMs,
        signal: ctx.signal,
        beforeStart: () => failpoint(ctx.env, 'switch'),
        ownedRoot: ctx.config.releasesDir,
        routerName: routerProcessName(app.name),
      });
    } catch (err) {
      // The strategy already started the previous app again (when there was one): make that a fact before
      // reporting, and save the dump so a reboot brings back the same app.
      if ((await ctx.pm2.processes(app.name).catch(() => [])).length > 0) {
        const again = await waitForApp(ctx, { name: app.name, checks, settleMs: 0 });
        await ctx.pm2.save().catch(() => undefined);
        if (err instanceof Error) err.message += again.ok ? ' and answers' : `, but it does not answer (${again.reason})`;
      }
      throw err;
    }
  });

  /** Puts the previous app back and saves the dump again; returns a one-line account for the error. */
  const putBack = async (why: string, markAsBad: boolean): Promise<string> => {
    ctx.logger.error(`release ${release.id} ${why}; putting ${previous ?? 'the previous app'} back`);
    const sha = release.manifest?.sha ?? null;
    // The gate said no: don't let automation deploy this sha again until a newer commit arrives.
    // A cancel is the caller's decision, not a verdict on the release.
    if (sha && markAsBad && !ctx.signal?.aborted)
      await markBad(ctx.config.releasesDir, {
        sha,
        release: release.id,
        reason: `health gate reverted it: ${why}`,
        markedAt: ctx.now().toISOString(),
        by: 'health-gate',
      }).catch(() => undefined);
    const outcome = await revertNow();
    await record(ctx, { action: 'revert', from: release.id, to: previous, sha, result: outcome.ok ? 'ok' : 'failed', detail: `${why}; ${outcome.text}` });
    return outcome.text;
  };

  const revertNow = async (): Promise<{ ok: boolean; text: string }> => {
    try {
      await handle.revert();
    } catch (err) {
      const msg = `putting the previous app back failed too: ${(err as Error).message}`;
      ctx.logger.error(msg);
      return { ok: false, text: msg };
    }
    if (!handle.before && !handle.keepsOld) return { ok: false, text: 'there was no previous app to put back' };
    // Wait until the previous app answers again, so "serving again" is a fact, not a hope.
    const again = await waitForApp(ctx, { name: app.name, checks, settleMs: 0 });
    const back = again.ok
      ? `${previous ?? 'the previous app'} is serving again`
      : `${previous ?? 'the previous app'} was restarted but is not healthy either (${again.reason})`;
    try {
      await ctx.pm2.save();
      return { ok: again.ok, text: back };
    } catch (err) {
      return { ok: false, text: `${back}, but pm2 save failed (${(err as Error).message}): run \`pm2 save\`` };
    }
  };

  const health = await phase(ctx, 'health', async () => {
    let outcome: HealthOutcome;
    try {
      failpoint(ctx.env, 'health');
      // Behind the router the new release is checked on its private port, before any visitor reaches it.
      const gate = handle.probePort !== undefined ? healthChecks(ctx.config.app, handle.probePort) : checks;
      outcome = await waitForApp(ctx, { name: app.name, checks: gate, settleMs: ctx.config.app.healthcheck.settleMs, signal: ctx.signal, only: handle.newIds });
      // Zero-downtime strategies retire the old release only now that the new one passed (the router's
      // route change is a phase of its own, below).
      if (outcome.ok && !routed) await handle.commit();
    } catch (err) {
      // Without PM2 there is nothing to check nor to put back: that is the error, not a verdict on the release.
      if (err instanceof ReleaseError && err.code === 'PM2_DAEMON_GONE') throw err;
      outcome = { ok: false, reason: (err as Error).message, probes: [], elapsedMs: 0 };
    }
    // The verdict came from PM2's list (the process gone, or shown stopping): PM2 itself may be stopping.
    if (!outcome.ok && /^(the PM2 process is gone|PM2 shows the app stopp)/.test(outcome.reason ?? '') && (await pm2Stopping(ctx)))
      throw new EnvironmentError(
        'PM2_DAEMON_GONE',
        `PM2 stopped during the health check of ${release.id} (every app is gone): not starting a daemon of our own`,
        {
          phase: 'health',
          hint: 'bring PM2 back (`sudo systemctl start pm2-<user>` or `pm2 resurrect`), then deploy again: the next run recovers what was interrupted',
          releaseId: release.id,
        },
      );
    if (!outcome.ok) {
      const reverted = await putBack(`is not healthy: ${outcome.reason}`, true);
      throw new SwitchError('HEALTH_FAILED', `release ${release.id} failed its health check (${outcome.reason}); ${reverted}`, {
        phase: 'health',
        hint: `see the app's output with \`pm2 logs ${app.name} --lines 100\``,
        releaseId: release.id,
      });
    }
    return outcome;
  });

  if (routed)
    await phase(ctx, 'route', async () => {
      try {
        await handle.commit();
      } catch (err) {
        if (handle.committed) throw err;
        // Not routed: the previous release never stopped serving. The release itself passed its gate, so it
        // is not marked bad.
        const reverted = await putBack(`could not be routed (${(err as Error).message})`, false);
        throw new SwitchError('ROUTE_FAILED', `the router did not switch to ${release.id} (${(err as Error).message}); ${reverted}`, {
          phase: 'route',
          hint: `check the router: pm2 logs ${routerProcessName(app.name)} --lines 50`,
          releaseId: release.id,
        });
      }
    });

  await phase(ctx, 'save', async () => {
    try {
      failpoint(ctx.env, 'save');
      await ctx.pm2.save();
      // PM2 stopping under this deploy (systemctl stop, `pm2 kill`: it deletes every app, then exits) may
      // have begun after the health gate: a dump saved then can lack apps (the router), and a reboot would
      // bring back a broken list. The live release, and behind the router the router, must still be up.
      await assertPm2StillUp(ctx, release, app.name, await handle.newIds().catch(() => []), routed);
    } catch (err) {
      if (err instanceof ReleaseError && err.code === 'PM2_DAEMON_GONE') throw err;
      if (handle.committed) {
        // Cluster: the old processes are already retired, so there is nothing to go back to. The new release
        // is healthy and serving; record it and say loudly that the dump is stale.
        await recordActive(ctx, release, handle.app ?? app);
        warn(ctx, `pm2 save failed (${(err as Error).message}): ${release.id} serves, but a reboot would bring back an older list; run \`pm2 save\``);
        return;
      }
      // Without a saved dump a reboot would bring back the old release while PM2 serves the new one:
      // go back to the state the dump describes rather than leave the two disagreeing.
      // A failed save says nothing about the release: it is not marked bad and can be deployed again.
      const reverted = await putBack(`could not be saved (${(err as Error).message})`, false);
      throw new SwitchError('SAVE_FAILED', `pm2 save failed after switching to ${release.id} (${(err as Error).message}); ${reverted}`, {
        phase: 'save',
        hint: `check that ${ctx.pm2.home} is writable, then deploy again`,
        releaseId: release.id,
      });
    }
    await recordActive(ctx, release, handle.app ?? app, await standbyRecord(ctx, handle.standby));
  });

  let soak: SoakRecord | null = null;
  if (handle.soak) {
    const before = await ctx.store.get(handle.soak.previous.release);
    if (before?.status === 'ready') {
      soak = await runSoak(ctx, {
        handle: handle.soak,
        release,
        previous: before,
        newIds: handle.newIds,
        recordActive: (r, port) => {
          // As it runs: on its private port.
          const def = appDefinition(ctx, r);
          def.env[ctx.config.app.portEnv] = String(port);
          return recordActive(ctx, r, def);
        },
        recordStandby: async (outcome) => {
          const rec = await standbyRecord(ctx, outcome);
          if (rec) await ctx.store.writeStandby(rec);
        },
        onStarted: opts.onSoakStarted,
      });
    } else {
      // The previous process is not a retained release (an adopted app): nothing to revert to by a route.
      await handle.soak.promote();
      await ctx.pm2.save().catch(() => undefined);
    }
  }

  return { app, previous: previous === release.id ? null : previous, health, url, soak };
}

/** Records `release` as active, as PM2 runs it (and, behind the router, how the router runs and the standby). */
async function recordActive(ctx: Context, release: ReleaseRecord, app: AppDefinition, standby?: StandbyRecord): Promise<void> {
  const router = ctx.config.app.strategy === 'router' ? routerDefinition(ctx) : undefined;
  await ctx.store.writeActive(release.id, release.manifest?.sha ?? '', app, ctx.now(), router, standby);
}

/** The state file's account of a switch's standby: the release as PM2 runs it (its private port), or why none. */
async function standbyRecord(ctx: Context, outcome: StandbyOutcome | undefined): Promise<StandbyRecord | undefined> {
  if (!outcome) return undefined;
  if ('off' in outcome) return { off: outcome.off };
  const rel = await ctx.store.get(outcome.release);
  if (!rel || rel.status !== 'ready') return undefined;
  return { id: rel.id, app: runningDefinition(ctx, rel, outcome.port) };
}

/** How PM2 runs `release` behind the router: its definition with the private port it was given. */
function runningDefinition(ctx: Context, release: ReleaseRecord, port: number): AppDefinition {
  const def = appDefinition(ctx, release);
  def.env[ctx.config.app.portEnv] = String(port);
  return def;
}

/**
 * Behind the router, when `release` is the standby (kept running, unrouted, since it was live) and still
 * answers its health checks on its private port: routes every visitor to it in one step, and the release
 * that served until now becomes the standby in its turn (same processes, so the same memory). No boot, no
 * PM2 write but the save. Undefined when there is no such standby: the caller boots the release as usual.
 */
export async function flipToStandby(ctx: Context, release: ReleaseRecord): Promise<SwitchResult | undefined> {
  const state = await ctx.store.readState();
  const standby = state?.standby;
  if (!standby || standby.id !== release.id) return undefined;
  const portEnv = ctx.config.app.portEnv;
  const port = Number(standby.app.env[portEnv]);
  const control = routerControl(ctx);
  const live = (await control.readState())?.live;
  if (!live || !Number.isInteger(port) || live.port === port) return undefined;
  const why = (reason: string) => {
    ctx.logger.info(`the standby ${release.id} ${reason}: starting it as usual`);
    return undefined;
  };
  const view = standbyView(state, await ctx.pm2.processes(ctx.config.app.name, { fresh: true }), portEnv);
  if (view.state !== 'warm') return why(`is ${view.reason}`);
  if (!(await routerRunning(ctx.pm2, routerProcessName(ctx.config.app.name)).catch(() => false))) return why('cannot be routed to: the router is not running');
  const checks = healthChecks(ctx.config.app, port);
  const appPortUrl = healthUrl(ctx.config.app, appPort(ctx.config.app));
  const started = performance.now();
  const probes = await probeAll(checks, 2_000);
  const failed = probes.find((p) => !p.ok);
  if (failed) return why(`does not answer its health check on :${port} (${failed.error ?? `HTTP ${failed.status}`})`);
  const previous = live.release || null;
  const prevRecord = previous ? await ctx.store.get(previous) : undefined;
  await phase(ctx, 'route', async () => {
    failpoint(ctx.env, 'route');
    await control.route({ port, release: release.id }, { keep: [live.port] });
  });
  ctx.logger.info(`routed to the standby ${release.id} on :${port} (no boot); ${previous ?? 'the previous release'} stays warm as the standby`);
  await phase(ctx, 'save', async () => {
    await ctx.pm2.save();
    const next: StandbyRecord | undefined =
      prevRecord?.status === 'ready' ? { id: prevRecord.id, app: runningDefinition(ctx, prevRecord, live.port) } : undefined;
    await recordActive(ctx, release, standby.app, next);
  });
  return {
    app: standby.app,
    previous: previous === release.id ? null : previous,
    health: { ok: true, probes, elapsedMs: Math.round(performance.now() - started) },
    url: appPortUrl,
    soak: null,
  };
}

/**
 * After the save: the release's processes and the router are still online, else PM2 is stopping under us
 * (PM2_DAEMON_GONE, with the dump put back to the one before this save, which described a complete list).
 */
async function assertPm2StillUp(ctx: Context, release: ReleaseRecord, name: string, ids: number[], routed: boolean): Promise<void> {
  const procs = await ctx.pm2.list({ fresh: true }).catch((err: unknown) => {
    if (err instanceof ReleaseError && err.code === 'PM2_DAEMON_GONE') return [];
    throw err;
  });
  const live = procs.filter((p) => p.name === name && (ids.length === 0 || ids.includes(p.pmId)));
  const router = procs.filter((p) => p.name === routerProcessName(name));
  const up = live.length > 0 && live.every((p) => p.status === 'online') && (!routed || router.some((p) => p.status === 'online'));
  if (up || !(await pm2Stopping(ctx))) return;
  await ctx.pm2.restorePreviousDump().catch(() => undefined);
  throw new EnvironmentError('PM2_DAEMON_GONE', `PM2 stopped while ${release.id} was being saved (its apps are going away): not starting a daemon of our own`, {
    phase: 'save',
    hint: 'bring PM2 back (`sudo systemctl start pm2-<user>` or `pm2 resurrect`), then deploy again: the next run recovers what was interrupted',
    releaseId: release.id,
  });
}

/**
 * The new process vanished from PM2's list or is shown stopping: was PM2 itself stopping (systemctl stop,
 * `pm2 kill`: it stops every app, then exits) rather than the release crashing? Then no verdict on the
 * release is possible. A release that crashed leaves the others online (the router, the previous release).
 */
async function pm2Stopping(ctx: Context): Promise<boolean> {
  for (let i = 0; i < 30; i++) {
    if (!ctx.pm2.daemonRunning()) return true;
    const all = await ctx.pm2.list({ fresh: true }).catch((err: unknown) => (err instanceof ReleaseError && err.code === 'PM2_DAEMON_GONE' ? undefined : []));
    if (all === undefined) return true;
    // `stopping`/`stopped` come from a stop (PM2's own on kill), never from a crash (errored, restarting).
    if (all.some((p) => p.status !== 'stopping' && p.status !== 'stopped')) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/**
 * PM2 already serves `release` (an interrupted run switched but did not save or record it): check it is
 * healthy, then save the dump and record it as active, without restarting anything. Returns false when it
 * is not healthy (the caller switches properly instead).
 */
export async function adoptRunning(ctx: Context, release: ReleaseRecord): Promise<boolean> {
  const app = appDefinition(ctx, release);
  // Behind the router the release runs on the private port the router routes to: record it as it runs.
  if (ctx.config.app.strategy === 'router') {
    const live = (await routerControl(ctx).readState())?.live;
    if (live?.release === release.id) app.env[ctx.config.app.portEnv] = String(live.port);
  }
  const restartsBefore = new Map((await ctx.pm2.processes(app.name, { fresh: true })).map((p) => [p.pmId, p.restarts]));
  const outcome = await phase(ctx, 'health', () =>
    waitForApp(ctx, {
      name: app.name,
      checks: healthChecks(ctx.config.app, appPort(ctx.config.app)),
      settleMs: ctx.config.app.healthcheck.settleMs,
      signal: ctx.signal,
      restartsBefore,
    }),
  );
  if (!outcome.ok) return false;
  await phase(ctx, 'save', async () => {
    await ctx.pm2.save();
    await recordActive(ctx, release, app);
  });
  return true;
}

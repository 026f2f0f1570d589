/** list, status and history: they only read (the releases, PM2, the router, the history file). */
import path from 'node:path';
import { appPort, healthUrl } from '../config.js';
import { BUILD_LOG, META_DIR } from '../release/store.js';
import { probe } from '../health.js';
import { createContext, phase, warn, type CommonOptions, type Context } from '../lifecycle/context.js';
import { checkReleaseHost } from '../lifecycle/checks.js';
import { routerProcessName } from '../router/protocol.js';
import { readBadShas, readHistory } from '../release/history.js';
import { releaseInfo, type HistoryResult, type ListResult, type RouterInfo, type StatusResult } from '../lifecycle/results.js';
import { readSoak, soakRunning } from '../lifecycle/soak.js';
import { currentRelease, routerControl, samePath } from '../lifecycle/switch-release.js';
import { checkRouterConfig, routerConfigView, routerDriftText } from '../lifecycle/router-config.js';
import { standbyView } from '../lifecycle/standby.js';

export type ListOptions = CommonOptions;

export async function list(opts: ListOptions = {}): Promise<ListResult> {
  const ctx = createContext(opts);
  const active = await currentRelease(ctx);
  const releases = await ctx.store.list();
  const marks = await readBadShas(ctx.config.releasesDir);
  return {
    ok: true,
    changed: false,
    active,
    releases: releases.map((r) => releaseInfo(r, active, ctx.store.buildLog(r.id), marks)),
    elsewhere: (await ctx.store.listElsewhere()).map((r) => releaseInfo(r, active, path.join(r.dir, META_DIR, BUILD_LOG), marks)),
  };
}

export interface HistoryOptions extends CommonOptions {
  limit?: number;
}

export async function history(opts: HistoryOptions = {}): Promise<HistoryResult> {
  const ctx = createContext(opts);
  return { ok: true, changed: false, entries: await readHistory(ctx.config.releasesDir, opts.limit) };
}

export type StatusOptions = CommonOptions;

export async function status(opts: StatusOptions = {}): Promise<StatusResult> {
  const ctx = createContext(opts);
  const name = ctx.config.app.name;
  const procs = await phase(ctx, 'status', () => ctx.pm2.processes(name));
  const releases = await ctx.store.list();
  const state = await ctx.store.readState();
  const router = await routerInfo(ctx);
  // Behind the router the live release is the one it routes to (a draining one may still run beside it).
  const routedProc = router?.live ? procs.find((p) => p.vars[ctx.config.app.portEnv] === String(router.live!.port)) : undefined;
  const proc = routedProc ?? procs[0];
  const served = proc ? releases.find((r) => samePath(r.cwd, proc.cwd)) : undefined;
  const url = healthUrl(ctx.config.app, appPort(ctx.config.app));
  const h = await probe({ url, expectStatus: ctx.config.app.healthcheck.expectStatus });

  // Behind the router the standby runs beside the live release, from its own directory.
  const standby = ctx.config.app.strategy === 'router' ? standbyView(state, procs, ctx.config.app.portEnv) : null;
  const standbyProc = (p: (typeof procs)[number]) => standby?.release != null && p.releaseId === standby.release;

  let reason: string | null = null;
  if (!proc && state) reason = `PM2 has no app named ${name}, but ${state.active} is recorded as active`;
  else if (proc && !served) reason = `PM2 runs ${name} from ${proc.cwd}, which is not a retained release`;
  else if (proc && served && state && served.id !== state.active)
    reason = `PM2 serves ${served.id} but ${state.active} is recorded as active (an interrupted switch?)`;
  else if (procs.some((p) => p.cwd !== proc?.cwd && !standbyProc(p))) reason = `PM2 runs ${name} from several directories`;
  else if (router && !router.running) reason = `the router ${routerProcessName(name)} is not running: ${router.error ?? 'no answer'}`;
  else if (router?.live && served && router.live.release !== served.id) reason = `the router routes to ${router.live.release}, PM2 serves ${served.id}`;
  // The config changed under the running router: that explains the rest, so it comes first.
  const routerCheck = await checkRouterConfig(ctx).catch(() => null);
  if (routerCheck?.differences.length) reason = `${routerDriftText(routerCheck)}${reason ? `; ${reason}` : ''}`;

  // A release reachable around the router is worth a line on every status (doctor says the same).
  const exposure = await checkReleaseHost(ctx).catch(() => undefined);
  if (exposure?.status === 'warn') warn(ctx, `${exposure.message}; fix: ${exposure.fix}`);

  return {
    ok: true,
    changed: false,
    app: name,
    active: served ? releaseInfo(served, served.id, ctx.store.buildLog(served.id)) : null,
    recorded: state?.active ?? null,
    pm2: proc
      ? {
          name,
          status: proc.status,
          pid: proc.pid,
          pmId: proc.pmId,
          cwd: proc.cwd,
          restarts: proc.restarts,
          uptimeSince: proc.uptimeSince ? new Date(proc.uptimeSince).toISOString() : null,
          releaseId: proc.releaseId ?? null,
          processes: procs.length,
        }
      : null,
    health: { url, ok: h.ok, status: h.status ?? null, error: h.error ?? null },
    drift: { detected: reason !== null, reason },
    router,
    standby,
    soak: await soakInfo(ctx),
    routerConfig: routerCheck ? routerConfigView(routerCheck) : null,
    warnings: ctx.warnings,
  };
}

async function soakInfo(ctx: Context): Promise<StatusResult['soak']> {
  const r = await readSoak(ctx.config.releasesDir, ctx.config.app.name);
  if (!r) return null;
  const running = soakRunning(r);
  return { ...r, running, timeLeftMs: running ? Math.max(0, Date.parse(r.endsAt) - ctx.now().getTime()) : 0 };
}

/** The router's own account (control socket), when the app runs behind one. */
async function routerInfo(ctx: Context): Promise<RouterInfo | null> {
  const name = routerProcessName(ctx.config.app.name);
  const inPm2 = (await ctx.pm2.processes(name).catch(() => [])).filter((p) => p.status === 'online');
  if (ctx.config.app.strategy !== 'router' && inPm2.length === 0) return null;
  const port = appPort(ctx.config.app) ?? 0;
  const none: RouterInfo = { running: false, listening: false, port, live: null, canary: null, upstreams: [], held: 0, stats: [], error: null };
  if (inPm2.length === 0) return { ...none, live: (await routerControl(ctx).readState())?.live ?? null, error: 'not running in PM2' };
  try {
    const s = await routerControl(ctx).status();
    return {
      running: true,
      listening: s.listening,
      port: s.port,
      live: s.live,
      canary: s.canary ?? null,
      upstreams: s.upstreams,
      held: s.held,
      stats: s.stats.map(({ release, requests, rps, errors5xx, rate5xx, p50Ms, p99Ms }) => ({ release, requests, rps, errors5xx, rate5xx, p50Ms, p99Ms })),
      error: null,
    };
  } catch (err) {
    return { ...none, error: (err as Error).message };
  }
}

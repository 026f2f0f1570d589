/**
 * The soak: after a deploy's route change the previous release keeps running, warm and unrouted (or live
 * beside a canary share), for `soak.durationMs`. Within it the new release is watched on what visitors
 * get (the router's per-release numbers, judged by release/gate.ts against the previous release's),
 * on its PM2 restarts and on its health checks; an operator's `rollback` lands here too. A failed soak is
 * a route change back: the previous release answers again at once, no boot. A passed soak promotes: every
 * visitor to the new release, the previous one drained and deleted.
 *
 * The soak's state is a file beside the router's (`.router/<app>.soak.json`): `status` reads it for the
 * numbers and the time left, `rollback` asks the running soak to revert through `.router/<app>.soak-stop`.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import writeFileAtomic from 'write-file-atomic';
import { healthChecks } from '../config.js';
import { ExitCode, ReleaseError, SwitchError } from '../errors.js';
import { probeAll } from '../health.js';
import { judge, numbers, type GateThresholds, type TrafficNumbers } from '../release/gate.js';
import { markBad, whoAmI } from '../release/history.js';
import type { ReleaseRecord } from '../release/store.js';
import { pidAlive } from '../release/store.js';
import { routerPaths, sharePercent } from '../router/protocol.js';
import { ratePercent } from '../units.js';
import type { SoakHandle, StandbyOutcome } from '../pm2/switch.js';
import { ProcessWatch } from '../pm2/watch.js';
import { record } from './audit.js';
import { phase, warn, type Context } from './context.js';

export type SoakState = 'running' | 'passed' | 'reverted' | 'rolled-back' | 'cancelled' | 'interrupted';

/** What a soak was, is, or ended as: the state file, the deploy result's `soak`, the history line's. */
export interface SoakRecord {
  version: 1;
  state: SoakState;
  pid: number;
  host: string;
  release: string;
  sha: string;
  previous: string;
  /** 1: every visitor on the new release; below: the canary share. */
  share: number;
  startedAt: string;
  endsAt: string;
  endedAt: string | null;
  /** The previous release's numbers: before the route change, or (canary) beside the new one now. */
  baseline: TrafficNumbers | null;
  /** The new release's numbers, at the last reading. */
  candidate: TrafficNumbers | null;
  /** Whether the new release had enough requests to be judged on its traffic (else: health checks alone). */
  judged: boolean;
  /** Why it ended so (a revert's measured cause; a pass says what it was judged on). */
  reason: string | null;
  /** From the route change back to the previous release answering (a revert), in ms. */
  revertMs: number | null;
  thresholds: GateThresholds;
}

export function soakPaths(releasesDir: string, app: string): { state: string; stop: string } {
  const dir = routerPaths(releasesDir, app).dir;
  return { state: path.join(dir, `${app}.soak.json`), stop: path.join(dir, `${app}.soak-stop`) };
}

export async function readSoak(releasesDir: string, app: string): Promise<SoakRecord | undefined> {
  try {
    const r = JSON.parse(await fsp.readFile(soakPaths(releasesDir, app).state, 'utf8')) as SoakRecord;
    return r.version === 1 && typeof r.release === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** A soak whose process is alive on this host (a record saying "running" of a dead pid was interrupted). */
export function soakRunning(r: SoakRecord | undefined): boolean {
  return !!r && r.state === 'running' && r.host === os.hostname() && pidAlive(r.pid);
}

export async function writeSoakRecord(releasesDir: string, app: string, r: SoakRecord): Promise<void> {
  await writeFileAtomic(soakPaths(releasesDir, app).state, JSON.stringify(r, null, 2) + '\n', { mode: 0o600 });
}

export interface SoakInput {
  handle: SoakHandle;
  release: ReleaseRecord;
  previous: ReleaseRecord;
  /** PM2 ids of the new release's processes. */
  newIds: () => Promise<number[]>;
  /** Records a release as active, as it runs (the revert records the previous one again). */
  recordActive: (release: ReleaseRecord, port: number) => Promise<void>;
  /** Records what became of the previous release once the soak passed (the standby, or why not). */
  recordStandby?: (outcome: StandbyOutcome | undefined) => Promise<void>;
  onStarted?: (r: SoakRecord) => void;
}

const TICK_MS = 50;
const READ_MS = 1_000;
/** With PM2's bus watched, how often the soak still reads the process list (a backstop). */
const LIST_MS = 5_000;

/** Runs the soak to its end; returns the passed record, or throws (exit 5, phase soak) after reverting. */
export async function runSoak(ctx: Context, input: SoakInput): Promise<SoakRecord> {
  const { handle, release, previous } = input;
  const app = ctx.config.app.name;
  const cfg = ctx.config.soak;
  const paths = soakPaths(ctx.config.releasesDir, app);
  const save = (r: SoakRecord) => writeSoakRecord(ctx.config.releasesDir, app, r).catch(() => undefined);
  await fsp.rm(paths.stop, { force: true });
  const started = ctx.now();
  const rec: SoakRecord = {
    version: 1,
    state: 'running',
    pid: process.pid,
    host: os.hostname(),
    release: release.id,
    sha: release.manifest?.sha ?? '',
    previous: previous.id,
    share: handle.share,
    startedAt: started.toISOString(),
    endsAt: new Date(started.getTime() + cfg.durationMs).toISOString(),
    endedAt: null,
    baseline: numbers(handle.baseline),
    candidate: null,
    judged: false,
    reason: null,
    revertMs: null,
    thresholds: { minRequests: cfg.minRequests, max5xxRate: cfg.max5xxRate, p99Factor: cfg.p99Factor, minP99Ms: cfg.minP99Ms },
  };
  await save(rec);
  const share = handle.share < 1 ? `${sharePercent(handle.share)} of visitors` : 'every visitor';
  ctx.logger.info(`soak: ${share} on ${release.id} for ${Math.round(cfg.durationMs / 1000)} s; ${previous.id} stays warm for an instant revert`);
  input.onStarted?.({ ...rec });

  const control = handle.control;
  const checks = healthChecks(ctx.config.app, handle.next.port);
  const ids = new Set(await input.newIds());
  const restartsBefore = new Map((await ctx.pm2.processes(app, { fresh: true })).filter((p) => ids.has(p.pmId)).map((p) => [p.pmId, p.restarts]));
  // Its processes are watched on PM2's bus: a crash trips the soak when PM2 reports it. The list is still read,
  // every few seconds, as a backstop (and on every reading where the bus cannot be used).
  const watch = await ProcessWatch.start(ctx.pm2, app);
  let nextList = 0;
  const deadline = started.getTime() + cfg.durationMs;
  let nextRead = 0;
  let nextHealth = Date.now() + cfg.healthIntervalMs;
  let outcome: { state: Exclude<SoakState, 'running' | 'passed' | 'interrupted'>; reason: string } | undefined;

  let reading: Promise<void> | undefined;
  let probing: Promise<void> | undefined;
  let failure: Error | undefined;
  const trip = (reason: string) => {
    outcome ??= { state: 'reverted', reason };
  };
  const readTraffic = async () => {
    try {
      const status = await control.status().catch(() => undefined); // a router PM2 is restarting: no reading, no verdict
      if (status) {
        rec.candidate = numbers(status.stats.find((s) => s.release === release.id)) ?? { requests: 0, errors5xx: 0, rate5xx: 0, p99Ms: null };
        // With a canary the previous release serves the other visitors right now: that is the fairest baseline.
        if (handle.share < 1) rec.baseline = numbers(status.stats.find((s) => s.release === previous.id)) ?? rec.baseline;
        const v = judge(rec.candidate, rec.baseline, rec.thresholds);
        rec.judged = rec.judged || v.judged;
        if (v.trip) return trip(v.reason ?? 'the traffic gate tripped');
      }
      // A crash on the bus trips the soak in the loop below, at once; a stop on a command is said here.
      if (watch?.stoppingOf(ids)) return trip('PM2 stopped it (a command, not a crash)');
      if (!watch || Date.now() >= nextList) {
        nextList = Date.now() + LIST_MS;
        const procs = (await ctx.pm2.processes(app, { fresh: true })).filter((p) => ids.has(p.pmId));
        const restarted = procs.reduce((n, p) => n + Math.max(0, p.restarts - (restartsBefore.get(p.pmId) ?? 0)), 0);
        const down = procs.find((p) => p.status !== 'online');
        if (procs.length === 0) return trip('its PM2 process is gone');
        if (restarted > 0) return trip(`PM2 restarted it ${restarted} time(s) during the soak`);
        if (down) return trip(`it is ${down.status} in PM2`);
      }
      if (!outcome) await save(rec);
    } catch (err) {
      failure = err as Error;
    }
  };
  const probeHealth = async () => {
    const failed = (await probeAll(checks, 5_000)).find((p) => !p.ok);
    if (failed) trip(`health check ${failed.url} answered ${failed.status ?? failed.error}`);
  };
  await phase(ctx, 'soak', async () => {
    while (!outcome) {
      if (ctx.signal?.aborted) {
        outcome = { state: 'cancelled', reason: 'the deploy was cancelled during the soak' };
        break;
      }
      const stop = await fsp.readFile(paths.stop, 'utf8').catch(() => undefined);
      if (stop !== undefined) {
        let by = 'an operator';
        try {
          by = (JSON.parse(stop) as { by?: string }).by ?? by;
        } catch {
          /* an empty request is a request all the same */
        }
        outcome = { state: 'rolled-back', reason: `rolled back by ${by} during the soak` };
        break;
      }
      // A crash PM2 reported on its bus trips the soak now, not at the next reading.
      const crashed = watch?.crashesOf(ids) ?? 0;
      if (crashed > 0) {
        trip(`PM2 restarted it ${crashed} time(s) during the soak`);
        break;
      }
      // The readings (router numbers, PM2's list, health probes) take up to a second under load; they run
      // beside this loop, so a stop request or a cancel is seen within a tick.
      const now = Date.now();
      if (!reading && now >= nextRead) {
        nextRead = now + READ_MS;
        reading = readTraffic().finally(() => (reading = undefined));
      }
      if (!probing && now >= nextHealth) {
        nextHealth = now + cfg.healthIntervalMs;
        probing = probeHealth().finally(() => (probing = undefined));
      }
      if (failure) throw failure;
      if (Date.now() >= deadline) break;
      await sleep(TICK_MS);
    }
  }).catch((err: unknown) => {
    // The phase wrapper turns an abort into CANCELLED; the loop already noted it. Anything else (PM2 gone,
    // the state file unwritable) means the release can no longer be watched: the previous one takes over.
    if (err instanceof ReleaseError && err.code === 'CANCELLED') outcome ??= { state: 'cancelled', reason: 'the deploy was cancelled during the soak' };
    else outcome ??= { state: 'reverted', reason: `the soak could not watch it (${(err as Error).message.split('\n')[0]})` };
  });

  await Promise.all([reading, probing]);
  watch?.close();
  if (!outcome) {
    rec.reason = rec.judged
      ? `passed on ${rec.candidate?.requests ?? 0} requests (5xx ${ratePercent(rec.candidate?.rate5xx ?? 0)}, p99 ${rec.candidate?.p99Ms ?? '-'} ms)`
      : `passed on its health checks alone (${rec.candidate?.requests ?? 0} requests, below the minimum of ${cfg.minRequests})`;
    let kept = false;
    try {
      const standby = await handle.promote();
      kept = !!standby && 'port' in standby;
      await input.recordStandby?.(standby);
    } catch (err) {
      warn(ctx, `retiring ${previous.id} after the soak failed (${(err as Error).message}); the next deploy removes it`);
    }
    await ctx.pm2.save().catch((err: Error) => warn(ctx, `pm2 save after the soak failed (${err.message}): run \`pm2 save\``));
    rec.state = 'passed';
    rec.endedAt = ctx.now().toISOString();
    await save(rec);
    ctx.logger.info(`soak passed: ${rec.reason}; ${previous.id} ${kept ? 'stays warm as the standby (a rollback is a route change)' : 'retired'}`);
    return rec;
  }

  // Revert: one route change; the previous release never stopped running.
  const t0 = performance.now();
  let revertError: string | undefined;
  try {
    await handle.revertRoute();
    rec.revertMs = Math.round(performance.now() - t0);
  } catch (err) {
    revertError = (err as Error).message;
  }
  rec.state = outcome.state;
  rec.reason = outcome.reason;
  rec.endedAt = ctx.now().toISOString();
  const sha = release.manifest?.sha ?? null;
  if (sha && outcome.state !== 'cancelled')
    await markBad(ctx.config.releasesDir, {
      sha,
      release: release.id,
      reason: outcome.state === 'reverted' ? `the soak reverted it: ${outcome.reason}` : outcome.reason,
      markedAt: ctx.now().toISOString(),
      by: outcome.state === 'reverted' ? 'soak-gate' : whoAmI().user,
    }).catch(() => undefined);
  const back = revertError ? `the route back to ${previous.id} failed: ${revertError}` : `${previous.id} serves again (route changed in ${rec.revertMs} ms)`;
  await record(ctx, {
    action: outcome.state === 'rolled-back' ? 'rollback' : 'revert',
    from: release.id,
    to: previous.id,
    sha,
    result: revertError ? 'failed' : 'ok',
    detail: `${outcome.reason}; ${back}`,
    soak: rec,
  });
  // Said before the clean-up: a waiting `rollback` returns once the previous release serves (and the mark
  // and the history line are written), not after the new release's drain and delete.
  await save(rec);
  try {
    await handle.retireNew();
    await input.recordActive(previous, handle.previous.port);
    await ctx.pm2.save();
  } catch (err) {
    warn(ctx, `cleaning up after the revert failed (${(err as Error).message}); the next deploy finishes it`);
  }
  ctx.logger.error(`soak: ${outcome.reason}; ${back}`);
  if (outcome.state === 'cancelled')
    throw new ReleaseError('CANCELLED', ExitCode.cancelled, `cancelled during the soak of ${release.id}; ${back}`, {
      phase: 'soak',
      hint: 'the live app was left as it was before the deploy',
      releaseId: release.id,
    });
  throw new SwitchError(
    outcome.state === 'rolled-back' ? 'ROLLED_BACK' : 'SOAK_FAILED',
    `${release.id} was reverted during the soak (${outcome.reason}); ${back}`,
    {
      phase: 'soak',
      hint:
        outcome.state === 'reverted'
          ? `the sha is marked bad; see \`pm2 logs ${app} --lines 100\` and \`pm2-release history\``
          : 'the sha is marked bad: a newer commit deploys normally',
      releaseId: release.id,
    },
  );
}

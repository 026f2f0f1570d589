/**
 * How the PM2 app moves from one release to another. PM2 cannot move a process to a new cwd
 * (`restart`/`reload`/`startOrReload` keep the old `pm_cwd`), so the `restart` strategy deletes the app and
 * starts it again from the new release, exactly like the seed runbook. A zero-downtime strategy (start the
 * new release beside the old one, then retire the old) fits the same interface.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SwitchError } from '../errors.js';
import { portHolder, waitPortFree } from '../health.js';
import type { Logger } from '../log.js';
import type { AppDefinition } from '../release/store.js';
import type { Pm2, Pm2Snapshot } from './client.js';
import type { ReleaseStats, RouterStatus } from '../router/protocol.js';

export interface SwitchInput {
  pm2: Pm2;
  logger: Logger;
  target: AppDefinition;
  /** The app's port, to wait until the old process let go of it. */
  port?: number;
  portWaitMs?: number;
  signal?: AbortSignal;
  /** Called after the old app stopped and before the new one starts (the fault-injection point). */
  beforeStart?: () => void;
  /**
   * The releases dir: a process outside PM2 that holds the port and runs from inside it is an orphan of an
   * app PM2 started for us (a child that escaped `pm2 delete`'s tree kill) and is stopped, by its pid.
   */
  ownedRoot?: string;
  /**
   * The app's router process name. The restart strategy removes a router it finds (the way back from the
   * router strategy: the app itself takes the port again) and, on a revert, starts it again.
   */
  routerName?: string;
}

export interface SwitchHandle {
  /** How the app ran before the switch (undefined on a first deploy). Holds env values: never log it. */
  before?: Pm2Snapshot;
  /** PM2 ids of the new release's processes (the health gate watches these). */
  newIds: () => Promise<number[]>;
  /** After the health gate passed: retire the old release (no-op for restart, which already stopped it). */
  commit: () => Promise<void>;
  /** Puts the app back as it was before the switch (deletes the new processes). */
  revert: () => Promise<void>;
  /** True when the old processes keep running until commit (cluster): a revert before commit loses nothing. */
  keepsOld?: boolean;
  /** True once commit() retired the old processes (router: once the route changed). */
  committed?: boolean;
  /** The port the health gate probes, when it is not the app's (router: the release's private port). */
  probePort?: number;
  /** The definition actually started, when it differs from the target (router: the private port). */
  app?: AppDefinition;
  /** Router with a soak: after commit the previous release still runs (standby, or live beside a canary). */
  soak?: SoakHandle;
  /** Router, after commit (or a soak's promote): the previous release kept running unrouted, or why not. */
  standby?: StandbyOutcome;
}

/** The previous release after a routed switch: kept as the standby (its private port), or retired and why. */
export type StandbyOutcome = { release: string; port: number } | { off: string };

/** A committed switch whose previous release stays warm until the soak ends. */
export interface SoakHandle {
  previous: { port: number; release: string };
  next: { port: number; release: string };
  /** 1: every visitor goes to the new release; below 1: that share of visitors (the canary). */
  share: number;
  /** The previous release's router numbers just before the route changed (its recent baseline). */
  baseline: ReleaseStats | undefined;
  /** The soak passed: every visitor to the new release; the previous one stays as the standby, or is drained and deleted. */
  promote: () => Promise<StandbyOutcome | undefined>;
  /** The soak failed: every visitor back to the previous release at once (one route change). */
  revertRoute: () => Promise<void>;
  /** After revertRoute: the new release drained and deleted. */
  retireNew: () => Promise<void>;
  /** The router's account now (per-release numbers). */
  control: { status: () => Promise<RouterStatus> };
}

export interface SwitchStrategy {
  readonly name: string;
  /** Stops serving the old release and starts the target; resolves once PM2 has started it. */
  switch(input: SwitchInput): Promise<SwitchHandle>;
}

export const restartStrategy: SwitchStrategy = {
  name: 'restart',
  async switch(input) {
    const { pm2, target } = input;
    const before = await pm2.snapshot(target.name);
    const portWaitMs = input.portWaitMs ?? 15_000;

    const freePortOrExplain = async (): Promise<void> => {
      if (input.port === undefined) return;
      if (await waitPortFree(input.port, portWaitMs, input.signal)) return;
      let pid = await portHolder(input.port);
      if (pid && input.ownedRoot && (await stopOrphan(pid, input.ownedRoot, input.logger)) && (await waitPortFree(input.port, 5_000, input.signal))) return;
      pid = await portHolder(input.port);
      throw new SwitchError(
        'PORT_BUSY',
        `port ${input.port} is still in use ${portWaitMs / 1000} s after deleting ${target.name}${pid ? ` (held by pid ${pid})` : ''}`,
        {
          phase: 'switch',
          hint: pid ? `an orphan of the old app may hold it: check \`ps -o pid,args -p ${pid}\` and stop it` : 'find the process with `ss -ltnp`',
        },
      );
    };

    // Coming back from the router strategy: the router holds the port and the app runs on a private one.
    const router = input.routerName ? await pm2.snapshot(input.routerName) : undefined;

    const revert = async (): Promise<void> => {
      const now = await pm2.processes(target.name);
      if (now.length > 0) await pm2.delete(target.name);
      if (!before) return;
      if (router) {
        await pm2.startSnapshot(before);
        await pm2.startSnapshot(router);
        return;
      }
      await freePortOrExplain();
      await pm2.startSnapshot(before);
    };

    if (before) await pm2.delete(target.name);
    if (router && input.routerName) {
      input.logger.warn(`removing ${input.routerName}: the restart strategy serves the app port directly`);
      await pm2.delete(input.routerName);
    }
    try {
      await freePortOrExplain();
      input.beforeStart?.();
      await pm2.start(target);
    } catch (err) {
      input.logger.error('switch failed; putting the previous app back');
      await revert().then(
        () => {
          if (err instanceof Error && before) err.message += `; the previous app was started again`;
        },
        (revertErr: Error) => {
          input.logger.error({ err: revertErr.message }, 'revert failed');
          // Say it in the error itself: PM2 may now have no app at all, and the operator must know.
          if (err instanceof Error)
            err.message += `; the previous app could NOT be started again (${revertErr.message}): fix the cause, then \`pm2-release activate <previous id>\``;
        },
      );
      throw err;
    }
    return {
      before,
      revert,
      newIds: async () => (await pm2.processes(target.name)).map((p) => p.pmId),
      commit: async () => undefined,
    };
  },
};

/**
 * Zero downtime, for a Node script run in PM2 cluster mode: the new release starts as additional cluster
 * processes under the same name (PM2's cluster master shares the port between all of them), the health
 * gate watches only the new ids, and only then are the old ids deleted. If the new processes fail, only
 * they are deleted: the old release never stopped serving.
 *
 * The overlap window (from the new ids answering to the old ids' deletion) lasts the health settle time
 * plus the `pm2 delete` of the old ids (about 1 s with settleMs 500): both builds answer requests then. For Next.js, a page rendered by one build can ask for static chunks the
 * other build does not have; keep the window short (health settle time) and prefer `assetPrefix`/a CDN
 * for chunks if that matters.
 */
export const clusterStrategy: SwitchStrategy = {
  name: 'cluster',
  async switch(input) {
    const { pm2, target } = input;
    const old = await pm2.processes(target.name);
    // Sharing the port needs the old processes in cluster mode too; from fork mode (the seed's `pm2 start
    // npm`) or from nothing, the first switch is a restart.
    if (old.length === 0 || old.some((p) => p.execMode !== 'cluster_mode')) {
      input.logger.warn(
        old.length
          ? `${target.name} runs in ${old[0].execMode}: this switch is a restart, later ones are zero-downtime`
          : `${target.name} is not running: starting it`,
      );
      return restartStrategy.switch(input);
    }
    const oldIds = new Set(old.map((p) => p.pmId));
    const newIds = async () => (await pm2.processes(target.name)).filter((p) => !oldIds.has(p.pmId)).map((p) => p.pmId);
    const deleteIds = (ids: Iterable<number>) => deleteProcesses(pm2, ids, input.logger);
    const handle: SwitchHandle = {
      before: undefined,
      keepsOld: true,
      newIds,
      // After commit the old processes are gone: deleting the new ones would leave nothing serving.
      revert: async () => {
        if (handle.committed) throw new Error('the old release was already retired; the new one keeps serving');
        await deleteIds(await newIds());
      },
      commit: async () => {
        await deleteIds(oldIds);
        handle.committed = true;
      },
    };
    try {
      input.beforeStart?.();
      await pm2.start(target, { alongside: true });
    } catch (err) {
      await handle.revert();
      throw err;
    }
    return handle;
  },
};

/** Deletes PM2 processes by id; a failure is a warning (the next run removes what is left). */
export async function deleteProcesses(pm2: Pm2, ids: Iterable<number>, logger: Logger): Promise<void> {
  for (const id of ids) await pm2.delete(id).catch((err: Error) => logger.warn(`pm2 delete ${id}: ${err.message}`));
}

export function strategyFor(name: string): SwitchStrategy {
  if (name === 'restart') return restartStrategy;
  if (name === 'cluster') return clusterStrategy;
  throw new Error(`unknown switch strategy ${name}`);
}

/**
 * Stops a process that holds the app port although PM2 no longer manages it, when it runs from inside the
 * releases dir (so PM2 started it for pm2-release and it escaped the tree kill, e.g. a server spawned by
 * `npm start` just as the app was deleted). Killed by pid, SIGTERM then SIGKILL. Returns true if it was ours.
 */
export async function stopOrphan(pid: number, ownedRoot: string, logger: Logger): Promise<boolean> {
  const cwd = await fsp.readlink(`/proc/${pid}/cwd`).catch(() => '');
  const root = await fsp.realpath(ownedRoot).catch(() => ownedRoot);
  if (!cwd || !(cwd === root || cwd.startsWith(root + path.sep))) return false;
  logger.warn(`pid ${pid} (running from ${cwd}) holds the app port outside PM2: stopping it`);
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return true;
  }
  for (let i = 0; i < 30; i++) {
    await sleep(100);
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  return true;
}

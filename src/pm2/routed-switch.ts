/**
 * The `router` strategy: a stable front process (`<app>-router`) owns the app's public port and the
 * client connections; each release runs as a normal fork-mode PM2 process named like the app, on a private
 * loopback port given through `app.portEnv`. A switch:
 *
 *   start the target beside the live release on a free private port → health gate on that port (the caller)
 *   → commit: route new requests to it (one atomic step in the router) → drain the old release (its requests
 *   in flight finish, bounded) → delete its PM2 process.
 *
 * Anything that fails before the route changes deletes only the new process: the old release never stopped
 * serving. The first switch on a VM where the app itself holds the public port (started by hand, or by the
 * restart strategy) is the take-over: the router starts with its state file already naming the new release,
 * waits for the port, and the old process is deleted so the router can bind it (one short gap).
 */
import path from 'node:path';
import { SwitchError } from '../errors.js';
import { portFree, portHolder } from '../health.js';
import type { Logger } from '../log.js';
import type { AppDefinition } from '../release/store.js';
import type { RouterControl } from '../router/client.js';
import type { Pm2, Pm2Process } from './client.js';
import type { RunningRouter } from './router-drift.js';
import { deleteProcesses, stopOrphan, type SwitchHandle, type SwitchInput, type SwitchStrategy } from './switch.js';

export interface RoutingInput {
  control: RouterControl;
  /** How PM2 starts the router (name, script, args). */
  router: AppDefinition;
  portEnv: string;
  releasePorts: [number, number];
  drainTimeoutMs: number;
  /**
   * Keep the previous release warm after the route change, for a soak: `share` 1 routes every visitor to the
   * new release (the previous one on standby); below 1 only that share (the canary) goes to it.
   */
  soak?: { share: number };
  /** Failpoints: before the route changes, and after it, before the drain. */
  beforeRoute?: () => void;
  beforeDrain?: () => void;
  now: () => Date;
  warn: (message: string) => void;
  /** Former names of the app (renamed in the config): their release processes are the old release too. */
  formerApps?: string[];
  /**
   * Whether the previous release may stay running, unrouted, as the standby (router.standby, then the memory
   * it holds: `pids` are its PM2 processes). Without it the previous release is always retired.
   */
  standby?: (previous: { release: string; port: number; pids: number[] }) => Promise<{ keep: true } | { keep: false; reason: string }>;
}

/** The package.json script a runner invocation runs: `npm run start`, `npm start`, `yarn start`, `pnpm start`. */
export function runScriptName(args: string[]): string | undefined {
  if (args[0] === 'run' || args[0] === 'run-script') return args[1];
  if (args[0] === 'start') return 'start';
  return undefined;
}

/** The address each release is bound to behind the router: only the router (on this host) needs to reach it. */
export const RELEASE_HOST = '127.0.0.1';

/**
 * The start arguments that bind a release to loopback, when the start command is one we know takes a host:
 * `next start` run directly (`node_modules/next/dist/bin/next start`) or through `npm run <script>` whose
 * package.json script is a plain `next start …` (npm appends what follows `--`). Undefined when the command
 * cannot be told (another server, a script with `&&`): then status and doctor report the listening address.
 * Pure: `scripts` is the release's package.json scripts.
 */
export function loopbackArgs(script: string, args: string[], scripts: Record<string, string>): string[] | undefined {
  const names = /(^|\s)(-H|--hostname)(\s|=|$)/;
  if (args.some((a) => /^(-H|--hostname)(=|$)/.test(a))) return undefined;
  const base = path.basename(script);
  if ((base === 'next' || script.endsWith('next/dist/bin/next')) && args[0] === 'start') return [...args, '-H', RELEASE_HOST];
  if (base !== 'npm' && base !== 'npm-cli.js') return undefined;
  const name = runScriptName(args);
  const command = name ? scripts[name] : undefined;
  if (command === undefined || !/^\s*next\s+start(\s[^;&|<>`()\n]*)?$/.test(command) || names.test(command)) return undefined;
  const extra = args.slice(args[0] === 'start' ? 1 : 2);
  return extra.includes('--') ? [...args, '-H', RELEASE_HOST] : [...args, '--', '-H', RELEASE_HOST];
}

/** The processes' PM2 ids by the private port they serve on (undefined: no port variable, e.g. an adopted app). */
function byPort(procs: Pm2Process[], portEnv: string): Map<number | undefined, number[]> {
  const out = new Map<number | undefined, number[]>();
  for (const p of procs) out.set(portOf(p, portEnv), [...(out.get(portOf(p, portEnv)) ?? []), p.pmId]);
  return out;
}

/** PM2 ids and private ports of the app's release processes now. */
function portOf(p: Pm2Process, portEnv: string): number | undefined {
  const v = p.vars[portEnv];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/**
 * A free private port in the range, starting after the ones in use so consecutive releases alternate
 * (an operator reading `pm2 jlist` sees the new one beside the old).
 */
export async function choosePort(range: [number, number], inUse: number[]): Promise<number> {
  const [first, last] = range;
  const size = last - first + 1;
  const after = inUse.filter((p) => p >= first && p <= last).sort((a, b) => b - a)[0];
  const start = after === undefined ? 0 : after - first + 1;
  for (let i = 0; i < size; i++) {
    const port = first + ((start + i) % size);
    if (inUse.includes(port)) continue;
    if (await portFree(port)) return port;
  }
  throw new SwitchError('NO_RELEASE_PORT', `no free private port in ${first}-${last} for the new release`, {
    phase: 'switch',
    hint: 'free one (`ss -ltnp`) or set router.releasePorts to another range',
  });
}

export async function routerRunning(pm2: Pm2, name: string): Promise<boolean> {
  const procs = await pm2.processes(name, { fresh: true });
  return procs.some((p) => p.status === 'online' || p.status === 'launching');
}

export const routedStrategy = (routing: RoutingInput): SwitchStrategy => ({
  name: 'router',
  async switch(input: SwitchInput): Promise<SwitchHandle> {
    const { pm2, target, logger } = input;
    let old = await pm2.processes(target.name, { fresh: true });
    for (const former of routing.formerApps ?? []) if (former !== target.name) old.push(...(await pm2.processes(former)));
    // PM2 restarts a stopped or errored app of the same name instead of starting a second one: those serve
    // nothing anyway, so they go first.
    for (const p of old.filter((x) => x.status === 'stopped' || x.status === 'errored')) {
      logger.warn(`${target.name} (pm2 id ${p.pmId}) is ${p.status}: deleting it before starting the new release`);
      await pm2.delete(p.pmId);
    }
    old = old.filter((x) => x.status !== 'stopped' && x.status !== 'errored');
    const oldIds = new Set(old.map((p) => p.pmId));
    const port = await choosePort(
      routing.releasePorts,
      old.map((p) => portOf(p, routing.portEnv)).filter((p): p is number => p !== undefined),
    );
    const app: AppDefinition = { ...target, execMode: 'fork', env: { ...target.env, [routing.portEnv]: String(port) } };
    const newIds = async () => (await pm2.processes(target.name, { fresh: true })).filter((p) => !oldIds.has(p.pmId)).map((p) => p.pmId);
    const deleteIds = (ids: Iterable<number>) => deleteProcesses(pm2, ids, logger);

    const handle: SwitchHandle = {
      before: undefined,
      // A first deploy on a VM (no release process yet) has nothing to put back.
      keepsOld: old.length > 0,
      app,
      probePort: port,
      newIds,
      revert: async () => {
        if (handle.committed) throw new Error('the route already changed: the new release serves');
        await deleteIds(await newIds());
        await stopEscaped(port);
      },
      commit: async () => {
        routing.beforeRoute?.();
        const live = { port, release: String(target.env.RELEASE_ID ?? '') };
        const running = await routerRunning(pm2, routing.router.name);
        let previousPort: number | undefined;
        if (running) {
          const prevLive = (await routing.control.readState())?.live;
          previousPort = prevLive?.port;
          // The previous live release still runs from its own port (not an adopted app on the public one).
          const prevProcs = prevLive && prevLive.port !== port ? old.filter((p) => portOf(p, routing.portEnv) === prevLive.port) : [];
          // Anything else of the app (the standby before this switch, a leftover) is retired once the route changed.
          const others = old.filter((p) => !prevProcs.includes(p));
          // After the route changed the new release serves: a failure here is a warning, never a revert.
          const retireOthers = async (before?: () => void) => {
            try {
              before?.();
              for (const [otherPort, ids] of byPort(others, routing.portEnv)) await retire(otherPort, ids);
            } catch (err) {
              routing.warn(`retiring the former standby failed (${(err as Error).message}); the next deploy removes it`);
            }
          };
          if (routing.soak && prevLive && prevProcs.length > 0) {
            const share = routing.soak.share;
            const baseline = (await routing.control.status().catch(() => undefined))?.stats.find((x) => x.release === prevLive.release);
            if (share < 1) await routing.control.route(prevLive, { canary: { upstream: live, share } });
            else await routing.control.route(live, { keep: [prevLive.port] });
            handle.committed = true;
            await retireOthers();
            const prevList = prevProcs.map((p) => p.pmId);
            handle.soak = {
              previous: prevLive,
              next: live,
              share,
              baseline,
              promote: async () => {
                const verdict = await keepAsStandby(prevLive, prevProcs);
                if (verdict.keep) {
                  if (share < 1) await routing.control.route(live, { keep: [prevLive.port] });
                  return (handle.standby = { release: prevLive.release, port: prevLive.port });
                }
                if (share < 1) await routing.control.route(live);
                await retire(prevLive.port, prevList);
                return (handle.standby = verdict.reason === undefined ? undefined : { off: verdict.reason });
              },
              revertRoute: async () => {
                await routing.control.route(prevLive);
              },
              retireNew: async () => {
                await retire(port, await newIds());
              },
              control: routing.control,
            };
            return;
          }
          if (prevLive && prevProcs.length > 0) {
            const verdict = await keepAsStandby(prevLive, prevProcs);
            if (verdict.keep) {
              await routing.control.route(live, { keep: [prevLive.port] });
              handle.committed = true;
              handle.standby = { release: prevLive.release, port: prevLive.port };
              await retireOthers(routing.beforeDrain);
              return;
            }
            if (verdict.reason !== undefined) handle.standby = { off: verdict.reason };
          }
          await routing.control.route(live);
          handle.committed = true;
        } else {
          await takeOver(pm2, routing, live, old, logger);
          handle.committed = true;
          oldIds.clear(); // deleted by the take-over
        }
        // From here the new release serves: what follows may fail with a warning, never a revert.
        try {
          routing.beforeDrain?.();
          // Each old process with the port it served on drained first (the previous live one, a former standby).
          for (const [oldPort, ids] of byPort(
            old.filter((p) => oldIds.has(p.pmId)),
            routing.portEnv,
          ))
            await retire(oldPort !== port ? (oldPort ?? previousPort) : undefined, ids);
        } catch (err) {
          routing.warn(`retiring the previous release failed (${(err as Error).message}); the next deploy removes it`);
        }
      },
    };
    /** Whether the previous release stays as the standby; `reason` undefined: no standby wanted at all. */
    const keepAsStandby = async (prev: { port: number; release: string }, procs: Pm2Process[]): Promise<{ keep: true } | { keep: false; reason?: string }> => {
      if (!routing.standby) return { keep: false };
      if (!procs.every((p) => p.status === 'online'))
        return { keep: false, reason: `${prev.release} is not online (${procs.map((p) => p.status).join(', ')})` };
      return routing.standby({ release: prev.release, port: prev.port, pids: procs.map((p) => p.pid) });
    };
    /** Drains the upstream on `drainPort` (bounded) and deletes the PM2 processes `ids`. */
    const retire = async (drainPort: number | undefined, ids: Iterable<number>) => {
      if (drainPort !== undefined) {
        const d = await routing.control.drain(drainPort, routing.drainTimeoutMs);
        if (!d.drained) routing.warn(`a retired release still had ${d.abandoned} request(s) in flight after the drain timeout (${routing.drainTimeoutMs} ms)`);
      }
      await deleteIds(ids);
      if (drainPort !== undefined) await stopEscaped(drainPort);
    };
    /**
     * `npm start` killed by PM2 after its kill timeout leaves its server child running outside PM2, on the
     * release's private port: stop such a holder by pid when it runs from inside the releases dir.
     */
    const stopEscaped = async (releasePort: number) => {
      if (!input.ownedRoot) return;
      const pid = await portHolder(releasePort);
      if (pid !== undefined) await stopOrphan(pid, input.ownedRoot, logger);
    };
    try {
      input.beforeStart?.();
      await pm2.start(app, { alongside: old.length > 0 });
    } catch (err) {
      await handle.revert().catch(() => undefined);
      throw err;
    }
    return handle;
  },
});

/**
 * The first routed switch: the app (or nothing) holds the public port. The router's state file is written
 * first, so the router routes to the new release the moment it binds; it is started (it waits for the port
 * while the old process holds it), then the old process is deleted and the router takes the port.
 */
async function takeOver(pm2: Pm2, routing: RoutingInput, live: { port: number; release: string }, old: Pm2Process[], logger: Logger): Promise<void> {
  await routing.control.writeState(live, routing.now());
  const stale = await pm2.processes(routing.router.name, { fresh: true });
  for (const p of stale) await pm2.delete(p.pmId);
  await pm2.start(routing.router);
  // The router is up (its control socket answers) before the old app is stopped: the gap is only the time
  // between the old process closing its listening socket and the router binding it.
  await routing.control.status(15_000);
  if (old.length) logger.info(`taking over the app port: stopping ${old.map((p) => `pm2 id ${p.pmId}`).join(', ')} so the router can bind it`);
  for (const p of old) await pm2.delete(p.pmId);
  const deadline = Date.now() + 20_000;
  while (!(await routing.control.status(5_000)).listening) {
    if (Date.now() > deadline)
      throw new SwitchError('ROUTER_PORT_BUSY', `the router could not bind the app port within 20 s`, {
        phase: 'switch',
        hint: 'another process holds it: `ss -ltnp` names it; stop it and deploy again',
      });
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface RouterReplacement {
  /** The router PM2 runs now (pm2/router-drift.ts findRouter). */
  running: RunningRouter;
  /** How PM2 is to run it from now on (the config's definition). */
  router: AppDefinition;
  /** Control of the running router (its releases dir and app name) and of its replacement. */
  from: RouterControl;
  to: RouterControl;
  /** The new router shares the old one's address (cluster mode, same port and host): nothing is refused. */
  shared: boolean;
  now: () => Date;
  logger: Logger;
}

/**
 * Replaces the running router by one with the config's definition, routing where the old one routes:
 * its state is carried to the new releases dir or app name first, the new router is started beside the
 * old one and answers its control socket, then the old one is deleted (PM2's SIGINT: requests in flight
 * finish, keep-alive clients get `Connection: close` and reconnect to the new one). With `shared` the two
 * serve the port together in between; for a new port the new router binds it at once; otherwise the
 * old one lets go of the port first (the take-over's short gap).
 */
export async function replaceRouter(pm2: Pm2, r: RouterReplacement): Promise<void> {
  const state = await r.from.readState();
  if (r.from.paths.state !== r.to.paths.state && state?.live) await r.to.writeState(state.live, r.now());
  const before = new Set((await pm2.routers({ fresh: true })).map((p) => p.pmId));
  r.logger.info(`starting ${r.router.name} with the config's definition beside ${r.running.name} (pm2 id ${r.running.pmId})`);
  try {
    await pm2.start(r.router, { alongside: r.running.name === r.router.name });
    // The same socket path when neither the releases dir nor the name changed: wait for the new router's pid.
    const deadline = Date.now() + 20_000;
    while (true) {
      const s = await r.to.status(1_000).catch(() => undefined);
      if (s && s.pid !== r.running.pid && (s.listening || !r.shared)) break;
      if (Date.now() > deadline) throw new Error(`${r.router.name} did not answer on ${r.to.paths.socket} within 20 s`);
      await new Promise((res) => setTimeout(res, 50));
    }
  } catch (err) {
    for (const p of await pm2.routers({ fresh: true })) if (!before.has(p.pmId)) await pm2.delete(p.pmId).catch(() => undefined);
    throw new SwitchError('ROUTER_REPLACE_FAILED', `the router could not be replaced (${(err as Error).message}); ${r.running.name} still serves`, {
      phase: 'route',
      hint: `pm2 logs ${r.router.name} --lines 50; if \`pm2-release status\` says the router does not answer, \`pm2 restart ${r.running.name}\``,
    });
  }
  r.logger.info(`deleting the previous router ${r.running.name} (pm2 id ${r.running.pmId}): its requests in flight finish first`);
  await pm2.delete(r.running.pmId);
  const deadline = Date.now() + 20_000;
  while (!(await r.to.status(5_000)).listening) {
    if (Date.now() > deadline)
      throw new SwitchError('ROUTER_PORT_BUSY', `the new router could not bind the app port within 20 s`, {
        phase: 'route',
        hint: 'another process holds it: `ss -ltnp` names it; stop it and run the command again',
      });
    await new Promise((res) => setTimeout(res, 20));
  }
}

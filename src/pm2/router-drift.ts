/**
 * Pure: does the router PM2 runs match the one the config asks for, and how does a deploy get from one to
 * the other? The router's PM2 definition (its name, script and `--app/--port/--host/--releases-dir/--hold-ms`
 * arguments) is what the router lives by for months; a config edited since (a moved releases dir, a new
 * port, a renamed app, another hold) is noticed here, before anything is touched.
 *
 * How a change is applied (pm2/routed-switch.ts replaceRouter): the new router is started beside the old one
 * with the routing state carried over, then the old one is deleted (its requests in flight finish, its
 * keep-alive clients are told `Connection: close`). Routers run in PM2 cluster mode, so PM2's daemon holds
 * the public port and two routers on the same address share it: no connection is refused in between.
 * A new address (port or host) cannot be shared: the new router binds it (at once for a new port; after the
 * old one let go of it for a new host).
 */

/** The router's arguments that matter (src/router/main.ts parses the same ones). */
export interface RouterArgs {
  app?: string;
  port?: number;
  host?: string;
  releasesDir?: string;
  holdMs?: number;
}

/** A router process as PM2 runs it (from `pm2 jlist`: only the router's own definition, never an env). */
export interface RunningRouter {
  pmId: number;
  pid: number;
  name: string;
  status: string;
  script: string;
  args: string[];
  /** PM2's exec_mode: `cluster_mode` (shares the port through PM2's daemon) or `fork_mode` (older routers). */
  execMode: string;
}

/** How the config wants PM2 to run the router (lifecycle/switch-release.ts routerDefinition). */
export interface WantedRouter {
  name: string;
  script: string;
  args: string[];
}

export type RouterKey = 'name' | 'releasesDir' | 'port' | 'host' | 'holdMs' | 'script';

export interface RouterDifference {
  key: RouterKey;
  running: string;
  config: string;
}

export type RouterPlan =
  | { action: 'none' }
  /** Replace the router. `shared`: the new one shares the old one's address (no refused connection). */
  | { action: 'replace'; differences: RouterDifference[]; shared: boolean; rename: boolean }
  /** Not applied by this run: `reason` says why; the caller names the command that applies it. */
  | { action: 'refuse'; differences: RouterDifference[]; reason: string };

export function parseRouterArgs(args: readonly string[]): RouterArgs {
  const get = (name: string): string | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined;
  };
  const int = (name: string): number | undefined => {
    const v = get(name);
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  };
  return { app: get('app'), port: int('port'), host: get('host') || undefined, releasesDir: get('releases-dir'), holdMs: int('hold-ms') };
}

const trimSlash = (p: string | undefined) => (p === undefined ? undefined : p.replace(/\/+$/, '') || '/');
const show = (v: string | number | undefined) => (v === undefined ? '(default)' : String(v));

/** What differs between the running router and the wanted one, in a fixed order (empty: they match). */
export function routerDifferences(running: Pick<RunningRouter, 'name' | 'script' | 'args'>, wanted: WantedRouter): RouterDifference[] {
  const a = parseRouterArgs(running.args);
  const b = parseRouterArgs(wanted.args);
  const out: RouterDifference[] = [];
  const add = (key: RouterKey, x: string | number | undefined, y: string | number | undefined) => {
    if (x !== y) out.push({ key, running: show(x), config: show(y) });
  };
  add('name', running.name, wanted.name);
  add('releasesDir', trimSlash(a.releasesDir), trimSlash(b.releasesDir));
  add('port', a.port, b.port);
  add('host', a.host, b.host);
  // main.ts's default when the argument is absent.
  add('holdMs', a.holdMs ?? 15_000, b.holdMs ?? 15_000);
  add('script', running.script, wanted.script);
  return out;
}

/** One line: `releasesDir /a → /b, holdMs 15000 → 4000`. */
export function describeDifferences(diffs: readonly RouterDifference[]): string {
  return diffs.map((d) => `${d.key} ${d.running} → ${d.config}`).join(', ');
}

/**
 * The router process that serves this app: the one with the expected name, else one that runs for the
 * same releases dir or the same public port (the app was renamed). Online ones first.
 */
export function findRouter(
  routers: readonly RunningRouter[],
  want: { name: string; releasesDir: string; port: number | undefined },
): RunningRouter | undefined {
  const mine = routers.filter((r) => {
    if (r.name === want.name) return true;
    const a = parseRouterArgs(r.args);
    return trimSlash(a.releasesDir) === trimSlash(want.releasesDir) || (want.port !== undefined && a.port === want.port);
  });
  const rank = (r: RunningRouter) => (r.name === want.name ? 0 : 2) + (r.status === 'online' ? 0 : 1);
  return [...mine].sort((x, y) => rank(x) - rank(y))[0];
}

/**
 * What to do about a running router that differs from the config. A router in fork mode (started by a
 * pm2-release from before routers shared the port) cannot share it: replacing it refuses connections for a
 * moment, so an unattended deploy does not do it; `allowGap` (the operator's `--replace-router`) does.
 */
export function planRouterChange(running: RunningRouter | undefined, wanted: WantedRouter, opts: { allowGap?: boolean } = {}): RouterPlan {
  if (!running) return { action: 'none' };
  const differences = routerDifferences(running, wanted);
  if (differences.length === 0) return { action: 'none' };
  const a = parseRouterArgs(running.args);
  const b = parseRouterArgs(wanted.args);
  const sameAddress = a.port === b.port && a.host === b.host;
  const cluster = running.execMode === 'cluster_mode';
  const rename = running.name !== wanted.name;
  // A new port is bound beside the old one at once; a new host on the same port waits for the old router.
  const gap = (sameAddress && !cluster) || (!sameAddress && a.port === b.port);
  if (gap && !opts.allowGap)
    return {
      action: 'refuse',
      differences,
      reason: cluster
        ? `the router must let go of port ${show(a.port)} before one on host ${show(b.host)} can bind it (one short gap)`
        : `the running router is in fork mode and cannot share port ${show(a.port)} with its replacement (one short gap)`,
    };
  return { action: 'replace', differences, shared: sameAddress && cluster, rename };
}

/**
 * Failpoints for the fault-injection suite: `PM2_RELEASE_FAILPOINT=<point>:<fail|kill>` makes the named
 * point throw an injected error or SIGKILL this process, so tests can prove that every phase can be
 * interrupted without leaving work for an operator. Unset (always, in production) they do nothing.
 *
 * Points: archive, env, install, build, prune, verify, switch (after the old app is deleted, before the new
 * one starts), health (while the new release is being checked), save (before `pm2 save`), retain (after the
 * first removal started); with the router strategy also route and drain (see ROUTER_FAILPOINTS).
 */
import { ReleaseError, ExitCode } from './errors.js';

export const FAILPOINTS = ['archive', 'env', 'install', 'build', 'prune', 'verify', 'switch', 'health', 'save', 'retain'] as const;
/**
 * Points only the router strategy passes: `route` after the health gate, before the route changes; `drain`
 * after the route changed, before the previous release is drained and deleted.
 */
export const ROUTER_FAILPOINTS = ['route', 'drain'] as const;
/** Points only a deploy from an artifact passes: `unpack` after the app is unpacked, before env and install. */
export const ARTIFACT_FAILPOINTS = ['unpack'] as const;
export type Failpoint = (typeof FAILPOINTS)[number] | (typeof ROUTER_FAILPOINTS)[number] | (typeof ARTIFACT_FAILPOINTS)[number];

export function failpoint(env: Record<string, string | undefined>, point: Failpoint): void {
  const spec = env.PM2_RELEASE_FAILPOINT;
  if (!spec) return;
  const [name, action] = spec.split(':');
  if (name !== point) return;
  if (action === 'kill') process.kill(process.pid, 'SIGKILL');
  const exitCode = ['switch', 'health', 'save', 'route', 'drain'].includes(point)
    ? ExitCode.switch
    : ['retain'].includes(point)
      ? ExitCode.environment
      : ExitCode.build;
  throw new ReleaseError('INJECTED_FAILURE', exitCode, `injected failure at ${point}`, { phase: point === 'drain' ? 'route' : point });
}

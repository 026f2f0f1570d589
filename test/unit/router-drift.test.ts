/** Pure: the running router's PM2 definition against the config's, and the plan for a change. */
import { describe, expect, it } from 'vitest';
import { describeDifferences, findRouter, parseRouterArgs, planRouterChange, routerDifferences, type RunningRouter } from '../../src/pm2/router-drift.js';

const MAIN = '/opt/pm2-release/dist/router/main.js';
const args = (o: { app?: string; port?: number; dir?: string; hold?: number; host?: string } = {}) => [
  '--app',
  o.app ?? 'frontend-dev',
  '--port',
  String(o.port ?? 3001),
  '--releases-dir',
  o.dir ?? '/srv/releases',
  '--hold-ms',
  String(o.hold ?? 15000),
  ...(o.host ? ['--host', o.host] : []),
];
const running = (over: Partial<RunningRouter> = {}, a = args()): RunningRouter => ({
  pmId: 1,
  pid: 100,
  name: 'frontend-dev-router',
  status: 'online',
  script: MAIN,
  args: a,
  execMode: 'cluster_mode',
  ...over,
});
const wanted = (a = args(), name = 'frontend-dev-router') => ({ name, script: MAIN, args: a });

describe('router drift', () => {
  it('parses the arguments main.ts takes', () => {
    expect(parseRouterArgs(args({ host: '127.0.0.1' }))).toEqual({
      app: 'frontend-dev',
      port: 3001,
      host: '127.0.0.1',
      releasesDir: '/srv/releases',
      holdMs: 15000,
    });
    expect(parseRouterArgs(['--port'])).toEqual({ app: undefined, port: undefined, host: undefined, releasesDir: undefined, holdMs: undefined });
  });

  it('finds no difference in the same definition (a trailing slash and a default hold are the same)', () => {
    expect(routerDifferences(running(), wanted())).toEqual([]);
    const noHold = args().slice(0, 6);
    expect(routerDifferences(running({}, noHold), wanted(args({ dir: '/srv/releases/' })))).toEqual([]);
  });

  it('names each difference, running → config', () => {
    const d = routerDifferences(running(), wanted(args({ dir: '/data/releases', hold: 4000, port: 3002, host: '127.0.0.1' })));
    expect(d.map((x) => x.key)).toEqual(['releasesDir', 'port', 'host', 'holdMs']);
    expect(describeDifferences(d)).toBe('releasesDir /srv/releases → /data/releases, port 3001 → 3002, host (default) → 127.0.0.1, holdMs 15000 → 4000');
    expect(routerDifferences(running(), { ...wanted(), script: '/new/dist/router/main.js' })[0]).toEqual({
      key: 'script',
      running: MAIN,
      config: '/new/dist/router/main.js',
    });
  });

  it('replaces a cluster router in place (shared port) for a hold, a releases dir or a name', () => {
    expect(planRouterChange(running(), wanted())).toEqual({ action: 'none' });
    expect(planRouterChange(undefined, wanted())).toEqual({ action: 'none' });
    expect(planRouterChange(running(), wanted(args({ hold: 4000 })))).toMatchObject({ action: 'replace', shared: true, rename: false });
    expect(planRouterChange(running(), wanted(args({ dir: '/data/r' })))).toMatchObject({ action: 'replace', shared: true });
    expect(planRouterChange(running(), wanted(args({ app: 'web' }), 'web-router'))).toMatchObject({ action: 'replace', shared: true, rename: true });
  });

  it('binds a new port beside the old one; a new host on the same port or a fork-mode router needs --replace-router', () => {
    expect(planRouterChange(running(), wanted(args({ port: 3002 })))).toMatchObject({ action: 'replace', shared: false });
    const host = planRouterChange(running(), wanted(args({ host: '127.0.0.1' })));
    expect(host).toMatchObject({ action: 'refuse' });
    expect(host.action === 'refuse' && host.reason).toMatch(/let go of port 3001/);
    const fork = planRouterChange(running({ execMode: 'fork_mode' }), wanted(args({ hold: 4000 })));
    expect(fork.action === 'refuse' && fork.reason).toMatch(/fork mode/);
    expect(planRouterChange(running({ execMode: 'fork_mode' }), wanted(args({ hold: 4000 })), { allowGap: true })).toMatchObject({
      action: 'replace',
      shared: false,
    });
    // A fork-mode router moving to a new port binds it at once: no gap, no refusal.
    expect(planRouterChange(running({ execMode: 'fork_mode' }), wanted(args({ port: 3002 })))).toMatchObject({ action: 'replace', shared: false });
  });

  it('finds the app router by name, else by its releases dir or port (a renamed app), never another app’s', () => {
    const other = running({ pmId: 7, name: 'shop-router' }, args({ app: 'shop', port: 4001, dir: '/srv/shop' }));
    const old = running({ pmId: 3, name: 'frontend-dev-router' });
    expect(findRouter([other, old], { name: 'web-router', releasesDir: '/srv/releases', port: 3001 })?.pmId).toBe(3);
    expect(findRouter([other, old], { name: 'web-router', releasesDir: '/data', port: 3009 })).toBeUndefined();
    const renamedAlready = running({ pmId: 9, name: 'web-router' }, args({ app: 'web' }));
    expect(findRouter([old, renamedAlready], { name: 'web-router', releasesDir: '/srv/releases', port: 3001 })?.pmId).toBe(9);
  });
});

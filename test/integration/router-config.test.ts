/**
 * Config changes under a running router (issue 24), on a real PM2 daemon (private PM2_HOME), the real router
 * and HTTP on 127.0.0.1, under keep-alive load: another router.holdMs, a renamed app, a moved releases dir
 * (another directory, then another filesystem: a tmpfs mount when root), a new public port, and a fork-mode
 * router (an older pm2-release's), whose replacement is refused with a command that runs as printed. One
 * sandbox; the scenarios run in order and build on each other. Counts and states, not timings.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, rollback, status } from '../../src/index.js';
import { portHolder } from '../../src/health.js';
import { CLI, cli, createSandbox, startCli, freePort, releasePortRange, type Sandbox, waitServing as waitServingOn } from '../helpers/sandbox.js';
import { startTraffic } from '../helpers/traffic.js';

/** The runbook's stated gap for a new port: at most one failed request per client that follows to it. */
const PORT_CHANGE_FAILED_PER_CLIENT = 1;

describe('config changes under a running router (real PM2)', () => {
  let sb: Sandbox;
  let app = 'frontend-dev';
  let port = 0;
  let tmpfs: string | undefined;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  const cfg = () => JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the config file as JSON, edited per scenario
  const setCfg = (edit: (c: any) => void) => {
    const c = cfg();
    edit(c);
    fs.writeFileSync(sb.configPath, JSON.stringify(c, null, 2));
  };
  const routers = () => sb.jlist().filter((p) => /router\/main\.js$/.test(String(p.pm2_env.pm_exec_path)));
  const argOf = (p: { pm2_env: Record<string, unknown> }, name: string) => {
    const a = p.pm2_env.args as string[];
    return a[a.indexOf(`--${name}`) + 1];
  };
  const waitServing = (release: string, p = port, ms = 20_000) => waitServingOn(p, release, ms);
  const underLoad = async <T>(fn: () => Promise<T>) => {
    const traffic = startTraffic(port, { clients: 4 });
    await sleep(300);
    const r = await fn();
    await sleep(300);
    return { r, t: await traffic.stop() };
  };

  beforeAll(async () => {
    sb = await createSandbox({
      keep: 3,
      app: { strategy: 'router', healthcheck: { timeoutMs: 20_000, settleMs: 300 } },
      config: { router: { holdMs: 4_000, drainTimeoutMs: 5_000, releasePorts: releasePortRange() } },
    });
    port = sb.port;
    const v1 = await deploy(opts());
    await waitServing(v1.release.id);
  });
  afterAll(async () => {
    if (process.env.ROUTER_CONFIG_DEBUG) {
      const dir = path.join(sb.pm2Home, 'logs');
      for (const f of fs.readdirSync(dir).filter((x) => x.includes('router')))
        console.log(`== ${f}\n${fs.readFileSync(path.join(dir, f), 'utf8').slice(-3000)}`);
    }
    await sb?.close();
    if (tmpfs) {
      spawnSync('umount', [tmpfs]);
      fs.rmSync(tmpfs, { recursive: true, force: true });
    }
  });

  it('router.holdMs changed: status and doctor show both definitions; the next deploy replaces the router (PM2 shows the new hold), 0 failed', async () => {
    setCfg((c) => (c.router.holdMs = 6_000));
    const st = await status(opts());
    expect(st.routerConfig?.differences).toEqual([{ key: 'holdMs', running: '4000', config: '6000' }]);
    expect(st.routerConfig?.next).toBe('replace');
    expect(st.drift.detected).toBe(true);
    expect(st.drift.reason).toMatch(/holdMs 4000 → 6000/);
    expect(cli(sb, ['status']).stdout).toMatch(/holdMs\s+running 4000 \| config 6000/);
    const doc = JSON.parse(cli(sb, ['doctor', '--json']).stdout) as { checks: { name: string; status: string; message: string }[] };
    expect(doc.checks.find((c) => c.name === 'router-config')).toMatchObject({ status: 'warn' });

    const before = routers()[0];
    const { r, t } = await underLoad(() => deploy(opts()));
    expect(r.mode).toBe('unchanged');
    expect(t.failures).toEqual([]);
    expect(t.ok).toBeGreaterThan(50);
    const now = routers();
    expect(now).toHaveLength(1);
    expect(now[0].pm_id).not.toBe(before.pm_id);
    expect(argOf(now[0], 'hold-ms')).toBe('6000');
    expect(now[0].pm2_env.exec_mode).toBe('cluster_mode');
    const after = await status(opts());
    expect(after.routerConfig?.differences).toEqual([]);
    expect(after.drift.detected, after.drift.reason ?? '').toBe(false);
    // The dump has the new router: a reboot brings back the new definition.
    const dump = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string; args: string[] }[];
    expect(dump.find((d) => d.name === `${app}-router`)!.args).toContain('6000');
  });

  it('the app renamed: the next deploy replaces the router and retires the old-named release, 0 failed', async () => {
    setCfg((c) => (c.app.name = 'web'));
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const { r, t } = await underLoad(() => deploy(opts()));
    app = 'web';
    expect(t.failures).toEqual([]);
    expect(t.releases.get(r.release.id) ?? 0).toBeGreaterThan(0);
    const names = sb
      .jlist()
      .map((p) => p.name)
      .sort();
    expect(names).toEqual(['web', 'web-router']);
    expect(argOf(routers()[0], 'app')).toBe('web');
    expect(fs.existsSync(path.join(sb.releasesDir, '.router', 'web.state.json'))).toBe(true);
  });

  const moveReleasesDir = async (to: string, thenBack = false) => {
    const from = cfg().releasesDir as string;
    const liveBefore = (await status(opts())).active?.id;
    expect(liveBefore).toBeTruthy();
    setCfg((c) => (c.releasesDir = to));
    const st = await status(opts());
    expect(st.routerConfig?.differences.map((d) => d.key)).toEqual(['releasesDir']);
    // The live release keeps serving from the old dir; the deploy builds into the new one.
    sb.commit(`in ${path.basename(to)}`, { 'where.txt': `${to}\n` });
    const { r: first, t } = await underLoad(() => deploy(opts()));
    expect(t.failures).toEqual([]);
    expect(first.release.cwd.startsWith(to + path.sep)).toBe(true);
    expect(routers()).toHaveLength(1);
    expect(argOf(routers()[0], 'releases-dir')).toBe(to);
    expect(fs.existsSync(path.join(to, '.router', `${app}.sock`))).toBe(true);
    expect(sb.jlist().filter((p) => p.name === app)[0].pm2_env.pm_cwd).toBe(first.release.cwd);
    // Releases of the old dir are listed as elsewhere, with their dir.
    const listed = JSON.parse(cli(sb, ['list', '--json']).stdout) as { releases: { id: string }[]; elsewhere: { id: string; elsewhere: string }[] };
    expect(listed.releases.map((r) => r.id)).toEqual([first.release.id]);
    expect(listed.elsewhere.find((r) => r.id === liveBefore)?.elsewhere).toBe(from);
    expect(cli(sb, ['list']).stdout).toContain(`elsewhere (built before releasesDir moved`);
    // They are no rollback targets: refused at once, nothing changed, and the hint says how to go back.
    const none = cli(sb, ['rollback', '--json']);
    expect(none.code).toBe(2);
    const refusal = JSON.parse(none.stdout).error as { code: string; hint: string };
    expect(refusal.code).toBe('NO_ROLLBACK_TARGET');
    expect(refusal.hint).toContain(`set "releasesDir" back to ${from}`);
    if (thenBack) {
      // Followed as printed, under load: config back to the old dir, then the printed command.
      const printed = /`(pm2-release activate [^`]+)`/.exec(refusal.hint)![1].split(' ');
      expect(printed.slice(0, 3)).toEqual(['pm2-release', 'activate', liveBefore]);
      setCfg((c) => (c.releasesDir = from));
      const { r: back, t: tb } = await underLoad(() => startCli(sb, [...printed.slice(1), '--json']).done);
      expect(back.code, back.stderr).toBe(0);
      expect(tb.failures).toEqual([]);
      await waitServing(liveBefore!);
      expect(argOf(routers()[0], 'releases-dir')).toBe(from);
      // The release built in the new dir is the one listed elsewhere now; then move forward again.
      expect((JSON.parse(cli(sb, ['list', '--json']).stdout) as { elsewhere: { id: string }[] }).elsewhere.map((r) => r.id)).toContain(first.release.id);
      setCfg((c) => (c.releasesDir = to));
    }
    // A second deploy in the new dir, then a rollback to the first: 0 failed through both.
    sb.commit(`again in ${path.basename(to)}`, { 'where.txt': `${to} again\n` });
    const { r: back, t: t2 } = await underLoad(async () => {
      await deploy(opts());
      return rollback(opts());
    });
    expect(t2.failures).toEqual([]);
    expect(back.release.id).toBe(first.release.id);
    await waitServing(first.release.id);
  };

  it('releasesDir moved to another directory: the next deploy succeeds with 0 failed; rollback afterwards works', async () => {
    await moveReleasesDir(path.join(sb.root, 'releases-b'), true);
  }, 300_000);

  it('releasesDir moved to another filesystem (a tmpfs mount): the same', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('mounting a tmpfs needs root');
    tmpfs = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256m,mode=0700', 'tmpfs', tmpfs]);
    const to = path.join(tmpfs, 'releases');
    expect(fs.statSync(tmpfs).dev).not.toBe(fs.statSync(sb.root).dev);
    await moveReleasesDir(to);
  }, 300_000);

  it('the public port changed: a client following to the new port fails at most once; the old port is freed', async () => {
    const oldPort = port;
    const newPort = await freePort();
    setCfg((c) => (c.app.env.FRONT_PORT = String(newPort)));
    // Clients as Apache repointed at once: on the first refused request at the old port, go to the new one.
    let running = true;
    const failures: string[] = [];
    let okOld = 0;
    let okNew = 0;
    const client = async (keepAlive: boolean) => {
      let p = oldPort;
      const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
      while (running) {
        const r = await new Promise<{ status?: number; error?: string }>((resolve) => {
          const req = http.get({ host: '127.0.0.1', port: p, agent, timeout: 10_000 }, (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode }));
          });
          req.on('timeout', () => req.destroy(new Error('ETIMEDOUT')));
          req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
        });
        if (r.status === 200) {
          if (p === oldPort) okOld++;
          else okNew++;
        } else {
          failures.push(`:${p} ${r.status ?? r.error}`);
          if (p === oldPort) p = newPort;
          else await sleep(20);
        }
      }
      if (agent) agent.destroy();
    };
    // The last rollback marked HEAD bad: a new commit.
    sb.commit('v5', { 'version.txt': 'v5\n' });
    const clients = [client(true), client(true), client(true), client(true), client(false)];
    await sleep(300);
    await deploy(opts());
    await sleep(500);
    running = false;
    await Promise.all(clients);
    port = newPort;
    console.log(`port change: ${failures.length} failed (${failures.join(', ')}); ${okOld} answered on the old port, ${okNew} on the new`);
    expect(failures.length).toBeLessThanOrEqual(clients.length * PORT_CHANGE_FAILED_PER_CLIENT);
    expect(failures.every((f) => f.startsWith(`:${oldPort} `))).toBe(true);
    expect(okOld).toBeGreaterThan(0);
    expect(okNew).toBeGreaterThan(0);
    expect(await portHolder(oldPort)).toBeUndefined();
    expect(routers()).toHaveLength(1);
    expect(argOf(routers()[0], 'port')).toBe(String(newPort));
  });

  it('a fork-mode router (an older pm2-release) with another hold: refused at once (exit 2) with a command that applies it as printed', async () => {
    // An older pm2-release started routers in fork mode: put one in place, with the router's exact arguments.
    const r = routers()[0];
    const args = r.pm2_env.args as string[];
    sb.pm2('delete', String(r.pm_id));
    sb.pm2('start', String(r.pm2_env.pm_exec_path), '--name', r.name, '--cwd', String(r.pm2_env.pm_cwd), '--', ...args);
    // The fork-mode router answers on its control socket a moment after PM2 started it.
    let live: { release: string } | null | undefined;
    for (let i = 0; i < 100 && !live; i++) {
      live = (await status(opts())).router?.live;
      if (!live) await sleep(100);
    }
    expect(live, 'the fork-mode router never answered with its route').toBeTruthy();
    await waitServing(live!.release);
    expect(routers()[0].pm2_env.exec_mode).toBe('fork_mode');
    setCfg((c) => (c.router.holdMs = 5_000));
    const pm2Before = JSON.stringify(sb.jlist().map((p) => [p.pm_id, p.name, p.pid]));

    const refused = cli(sb, ['deploy', '--json']);
    expect(refused.code, refused.stdout + refused.stderr).toBe(2);
    const err = JSON.parse(refused.stdout).error as { code: string; message: string; hint: string; phase: string };
    expect(err.code).toBe('ROUTER_CONFIG_CHANGED');
    expect(err.message).toMatch(/holdMs 6000 → 5000/);
    expect(err.message).toMatch(/fork mode/);
    expect(JSON.stringify(sb.jlist().map((p) => [p.pm_id, p.name, p.pid]))).toBe(pm2Before);
    const st = await status(opts());
    expect(st.routerConfig).toMatchObject({ next: 'refuse', running: { execMode: 'fork_mode', holdMs: 6000 }, config: { holdMs: 5000 } });
    const command = /apply it .*with: (.+)$/.exec(err.hint)![1];
    expect(command).toBe(st.routerConfig!.command);
    expect(command).toBe(`pm2-release activate ${live!.release} --replace-router --config ${sb.configPath}`);

    // Exactly as printed (pm2-release being the built CLI).
    const argv = command.split(' ');
    expect(argv[0]).toBe('pm2-release');
    const applied = spawnSync(process.execPath, [CLI, ...argv.slice(1)], { env: sb.env, cwd: sb.root, encoding: 'utf8', timeout: 120_000 });
    expect(applied.status, applied.stdout + applied.stderr).toBe(0);
    const now = routers();
    expect(now).toHaveLength(1);
    expect(now[0].pm2_env.exec_mode).toBe('cluster_mode');
    expect(argOf(now[0], 'hold-ms')).toBe('5000');
    await waitServing(live!.release);
    expect((await status(opts())).routerConfig?.differences).toEqual([]);
  });
});

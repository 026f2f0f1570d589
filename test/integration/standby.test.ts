/**
 * The warm standby behind the router (issue 21), on a real PM2 daemon (private PM2_HOME), real git, npm ci
 * and HTTP on 127.0.0.1: after a switch the previous release keeps running, unrouted; a rollback to it is a
 * route change (the same PM2 process answers, no boot) with 0 failed requests under keep-alive load; the next
 * deploy retires the oldest so that at most live + standby + the one booting run; `pm2 kill` + `pm2
 * resurrect` and the ecosystem file bring both back; with too little memory there is no standby and a
 * rollback boots, as before. Counts and states, not timings.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, history, rollback, status } from '../../src/index.js';
import { cli, createSandbox, releasePortRange, ROOT, startCli, type Sandbox, waitServing as waitServingOn } from '../helpers/sandbox.js';
import { startTraffic } from '../helpers/traffic.js';

const APP = 'frontend-dev';
const ROUTER = 'frontend-dev-router';

describe('the warm standby behind the router (real PM2)', () => {
  let sb: Sandbox;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  const app = () => sb.jlist().filter((p) => p.name === APP);
  const releaseOf = (p: { pm2_env: Record<string, unknown> }) =>
    (p.pm2_env.env as Record<string, string> | undefined)?.RELEASE_ID ?? (p.pm2_env.RELEASE_ID as string);
  const byRelease = () => new Map(app().map((p) => [releaseOf(p), p]));
  const routerState = () =>
    JSON.parse(fs.readFileSync(path.join(sb.releasesDir, '.router', `${APP}.state.json`), 'utf8')) as { live: { port: number; release: string } };
  const waitServing = (release: string, ms = 20_000) => waitServingOn(sb.port, release, ms);
  /** The most app processes PM2 ran at once, sampled every 50 ms until stop(). */
  const sampleMost = () => {
    let most = 0;
    let sampling = true;
    const loop = (async () => {
      while (sampling) {
        most = Math.max(most, app().length);
        await sleep(50);
      }
    })();
    return {
      async stop() {
        sampling = false;
        await loop;
        return most;
      },
    };
  };
  const writeConfig = (router: Record<string, unknown>) => {
    const config = JSON.parse(fs.readFileSync(sb.configPath, 'utf8')) as { router: Record<string, unknown> };
    config.router = { ...config.router, ...router };
    fs.writeFileSync(sb.configPath, JSON.stringify(config, null, 2));
  };
  let v1 = '';
  let v2 = '';
  let v3 = '';

  beforeAll(async () => {
    sb = await createSandbox({
      keep: 3,
      app: { strategy: 'router', healthcheck: { timeoutMs: 20_000, settleMs: 300 } },
      // router.standby is on by default: the sandbox turns it off for the other suites, this one takes the default.
      config: { router: { standby: undefined, holdMs: 4_000, drainTimeoutMs: 5_000, releasePorts: releasePortRange() } },
    });
    expect((JSON.parse(fs.readFileSync(sb.configPath, 'utf8')) as { router: Record<string, unknown> }).router.standby).toBeUndefined();
  });
  afterAll(async () => {
    await sb?.close();
  });

  it('deploy v1, deploy v2 (v1 stays warm), rollback: the same v1 process answers, 0 failed; deploy v3 retires the oldest, never more than three app processes', async () => {
    v1 = (await deploy(opts())).release.id;
    await waitServing(v1);
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const traffic = startTraffic(sb.port, { clients: 4 });
    await sleep(300);
    v2 = (await deploy(opts())).release.id;
    // v1 kept running, unrouted: the standby.
    expect([...byRelease().keys()].sort()).toEqual([v1, v2].sort());
    const v1Proc = byRelease().get(v1)!;
    const st = await status(opts());
    expect(st.standby).toMatchObject({ state: 'warm', release: v1 });
    expect(st.drift.detected, st.drift.reason ?? '').toBe(false);
    const active = JSON.parse(fs.readFileSync(path.join(sb.releasesDir, 'active.json'), 'utf8')) as { standby?: { id: string } };
    expect(active.standby?.id).toBe(v1);

    const back = await rollback(opts());
    expect(back.release.id).toBe(v1);
    expect(back.durationsMs).not.toHaveProperty('switch');
    expect(back.durationsMs).not.toHaveProperty('health');
    expect(routerState().live.release).toBe(v1);
    // Not a boot: the very process that ran before, not restarted; v2 now waits as the standby.
    const after = byRelease();
    expect(after.get(v1)!.pid).toBe(v1Proc.pid);
    expect(after.get(v1)!.pm_id).toBe(v1Proc.pm_id);
    expect(after.get(v1)!.pm2_env.restart_time).toBe(0);
    expect(after.has(v2)).toBe(true);
    expect((await status(opts())).standby).toMatchObject({ state: 'warm', release: v2 });
    await waitServing(v1);

    // The next deploy: v3 boots beside live (v1) and standby (v2); after it, v1 is the standby and v2 is gone.
    const sampler = sampleMost();
    sb.commit('v3', { 'version.txt': 'v3\n' });
    const r3 = await deploy(opts());
    v3 = r3.release.id;
    // The former standby is retired by the switch once v3 is routed, not deleted beforehand as a leftover.
    expect(r3.warnings).toEqual([]);
    const most = await sampler.stop();
    await sleep(300);
    const t = await traffic.stop();
    expect(t.failures).toEqual([]);
    expect(t.ok).toBeGreaterThan(50);
    for (const id of [v1, v2, v3]) expect(t.releases.get(id) ?? 0, id).toBeGreaterThan(0);
    expect(most).toBeGreaterThanOrEqual(2);
    expect(most).toBeLessThanOrEqual(3);
    expect([...byRelease().keys()].sort()).toEqual([v1, v3].sort());
    expect(byRelease().get(v1)!.pid).toBe(v1Proc.pid);
    expect((await status(opts())).standby).toMatchObject({ state: 'warm', release: v1 });
    // The dump holds both, and the router: a reboot brings back what runs now.
    const dump = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string; pm_cwd: string }[];
    expect(dump.map((d) => d.name).sort()).toEqual([APP, APP, ROUTER]);
    // The rollback is in the history like any other, from v2 to v1.
    const h = await history(opts());
    expect(h.entries.find((e) => e.action === 'rollback')).toMatchObject({ from: v2, to: v1, result: 'ok' });
  });

  it('status and doctor name the standby; a second rollback flips back', async () => {
    const human = cli(sb, ['status']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`standby\\s+${v1} warm on :\\d+: a rollback to it is a route change`));
    const d = JSON.parse(cli(sb, ['doctor', '--json']).stdout) as { checks: { name: string; status: string; message: string }[] };
    expect(d.checks.find((c) => c.name === 'standby')).toMatchObject({ status: 'ok' });
    const v1Pid = byRelease().get(v1)!.pid;
    const r = cli(sb, ['rollback', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { release: { id: string } }).release.id).toBe(v1);
    expect(byRelease().get(v1)!.pid).toBe(v1Pid);
    await waitServing(v1);
    // And forward again: activate of the standby's id is a flip too.
    const v3Pid = byRelease().get(v3)!.pid;
    const a = cli(sb, ['activate', v3, '--json']);
    expect(a.code, a.stderr).toBe(0);
    await waitServing(v3);
    expect(byRelease().get(v3)!.pid).toBe(v3Pid);
    expect([...byRelease().keys()].sort()).toEqual([v1, v3].sort());
  });

  it('pm2 kill + pm2 resurrect brings back live and standby; the router routes to the live one, and a rollback still flips', async () => {
    sb.pm2('kill');
    sb.pm2('resurrect');
    await waitServing(v3);
    expect(routerState().live.release).toBe(v3);
    expect([...byRelease().keys()].sort()).toEqual([v1, v3].sort());
    const st = await status(opts());
    expect(st.standby).toMatchObject({ state: 'warm', release: v1 });
    const v1Pid = byRelease().get(v1)!.pid;
    expect((await rollback(opts())).release.id).toBe(v1);
    expect(byRelease().get(v1)!.pid).toBe(v1Pid);
    await waitServing(v1);
  });

  it('pm2 start ecosystem.config.cjs with no dump brings back the router, the live release and the standby', async () => {
    sb.pm2('kill');
    fs.rmSync(path.join(sb.pm2Home, 'dump.pm2'), { force: true });
    fs.rmSync(path.join(sb.pm2Home, 'dump.pm2.bak'), { force: true });
    sb.pm2('start', path.join(__dirname, '../../ecosystem.config.cjs'));
    await waitServing(v1);
    expect(routerState().live.release).toBe(v1);
    expect([...byRelease().keys()].sort()).toEqual([v1, v3].sort());
    expect((await status(opts())).standby).toMatchObject({ state: 'warm', release: v3 });
    sb.pm2('save', '--force');
  });

  it('a deploy with a soak: the former standby is retired at the route change, the previous release soaks warm and then stays as the standby', async () => {
    // Live v1, standby v3 (the ecosystem test above).
    sb.commit('v3b', { 'version.txt': 'v3b\n' });
    const sampler = sampleMost();
    // Not the synchronous cli(): the sampler must run while the deploy does.
    const r = await startCli(sb, ['deploy', '--json', '--soak', '2']).done;
    const most = await sampler.stop();
    expect(most).toBeGreaterThanOrEqual(2);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const out = JSON.parse(r.stdout) as { release: { id: string }; soak: { state: string } };
    expect(out.soak.state).toBe('passed');
    expect(most).toBeLessThanOrEqual(3);
    expect([...byRelease().keys()].sort()).toEqual([v1, out.release.id].sort());
    expect((await status(opts())).standby).toMatchObject({ state: 'warm', release: v1 });
    const v1Pid = byRelease().get(v1)!.pid;
    expect((await rollback(opts())).release.id).toBe(v1);
    expect(byRelease().get(v1)!.pid).toBe(v1Pid);
    await waitServing(v1);
  });

  it('a deploy whose release fails its gate leaves live and standby as they were: a rollback still flips', async () => {
    const before = byRelease();
    const standby = (await status(opts())).standby!;
    expect(standby.state).toBe('warm');
    sb.commit('crash at boot', { CRASH_ON_BOOT: 'yes\n' });
    const crash = cli(sb, ['deploy', '--json']);
    expect(crash.code, crash.stdout).toBe(5);
    expect(JSON.parse(crash.stdout).error.code).toBe('HEALTH_FAILED');
    const after = byRelease();
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [id, p] of before) expect(after.get(id)!.pid, id).toBe(p.pid);
    expect((await status(opts())).standby).toMatchObject({ state: 'warm', release: standby.release });
    const back = await rollback(opts());
    expect(back.release.id).toBe(standby.release);
    expect(back.durationsMs).not.toHaveProperty('switch');
    expect(byRelease().get(standby.release!)!.pid).toBe(before.get(standby.release!)!.pid);
    await waitServing(standby.release!);
    sb.commit('fixed', { CRASH_ON_BOOT: null });
  });

  it('with too little memory for one more copy (router.standbyReserveMB) there is no standby: status and doctor say why, and a rollback boots', async () => {
    writeConfig({ standbyReserveMB: 1_000_000 });
    const live = routerState().live.release;
    sb.commit('v4', { 'version.txt': 'v4\n' });
    const v4 = (await deploy(opts())).release.id;
    // The previous live release is retired, as is the former standby.
    expect([...byRelease().keys()]).toEqual([v4]);
    const st = await status(opts());
    expect(st.standby).toMatchObject({ state: 'off' });
    expect(st.standby!.reason).toMatch(
      /^not enough memory: .* available, a standby needs room for one more copy of the release \(.*\) plus router\.standbyReserveMB \(.+\)$/,
    );
    const d = JSON.parse(cli(sb, ['doctor', '--json']).stdout) as { checks: { name: string; status: string; message: string }[] };
    expect(d.checks.find((c) => c.name === 'standby')).toMatchObject({ status: 'warn' });
    const back = await rollback(opts());
    expect(back.release.id).toBe(live);
    // A boot: the rollback went through the switch and its health gate.
    expect(back.durationsMs).toHaveProperty('health');
    expect([...byRelease().keys()]).toEqual([live]);
    await waitServing(live);

    writeConfig({ standby: false, standbyReserveMB: undefined });
    sb.commit('v5', { 'version.txt': 'v5\n' });
    const v5 = (await deploy(opts())).release.id;
    expect([...byRelease().keys()]).toEqual([v5]);
    expect(app()).toHaveLength(1);
    expect((await status(opts())).standby).toMatchObject({ state: 'off', reason: 'off in the config (router.standby: false)' });
  });
});

describe('the warm standby against a PM2 5.x daemon (the version operators still run)', () => {
  const PM2_5 = path.join(ROOT, 'node_modules/pm2-5');
  let sb: Sandbox;
  afterAll(async () => {
    await sb?.close();
  });

  it('deploy v1, deploy v2, rollback: the same v1 process answers; the dump (5.x resurrects it) holds live and standby', async () => {
    sb = await createSandbox({
      keep: 3,
      app: { strategy: 'router', healthcheck: { timeoutMs: 20_000, settleMs: 300 } },
      config: { router: { standby: undefined, holdMs: 4_000, drainTimeoutMs: 5_000, releasePorts: releasePortRange() } },
    });
    const bin = path.join(PM2_5, 'bin/pm2');
    const env = { ...sb.env, PM2_RELEASE_PM2: bin };
    execFileSync(bin, ['ping'], { env, stdio: 'ignore' });
    const title = fs.readFileSync(`/proc/${fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8').trim()}/cmdline`, 'utf8');
    expect(title).toMatch(/PM2 v5\.\d+\.\d+: God Daemon/);
    const opts = { configPath: sb.configPath, env, cwd: sb.root };
    const app = () => sb.jlist().filter((p) => p.name === APP);
    const v1 = (await deploy(opts)).release.id;
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const v2 = (await deploy(opts)).release.id;
    const v1Pid = app().find((p) => (p.pm2_env.env as Record<string, string>).RELEASE_ID === v1)!.pid;
    const back = await rollback(opts);
    expect(back.release.id).toBe(v1);
    expect(back.durationsMs).not.toHaveProperty('switch');
    await waitServingOn(sb.port, v1);
    expect(app().find((p) => (p.pm2_env.env as Record<string, string>).RELEASE_ID === v1)!.pid).toBe(v1Pid);
    expect((await status(opts)).standby).toMatchObject({ state: 'warm', release: v2 });
    execFileSync(bin, ['kill'], { env, stdio: 'ignore' });
    execFileSync(bin, ['resurrect'], { env, stdio: 'ignore' });
    await waitServingOn(sb.port, v1);
    expect(
      app()
        .map((p) => (p.pm2_env.env as Record<string, string>).RELEASE_ID)
        .sort(),
    ).toEqual([v1, v2].sort());
  });
});

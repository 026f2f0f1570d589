/**
 * Fault injection behind the router: each failpoint a routed deploy passes × {fail, kill}, plus the router
 * itself killed mid-switch. Whatever is interrupted, the visitors see no failed request (the router never
 * stops serving the release it routes to), and the next plain deploy repairs everything: one release
 * process, routed, saved, recorded, no drift.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSandbox, releasePortRange, startCli, type Sandbox } from '../helpers/sandbox.js';

const APP = 'frontend-dev';
const ROUTER = 'frontend-dev-router';
type Action = 'fail' | 'kill';
const POINTS = ['build', 'switch', 'health', 'route', 'drain', 'save', 'retain'] as const;
type Point = (typeof POINTS)[number];
/** After these the route has changed: the new release serves. */
const AFTER_ROUTE: Point[] = ['drain', 'save', 'retain'];

interface Poll {
  ok: boolean;
  release: string | null;
  detail: string;
}

function probe(port: number, agent: http.Agent | false): Promise<Poll> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, agent, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ ok: res.statusCode === 200, release: /\(release ([^)]+)\)/.exec(body)?.[1] ?? null, detail: `${res.statusCode}` }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, release: null, detail: err.code ?? err.message }));
  });
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  polls: Poll[];
}

/** The built CLI, polled by a keep-alive client and a fresh-connection poller until it exits. */
async function runCli(sb: Sandbox, args: string[], extraEnv: Record<string, string> = {}, onStderr?: (text: string) => void): Promise<Run> {
  const { child, done: finished } = startCli(sb, args, extraEnv, onStderr);
  let done = false;
  child.once('exit', () => (done = true));
  const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const polls: Poll[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const poll = async (a: http.Agent | false) => {
    while (!done) {
      polls.push(await probe(sb.port, a));
      await sleep(30);
    }
  };
  const pollers = [poll(agent), poll(false)];
  const { code, signal, stdout, stderr } = await finished;
  clearTimeout(guard);
  await Promise.all(pollers);
  agent.destroy();
  await sleep(100);
  return { code, signal, stdout, stderr, polls };
}

describe('fault injection behind the router: every routed failpoint × {fail, kill}, and the router killed mid-switch', () => {
  let sb: Sandbox;
  let n = 0;
  const jlist = () => sb.jlist();
  const served = async () => (await probe(sb.port, false)).release;
  const routerState = () =>
    JSON.parse(fs.readFileSync(path.join(sb.releasesDir, '.router', `${APP}.state.json`), 'utf8')) as { live: { port: number; release: string } };
  const commit = () => {
    n++;
    return sb.commit(`v${n}`, { 'version.txt': `v${n}\n` });
  };

  /** The state every successful deploy must leave. */
  const expectConsistent = async (release: { id: string; cwd: string }) => {
    const procs = jlist();
    expect(procs.filter((p) => p.name === APP).map((p) => p.pm2_env.pm_cwd)).toEqual([release.cwd]);
    expect(procs.filter((p) => p.name === ROUTER).map((p) => p.pm2_env.status)).toEqual(['online']);
    expect(routerState().live.release).toBe(release.id);
    const dump = JSON.parse(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')) as { name: string; pm_cwd: string }[];
    expect(dump.map((d) => d.name).sort()).toEqual([APP, ROUTER]);
    expect(dump.find((d) => d.name === APP)!.pm_cwd).toBe(release.cwd);
    const st = await runCli(sb, ['status', '--json']);
    const status = JSON.parse(st.stdout);
    expect({ active: status.active?.id, recorded: status.recorded, drift: status.drift, health: status.health.ok }).toEqual({
      active: release.id,
      recorded: release.id,
      drift: { detected: false, reason: null },
      health: true,
    });
    expect(await served()).toBe(release.id);
  };

  beforeAll(async () => {
    sb = await createSandbox({
      keep: 3,
      app: { strategy: 'router', healthcheck: { timeoutMs: 20_000, settleMs: 300 } },
      config: { router: { holdMs: 10_000, drainTimeoutMs: 3_000, releasePorts: releasePortRange() } },
    });
    commit();
    const r = await runCli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
  }, 120_000);
  afterAll(async () => {
    await sb?.close();
  });

  describe.each(POINTS.flatMap((p) => (['fail', 'kill'] as Action[]).map((a) => [p, a] as const)))('%s:%s', (point, action) => {
    it('visitors see no failed request; the next deploy leaves one routed, saved, recorded release', async () => {
      const prev = routerState().live.release;
      commit();
      const run = await runCli(sb, ['deploy', '--json'], { PM2_RELEASE_FAILPOINT: `${point}:${action}` });
      const ctx = `${point}:${action}\nstdout: ${run.stdout}\nstderr: ${run.stderr.slice(-2500)}`;
      const failed = run.polls.filter((p) => !p.ok);
      expect(
        failed.map((p) => p.detail),
        ctx,
      ).toEqual([]);
      expect(run.polls.length).toBeGreaterThan(2);
      if (action === 'kill') expect(run.signal, ctx).toBe('SIGKILL');
      else {
        const out = run.stdout ? JSON.parse(run.stdout) : {};
        if (point === 'build') expect([run.code, out.error?.code], ctx).toEqual([4, 'INJECTED_FAILURE']);
        else if (point === 'switch') expect([run.code, out.error?.code, out.error?.phase], ctx).toEqual([5, 'INJECTED_FAILURE', 'switch']);
        else if (point === 'health') expect([run.code, out.error?.code], ctx).toEqual([5, 'HEALTH_FAILED']);
        else if (point === 'route') expect([run.code, out.error?.code, out.error?.phase], ctx).toEqual([5, 'ROUTE_FAILED', 'route']);
        else {
          // After the route changed the new release serves: a later step failing is a warning, not a revert.
          expect(run.code, ctx).toBe(0);
          expect(out.warnings.join('\n'), ctx).toMatch(/injected failure at (drain|save|retain)/);
        }
      }
      const now = await served();
      if (AFTER_ROUTE.includes(point)) expect(now, ctx).not.toBe(prev);
      else expect(now, ctx).toBe(prev);

      // The next plain deploy repairs whatever was left.
      commit();
      const next = await runCli(sb, ['deploy', '--json']);
      expect(next.code, `next deploy after ${point}:${action}\n${next.stdout}\n${next.stderr.slice(-2500)}`).toBe(0);
      expect(next.polls.filter((p) => !p.ok).map((p) => p.detail)).toEqual([]);
      const res = JSON.parse(next.stdout);
      await expectConsistent(res.release);
    });
  });

  it('the router SIGKILLed during the health gate: PM2 brings it back on the recorded route, the deploy completes', async () => {
    commit();
    let killed = false;
    const run = await runCli(sb, ['deploy', '--json'], {}, (text) => {
      if (killed || !text.includes('"phase":"health"')) return;
      killed = true;
      const pid = jlist().find((p) => p.name === ROUTER)!.pid;
      process.kill(pid, 'SIGKILL');
    });
    expect(killed).toBe(true);
    expect(run.code, run.stderr.slice(-2500)).toBe(0);
    const res = JSON.parse(run.stdout);
    await expectConsistent(res.release);
  });

  it('the PM2 daemon gone mid-deploy: a clear failure, no daemon of our own; after PM2 is back the next deploy recovers', async () => {
    commit();
    let stopped = false;
    // The gate watches the new release for 5 s: the kill (a pm2 CLI of ~1 s) lands inside it, not after the
    // deploy already finished.
    const config = fs.readFileSync(sb.configPath, 'utf8');
    const slow = JSON.parse(config) as { app: { healthcheck: Record<string, unknown> } };
    slow.app.healthcheck.settleMs = 5_000;
    fs.writeFileSync(sb.configPath, JSON.stringify(slow));
    const run = await runCli(sb, ['deploy', '--json'], {}, (text) => {
      if (stopped || !text.includes('"phase":"health"')) return;
      stopped = true;
      sb.pm2('kill'); // what `systemctl stop pm2-<user>` does
    });
    fs.writeFileSync(sb.configPath, config);
    expect(stopped).toBe(true);
    expect(run.code, run.stdout + run.stderr.slice(-2000)).toBe(6);
    expect(JSON.parse(run.stdout).error).toMatchObject({ code: 'PM2_DAEMON_GONE' });
    // pm2-release did not leave a daemon of its own running (one a racing pm2 command spawned is stopped).
    const pidFile = path.join(sb.pm2Home, 'pm2.pid');
    const daemonAlive = () => {
      try {
        process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 30 && daemonAlive(); i++) await sleep(100);
    expect(daemonAlive()).toBe(false);
    sb.pm2('resurrect');
    commit();
    const next = await runCli(sb, ['deploy', '--json']);
    expect(next.code, next.stderr.slice(-2500)).toBe(0);
    await expectConsistent(JSON.parse(next.stdout).release);
  });
});

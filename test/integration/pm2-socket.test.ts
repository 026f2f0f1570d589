/**
 * pm2-release talks to PM2's daemon over its RPC socket with the client of the PM2 installation in use, not
 * a `pm2` CLI process per call. Counted with a logging `pm2` (a copy of the package whose bin/pm2 appends
 * its argv to a file, then runs the real one): 0 CLI processes across deploy, redeploy, rollback, activate,
 * status and list, against the bundled PM2 (7.x) and a PM2 5.x daemon. The CLI stays the way when the socket
 * cannot be used (said once, with the reason), or when PM2_RELEASE_PM2_TRANSPORT=cli.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { portHolder } from '../../src/health.js';
import { silentLogger } from '../../src/log.js';
import { Pm2 } from '../../src/pm2/client.js';
import { ProcessWatch } from '../../src/pm2/watch.js';
import { cli, createSandbox, get, ROOT, type Sandbox } from '../helpers/sandbox.js';

const PM2_7 = path.join(ROOT, 'node_modules/pm2');
const PM2_5 = path.join(ROOT, 'node_modules/pm2-5');

/** A copy of the pm2 package at `dir` whose bin/pm2 logs each call to `log` (its modules are the real ones). */
function loggingPm2(pkg: string, dir: string, log: string): string {
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  fs.copyFileSync(path.join(pkg, 'package.json'), path.join(dir, 'package.json'));
  for (const f of ['lib', 'constants.js', 'paths.js', 'index.js']) fs.symlinkSync(path.join(pkg, f), path.join(dir, f));
  const bin = path.join(dir, 'bin/pm2');
  fs.writeFileSync(bin, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\nexec '${process.execPath}' '${path.join(pkg, 'bin/pm2')}' "$@"\n`, { mode: 0o755 });
  return bin;
}

/** Runs the real pm2 CLI of a package with the sandbox's env (PM2_HOME); throws on failure. */
function pm2Of(pkg: string, sb: Sandbox, ...args: string[]): void {
  const r = spawnSync(path.join(pkg, 'bin/pm2'), args, { env: sb.env, encoding: 'utf8', cwd: sb.root, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`pm2 ${args.join(' ')}: ${r.stderr}`);
}

const calls = (log: string) => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean) : []);
const served = async (sb: Sandbox) => (await get(`http://127.0.0.1:${sb.port}/`)).body ?? '';

describe.each([
  { pm2: 'bundled (7.x)', pkg: PM2_7 },
  { pm2: '5.x', pkg: PM2_5 },
])('PM2 over its socket: $pm2 daemon', ({ pkg }) => {
  let sb: Sandbox;
  let log: string;
  let env: Record<string, string>;
  const version = (JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const run = (args: string[]) => cli(sb, args, env);

  beforeAll(async () => {
    sb = await createSandbox({ keep: 3 });
    log = path.join(sb.root, 'pm2-calls.log');
    env = { PM2_RELEASE_PM2: loggingPm2(pkg, path.join(sb.root, 'pm2pkg'), log) };
    // doctor only reads: with no daemon yet, it starts none.
    const doctor = cli(sb, ['doctor', '--json'], env);
    expect(fs.existsSync(path.join(sb.pm2Home, 'pm2.pid')), doctor.stderr).toBe(false);
    fs.rmSync(log, { force: true });
    // The daemon runs before pm2-release (systemd's pm2-<user> on a VM): started with this version's own CLI.
    pm2Of(pkg, sb, 'ping');
  }, 120_000);
  afterAll(async () => sb?.close());

  it('the daemon is of that version', () => {
    const title = fs.readFileSync(`/proc/${fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8').trim()}/cmdline`, 'utf8');
    expect(title).toContain(`PM2 v${version}: God Daemon`);
  });

  it('deploy, redeploy, rollback, activate, status and list: no pm2 CLI process, the app served, the dump 0600', async () => {
    const v1 = run(['deploy', '--json']);
    expect(v1.code, v1.stderr).toBe(0);
    const id1 = JSON.parse(v1.stdout).release.id as string;
    expect(await served(sb)).toContain(id1);
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const v2 = run(['deploy', '--json']);
    expect(v2.code, v2.stderr).toBe(0);
    const id2 = JSON.parse(v2.stdout).release.id as string;
    expect(await served(sb)).toContain(id2);
    const back = run(['rollback', '--json']);
    expect(back.code, back.stderr).toBe(0);
    expect(await served(sb)).toContain(id1);
    const again = run(['activate', id2, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(await served(sb)).toContain(id2);
    const status = run(['status', '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).active.id).toBe(id2);
    expect(run(['list', '--json']).code).toBe(0);
    expect(calls(log)).toEqual([]);
    // Nothing said about a fallback.
    expect(v1.stderr + v2.stderr + back.stderr + again.stderr).not.toContain('through its CLI');

    // The app as PM2 knows it: the release's env, PM2_HOME of this daemon, no filter flag in its definition.
    const procs = sb.jlist() as unknown as { name: string; pm2_env: Record<string, unknown> & { env: Record<string, string> } }[];
    const app = procs.find((p) => p.name === 'frontend-dev')!;
    expect(app.pm2_env.env.RELEASE_ID).toBe(id2);
    expect(app.pm2_env.env.FRONT_PORT).toBe(String(sb.port));
    expect(app.pm2_env.env.PM2_HOME).toBe(sb.pm2Home);
    expect(app.pm2_env.filter_env).toBeUndefined();
    expect(app.pm2_env.pm_cwd).toBe(path.join(sb.releasesDir, id2, 'frontend'));
    // The dump, written atomically by pm2-release, is the one `pm2 resurrect` of this version reads.
    const dump = path.join(sb.pm2Home, 'dump.pm2');
    expect(fs.statSync(dump).mode & 0o777).toBe(0o600);
    expect(fs.statSync(`${dump}.bak`).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(fs.readFileSync(dump, 'utf8')) as { name: string; pm_cwd: string; pm_id?: number }[];
    expect(saved.map((a) => [a.name, a.pm_cwd, a.pm_id])).toEqual([['frontend-dev', path.join(sb.releasesDir, id2, 'frontend'), undefined]]);
  });

  it("PM2's bus (that version): a crash of the app is seen as it happens, a `pm2 stop` as a stop, not a crash", async () => {
    const pm2 = new Pm2({ env: { ...sb.env, PM2_RELEASE_PM2: env.PM2_RELEASE_PM2 }, logger: silentLogger() });
    const watch = await ProcessWatch.start(pm2, 'frontend-dev');
    try {
      expect(watch).toBeDefined();
      const app = sb.jlist().find((p) => p.name === 'frontend-dev')!;
      const id = JSON.parse(run(['status', '--json']).stdout).active.id as string;
      // The app is `npm run start`: its server (the port's holder) dies with it, as in a crash of the tree.
      const server = await portHolder(sb.port);
      process.kill(app.pid, 'SIGKILL');
      if (server !== undefined && server !== app.pid) process.kill(server, 'SIGKILL');
      for (let i = 0; i < 100 && watch!.crashesOf([app.pm_id]) === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(watch!.crashesOf([app.pm_id])).toBeGreaterThanOrEqual(1);
      expect(watch!.stoppingOf([app.pm_id])).toBe(false);
      for (let i = 0; i < 100 && !(await served(sb)).includes(id); i++) await new Promise((r) => setTimeout(r, 100));
      const crashes = watch!.crashesOf([app.pm_id]);
      pm2Of(pkg, sb, 'stop', 'frontend-dev');
      for (let i = 0; i < 100 && !watch!.stoppingOf([app.pm_id]); i++) await new Promise((r) => setTimeout(r, 50));
      expect(watch!.stoppingOf([app.pm_id])).toBe(true);
      // The stop is not one more crash.
      expect(watch!.crashesOf([app.pm_id])).toBe(crashes);
      pm2Of(pkg, sb, 'restart', 'frontend-dev');
      for (let i = 0; i < 100 && !(await served(sb)).includes(id); i++) await new Promise((r) => setTimeout(r, 100));
      expect(calls(log)).toEqual([]);
    } finally {
      watch?.close();
      await pm2.close();
    }
  });

  it('pm2 kill + pm2 resurrect (that version) brings the dumped release back', async () => {
    const id = JSON.parse(run(['status', '--json']).stdout).active.id as string;
    pm2Of(pkg, sb, 'kill');
    pm2Of(pkg, sb, 'resurrect');
    for (let i = 0; i < 100 && !(await served(sb)).includes(id); i++) await new Promise((r) => setTimeout(r, 200));
    expect(await served(sb)).toContain(id);
  });
});

describe('PM2 through its CLI when the socket cannot be used', () => {
  let sb: Sandbox;
  afterEach(async () => {
    await sb?.close();
  });

  it('PM2_RELEASE_PM2_TRANSPORT=cli: every call a pm2 process, the deploy the same', async () => {
    sb = await createSandbox();
    const log = path.join(sb.root, 'pm2-calls.log');
    const env = { PM2_RELEASE_PM2: loggingPm2(PM2_7, path.join(sb.root, 'pm2pkg'), log), PM2_RELEASE_PM2_TRANSPORT: 'cli' };
    sb.pm2('ping');
    const r = cli(sb, ['deploy', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const seen = calls(log).map((l) => l.split(' ')[0]);
    expect(seen).toContain('jlist');
    expect(seen).toContain('start');
    expect(seen).toContain('save');
    expect(await served(sb)).toContain(JSON.parse(r.stdout).release.id);
  });

  it('a pm2 outside a pm2 package: the CLI, and the reason said once', async () => {
    sb = await createSandbox();
    const log = path.join(sb.root, 'pm2-calls.log');
    const bin = path.join(sb.root, 'bin', 'pm2');
    fs.mkdirSync(path.dirname(bin));
    fs.writeFileSync(bin, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${log}'\nexec '${process.execPath}' '${path.join(PM2_7, 'bin/pm2')}' "$@"\n`, { mode: 0o755 });
    sb.pm2('ping');
    const r = cli(sb, ['deploy', '--json'], { PM2_RELEASE_PM2: bin });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/talking to PM2 through its CLI \(a process per call\): .*is not inside a pm2 package/g)).toHaveLength(1);
    expect(calls(log).map((l) => l.split(' ')[0])).toContain('start');
    expect(await served(sb)).toContain(JSON.parse(r.stdout).release.id);
  });
});

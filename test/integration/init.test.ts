/**
 * `pm2-release init` on a real PM2 daemon (private PM2_HOME): an app started by hand the runbook's way is
 * proposed a config that then deploys behind the router and serves; an app from an ecosystem file; an app
 * outside any git work tree and an unknown app name are refused; no daemon is started when none runs. PM2
 * is never changed by init, and a canary secret in the app's PM2 env and in its .env.local never shows.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { portHolder } from '../../src/health.js';
import { CLI, ROOT, createSandbox, freePort, type Sandbox, waitServing } from '../helpers/sandbox.js';

const APP = 'frontend-dev';
const CANARY_PM2 = 'canary-pm2env-5e1f0a';
const CANARY_FILE = 'canary-envlocal-c47d2b';

describe('init (real PM2)', () => {
  let sb: Sandbox;
  const outputs: string[] = [];
  const written = () => path.join(sb.root, 'adopt', 'pm2-release.config.json');
  /** The built CLI, from the sandbox root, with no --config of the sandbox's: init's --config is where to write. */
  const run = (args: string[], env: Record<string, string | undefined> = sb.env) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { env: env, encoding: 'utf8', cwd: sb.root, timeout: 180_000 });
    outputs.push(r.stdout, r.stderr);
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  /** What init must never change: the processes, their pids and restarts, and the dump. */
  const pm2State = () =>
    JSON.stringify({
      procs: sb.jlist().map((p) => [p.name, p.pid, p.pm2_env.restart_time, p.pm2_env.status]),
      dump: fs.existsSync(path.join(sb.pm2Home, 'dump.pm2')) ? fs.statSync(path.join(sb.pm2Home, 'dump.pm2')).mtimeMs : null,
    });
  const npmEnv = () => ({ ...sb.env });

  beforeAll(async () => {
    // The sandbox's own config file is not used: init proposes one.
    sb = await createSandbox();
    execFileSync('npm', ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: sb.appDir, env: npmEnv(), stdio: 'ignore' });
    execFileSync('npm', ['run', 'build'], { cwd: sb.appDir, env: npmEnv(), stdio: 'ignore' });
    fs.writeFileSync(path.join(sb.appDir, '.env.local'), `API_TOKEN=${CANARY_FILE}\n`, { mode: 0o600 });
    // The runbook's way: FRONT_PORT in the shell, `pm2 start npm --name frontend-dev -- run start` from frontend/.
    execFileSync(sb.env.PM2_RELEASE_PM2!, ['start', 'npm', '--name', APP, '--', 'run', 'start'], {
      cwd: sb.appDir,
      env: { ...sb.env, FRONT_PORT: String(sb.port), API_TOKEN: CANARY_PM2 },
      stdio: 'ignore',
    });
    await waitServing(sb.port, 'release none');
  });
  afterAll(async () => {
    // Every output of every init run, JSON and human: the canary values never appear.
    for (const o of outputs) {
      expect(o).not.toContain(CANARY_PM2);
      expect(o).not.toContain(CANARY_FILE);
    }
    await sb?.close();
  });

  it("the runbook's VM after its hand `pm2 save` (dump 0644, no .bak): init exits 6, and every line it prints runs as printed, in order", () => {
    const dump = path.join(sb.pm2Home, 'dump.pm2');
    execFileSync(sb.env.PM2_RELEASE_PM2!, ['save'], { env: sb.env, stdio: 'ignore' });
    fs.chmodSync(dump, 0o644);
    fs.rmSync(`${dump}.bak`, { force: true });
    const sh = (line: string) => spawnSync('sh', ['-ec', line], { cwd: sb.root, env: sb.env, encoding: 'utf8' });

    const r = run(['init', '--json', '--releases-dir', sb.releasesDir, '--config', written()]);
    expect(r.code, r.stdout).toBe(6);
    const j = JSON.parse(r.stdout);
    const fail = j.doctor.checks.find((c: { name: string }) => c.name === 'pm2-dump');
    expect(fail.status).toBe('fail');
    // No .bak yet: the fix names only the dump (chmod exits 1 on a missing file, breaking `&&` and set -e).
    expect(fail.fix).toBe(`chmod 600 ${dump}`);
    // init checks its own proposal again: not `doctor`, which has no config file to read before --write.
    expect(j.next.command).toBe(`fix the FAIL lines, then: pm2-release init --app ${APP} --releases-dir ${sb.releasesDir} --config ${written()}`);
    const human = run(['init', '--releases-dir', sb.releasesDir, '--config', written()]);
    expect(human.code).toBe(6);
    expect(human.stdout).not.toMatch(/systemd ok: .*skipped/);

    expect(sh(fail.fix).status).toBe(0);
    const again = run([
      ...j.next.command
        .replace(/^fix the FAIL lines, then: /, '')
        .split(' ')
        .slice(1),
      '--json',
    ]);
    expect(again.code, again.stdout).toBe(0);
    // A dump exists, so the reboot path's `pm2 save` leaves a .bak: its chmod names both, and runs after that save.
    const reboot: string[] = JSON.parse(again.stdout).next.reboot;
    expect(reboot[3]).toBe(`chmod 600 ${dump} ${dump}.bak`);
    execFileSync(sb.env.PM2_RELEASE_PM2!, ['save'], { env: sb.env, stdio: 'ignore' });
    expect(sh(`set -e; ${reboot[3]}`).status).toBe(0);
    expect(fs.statSync(`${dump}.bak`).mode & 0o777).toBe(0o600);
    // doctor's systemd line says skipped as a SKIP, not "ok … skipped".
    const doc = spawnSync(process.execPath, [CLI, 'doctor'], { env: { ...sb.env }, encoding: 'utf8', cwd: sb.root });
    expect(doc.stdout).not.toMatch(/OK\s+systemd/);
  });

  it('proposes a config for the hand-started app, writes it 0600 with --write, changes nothing in PM2, and the config deploys behind the router', async () => {
    const before = pm2State();
    const dry = run(['init', '--json', '--releases-dir', sb.releasesDir, '--config', written()]);
    expect(dry.code, dry.stdout + dry.stderr).toBe(0);
    const r = JSON.parse(dry.stdout);
    expect(r.ok).toBe(true);
    expect(r.written).toBe(false);
    expect(fs.existsSync(written())).toBe(false);
    expect(r.config).toMatchObject({
      workspace: fs.realpathSync(sb.workspace),
      releasesDir: sb.releasesDir,
      app: {
        name: APP,
        dir: 'frontend',
        script: 'npm',
        args: ['run', 'start'],
        env: { FRONT_PORT: String(sb.port) },
        portEnv: 'FRONT_PORT',
        strategy: 'router',
        install: ['npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund'],
        build: ['npm', 'run', 'build'],
      },
    });
    expect(r.comments.workspace).toContain('git rev-parse --show-toplevel');
    expect(r.comments['app.envFiles']).toContain('present now: .env.local');
    // The secret's name is reported, never its value; .env.local defines it, so no warning to move it.
    expect(r.app.envNames).toContain('API_TOKEN');
    expect(r.app.secretNames).toContain('API_TOKEN');
    expect(r.warnings.join('\n')).not.toContain('API_TOKEN');
    expect(r.app.pm2Version).toMatch(/^\d+\.\d+\.\d+/);
    const [first, last] = r.config.router.releasePorts;
    expect(r.firstDeploy).toMatchObject({ strategy: 'router', publicPort: sb.port });
    expect(r.firstDeploy.releasePort).toBeGreaterThanOrEqual(first);
    expect(r.firstDeploy.releasePort).toBeLessThanOrEqual(last);
    expect(r.firstDeploy.takeOver).toContain('one short gap');
    expect(r.firstDeploy.diskNeededBytes).toBeGreaterThan(0);
    expect(r.firstDeploy.diskFreeBytes).toBeGreaterThan(r.firstDeploy.diskNeededBytes);
    expect(r.doctor.ok).toBe(true);
    expect(r.next.command).toBe(`pm2-release init --app ${APP} --releases-dir ${sb.releasesDir} --config ${written()} --write`);
    expect(r.next.reboot).toEqual([
      `cd ${ROOT}`,
      `PM2_RELEASE_CONFIG=${written()} pm2 start ecosystem.config.cjs`,
      'pm2 save',
      `chmod 600 ${path.join(sb.pm2Home, 'dump.pm2')} ${path.join(sb.pm2Home, 'dump.pm2.bak')}`,
    ]);
    expect(r.next.executor).toContain(`deploy({ configPath: ${JSON.stringify(written())}`);

    // Human output: the same proposal as JSONC, the first deploy and the commands.
    const human = run(['init', '--releases-dir', sb.releasesDir, '--config', written()]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain('  // git top-level of');
    expect(human.stdout).toMatch(/take-over\s+one short gap/);
    expect(human.stdout).toContain(`PM2_RELEASE_CONFIG=${written()} pm2 start ecosystem.config.cjs`);
    expect(human.stdout).toContain('API_TOKEN');

    // The printed next command, as printed.
    const w = run([...r.next.command.split(' ').slice(1), '--json']);
    expect(w.code, w.stdout).toBe(0);
    const wr = JSON.parse(w.stdout);
    expect(wr.written).toBe(true);
    expect(wr.next.command).toBe(`pm2-release --config ${written()} deploy`);
    expect(fs.statSync(written()).mode & 0o777).toBe(0o600);
    expect(JSON.parse(fs.readFileSync(written(), 'utf8'))).toEqual(wr.config);
    // Again without --force: refused, the file untouched.
    const again = run(['init', '--json', '--write', '--config', written()]);
    expect(again.code).toBe(2);
    expect(JSON.parse(again.stdout).error.code).toBe('CONFIG_EXISTS');
    expect(pm2State()).toBe(before);

    // The first deploy, with the next command: the router takes the public port, the release a private one.
    const d = run([...wr.next.command.split(' ').slice(1), '--json']);
    expect(d.code, d.stdout + d.stderr).toBe(0);
    const id = JSON.parse(d.stdout).release.id;
    await waitServing(sb.port, id);
    const router = sb.jlist().find((p) => p.name === `${APP}-router`);
    expect(router?.pm2_env.status).toBe('online');
    // In PM2 cluster mode PM2's daemon holds the port for the router (a replacement router can share it).
    expect(router?.pm2_env.exec_mode).toBe('cluster_mode');
    expect(await portHolder(sb.port)).toBe(Number(fs.readFileSync(path.join(sb.pm2Home, 'pm2.pid'), 'utf8')));

    // Now the app runs from a release: init says so instead of proposing a second config.
    const adopted = run(['init', '--json', '--config', path.join(sb.root, 'other.json')]);
    expect(adopted.code).toBe(2);
    expect(JSON.parse(adopted.stdout).error.code).toBe('ALREADY_RELEASED');
  });

  it('an app started from an ecosystem file: its node script, relative to the app dir', async () => {
    // A second checkout of the example in its own git work tree, started by `pm2 start ecosystem.config.cjs`.
    const ws = path.join(sb.root, 'shop');
    const dir = path.join(ws, 'web');
    fs.cpSync(sb.appDir, dir, { recursive: true, filter: (src) => !src.endsWith('.env.local') });
    execFileSync('git', ['init', '-q', '-b', 'main'], { cwd: ws, env: npmEnv() });
    const port = await freePort();
    const eco = path.join(ws, 'ecosystem.config.cjs');
    fs.writeFileSync(
      eco,
      `module.exports = { apps: [{ name: 'shop', script: 'server.mjs', cwd: ${JSON.stringify(dir)}, env: { FRONT_PORT: '${port}' } }] };\n`,
    );
    sb.pm2('start', eco);
    await waitServing(port, 'release none');
    const before = pm2State();

    const r = run(['init', '--json', '--app', 'shop', '--releases-dir', path.join(sb.root, 'shop-releases'), '--config', path.join(ws, 'p.json')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.config).toMatchObject({
      workspace: fs.realpathSync(ws),
      app: { name: 'shop', dir: 'web', script: 'server.mjs', args: [], env: { FRONT_PORT: String(port) }, portEnv: 'FRONT_PORT' },
    });
    expect(j.firstDeploy.publicPort).toBe(port);
    expect(pm2State()).toBe(before);
  });

  it('an app outside any git work tree: a clear refusal, exit 2', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-plain-'));
    try {
      fs.cpSync(sb.appDir, dir, { recursive: true });
      const port = await freePort();
      execFileSync(sb.env.PM2_RELEASE_PM2!, ['start', 'npm', '--name', 'plain', '--', 'run', 'start'], {
        cwd: dir,
        env: { ...sb.env, FRONT_PORT: String(port) },
        stdio: 'ignore',
      });
      await waitServing(port, 'release none');
      const r = run(['init', '--json', '--app', 'plain']);
      expect(r.code).toBe(2);
      const e = JSON.parse(r.stdout).error;
      expect(e.code).toBe('APP_NOT_IN_GIT');
      expect(e.message).toContain(`runs from ${fs.realpathSync(dir)}, which is not inside a git work tree`);
      const human = run(['init', '--app', 'plain']);
      expect(human.code).toBe(2);
      expect(human.stderr).toContain('not inside a git work tree');
      expect(human.stderr).toContain('fix: ');
    } finally {
      sb.pm2('delete', 'plain');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no PM2 app of that name: lists the names PM2 runs; no daemon at all: says so and starts none', () => {
    const r = run(['init', '--json', '--app', 'nope']);
    expect(r.code).toBe(2);
    const e = JSON.parse(r.stdout).error;
    expect(e.code).toBe('PM2_APP_NOT_FOUND');
    expect(e.message).toContain('no PM2 app named nope');
    expect(e.message).toContain(`PM2 runs: ${APP}, ${APP}-router, shop`);

    const emptyHome = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-nopm2-'));
    try {
      const n = run(['init', '--json'], { ...sb.env, PM2_HOME: emptyHome });
      expect(n.code).toBe(2);
      expect(JSON.parse(n.stdout).error.message).toContain(`no PM2 daemon runs for PM2_HOME ${emptyHome}`);
      expect(fs.readdirSync(emptyHome)).toEqual([]);
    } finally {
      fs.rmSync(emptyHome, { recursive: true, force: true });
    }
  });
});

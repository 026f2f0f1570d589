/**
 * Safety guarantees on a real PM2 daemon: a release that crashes at boot never stays live, one change at a
 * time, bad input changes nothing, pre-flight stops a deploy before it builds.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, list, prune } from '../../src/index.js';
import { CLI, cli, createSandbox, get, type Sandbox } from '../helpers/sandbox.js';

function releaseDirs(sb: Sandbox): string[] {
  return fs.existsSync(sb.releasesDir)
    ? fs
        .readdirSync(sb.releasesDir)
        .filter((n) => /^\d{8}T/.test(n))
        .sort()
    : [];
}

function frontend(sb: Sandbox) {
  return sb.jlist().find((p) => p.name === 'frontend-dev');
}

describe('a release that builds but crashes never stays live', () => {
  let sb: Sandbox;
  let good: string;
  const url = () => `http://127.0.0.1:${sb.port}/`;
  beforeAll(async () => {
    sb = await createSandbox({ keep: 5 });
    good = (await deploy({ configPath: sb.configPath, env: sb.env })).release.id;
  });
  afterAll(async () => sb?.close());

  it('verify catches a crash at boot: exit 4, the live app is never touched, the release is failed', async () => {
    const before = frontend(sb)!;
    sb.commit('crashes at boot', { CRASH_ON_BOOT: '1' });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code, r.stderr).toBe(4);
    expect(JSON.parse(r.stdout).error).toMatchObject({ code: 'VERIFY_FAILED', phase: 'verify' });
    const after = frontend(sb)!;
    expect(after.pid).toBe(before.pid);
    expect(after.pm2_env.restart_time).toBe(before.pm2_env.restart_time);
    expect((await get(url())).body).toContain(good);
    // the temporary verify process is gone
    expect(sb.jlist().filter((p) => p.name.includes('.verify-'))).toEqual([]);
    const failed = (await list({ configPath: sb.configPath, env: sb.env })).releases[0];
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'VERIFY_FAILED' } });
  });

  it('with --no-verify the health gate reverts it: exit 5, previous release serving and saved', async () => {
    const r = cli(sb, ['deploy', '--no-verify', '--json']);
    expect(r.code, r.stderr).toBe(5);
    const out = JSON.parse(r.stdout);
    expect(out.error).toMatchObject({ code: 'HEALTH_FAILED', phase: 'health' });
    expect(out.error.message).toContain('serving again');
    const res = await get(url());
    expect(
      res.body,
      JSON.stringify({ res, procs: sb.jlist().map((p) => [p.name, p.pm2_env.status, p.pm2_env.pm_cwd, p.pm2_env.FRONT_PORT]), stderr: r.stderr.slice(-3000) }),
    ).toContain(good);
    const proc = frontend(sb)!;
    expect(proc.pm2_env.pm_cwd).toBe(path.join(sb.releasesDir, good, 'frontend'));
    const dump = fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8');
    expect(dump).toContain(path.join(sb.releasesDir, good, 'frontend'));
    expect(dump).not.toContain(out.error.releaseId);
    const l = await list({ configPath: sb.configPath, env: sb.env });
    expect(l.active).toBe(good);
    expect(l.releases.find((x) => x.id === out.error.releaseId)?.status).toBe('failed');
  });

  it('a release that answers, then crashes, is caught by the settle time (PM2 restart count)', async () => {
    sb.commit('crashes shortly after boot', { CRASH_ON_BOOT: null, CRASH_AFTER_MS: '150' });
    const r = cli(sb, ['deploy', '--no-verify', '--json']);
    expect(r.code, r.stderr).toBe(5);
    expect(JSON.parse(r.stdout).error.message).toMatch(/restarted|answered|not healthy|PM2 shows/);
    expect((await get(url())).body).toContain(good);
  });

  it('several health checks, each with its own expected statuses (401 proves the API is alive)', async () => {
    sb.commit('healthy again', { CRASH_AFTER_MS: null });
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    cfg.app.healthcheck.checks = [
      { url: 'http://127.0.0.1:{port}/api/protected', expectStatus: [401] },
      { url: 'http://127.0.0.1:{port}/health', expectStatus: [200] },
    ];
    fs.writeFileSync(sb.configPath, JSON.stringify(cfg));
    const ok = cli(sb, ['deploy', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    // A check that can never pass fails the gate and reverts.
    cfg.app.healthcheck.checks = [{ url: 'http://127.0.0.1:{port}/api/protected', expectStatus: [200] }];
    cfg.app.healthcheck.timeoutMs = 2_000;
    fs.writeFileSync(sb.configPath, JSON.stringify(cfg));
    const live = JSON.parse(ok.stdout).release.id;
    sb.commit('v-next', { 'version.txt': 'v-next\n' });
    const bad = cli(sb, ['deploy', '--json']);
    expect(bad.code).toBe(4); // verify runs the same checks first
    expect(JSON.parse(bad.stdout).error.message).toContain('answered 401');
    expect((await get(url())).body).toContain(live);
    delete cfg.app.healthcheck.checks;
    fs.writeFileSync(sb.configPath, JSON.stringify(cfg));
  });

  it('retention: failed releases never push a good one out; only the newest failed one is kept', async () => {
    const before = await list({ configPath: sb.configPath, env: sb.env });
    const ready = before.releases.filter((r) => r.status === 'ready').map((r) => r.id);
    const failed = before.releases.filter((r) => r.status === 'failed').map((r) => r.id);
    expect(failed.length).toBeGreaterThanOrEqual(2); // earlier successful deploys already pruned older failures
    const dry = await prune({ configPath: sb.configPath, env: sb.env, keep: 2, dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(releaseDirs(sb)).toHaveLength(before.releases.length); // dry run removed nothing
    expect(dry.kept).toContain(failed[0]);
    expect(dry.removed.map((r) => r.id)).toEqual(expect.arrayContaining(failed.slice(1)));
    const human = cli(sb, ['prune', '--keep', '2', '--dry-run']);
    expect(human.stdout).toContain('would remove');
    const done = await prune({ configPath: sb.configPath, env: sb.env, keep: 2 });
    const after = await list({ configPath: sb.configPath, env: sb.env });
    expect(after.releases.filter((r) => r.status === 'ready').map((r) => r.id)).toEqual(ready.slice(0, 2));
    expect(after.releases.filter((r) => r.status === 'failed').map((r) => r.id)).toEqual([failed[0]]);
    expect(done.removed.length).toBeGreaterThan(0);
  });
});

describe('one change at a time', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await createSandbox();
    await deploy({ configPath: sb.configPath, env: sb.env });
  });
  afterAll(async () => sb?.close());

  const runCli = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, '--config', sb.configPath, ...args], { env: sb.env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('two concurrent deploys: one gets the lock error (exit 3) naming the holder, state stays consistent', async () => {
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const [a, b] = await Promise.all([runCli(['deploy', '--json']), runCli(['deploy', '--json'])]);
    const codes = [a.code, b.code].sort();
    expect(codes).toEqual([0, 3]);
    const loser = a.code === 3 ? a : b;
    const err = JSON.parse(loser.stdout).error;
    expect(err.code).toBe('LOCKED');
    expect(err.message).toMatch(/locked by pid \d+ on .* \(deploy.*\) since \d\d:\d\d:\d\d UTC/);
    const l = await list({ configPath: sb.configPath, env: sb.env });
    expect(l.releases.filter((r) => r.status === 'ready')).toHaveLength(2);
    expect(l.releases.filter((r) => r.status !== 'ready')).toHaveLength(0);
    expect(fs.existsSync(path.join(sb.releasesDir, '.lock'))).toBe(false);
  });

  it('with --wait the second deploy queues behind the first and both succeed', async () => {
    sb.commit('v3', { 'version.txt': 'v3\n' });
    const [a, b] = await Promise.all([runCli(['deploy', '--json', '--wait=120']), runCli(['deploy', '--json', '--wait=120'])]);
    expect([a.code, b.code], a.stderr + b.stderr).toEqual([0, 0]);
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain('v3');
  });

  it('a lock left by a dead process is broken automatically (and logged)', async () => {
    fs.mkdirSync(path.join(sb.releasesDir, '.lock'));
    // pid 2^22+1 is above Linux's pid_max default: never alive
    fs.writeFileSync(
      path.join(sb.releasesDir, '.lock.json'),
      JSON.stringify({ pid: 4194305, host: (await import('node:os')).hostname(), command: 'deploy', since: new Date().toISOString() }),
    );
    const r = cli(sb, ['prune']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('breaking the lock of pid 4194305');
  });
});

describe('bad input changes nothing', () => {
  let sb: Sandbox;
  let dirsBefore: string[];
  let pidBefore: number;
  beforeAll(async () => {
    sb = await createSandbox();
    await deploy({ configPath: sb.configPath, env: sb.env });
    dirsBefore = releaseDirs(sb);
    pidBefore = frontend(sb)!.pid;
  });
  afterAll(async () => sb?.close());

  const unchanged = () => {
    expect(releaseDirs(sb)).toEqual(dirsBefore);
    expect(frontend(sb)!.pid).toBe(pidBefore);
  };

  it.each([
    ['../../etc', 'RELEASE_ID_INVALID'],
    ['/tmp', 'RELEASE_ID_INVALID'],
    ['20261121T204233Z-abc', 'RELEASE_ID_INVALID'],
    ['20261341T204233Z-abc1234', 'RELEASE_ID_INVALID'],
    ['20261121T204233Z-abc1234', 'RELEASE_NOT_FOUND'],
  ])('activate %s → %s, exit 2', (id, code) => {
    const r = cli(sb, ['activate', id, '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe(code);
    unchanged();
  });

  it('a release dir that is a symlink escaping releasesDir is refused', () => {
    const id = '20200101T000000Z-1234567';
    fs.symlinkSync(sb.workspace, path.join(sb.releasesDir, id));
    const r = cli(sb, ['activate', id, '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('RELEASE_ID_INVALID');
    fs.unlinkSync(path.join(sb.releasesDir, id));
    unchanged();
  });

  it('an env file symlinked outside the workspace is refused before anything is built', () => {
    const outside = path.join(sb.root, 'outside.env');
    fs.writeFileSync(outside, 'X=1\n');
    fs.symlinkSync(outside, path.join(sb.appDir, '.env.production'));
    sb.commit('v2', { 'version.txt': 'v2\n' });
    const r = cli(sb, ['deploy', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error).toMatchObject({ code: 'ENV_FILE_UNSAFE', phase: 'env' });
    fs.unlinkSync(path.join(sb.appDir, '.env.production'));
    unchanged();
  });

  it('a ref that does not resolve, or that looks like an option', () => {
    for (const [ref, code] of [
      ['no-such-branch', 'REF_NOT_FOUND'],
      ['--upload-pack=evil', 'REF_INVALID'],
      ['main..HEAD', 'REF_INVALID'],
    ]) {
      const r = cli(sb, ['deploy', '--ref', ref, '--json']);
      expect(r.code, ref).toBe(2);
      expect(JSON.parse(r.stdout).error.code).toBe(code);
    }
    unchanged();
  });

  it('a shallow clone lacking the commit gets a hint to fetch it', () => {
    const shallow = path.join(sb.root, 'shallow');
    const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, env: sb.env, encoding: 'utf8' });
    git(sb.root, 'clone', '-q', '--depth', '1', `file://${sb.workspace}`, shallow);
    const first = git(sb.workspace, 'rev-list', '--max-parents=0', 'HEAD').trim();
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    const shallowConfig = path.join(sb.root, 'shallow.json');
    fs.writeFileSync(shallowConfig, JSON.stringify({ ...cfg, workspace: shallow }));
    const r = cli(sb, ['--config', shallowConfig, 'deploy', '--ref', first, '--json']);
    expect(r.code).toBe(2);
    const err = JSON.parse(r.stdout).error;
    expect(err.code).toBe('REF_NOT_FOUND');
    expect(err.hint).toContain('shallow');
    unchanged();
  });

  it('a commit without package-lock.json, a missing workspace, a missing app dir', () => {
    sb.commit('drop lockfile', { 'package-lock.json': null });
    let r = cli(sb, ['deploy', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('LOCKFILE_MISSING');
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    const other = path.join(sb.root, 'other.json');
    fs.writeFileSync(other, JSON.stringify({ ...cfg, workspace: path.join(sb.root, 'nope') }));
    r = cli(sb, ['--config', other, 'deploy', '--json']);
    expect(r.code).toBe(2); // a config mistake, not an environment failure
    expect(JSON.parse(r.stdout).error).toMatchObject({ code: 'WORKSPACE_MISSING', phase: 'resolve' });
    fs.writeFileSync(other, JSON.stringify({ ...cfg, app: { ...cfg.app, dir: 'backend' } }));
    r = cli(sb, ['--config', other, 'deploy', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('APP_DIR_MISSING');
    unchanged();
  });

  it('a config with unknown keys and wrong types: one error listing every problem, exit 2', () => {
    const bad = path.join(sb.root, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ keep: 'two', colour: 'blue', app: { name: 42, install: 'npm ci' } }));
    const r = cli(sb, ['--config', bad, 'deploy', '--json']);
    expect(r.code).toBe(2);
    const msg = JSON.parse(r.stdout).error.message;
    for (const part of ['keep', 'colour', 'app.name', 'app.install']) expect(msg).toContain(part);
    unchanged();
  });

  it('app.requiredEnv: a release whose env lacks a required variable is refused before the switch', () => {
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    const strict = path.join(sb.root, 'strict.json');
    fs.writeFileSync(strict, JSON.stringify({ ...cfg, app: { ...cfg.app, requiredEnv: ['AUTH_TOKEN'] } }));
    sb.commit('restore lockfile', { 'package-lock.json': fs.readFileSync(path.join(__dirname, '../../examples/app/package-lock.json'), 'utf8') });
    const r = cli(sb, ['--config', strict, 'deploy', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error).toMatchObject({ code: 'REQUIRED_ENV_MISSING', phase: 'env' });
    unchanged();
    fs.writeFileSync(path.join(sb.appDir, '.env'), 'AUTH_TOKEN=s3cr3t-value\n', { mode: 0o600 });
    const ok = cli(sb, ['--config', strict, 'deploy', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout + ok.stderr).not.toContain('s3cr3t-value');
  });
});

describe('pre-flight and orphans', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await createSandbox();
  });
  afterAll(async () => sb?.close());

  it('doctor reports each check; a disk minimum above what is free fails deploy before it builds', async () => {
    const d = cli(sb, ['doctor', '--json']);
    const out = JSON.parse(d.stdout);
    expect(out.checks.map((c: { name: string }) => c.name)).toEqual(
      expect.arrayContaining(['workspace', 'releases-dir', 'disk', 'memory', 'pm2', 'port', 'node', 'pm2-dump', 'systemd', 'release-host']),
    );
    for (const c of out.checks) expect(['ok', 'warn', 'fail', 'skip']).toContain(c.status);
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    const greedy = path.join(sb.root, 'greedy.json');
    fs.writeFileSync(greedy, JSON.stringify({ ...cfg, preflight: { minFreeDiskMB: 1e12 } }));
    const r = cli(sb, ['--config', greedy, 'deploy', '--json']);
    expect(r.code).toBe(6);
    expect(JSON.parse(r.stdout).error).toMatchObject({ code: 'PREFLIGHT_FAILED', phase: 'preflight' });
    expect(releaseDirs(sb)).toEqual([]);
    const human = cli(sb, ['--config', greedy, 'doctor']);
    expect(human.code).toBe(6);
    expect(human.stdout).toMatch(/FAIL\s+disk/);
  });

  it('a non-PM2 process squatting the app port is named (with its pid) and nothing is deployed', async () => {
    const squatter = http.createServer((_q, s) => s.end('squatter')).listen(sb.port, '127.0.0.1');
    await new Promise((r) => squatter.once('listening', r));
    try {
      const r = cli(sb, ['deploy', '--json']);
      expect(r.code).toBe(6);
      const err = JSON.parse(r.stdout).error;
      expect(err.code).toBe('PREFLIGHT_FAILED');
      expect(err.message).toContain(`held by pid ${process.pid}`);
      expect(releaseDirs(sb)).toEqual([]);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
  });

  it('the dump is made 0600 after every save', async () => {
    await deploy({ configPath: sb.configPath, env: sb.env });
    for (const f of ['dump.pm2', 'dump.pm2.bak']) {
      const p = path.join(sb.pm2Home, f);
      if (fs.existsSync(p)) expect(fs.statSync(p).mode & 0o777).toBe(0o600);
    }
    const d = JSON.parse(cli(sb, ['doctor', '--json']).stdout);
    expect(d.checks.find((c: { name: string }) => c.name === 'pm2-dump').status).toBe('ok');
  });
});

/**
 * Content-addressed releases and shared node_modules (issue 10, items 1 and 2) on a real PM2 daemon, real
 * git and npm. The example's `file:` dependency is installed with --install-links so npm copies it: its
 * files (and a 4 MiB data file) are real files to share.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activate, deploy, history, list, status } from '../../src/index.js';
import { SharedDeps } from '../../src/release/shared-deps.js';
import { CLI, cli, commitLockfileBump, createSandbox, EXAMPLE_APP, get, type Sandbox } from '../helpers/sandbox.js';

const INSTALL = ['npm', 'ci', '--install-links', '--prefer-offline', '--no-audit', '--no-fund'];
const DATA_MIB = 4;

function manifestOf(sb: Sandbox, id: string) {
  return JSON.parse(fs.readFileSync(path.join(sb.releasesDir, id, '.pm2-release/manifest.json'), 'utf8'));
}
const nm = (sb: Sandbox, id: string, rel = '') => path.join(sb.releasesDir, id, 'frontend/node_modules', rel);
const pid = (sb: Sandbox) => sb.jlist().find((p) => p.name === 'frontend-dev')!.pid;

/** Commits a file outside the app dir (the app dir's tree stays as it was). */
function commitOutside(sb: Sandbox, file: string, text: string): string {
  fs.writeFileSync(path.join(sb.workspace, file), text);
  const git = (...a: string[]) => execFileSync('git', a, { cwd: sb.workspace, env: sb.env, encoding: 'utf8' }).trim();
  git('add', '-A');
  git('commit', '-q', '-m', `docs: ${file}`);
  return git('rev-parse', 'HEAD');
}

/** Allocated bytes of several trees together, each inode counted once (as du does across its arguments). */
function diskOf(dirs: string[]): number {
  const seen = new Set<string>();
  let total = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const st = fs.lstatSync(p);
      const k = `${st.dev}:${st.ino}`;
      if (seen.has(k)) continue;
      seen.add(k);
      total += st.blocks * 512;
      if (st.isDirectory()) walk(p);
    }
  };
  for (const d of dirs) walk(d);
  return total;
}

/**
 * Runs argv as root without any capability: file modes apply to it as to the file's owner, a normal user
 * (setpriv empties the bounding set, so the exec'd process gets no CAP_DAC_OVERRIDE or CAP_FOWNER).
 */
function asOwnerWithoutRoot(argv: string[], env: Record<string, string | undefined>) {
  const uidZero = process.getuid?.() === 0;
  const full = uidZero ? ['setpriv', '--bounding-set=-all', '--inh-caps=-all', '--', ...argv] : argv;
  return spawnSync(full[0], full.slice(1), { env, encoding: 'utf8', timeout: 180_000 });
}

describe('content-addressed releases', () => {
  let sb: Sandbox;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  let first: string;
  let firstSha: string;
  beforeAll(async () => {
    sb = await createSandbox({ keep: 3 });
  });
  afterAll(async () => sb?.close());

  it('a build records its input key and the commit it serves', async () => {
    const r = await deploy(opts());
    expect(r.mode).toBe('built');
    first = r.release.id;
    firstSha = r.release.sha!;
    const m = manifestOf(sb, first);
    expect(m.inputKey).toMatch(/^[0-9a-f]{64}$/);
    expect(m.tree).toBe(execFileSync('git', ['rev-parse', `${firstSha}:frontend`], { cwd: sb.workspace, encoding: 'utf8' }).trim());
    expect(m.commits).toEqual([firstSha]);
    expect(r.release.commits).toEqual([firstSha]);
  });

  it('unchanged inputs: no build, no switch, the same PM2 pid (the bench times it); list, status and history show the commit', async () => {
    const pidBefore = pid(sb);
    const dirsBefore = fs.readdirSync(sb.releasesDir).sort();
    const sha = commitOutside(sb, 'README.md', 'docs only\n');
    const t0 = performance.now();
    const r = await deploy(opts());
    const ms = performance.now() - t0;
    console.log(`deploy on unchanged inputs: ${ms.toFixed(0)} ms`, r.durationsMs);
    expect(r.mode).toBe('unchanged');
    expect(r.reason).toBe(`frontend tree unchanged since ${firstSha.slice(0, 7)}`);
    expect(r.release.id).toBe(first);
    for (const p of ['archive', 'install', 'build', 'switch', 'health', 'verify']) expect(r.durationsMs[p]).toBeUndefined();
    expect(pid(sb)).toBe(pidBefore);
    expect(sb.jlist().find((p) => p.name === 'frontend-dev')!.pm2_env.restart_time).toBe(0);
    expect(fs.readdirSync(sb.releasesDir).sort()).toEqual(dirsBefore);
    expect(manifestOf(sb, first).commits).toEqual([firstSha, sha]);
    expect((await list(opts())).releases[0].commits).toEqual([firstSha, sha]);
    expect((await status(opts())).active?.commits).toEqual([firstSha, sha]);
    expect(cli(sb, ['list']).stdout).toContain(`also serves ${sha.slice(0, 7)}`);
    expect(cli(sb, ['status']).stdout).toContain(`also serves ${sha.slice(0, 7)}`);
    const h = (await history(opts())).entries[0];
    expect(h).toMatchObject({ action: 'deploy', result: 'ok', to: first, sha, detail: `frontend tree unchanged since ${firstSha.slice(0, 7)}` });
    expect(cli(sb, ['history']).stdout).toContain('frontend tree unchanged since');
    expect(cli(sb, ['deploy']).stdout).toContain(`is already active: frontend tree unchanged since ${firstSha.slice(0, 7)}`);
  });

  it('an env file edit builds (NEXT_PUBLIC_* is inlined at build time), though the commit is the same', async () => {
    fs.writeFileSync(path.join(sb.appDir, '.env.local'), 'NEXT_PUBLIC_API=https://api.example.invalid\n');
    const r = await deploy(opts());
    expect(r.mode).toBe('built');
    expect(r.release.id).not.toBe(first);
    expect(r.durationsMs.build).toBeGreaterThan(0);
  });

  it('inputs equal to a retained release: it is activated without a build; --rebuild builds', async () => {
    fs.rmSync(path.join(sb.appDir, '.env.local'));
    const sha = commitOutside(sb, 'CHANGELOG.md', 'nothing for the app\n');
    const r = await deploy(opts());
    expect(r.mode).toBe('reactivated');
    expect(r.release.id).toBe(first);
    expect(r.reason).toBe(`frontend tree unchanged since ${firstSha.slice(0, 7)}`);
    expect(r.durationsMs.install).toBeUndefined();
    expect(r.durationsMs.build).toBeUndefined();
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain(first);
    expect(manifestOf(sb, first).commits.at(-1)).toBe(sha);
    const forced = await deploy({ ...opts(), rebuild: true });
    expect(forced.mode).toBe('built');
    expect(forced.release.sha).toBe(sha);
  });

  it('a lockfile change installs fresh', async () => {
    commitLockfileBump(sb);
    const r = await deploy(opts());
    expect(r.mode).toBe('built');
    expect(manifestOf(sb, r.release.id).dependencies.method).toBe('install');
  });
});

describe('shared node_modules (hard links) stay independent', () => {
  let sb: Sandbox;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  const ids: string[] = [];
  let shares: SharedDeps;
  const original = fs.readFileSync(path.join(EXAMPLE_APP, 'lib/greeting/index.js'), 'utf8');
  beforeAll(async () => {
    sb = await createSandbox({ keep: 3, app: { install: INSTALL } });
    shares = new SharedDeps(sb.releasesDir, (id) => nm(sb, id));
    // A 4 MiB dependency from a committed tarball: a few KiB in the repository (it compresses), 4 MiB in
    // node_modules, as a registry package is: the disk a release's node_modules costs is what sharing saves.
    const pkg = path.join(sb.root, 'big');
    fs.mkdirSync(pkg);
    fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'big', version: '1.0.0' }));
    fs.writeFileSync(path.join(pkg, 'data.bin'), 'x'.repeat(DATA_MIB * 2 ** 20));
    fs.mkdirSync(path.join(sb.appDir, 'vendor'));
    execFileSync('npm', ['pack', '--offline', '--pack-destination', path.join(sb.appDir, 'vendor')], { cwd: pkg, env: sb.env, stdio: 'ignore' });
    const manifest = JSON.parse(fs.readFileSync(path.join(sb.appDir, 'package.json'), 'utf8'));
    manifest.dependencies.big = 'file:vendor/big-1.0.0.tgz';
    fs.writeFileSync(path.join(sb.appDir, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
    execFileSync('npm', ['install', '--package-lock-only', '--offline'], { cwd: sb.appDir, env: sb.env, stdio: 'ignore' });
    sb.commit('a big dependency');
  });
  afterAll(async () => sb?.close());

  it('three releases with one lockfile share one copy: read-only, recorded, ≤ 1.3× the disk of one, and linking is ≤ 10 % of npm ci', async () => {
    for (const v of ['v1', 'v2', 'v3']) {
      if (v !== 'v1') sb.commit(v, { 'version.txt': `${v}\n` });
      ids.push((await deploy(opts())).release.id);
    }
    const [m1, m2, m3] = ids.map((id) => manifestOf(sb, id).dependencies);
    expect(m1.method).toBe('install');
    expect(m2).toMatchObject({ method: 'link', from: ids[0], key: m1.key });
    expect(m3).toMatchObject({ method: 'link', key: m1.key });
    console.log(`dependency step: cold npm ci ${m1.durationMs} ms, linked ${m2.durationMs} ms and ${m3.durationMs} ms`);
    expect(m2.durationMs).toBeLessThanOrEqual(m1.durationMs * 0.1);
    const data = ids.map((id) => fs.statSync(nm(sb, id, 'big/data.bin')));
    expect(new Set(data.map((s) => s.ino)).size).toBe(1);
    for (const s of data) expect(s.mode & 0o222).toBe(0);
    const set = (await shares.read(m1.key))!;
    expect(set.members.sort()).toEqual([...ids].sort());
    expect(set.files.map((f) => f.path)).toEqual(expect.arrayContaining(['big/data.bin', 'greeting/index.js']));
    expect(await shares.check(set)).toEqual([]);
    const one = diskOf([path.join(sb.releasesDir, ids[0])]);
    const three = diskOf(ids.map((id) => path.join(sb.releasesDir, id)));
    console.log(`disk: one release ${(one / 2 ** 20).toFixed(2)} MiB, three ${(three / 2 ** 20).toFixed(2)} MiB (${(three / one).toFixed(2)}×)`);
    expect(three).toBeLessThanOrEqual(one * 1.3);
  });

  it('a new file in one release’s node_modules is not in another’s', () => {
    fs.writeFileSync(nm(sb, ids[2], 'greeting/added-later.txt'), 'x');
    fs.mkdirSync(nm(sb, ids[2], '.cache'), { recursive: true });
    expect(fs.existsSync(nm(sb, ids[1], 'greeting/added-later.txt'))).toBe(false);
    expect(fs.existsSync(nm(sb, ids[0], '.cache'))).toBe(false);
    fs.rmSync(nm(sb, ids[2], 'greeting/added-later.txt'));
    fs.rmSync(nm(sb, ids[2], '.cache'), { recursive: true });
  });

  it('as a normal user (the owner, without root’s override) a write into a shared file is refused', () => {
    const file = nm(sb, ids[1], 'greeting/index.js');
    const r = asOwnerWithoutRoot([process.execPath, '-e', `require('fs').appendFileSync(${JSON.stringify(file)}, 'x')`], sb.env);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('EACCES');
    expect(fs.readFileSync(nm(sb, ids[0], 'greeting/index.js'), 'utf8')).toBe(original);
  });

  it('as a normal user, a build that writes into node_modules is refused, installs fresh and stops sharing; the others are untouched', async () => {
    sb.commit('v4 regenerates a client in node_modules', { 'version.txt': 'v4\n', WRITE_NODE_MODULES: '1\n' });
    const r = asOwnerWithoutRoot([process.execPath, CLI, '--config', sb.configPath, 'deploy', '--json'], sb.env);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    ids.push(out.release.id);
    expect(out.warnings.join('\n')).toContain('tried to write into a shared read-only node_modules file');
    const m4 = manifestOf(sb, ids[3]).dependencies;
    expect(m4.method).toBe('install');
    expect(fs.readFileSync(nm(sb, ids[3], 'greeting/index.js'), 'utf8')).toContain(`regenerated by the build of ${ids[3]}`);
    for (const id of ids.slice(1, 3)) expect(fs.readFileSync(nm(sb, id, 'greeting/index.js'), 'utf8')).toBe(original);
    expect(fs.existsSync(path.join(sb.releasesDir, '.deps/no-link.json'))).toBe(true);
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain('v4');
  });

  it('deleting a release (retention removed the first) leaves the others intact and the record true', async () => {
    expect(fs.existsSync(path.join(sb.releasesDir, ids[0]))).toBe(false);
    const key = manifestOf(sb, ids[1]).dependencies.key;
    const set = (await shares.read(key))!;
    expect(set.members.sort()).toEqual([ids[1], ids[2]].sort());
    expect(await shares.check(set)).toEqual([]);
    for (const id of ids.slice(1, 3)) expect(fs.statSync(nm(sb, id, 'big/data.bin')).size).toBe(DATA_MIB * 2 ** 20);
    const a = await activate({ ...opts(), id: ids[1] });
    expect(a.release.id).toBe(ids[1]);
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain(ids[1]);
  });

  it('as root a write through a shared file is not stopped by the mode: it is detected, the release installs fresh, every sharer is repaired', async () => {
    // The operator turns sharing back on (documentation/configuration.md); root ignores the read-only mode.
    fs.rmSync(path.join(sb.releasesDir, '.deps/no-link.json'));
    sb.commit('v5, still regenerating', { 'version.txt': 'v5\n' });
    const sharers = ids.slice(1, 3);
    const inoBefore = fs.statSync(nm(sb, sharers[0], 'greeting/index.js')).ino;
    const r = await deploy(opts());
    ids.push(r.release.id);
    expect(r.warnings.join('\n')).toMatch(/changed 1 shared node_modules file\(s\) \(greeting\/index\.js\)/);
    const m5 = manifestOf(sb, r.release.id).dependencies;
    expect(m5.method).toBe('install');
    expect(m5.note).toContain('changed 1 shared node_modules file');
    // Its own copy carries its build's write; every release that shared the file has the installed bytes back.
    expect(fs.readFileSync(nm(sb, r.release.id, 'greeting/index.js'), 'utf8')).toContain(`regenerated by the build of ${r.release.id}`);
    // (retention then removed the oldest of them: keep is 3)
    for (const id of sharers.filter((x) => fs.existsSync(path.join(sb.releasesDir, x)))) {
      expect(fs.readFileSync(nm(sb, id, 'greeting/index.js'), 'utf8')).toBe(original);
      expect(fs.statSync(nm(sb, id, 'greeting/index.js')).ino).not.toBe(inoBefore);
    }
    expect(fs.readFileSync(path.join(sb.releasesDir, r.release.id, '.pm2-release/build.log'), 'utf8')).toMatch(/repaired 2 shared file\(s\)/);
    expect(fs.existsSync(path.join(sb.releasesDir, '.deps/no-link.json'))).toBe(true);
    const set = (await shares.read(m5.key))!;
    expect(set.files.map((f) => f.path)).not.toContain('greeting/index.js');
    expect(await shares.check(set)).toEqual([]);
    expect((await get(`http://127.0.0.1:${sb.port}/`)).body).toContain('v5');
  });

  it('from then on the app installs fresh', async () => {
    sb.commit('v6', { 'version.txt': 'v6\n', WRITE_NODE_MODULES: null });
    const r = await deploy(opts());
    expect(manifestOf(sb, r.release.id).dependencies.method).toBe('install');
    expect(fs.readFileSync(r.release.buildLog, 'utf8')).not.toContain('reused node_modules');
  });
});

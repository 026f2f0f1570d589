/**
 * Build once, deploy the same bits (issue 20), on two hosts with their own PM2 daemons, workspaces and env
 * files: "ci" builds and packs, "web" deploys the artifact behind its router without building. Then what must
 * never get in: a tampered, truncated, foreign or hostile file, another runtime, other public values, an
 * unsigned or wrongly signed artifact when signers are required; each refused with one line, a non-zero exit
 * and nothing written in the releases dir.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, deploy, pack, type PackResult, type ReleaseError } from '../../src/index.js';
import type { ArtifactManifest } from '../../src/release/artifact.js';
import { clearBad, markBad } from '../../src/release/history.js';
import { cli, createSandbox, get, releasePortRange, type Sandbox } from '../helpers/sandbox.js';

const SECRET_CI = 'ci-secret-never-in-artifact-5c1f';
const SECRET_WEB = 'web-secret-of-the-target-9a7e';

/** The library, in this process (its coverage counts), with a host's config and environment. */
const on = (sb: Sandbox) => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
/** The ReleaseError a library call fails with (the test fails if it succeeds). */
async function failure(p: Promise<unknown>): Promise<ReleaseError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err as ReleaseError,
  );
  expect(e, 'the call should have failed').toBeDefined();
  return e!;
}

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const writeSums = (file: string) => fs.writeFileSync(`${file}.sha256`, `${sha256(file)}  ${path.basename(file)}\n`);

/** The artifact's members, unpacked into a directory: artifact.json and the inner archive. */
function unpackOuter(file: string, dir: string): { manifest: ArtifactManifest; inner: string } {
  fs.mkdirSync(dir, { recursive: true });
  tar.x({ file, cwd: dir, sync: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'artifact.json'), 'utf8')) as ArtifactManifest;
  return { manifest, inner: path.join(dir, manifest.content.member) };
}

/** A forged artifact: the manifest (and optionally the inner archive) rewritten, every checksum made to match. */
function forge(src: string, out: string, change: (m: ArtifactManifest, dir: string) => void): string {
  const dir = `${out}.d`;
  fs.rmSync(dir, { recursive: true, force: true });
  const { manifest, inner } = unpackOuter(src, dir);
  change(manifest, dir);
  manifest.content.sha256 = sha256(inner);
  fs.writeFileSync(path.join(dir, 'artifact.json'), JSON.stringify(manifest));
  tar.c({ file: out, cwd: dir, sync: true, portable: true }, ['artifact.json', path.basename(inner)]);
  writeSums(out);
  return out;
}

describe('release artifacts: build once on ci, deploy the same bits on web', () => {
  let ci: Sandbox;
  let web: Sandbox;
  let art: string;
  let packed: PackResult;
  const dir = () => path.join(ci.root, 'artifacts');
  const webReleases = () =>
    fs
      .readdirSync(web.releasesDir)
      .filter((n) => /^\d{8}T/.test(n) || n.startsWith('.'))
      .sort();
  const body = async () => (await get(`http://127.0.0.1:${web.port}/health`)).body ?? '';

  beforeAll(async () => {
    const routed = (s: 'ci' | 'web') => ({
      app: { strategy: 'router', healthcheck: { timeoutMs: 20_000, settleMs: 300 } },
      config: { router: { holdMs: 4_000, drainTimeoutMs: 3_000, releasePorts: releasePortRange() }, ...(s === 'ci' ? {} : {}) },
    });
    [ci, web] = await Promise.all([createSandbox(routed('ci')), createSandbox(routed('web'))]);
    // The same public value on both hosts, different secrets (each host keeps its own).
    fs.writeFileSync(path.join(ci.appDir, '.env.local'), `NEXT_PUBLIC_GREETING=hello\nAPI_TOKEN=${SECRET_CI}\n`, { mode: 0o600 });
    fs.writeFileSync(path.join(web.appDir, '.env.local'), `NEXT_PUBLIC_GREETING=hello\nAPI_TOKEN=${SECRET_WEB}\n`, { mode: 0o600 });
    fs.mkdirSync(path.join(ci.root, 'artifacts'));
  }, 60_000);
  afterAll(async () => {
    await Promise.all([ci?.close(), web?.close()]);
  });

  it('pack builds the release of HEAD and writes the artifact, its .sha256 (sha256sum -c passes) and no secret', async () => {
    packed = await pack({ ...on(ci), out: path.join(dir(), 'front.tar') });
    art = packed.artifact.file;
    expect(packed).toMatchObject({
      ok: true,
      action: 'pack',
      built: true,
      artifact: { compression: 'brotli', withDependencies: false, publicEnv: ['NEXT_PUBLIC_GREETING'] },
    });
    expect(packed.artifact.sha256).toBe(sha256(art));
    // sha256sum reads the file beside the artifact exactly as written.
    expect(execFileSync('sha256sum', ['-c', `${path.basename(art)}.sha256`], { cwd: dir(), encoding: 'utf8' })).toContain('OK');
    const { manifest, inner } = unpackOuter(art, path.join(ci.root, 'look'));
    expect(manifest).toMatchObject({
      kind: 'pm2-release-artifact',
      format: 1,
      release: packed.release.id,
      sha: packed.release.sha,
      app: { name: 'frontend-dev', dir: 'frontend' },
      dependencies: { install: ['npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund'], platform: process.platform, arch: process.arch, included: false },
      build: { command: ['npm', 'run', 'build'] },
    });
    expect(manifest.dependencies.lockfileHash).toMatch(/^[0-9a-f]{64}$/);
    expect(manifest.publicEnv).toEqual([
      { name: 'NEXT_PUBLIC_GREETING', hash: crypto.createHash('sha256').update('NEXT_PUBLIC_GREETING=hello').digest('hex') },
    ]);
    const entries: string[] = [];
    tar.t({ file: inner, sync: true, onReadEntry: (e) => entries.push(e.path) });
    expect(entries).toContain('build/build.json');
    expect(entries).toContain('package-lock.json');
    expect(entries.filter((e) => /(^|\/)(\.env[^/]*|node_modules)(\/|$)/.test(e))).toEqual([]);
    // No secret in any byte of it, compressed or not.
    const plain = zlib.brotliDecompressSync(fs.readFileSync(inner)).toString('latin1');
    expect(plain).not.toContain(SECRET_CI);
    expect(fs.readFileSync(art).toString('latin1')).not.toContain(SECRET_CI);
    // The human form prints a command that runs as printed (the next test runs it on web).
    // An env file deeper in the app dir (as a Next.js standalone build copies them) never goes in either: packing
    // the same release again gives the same bytes (its build time, not the pack's, in the file).
    fs.writeFileSync(path.join(packed.release.cwd, 'build', '.env.local'), `API_TOKEN=${SECRET_CI}\n`);
    const again = cli(ci, ['pack', packed.release.id, '--out', path.join(dir(), 'front2.tar')]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`deploy it with: pm2-release deploy --artifact ${path.join(dir(), 'front2.tar')}\n`);
    expect(sha256(path.join(dir(), 'front2.tar'))).toBe(packed.artifact.sha256);
    expect(cli(ci, ['history', '--json']).stdout).toContain('"action":"pack"');
    // A commit rolled back from on ci is not shipped from it either, unless forced.
    await markBad(ci.releasesDir, {
      sha: packed.release.sha!,
      release: packed.release.id,
      reason: 'rolled back from by test',
      markedAt: new Date().toISOString(),
      by: 'test',
    });
    const bad = cli(ci, ['pack', '--out', path.join(dir(), 'bad.tar'), '--json']);
    expect(bad.code).toBe(7);
    expect(JSON.parse(bad.stdout).error).toMatchObject({ code: 'SHA_MARKED_BAD', message: expect.stringContaining('not packing it again') });
    expect(fs.existsSync(path.join(dir(), 'bad.tar'))).toBe(false);
    expect(cli(ci, ['pack', '--force', '--out', path.join(dir(), 'bad.tar'), '--json']).code).toBe(0);
    await clearBad(ci.releasesDir, packed.release.sha!);
  }, 120_000);

  it('deploy --artifact on web: checked, unpacked, its own env files and install, no build; the router serves it', async () => {
    const printed = /deploy it with: (pm2-release .*)\n/.exec(cli(ci, ['pack', packed.release.id, '--out', path.join(dir(), 'front2.tar')]).stdout)![1];
    const argv = printed.split(' ').slice(1);
    // The example build appends to BUILD_TRACE whenever it runs: on web it must never run.
    const trace = path.join(web.root, 'build-trace.log');
    const r = cli(web, [...argv, '--json'], { BUILD_TRACE: trace });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout, r.stderr).not.toBe('');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: true, changed: true, mode: 'unpacked', release: { sha: packed.release.sha, source: 'artifact' } });
    expect(out.release.id).not.toBe(packed.release.id);
    expect(out.release.artifact).toMatchObject({ sha256: sha256(path.join(dir(), 'front2.tar')), release: packed.release.id });
    expect(Object.keys(out.durationsMs)).toEqual(expect.arrayContaining(['artifact', 'unpack', 'env', 'install', 'health']));
    expect(out.durationsMs.build).toBeUndefined();
    expect(out.durationsMs.archive).toBeUndefined();
    // The same bits: build.json was written by ci's build (its release id), and web runs it under its own id.
    const health = JSON.parse(await body());
    expect(health.release).toBe(out.release.id);
    const built = JSON.parse(fs.readFileSync(path.join(out.release.cwd, 'build/build.json'), 'utf8'));
    expect(built.release).toBe(packed.release.id);
    expect(fs.existsSync(trace), 'the build command ran on web').toBe(false);
    // Byte-identical pages: every chunk web's page references is the file ci's build wrote.
    const page = (await get(`http://127.0.0.1:${web.port}/page`)).body ?? '';
    const chunks = [...page.matchAll(/src="\/_next\/static\/([^"]+)"/g)].map((x) => x[1]);
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) {
      const served = await get(`http://127.0.0.1:${web.port}/_next/static/${c}`);
      expect(served.status, c).toBe(200);
      expect(served.body, c).toBe(fs.readFileSync(path.join(packed.release.cwd, 'build/static', c), 'utf8'));
    }
    // web's own env file (its secret), never ci's.
    const env = fs.readFileSync(path.join(out.release.cwd, '.env.local'), 'utf8');
    expect(env).toContain(SECRET_WEB);
    expect(env).not.toContain(SECRET_CI);
    const manifest = JSON.parse(fs.readFileSync(path.join(web.releasesDir, out.release.id, '.pm2-release/manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({ source: 'artifact', status: 'ready', dependencies: { method: 'install' } });
    expect(r.stdout + r.stderr).not.toContain(SECRET_WEB);
    const hist = JSON.parse(cli(web, ['history', '--json']).stdout).entries[0];
    expect(hist).toMatchObject({ action: 'deploy', result: 'ok', to: out.release.id, sha: packed.release.sha });
    expect(cli(web, ['list']).stdout).toContain(`artifact ${out.release.artifact.sha256.slice(0, 12)}`);
  }, 120_000);

  it('the same artifact again is a no-op (changed false), deployed or staged; with edited env files it is a new release', async () => {
    const before = webReleases();
    const r = await deploy({ ...on(web), artifact: path.join(dir(), 'front2.tar') });
    expect(r).toMatchObject({ ok: true, changed: false, mode: 'unchanged' });
    expect(webReleases()).toEqual(before);
    const staged = await build({ ...on(web), artifact: path.join(dir(), 'front2.tar') });
    expect(staged).toMatchObject({ ok: true, changed: false });
    // A rotated secret in web's env files: the same file is a new release with them (as a git deploy's inputs).
    const envFile = path.join(web.appDir, '.env.local');
    fs.writeFileSync(envFile, `NEXT_PUBLIC_GREETING=hello\nAPI_TOKEN=${SECRET_WEB}-rotated\n`, { mode: 0o600 });
    const rotated = await deploy({ ...on(web), artifact: path.join(dir(), 'front2.tar') });
    expect(rotated).toMatchObject({ changed: true, mode: 'unpacked' });
    expect(fs.readFileSync(path.join(rotated.release.cwd, '.env.local'), 'utf8')).toContain(`${SECRET_WEB}-rotated`);
  }, 60_000);

  it('refused before anything is written: tampered, truncated, missing checksum, foreign, hostile, newer format, other runtime, other app', async () => {
    const before = webReleases();
    const live = () =>
      web
        .jlist()
        .filter((x) => x.name === 'frontend-dev')
        .map((x) => ({ pid: x.pid, restarts: x.pm2_env.restart_time }));
    const liveBefore = { procs: live(), serving: JSON.parse(await body()).release as string };
    // The first through the CLI (exit 2, one JSON object); the rest through the library.
    let viaCli = true;
    const refused = async (file: string, code: string, msg: RegExp) => {
      let e: { code: string; phase: string; message: string };
      if (viaCli) {
        const r = cli(web, ['deploy', '--artifact', file, '--json']);
        expect(r.code, `${file}: ${r.stdout}`).toBe(2);
        e = JSON.parse(r.stdout).error;
        viaCli = false;
      } else {
        const err = await failure(deploy({ ...on(web), artifact: file }));
        expect(err.exitCode, `${file}: ${err.message}`).toBe(2);
        e = err;
      }
      expect(e).toMatchObject({ code, phase: 'artifact' });
      expect(e.message).toMatch(msg);
      expect(e.message).not.toContain('\n');
      expect(webReleases()).toEqual(before);
    };
    const bad = path.join(web.root, 'bad');
    fs.mkdirSync(bad);
    // One byte flipped, the .sha256 as packed.
    const tampered = path.join(bad, 'tampered.tar');
    const buf = fs.readFileSync(art);
    buf[buf.length - 2048] ^= 0xff;
    fs.writeFileSync(tampered, buf);
    fs.copyFileSync(`${art}.sha256`, `${tampered}.sha256`);
    await refused(tampered, 'ARTIFACT_CHECKSUM', /truncated or altered/);
    // Truncated, with a checksum made for the truncated file: the tar itself is short.
    const truncated = path.join(bad, 'truncated.tar');
    fs.writeFileSync(truncated, fs.readFileSync(art).subarray(0, Math.floor(fs.statSync(art).size / 2)));
    writeSums(truncated);
    await refused(truncated, 'ARTIFACT_INVALID', /not a readable tar|does not match|not a pm2-release artifact|inner archive/);
    const nosum = path.join(bad, 'nosum.tar');
    fs.copyFileSync(art, nosum);
    await refused(nosum, 'ARTIFACT_INVALID', /nosum\.tar\.sha256 is missing/);
    // A plain tarball of something else.
    const foreign = path.join(bad, 'foreign.tar');
    fs.writeFileSync(path.join(bad, 'readme.txt'), 'hello\n');
    tar.c({ file: foreign, cwd: bad, sync: true }, ['readme.txt']);
    writeSums(foreign);
    await refused(foreign, 'ARTIFACT_INVALID', /not a pm2-release artifact/);
    // A hostile inner archive: an entry that climbs out of the app dir, every checksum consistent.
    const hostile = forge(art, path.join(bad, 'hostile.tar'), (m, d) => {
      const inner = path.join(d, m.content.member);
      fs.mkdirSync(path.join(d, 'evil/app'), { recursive: true });
      fs.writeFileSync(path.join(d, 'evil/escape.txt'), 'pwned\n');
      // Compressed as the member's name says (brotli for the default pack), so that only its entry is wrong.
      const compress = m.content.compression === 'brotli' ? { brotli: true } : { gzip: true };
      tar.c({ file: inner, cwd: path.join(d, 'evil/app'), ...compress, sync: true, preservePaths: true }, ['../escape.txt']);
    });
    await refused(hostile, 'ARTIFACT_INVALID', /entry \.\.\/escape\.txt: leaves the app dir/);
    expect(fs.existsSync(path.join(web.releasesDir, 'escape.txt'))).toBe(false);
    await refused(
      forge(art, path.join(bad, 'future.tar'), (m) => (m.format = 2)),
      'ARTIFACT_INVALID',
      /artifact format 2 is newer than this pm2-release reads \(1\): upgrade pm2-release here/,
    );
    await refused(
      forge(art, path.join(bad, 'node18.tar'), (m) => (m.dependencies.nodeMajor = 18)),
      'ARTIFACT_INCOMPATIBLE',
      new RegExp(`Node 18 there, ${process.versions.node.split('.')[0]} here`),
    );
    await refused(
      forge(art, path.join(bad, 'other.tar'), (m) => (m.app.name = 'shop')),
      'ARTIFACT_FOREIGN',
      /of app shop/,
    );
    // Garbage where the compressed app should be, every checksum consistent: told, not hung on.
    await refused(
      forge(art, path.join(bad, 'garbage.tar'), (m, d) => fs.writeFileSync(path.join(d, m.content.member), crypto.randomBytes(4096))),
      'ARTIFACT_INVALID',
      /inner archive: /,
    );
    await refused(
      forge(art, path.join(bad, 'schema.tar'), (m) => (m.sha = 'not-a-sha')),
      'ARTIFACT_INVALID',
      /artifact\.json: sha:/,
    );
    // The live app untouched by all of it: the same processes, the same release answering.
    expect({ procs: live(), serving: JSON.parse(await body()).release as string }).toEqual(liveBefore);
  }, 120_000);

  it("web's public value differs: ARTIFACT_ENV_MISMATCH names the variable, never a value; --allow-env-mismatch deploys with a warning", async () => {
    const envFile = path.join(web.appDir, '.env.local');
    const saved = fs.readFileSync(envFile, 'utf8');
    fs.writeFileSync(envFile, `NEXT_PUBLIC_GREETING=bonjour-secret-ish\nNEXT_PUBLIC_EXTRA=1\nAPI_TOKEN=${SECRET_WEB}\n`, { mode: 0o600 });
    try {
      const before = webReleases();
      const e = await failure(build({ ...on(web), artifact: art }));
      expect(e).toMatchObject({ code: 'ARTIFACT_ENV_MISMATCH', phase: 'artifact', exitCode: 2 });
      expect(e.message).toContain('NEXT_PUBLIC_GREETING (a different value here)');
      expect(e.message).toContain('NEXT_PUBLIC_EXTRA (set here, not when it was built)');
      expect(`${e.message} ${e.hint}`).not.toMatch(/bonjour|hello/);
      expect(webReleases()).toEqual(before);
      const human = cli(web, ['deploy', '--artifact', art]);
      expect(human.code).toBe(2);
      expect(human.stderr).toContain('--allow-env-mismatch');
      expect(human.stdout + human.stderr).not.toMatch(/bonjour|hello/);
      const res = await deploy({ ...on(web), artifact: art, allowEnvMismatch: true });
      expect(res).toMatchObject({ mode: 'unpacked', changed: true });
      expect(JSON.parse(await body()).release).toBe(res.release.id);
      expect(res).toMatchObject({ ok: true, changed: true, release: { source: 'artifact', status: 'ready', active: true } });
      expect(res.warnings.join(' ')).toContain('NEXT_PUBLIC_GREETING');
    } finally {
      fs.writeFileSync(envFile, saved, { mode: 0o600 });
    }
  }, 120_000);

  it('signed with ssh-keygen: --allowed-signers accepts the signer, refuses unsigned or another key (exit 7)', async () => {
    const keys = path.join(ci.root, 'keys');
    fs.mkdirSync(keys);
    const keygen = (name: string) => {
      const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', path.join(keys, name)], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return fs
        .readFileSync(path.join(keys, `${name}.pub`), 'utf8')
        .trim()
        .split(' ')
        .slice(0, 2)
        .join(' ');
    };
    const ciKey = keygen('ci');
    keygen('mallory');
    const allowed = path.join(web.root, 'allowed_signers');
    fs.writeFileSync(allowed, `ci@example.org ${ciKey}\n`);
    const signed = path.join(dir(), 'signed.tar');
    const p = await pack({ ...on(ci), release: packed.release.id, out: signed, sign: path.join(keys, 'ci') });
    expect(p.artifact.signature).toBe(`${signed}.sig`);
    const ok = await build({ ...on(web), artifact: signed, allowedSigners: allowed });
    expect(ok.release.artifact).toMatchObject({ signedBy: 'ci@example.org' });
    const before = webReleases();
    // Unsigned: the earlier artifact has no .sig.
    const unsigned = await failure(deploy({ ...on(web), artifact: art, allowedSigners: allowed }));
    expect(unsigned).toMatchObject({ exitCode: 7, code: 'ARTIFACT_SIGNATURE', message: expect.stringContaining('is not signed') });
    // Signed by a key the file does not list.
    const forged = path.join(dir(), 'mallory.tar');
    // gzip: other bytes than ci's (a pack of the same release with the same options is the same file).
    const m = cli(ci, ['pack', packed.release.id, '--out', forged, '--compression', 'gzip', '--sign', path.join(keys, 'mallory'), '--json']);
    expect(m.code, m.stderr).toBe(0);
    const wrong = cli(web, ['deploy', '--artifact', forged, '--allowed-signers', allowed, '--json']);
    expect(wrong.code).toBe(7);
    expect(JSON.parse(wrong.stdout).error.message).toMatch(/made by no key in/);
    // An allowed signers file that is not there: refused, not a crash.
    const nofile = await failure(deploy({ ...on(web), artifact: signed, allowedSigners: path.join(web.root, 'nope') }));
    expect(nofile).toMatchObject({ exitCode: 7, message: expect.stringContaining('does not exist') });
    // ci's signature moved onto another artifact: the .sha256 it signed names other bytes.
    fs.copyFileSync(`${signed}.sig`, `${forged}.sig`);
    fs.copyFileSync(`${signed}.sha256`, `${forged}.sha256`);
    const moved = cli(web, ['deploy', '--artifact', forged, '--allowed-signers', allowed, '--json']);
    expect(moved.code).toBe(2);
    expect(JSON.parse(moved.stdout).error.code).toBe('ARTIFACT_CHECKSUM');
    expect(webReleases()).toEqual(before);
  }, 120_000);

  it('--with-dependencies (and gzip) carries node_modules: web installs nothing; the release serves', async () => {
    const full = path.join(dir(), 'full.tar');
    const p = await pack({ ...on(ci), release: packed.release.id, out: full, withDependencies: true, compression: 'gzip' });
    expect(p.artifact).toMatchObject({ withDependencies: true, compression: 'gzip' });
    const out = await deploy({ ...on(web), artifact: full });
    expect(out).toMatchObject({ mode: 'unpacked', changed: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(web.releasesDir, out.release.id, '.pm2-release/manifest.json'), 'utf8'));
    expect(manifest.dependencies).toMatchObject({ method: 'artifact' });
    expect(JSON.parse(await body()).release).toBe(out.release.id);
  }, 120_000);
});

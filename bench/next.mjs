#!/usr/bin/env node
// The Next.js section of the benchmark, on the committed real app in bench/next-app (Next.js 15, React 19,
// app router, a client component with client-side navigation, NEXT_PUBLIC_* inlined at build).
//
//   node bench/run.mjs --only next [--runs N]     # or: node bench/next.mjs [--runs N] [--out FILE]
//
// In one run and on that app: the seed flow by hand (baseline), then pm2-release (router strategy, the default)
// for a cold deploy, rebuilds with an unchanged lockfile with and without the carried build cache (alternating),
// a no-op commit (nothing in the app's inputs changed), the disk of 3 retained releases against one, and the
// proof that `next start` serves from the release directory the build was renamed to (every chunk the pages
// reference answers 200). Results go to <cache>/next-results.json and into documentation/performance.md
// between the Next.js section markers (the full bench keeps that section when it rewrites the file).
//
// Also exported for later measurements: buildReleasesAB() builds two different releases (A and B) and gives
// their chunk URLs (version skew after a switch), nextReleaseInfo() the same for one release.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CACHE_DIR, pageSource } from './app.mjs';
import { diskUsage, epoch, fmtBytes, fmtMs, httpGet, log, median, now, ROOT, run, runPipe, sleep, state, waitAnswer } from './lib.mjs';
import { cleanEnv, createSandbox } from './sandbox.mjs';
import { NEXT_RESULTS, renderNextSection, spliceNextSection } from './next-report.mjs';

export const NEXT_APP = path.join(ROOT, 'bench/next-app');
const APP = 'frontend-dev';
const ENV_FILES = ['.env', '.env.local', '.env.production', '.env.production.local'];

/** app/page.js for a version: the page a rebuild commit changes (the same page as the main bench's app). */
export const nextPageSource = pageSource;

/** Copies the committed app into appDir (no node_modules, no build), plus an untracked env file. */
export function writeNextApp(appDir) {
  fs.cpSync(NEXT_APP, appDir, { recursive: true, filter: (src) => !/[\\/](node_modules|\.next)([\\/]|$)/.test(src) });
  fs.writeFileSync(path.join(appDir, '.env.local'), 'NEXT_PUBLIC_BENCH_GREETING=hello-from-env\n', { mode: 0o600 });
}

/** The JS chunks a built release serves: URL paths under /_next/static/chunks/, from its .next dir. */
export function releaseChunks(appCwd) {
  const dir = path.join(appCwd, '.next/static/chunks');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.js'))
    .map(
      (e) =>
        `/_next/static/chunks/${path
          .relative(dir, path.join(e.parentPath ?? e.path, e.name))
          .split(path.sep)
          .join('/')}`,
    )
    .sort();
}

/** One release's facts for skew measurements: id, its app dir, its chunk URL paths, the app URL. */
export function nextReleaseInfo(sb, id, appDir = 'frontend') {
  const cwd = path.join(sb.releasesDir, id, appDir);
  return { id, cwd, url: sb.url, chunks: releaseChunks(cwd) };
}

/**
 * Builds two different releases (A: version `a`, B: version `b` with a changed client component, so their
 * chunk hashes differ) with `api.build` and returns both with their chunk lists. Neither is activated.
 */
export async function buildReleasesAB(api, sb, callOpts, { a = 'A', b = 'B' } = {}) {
  const shaA = await sb.commit(`release ${a}`, { 'app/page.js': nextPageSource(a) });
  const A = await api.build({ ...callOpts, ref: shaA });
  const nav = fs.readFileSync(path.join(NEXT_APP, 'app/nav.js'), 'utf8').replace('clicks=', `clicks(${b})=`);
  const shaB = await sb.commit(`release ${b}`, { 'app/page.js': nextPageSource(b), 'app/nav.js': nav });
  const B = await api.build({ ...callOpts, ref: shaB });
  return { A: { ...nextReleaseInfo(sb, A.release.id), sha: shaA }, B: { ...nextReleaseInfo(sb, B.release.id), sha: shaB } };
}

/** The script and stylesheet URLs a page's HTML references (its hashed chunks). */
export function assetUrls(html) {
  const out = new Set();
  for (const m of html.matchAll(/(?:src|href)="(\/_next\/static\/[^"]+)"/g)) out.add(m[1]);
  return [...out];
}

/** Fetches each page and every asset it references: counts per status. */
export async function checkServes(baseUrl, pages) {
  const counts = { pages: 0, assets: 0, failed: [] };
  for (const p of pages) {
    const r = await httpGet(new URL(p.path, baseUrl).href, 10_000);
    if (r.status !== 200 || (p.marker && !r.body.includes(p.marker))) {
      counts.failed.push(`${p.path}: ${r.status ?? r.error}`);
      continue;
    }
    counts.pages++;
    for (const a of assetUrls(r.body)) {
      const ar = await httpGet(new URL(a, baseUrl).href, 10_000);
      if (ar.status === 200) counts.assets++;
      else counts.failed.push(`${a}: ${ar.status ?? ar.error}`);
    }
  }
  return counts;
}

function parseArgs(argv) {
  const o = { runs: 3, out: path.join(ROOT, 'documentation/performance.md'), maxMinutes: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a === '--out') o.out = path.resolve(argv[++i]);
    else if (a === '--max-minutes') o.maxMinutes = Number(argv[++i]);
    else if (a === '--only')
      i++; // `run.mjs --only next` passes its argv through
    else throw new Error(`unknown option ${a}`);
  }
  if (!Number.isInteger(o.runs) || o.runs < 1 || o.runs > 10) throw new Error('--runs: an integer from 1 to 10');
  o.maxMinutes ??= 10 + o.runs * 10;
  return o;
}

/** Runs the section; returns the results object (also written to NEXT_RESULTS). */
export async function runNextSection({ runs = 3, signal, results = {} } = {}) {
  if (!fs.existsSync(path.join(ROOT, 'dist/index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  const api = await import(pathToFileURL(path.join(ROOT, 'dist/index.js')).href);
  // Filled in place: a caller keeps what was measured when a later step fails.
  const R = Object.assign(results, {
    runs,
    started: new Date().toISOString(),
    machine: {},
    seed: [],
    cold: [],
    rebuild: [],
    noop: [],
    disk: undefined,
    artifact: undefined,
    serves: [],
    notes: [],
  });
  const sb = await createSandbox();
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(NEXT_APP, 'package.json'), 'utf8'));
    const lock = JSON.parse(fs.readFileSync(path.join(NEXT_APP, 'package-lock.json'), 'utf8'));
    R.machine = {
      cores: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      node: process.version,
      uid: process.getuid?.(),
      fs: (await import('./lib.mjs')).fsType(sb.root).type,
      next: lock.packages?.['node_modules/next']?.version,
      react: lock.packages?.['node_modules/react']?.version,
      loadStart: os.loadavg(),
      commit: (await run(['git', 'rev-parse', '--short', 'HEAD'], { cwd: ROOT, env: cleanEnv(), allowFail: true })).stdout.trim(),
    };
    log(`next: sandbox ${sb.root}, app ${pkg.name} (next ${R.machine.next}), runs=${runs}`);
    writeNextApp(sb.appDir);
    fs.writeFileSync(path.join(sb.ws, '.gitignore'), 'node_modules/\n.next/\n.env*\n');
    await sb.git(['init', '-q', '-b', 'main']);
    await sb.git(['config', 'commit.gpgsign', 'false']);
    await sb.commit('v1');
    await sb.pm2(['ping']);
    const jlist = async () => {
      const s = (await sb.pm2(['jlist'])).stdout;
      return JSON.parse(s.slice(s.indexOf('['), s.lastIndexOf(']') + 1));
    };
    const pages = (version, release) =>
      [
        { path: '/', marker: `release=${release}` },
        { path: '/about', marker: 'about' },
        { path: '/env', marker: 'greeting=hello-from-env' },
      ].map((p) => (p.path === '/' && version ? { ...p, marker: `version=${version}` } : p));

    // ---------- baseline: the seed flow by hand ----------
    for (let i = 1; i <= runs; i++) {
      await sb.commit(`seed ${i}`, { 'app/page.js': nextPageSource(`seed-${i}`) });
      const dir = path.join(sb.seedDir, `r${i}`);
      fs.mkdirSync(dir, { recursive: true });
      const logFile = path.join(sb.logsDir, `next-seed-${i}.log`);
      log(`next: seed flow ${i}/${runs}`);
      const t0 = now();
      await runPipe(['git', 'archive', '--format=tar', 'HEAD'], ['tar', '-x', '-C', dir], { cwd: sb.ws, env: sb.env });
      const appDir = path.join(dir, 'frontend');
      for (const f of ENV_FILES) if (fs.existsSync(path.join(sb.appDir, f))) fs.copyFileSync(path.join(sb.appDir, f), path.join(appDir, f));
      const ci = await run(['npm', 'ci'], { cwd: appDir, env: sb.env, logFile, timeoutMs: 900_000 });
      const build = await run(['npm', 'run', 'build'], { cwd: appDir, env: sb.env, logFile, timeoutMs: 900_000 });
      await run(['rm', '-rf', '.next/cache', '.turbo', 'build/cache'], { cwd: appDir, env: sb.env });
      await sb.pm2(['delete', APP], {}, true);
      const tStart = now();
      await sb.pm2(['start', 'npm', '--name', APP, '--cwd', appDir, '--', 'run', 'start'], { FRONT_PORT: String(sb.port), RELEASE_ID: `seed-${i}` });
      const a = await waitAnswer(sb.url, { marker: `release=seed-${i}`, timeoutMs: 90_000, intervalMs: 20 });
      if (!a.ok) throw new Error(`seed ${i} never answered (last: ${a.last})`);
      await sb.pm2(['save']);
      const r = { totalMs: now() - t0, ciMs: ci.ms, buildMs: build.ms, bootMs: a.at - tStart };
      R.seed.push(r);
      log(`next: seed ${i}: ${fmtMs(r.totalMs)} (npm ci ${fmtMs(r.ciMs)}, build ${fmtMs(r.buildMs)}, boot ${fmtMs(r.bootMs)})`);
    }
    await sb.pm2(['delete', APP]);
    await sb.pm2(['save', '--force']);
    fs.rmSync(sb.seedDir, { recursive: true, force: true });

    // ---------- pm2-release: router strategy (the default), keep 3 ----------
    const first = 20_000 + Math.floor(Math.random() * 120) * 100;
    const base = {
      workspace: sb.ws,
      releasesDir: sb.releasesDir,
      keep: 3,
      // Install and build at normal priority, as the seed flow's: on a CPU shared with other work a niced build
      // gets a small share (buildLowPriority, default on, is the VM's trade: the live app first), which would
      // measure the neighbours, not pm2-release. The full bench measures the default.
      app: { env: { FRONT_PORT: String(sb.port) }, prune: ['.next/cache', '.turbo', 'build/cache'], buildLowPriority: false },
      router: { releasePorts: [first, first + 99] },
      // Soak off: by default a routed deploy watches the new release for 60 s after the route change (it
      // serves all the while); that is `npm run bench:soak`'s subject, not a deploy's cost.
      soak: { durationMs: 0 },
      // The build cache is off by default (it did not pay on this app): on here, off in the `nocache` runs.
      build: { cache: true },
    };
    const writeConfig = (name, c) => {
      const p = path.join(sb.root, `next-${name}.config.json`);
      fs.writeFileSync(p, JSON.stringify(c, null, 2));
      return p;
    };
    const cfg = {
      cold: writeConfig('cold', { ...base, app: { ...base.app, reuseDependencies: false } }),
      cache: writeConfig('cache', base),
      nocache: writeConfig('nocache', { ...base, build: { cache: false } }),
      // The memory guard's cost (issue 18): the nocache rebuild with the guard off, alternated with it on.
      noguard: writeConfig('noguard', { ...base, build: { cache: false, memoryGuard: false } }),
    };
    const call = (configPath, label) => ({
      configPath,
      env: sb.env,
      cwd: sb.root,
      signal,
      onEvent: (e) => {
        if (e.type === 'phase' && e.state === 'start') log(`  ${label}: ${e.phase}…`);
        if (e.type === 'warning') log(`  ${label}: warning: ${e.message}`);
      },
    });
    const manifest = (id) => JSON.parse(fs.readFileSync(path.join(sb.releasesDir, id, '.pm2-release/manifest.json'), 'utf8'));
    const deployTimed = async (config, label, version) => {
      const t = now();
      const r = await api.deploy(call(config, label));
      const ms = now() - t;
      const m = manifest(r.release.id);
      const a = await waitAnswer(sb.url, { marker: `release=${r.release.id}`, timeoutMs: 60_000 });
      if (!a.ok) throw new Error(`${label}: ${sb.url} never answered for ${r.release.id}`);
      const serves = await checkServes(sb.url, pages(version, r.release.id));
      R.serves.push({ label, id: r.release.id, ...serves });
      if (serves.failed.length) R.notes.push(`${label}: ${serves.failed.length} request(s) failed: ${serves.failed.slice(0, 3).join(', ')}`);
      return {
        id: r.release.id,
        ms,
        mode: r.mode,
        durations: r.durationsMs,
        dep: m.dependencies,
        buildCache: m.buildCache,
        sizeBytes: m.sizeBytes,
        // The memory guard's record (issue 18): the install's and the build's peak beside their times.
        memory: m.memory,
        served: serves,
      };
    };

    for (let i = 1; i <= runs; i++) {
      // Cold: no node_modules to reuse, no build cache (the previous cold run's is removed).
      fs.rmSync(path.join(sb.releasesDir, '.cache'), { recursive: true, force: true });
      await sb.commit(`cold ${i}`, { 'app/page.js': nextPageSource(`cold-${i}`) });
      log(`next: cold deploy ${i}/${runs}`);
      const r = await deployTimed(cfg.cold, `cold ${i}`, `cold-${i}`);
      R.cold.push(r);
      log(
        `next: cold ${i}: ${fmtMs(r.ms)} (install ${fmtMs(r.durations.install)}, peak ${fmtBytes(r.memory?.install?.peakBytes ?? 0)}; ` +
          `build ${fmtMs(r.durations.build)}, peak ${fmtBytes(r.memory?.build?.peakBytes ?? 0)} of a ${fmtBytes(r.memory?.build?.budgetBytes ?? 0)} budget)`,
      );
    }
    // The build really ran at the stable path and the release was renamed: what .next recorded of it.
    {
      const id = R.cold[R.cold.length - 1].id;
      const rsf = path.join(sb.releasesDir, id, 'frontend/.next/required-server-files.json');
      const j = fs.existsSync(rsf) ? JSON.parse(fs.readFileSync(rsf, 'utf8')) : {};
      R.renamed = { release: id, builtAppDir: j.appDir, servedFrom: path.join(sb.releasesDir, id, 'frontend') };
    }

    // Rebuilds: a commit changing one page, same lockfile; with and without the carried cache, alternating.
    for (let i = 1; i <= runs; i++) {
      const order = i % 2 ? ['cache', 'nocache', 'noguard'] : ['noguard', 'nocache', 'cache'];
      for (const kind of order) {
        const v = `${kind}-${i}`;
        await sb.commit(`rebuild ${v}`, { 'app/page.js': nextPageSource(v) });
        log(`next: rebuild ${i}/${runs} ${kind === 'cache' ? 'with' : 'without'} the build cache${kind === 'noguard' ? ', memory guard off' : ''}`);
        const r = await deployTimed(cfg[kind], `rebuild ${v}`, v);
        R.rebuild.push({ kind, ...r });
        log(
          `next: rebuild ${v}: ${fmtMs(r.ms)} (deps ${r.dep?.method} ${fmtMs(r.dep?.durationMs)}, build ${fmtMs(r.durations.build)}, cache ${r.buildCache?.warm ?? 'off'})`,
        );
      }
    }

    // No-op: a commit outside the app dir (its tree, the env files and the config unchanged).
    for (let i = 1; i <= runs; i++) {
      fs.writeFileSync(path.join(sb.ws, 'NOTES.md'), `note ${i}\n`);
      await sb.git(['add', '-A']);
      await sb.git(['commit', '-q', '-m', `notes ${i}`]);
      const pidsBefore = (await jlist()).filter((p) => p.name === APP).map((p) => p.pid);
      const dirsBefore = fs.readdirSync(sb.releasesDir).filter((n) => /^\d{8}T/.test(n)).length;
      const t = now();
      const r = await api.deploy(call(cfg.cache, `noop ${i}`));
      const ms = now() - t;
      const pidsAfter = (await jlist()).filter((p) => p.name === APP).map((p) => p.pid);
      const dirsAfter = fs.readdirSync(sb.releasesDir).filter((n) => /^\d{8}T/.test(n)).length;
      R.noop.push({
        ms,
        mode: r.mode,
        durations: r.durationsMs,
        newReleases: dirsAfter - dirsBefore,
        pidUnchanged: JSON.stringify(pidsBefore) === JSON.stringify(pidsAfter),
        pids: pidsAfter,
      });
      log(`next: no-op ${i}: ${fmtMs(ms)} mode ${r.mode}, new releases ${dirsAfter - dirsBefore}, pid ${pidsBefore} → ${pidsAfter}`);
    }

    // Disk: the 3 retained releases (one lockfile) together vs each alone; hard links counted once.
    {
      const ids = fs
        .readdirSync(sb.releasesDir)
        .filter((n) => /^\d{8}T/.test(n) && manifest(n).status === 'ready')
        .sort()
        .slice(-3);
      const one = [];
      for (const id of ids) one.push(await diskUsage([path.join(sb.releasesDir, id)]));
      const together = await diskUsage(ids.map((id) => path.join(sb.releasesDir, id)));
      const cache = await diskUsage([path.join(sb.releasesDir, '.cache')]);
      R.disk = { ids, one, together, methods: ids.map((id) => manifest(id).dependencies?.method), cacheBytes: cache };
      log(`next: disk ${ids.length} releases ${together} vs one ${median(one)} bytes; cache ${cache}`);
    }
    R.artifact = await artifactSection(api, sb, { runs, manifest, call, cfg: cfg.nocache, first, pages, signal });
    R.machine.loadEnd = os.loadavg();
    R.finished = new Date().toISOString();
    return R;
  } finally {
    await sb.close();
  }
}

/**
 * Build once, deploy the same bits (issue 20), on the releases the rebuilds left (same lockfile, different
 * pages). The compression, by measurement: each packed with gzip and with brotli (time, size), against a
 * plain `tar -czf` of the same app dir without node_modules and env files (the size target's reference).
 * Then a second host (its own sandbox, PM2 daemon, workspace with the same env file): the first artifact
 * deploys cold (npm ci), the next ones with the lockfile unchanged (node_modules reused): those are the
 * target's runs, against the seed flow's median measured at the start of this section.
 */
async function artifactSection(api, sb, { runs, manifest, call, cfg, first, pages, signal }) {
  const A = { packs: [], reference: [], cold: null, deploys: [], notes: [] };
  const ids = fs
    .readdirSync(sb.releasesDir)
    .filter((n) => /^\d{8}T/.test(n) && manifest(n).status === 'ready')
    .sort()
    .slice(-3);
  const outDir = path.join(sb.root, 'artifacts');
  fs.mkdirSync(outDir, { recursive: true });
  const files = {};
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    const order = i % 2 ? ['brotli', 'gzip'] : ['gzip', 'brotli'];
    for (const compression of order) {
      const out = path.join(outDir, `${id}.${compression}.tar`);
      const t = now();
      const r = await api.pack({ ...call(cfg, `pack ${compression}`), release: id, out, compression });
      const ms = now() - t;
      A.packs.push({ id, compression, ms, bytes: r.artifact.bytes, appBytes: r.artifact.appBytes, files: r.artifact.files });
      files[`${id}.${compression}`] = out;
      log(`next: pack ${id} ${compression}: ${fmtMs(ms)}, ${fmtBytes(r.artifact.bytes)} of ${fmtBytes(r.artifact.appBytes)}`);
    }
    // The reference: the app dir as an operator would tar it by hand (no node_modules, no env files).
    const cwd = path.join(sb.releasesDir, id, 'frontend');
    const ref = path.join(outDir, `${id}.reference.tar.gz`);
    const t = now();
    await run(['tar', '-czf', ref, '--exclude=./node_modules', ...ENV_FILES.map((f) => `--exclude=./${f}`), '-C', cwd, '.'], { cwd: sb.root, env: cleanEnv() });
    A.reference.push({ id, ms: now() - t, bytes: fs.statSync(ref).size });
  }
  // The second host: its own PM2 daemon, workspace (not a git repository: it never builds) and env file.
  const web = await createSandbox();
  try {
    writeNextApp(web.appDir);
    const webFirst = first === 20_000 ? 21_000 : first - 1_000;
    const webConfig = path.join(web.root, 'web.config.json');
    fs.writeFileSync(
      webConfig,
      JSON.stringify({
        workspace: web.ws,
        releasesDir: web.releasesDir,
        keep: 3,
        app: { env: { FRONT_PORT: String(web.port) }, prune: ['.next/cache', '.turbo', 'build/cache'], buildLowPriority: false },
        router: { releasePorts: [webFirst, webFirst + 99] },
        soak: { durationMs: 0 },
      }),
    );
    await web.pm2(['ping']);
    const webCall = (label) => ({
      configPath: webConfig,
      env: web.env,
      cwd: web.root,
      signal,
      onEvent: (e) => {
        if (e.type === 'phase' && e.state === 'start') log(`  web ${label}: ${e.phase}…`);
      },
    });
    const deployArtifact = async (file, label) => {
      const t = now();
      const r = await api.deploy({ ...webCall(label), artifact: file });
      const ms = now() - t;
      const a = await waitAnswer(web.url, { marker: `release=${r.release.id}`, timeoutMs: 60_000 });
      if (!a.ok) throw new Error(`${label}: ${web.url} never answered for ${r.release.id}`);
      const m = JSON.parse(fs.readFileSync(path.join(web.releasesDir, r.release.id, '.pm2-release/manifest.json'), 'utf8'));
      const serves = await checkServes(web.url, pages(null, r.release.id));
      if (serves.failed.length) A.notes.push(`${label}: ${serves.failed.length} request(s) failed: ${serves.failed.slice(0, 3).join(', ')}`);
      log(`next: web ${label}: ${fmtMs(ms)} (${r.mode}; deps ${m.dependencies?.method} ${fmtMs(m.dependencies?.durationMs ?? 0)})`);
      return { label, id: r.release.id, ms, mode: r.mode, durations: r.durationsMs, dep: m.dependencies?.method, served: serves };
    };
    A.cold = await deployArtifact(files[`${ids[0]}.gzip`], 'cold (npm ci)');
    // Lockfile unchanged from here on: node_modules comes from the release deployed before.
    const timed = [files[`${ids[1]}.gzip`], files[`${ids[2]}.gzip`], files[`${ids[0]}.brotli`], files[`${ids[1]}.brotli`]].slice(0, Math.max(runs, 1) + 1);
    for (let i = 0; i < timed.length; i++) A.deploys.push(await deployArtifact(timed[i], `artifact ${i + 1}`));
    // The same file again: content-addressed, nothing to do.
    const t = now();
    const again = await api.deploy({ ...webCall('again'), artifact: timed[timed.length - 1] });
    A.again = { ms: now() - t, mode: again.mode, changed: again.changed };
  } finally {
    await web.close();
  }
  return A;
}

export async function main(argv = process.argv.slice(2)) {
  const o = parseArgs(argv);
  const controller = new AbortController();
  const stop = () => {
    state.stopping = true;
    controller.abort(new Error('stopping'));
  };
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, stop);
  const watchdog = setTimeout(() => {
    log(`time limit of ${o.maxMinutes} min reached: stopping`);
    stop();
  }, o.maxMinutes * 60_000);
  const t0 = epoch();
  const partial = {};
  try {
    const R = await runNextSection({ runs: o.runs, signal: controller.signal, results: partial });
    R.wallMs = epoch() - t0;
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    fs.writeFileSync(NEXT_RESULTS, JSON.stringify(R, null, 1));
    const md = renderNextSection(R);
    spliceNextSection(o.out, md);
    process.stdout.write(md + '\n');
    log(`next: wrote ${NEXT_RESULTS} and the Next.js section of ${path.relative(ROOT, o.out)} (${fmtMs(R.wallMs)})`);
  } catch (err) {
    // What was measured before the failure, beside the last complete results (never over them).
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    fs.writeFileSync(path.join(CACHE_DIR, 'next-results.incomplete.json'), JSON.stringify({ ...partial, error: String(err?.message ?? err) }, null, 1));
    log(`next: wrote what was measured to ${path.join(CACHE_DIR, 'next-results.incomplete.json')}`);
    throw err;
  } finally {
    clearTimeout(watchdog);
    await sleep(10);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().then(
    () => process.exit(0),
    (err) => {
      log(`next: FAILED: ${err?.stack ?? err}`);
      process.exit(1);
    },
  );
}

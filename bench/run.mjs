#!/usr/bin/env node
// pm2-release benchmark: a real Next.js 15 app, a private PM2 daemon, loopback traffic only.
//
//   npm run bench                      # N=3 runs per scenario, 20 cluster and 20 router switches under load
//   npm run bench -- --runs 5          # more runs
//   npm run bench -- --quick           # N=1, 4 switches
//   options: --switches N  --connections N  --max-minutes M  --out FILE
//            --report-only   re-render the report from the last run's results (no measuring)
//            --skip-next     leave out the Next.js section (bench/next.mjs; it runs last, in its own sandbox)
//   npm run bench -- --only next [--runs N]   # only the Next.js section (build cache, issue 10 targets)
//   npm run bench -- --only memory [--runs N] # the memory guard's cost and stop time (bench/memory.mjs)
//
// Measures the seed flow by hand (baseline) against pm2-release deploy (cold, unchanged lockfile),
// redeploy of a retained sha, rollback, switches under load (scripts/traffic.mjs; seed delete+start, restart,
// cluster, cluster to a release that crashes at boot), a long run of cluster switches, disk use of retained
// releases and peak RSS of a deploy; then the router strategy: N switches (activates, rollbacks, crash-at-boot
// deploys) under load, the hold when the live release is SIGKILLed, the router's cost on the Next page (fixed
// rate and saturation, direct vs through it, its VmHWM) and unchanged-lockfile deploys. Writes
// documentation/performance.md (overwritten), one SVG timeline per strategy in documentation/images/, and
// prints the tables.
// Everything runs in a sandbox under the temp dir, removed at the end, also on failure or Ctrl-C.
import { fork, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CACHE_DIR, CRASH_CONFIG, ensureTemplate, lockedVersions, pageSource, writeApp } from './app.mjs';
import { children, CLI, epoch, killTracked, fmtMs, httpGet, log, median, now, PM2_BIN, procMem, ROOT, run, runPipe, sleep, state, waitAnswer } from './lib.mjs';
import { writeReport } from './report.mjs';
import { cleanEnv, createSandbox } from './sandbox.mjs';

// `--only next`: just the Next.js section (bench/next.mjs), in ≤ 15 minutes.
{
  const at = process.argv.indexOf('--only');
  if (at > 0) {
    if (process.argv[at + 1] === 'memory') {
      // The memory guard's cost and stop time (bench/memory.mjs), no registry needed.
      const { main: memoryMain } = await import('./memory.mjs');
      await memoryMain(process.argv.slice(2)).then(
        () => process.exit(0),
        (err) => {
          process.stderr.write(`memory: FAILED: ${err?.stack ?? err}\n`);
          process.exit(1);
        },
      );
    }
    if (process.argv[at + 1] !== 'next') {
      process.stderr.write('--only: the sections that run on their own are `next` and `memory`\n');
      process.exit(2);
    }
    const { main: nextMain } = await import('./next.mjs');
    await nextMain(process.argv.slice(2)).then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`next: FAILED: ${err?.stack ?? err}\n`);
        process.exit(1);
      },
    );
  }
}

// ---------- options ----------
function parseArgs(argv) {
  const o = { runs: 3, switches: 20, connections: 10, maxMinutes: undefined, out: path.join(ROOT, 'documentation/performance.md'), quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (v, lo, hi) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${a}: an integer from ${lo} to ${hi}`);
      return n;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--runs') o.runs = int(next(), 1, 20);
    else if (a === '--switches') o.switchesSet = o.switches = int(next(), 2, 200);
    else if (a === '--connections') o.connections = int(next(), 1, 200);
    else if (a === '--max-minutes') o.maxMinutes = int(next(), 5, 240);
    else if (a === '--out') o.out = path.resolve(next());
    else if (a === '--report-only') o.reportOnly = true;
    else if (a === '--skip-next') o.skipNext = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: node bench/run.mjs [--runs N | --quick] [--switches N] [--connections N] [--max-minutes M] [--out FILE] [--report-only] [--skip-next] | --only next [--runs N]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (o.quick) {
    o.runs = argv.includes('--runs') ? o.runs : 1;
    o.switches = o.switchesSet ?? 4;
  }
  // Bounded: a Next build takes ~30–60 s on 2 cores; the whole run has a hard limit.
  o.maxMinutes ??= Math.ceil(15 + o.runs * 9 + o.switches * 1.2);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const RESULTS_FILE = path.join(CACHE_DIR, 'last-results.json');
if (opts.reportOnly) {
  const R = JSON.parse(fs.readFileSync(RESULTS_FILE, 'utf8'));
  for (const k of ['started', 'finished']) if (R[k]) R[k] = new Date(R[k]);
  process.stdout.write(writeReport(R, opts.out).tables + '\n');
  log(`re-rendered ${path.relative(ROOT, opts.out)} from ${RESULTS_FILE}`);
  process.exit(0);
}
const APP = 'frontend-dev';
const APP_PORT_ENV = 'FRONT_PORT';
// Router cost: a fixed request rate (latency), then saturation (throughput), each run this many seconds.
const COST_RATE = 200;
const COST_SECONDS = 10;
// The fixed-rate (latency) runs use one keep-alive connection: see 5b.
// The no-switch control runs (the longest gap the load makes by itself), each this many seconds.
const QUIET_SECONDS = 20;
const COST_FIXED_CONNECTIONS = 1;
const ENV_FILES = ['.env', '.env.local', '.env.production', '.env.production.local'];

// ---------- lifecycle: always clean up ----------
const controller = new AbortController();
let sb;
let loadChild;
let cleaning;
let mainDone = Promise.resolve();
async function cleanup() {
  cleaning ??= (async () => {
    state.stopping = true; // no new child process from here on
    controller.abort(new Error('bench stopping'));
    if (loadChild && loadChild.exitCode === null) loadChild.kill('SIGKILL');
    // Let an operation in flight notice the abort (it may still be talking to PM2), bounded.
    await Promise.race([mainDone, sleep(20_000)]);
    await sb?.close().catch((e) => log(`cleanup failed: ${e.message}`));
  })();
  return cleaning;
}
let interrupted = false;
// Set while the Next.js section runs: its child (own process group, own sandbox) cleans up after itself on
// SIGTERM, so a signal here is passed on to it and waited for.
let nextSection;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    interrupted = true;
    log(`${sig}: stopping and cleaning up`);
    if (nextSection) {
      killTracked('SIGTERM');
      void Promise.race([nextSection, sleep(60_000)]).finally(() => process.exit(130));
      return;
    }
    cleanup().finally(() => process.exit(130));
  });
}
for (const ev of ['uncaughtException', 'unhandledRejection']) {
  process.on(ev, (err) => {
    interrupted = true;
    log(`${ev}: ${err?.stack ?? err}; cleaning up`);
    cleanup().finally(() => process.exit(1));
  });
}
const watchdog = setTimeout(() => {
  interrupted = true;
  log(`time limit of ${opts.maxMinutes} min reached: stopping`);
  cleanup().finally(() => process.exit(124));
}, opts.maxMinutes * 60_000);

// ---------- results ----------
const R = {
  opts: { runs: opts.runs, switches: opts.switches, connections: opts.connections },
  started: new Date(),
  machine: {},
  baseline: [],
  boot: [],
  cold: [],
  warm: [],
  redeploy: [],
  rollback: [],
  switchSeed: [],
  switchRestart: [],
  switchCluster: [],
  switchCrash: [],
  marathon: undefined,
  // Router strategy: N switches under load, hold, router cost, unchanged-lockfile deploys.
  routerMarathon: undefined,
  routerHold: undefined,
  routerCost: undefined,
  routerWarm: [],
  routerRss: undefined,
  // Per-strategy timelines of one switch: successes and failures per 50 ms bucket.
  timelines: {},
  accounting: {},
  disk: undefined,
  rss: undefined,
  notes: [],
};

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'dist/index.js'))) throw new Error('dist/ is missing: run `npx tsc -p .` first');
  const api = await import(pathToFileURL(path.join(ROOT, 'dist/index.js')).href);
  log(`runs=${opts.runs} switches=${opts.switches} connections=${opts.connections} limit=${opts.maxMinutes} min`);

  const templateDir = await ensureTemplate(cleanEnv());
  sb = await createSandbox();
  log(`sandbox ${sb.root} (PM2_HOME=${sb.pm2Home}), app port ${sb.port}`);
  R.machine = await machineInfo(templateDir);

  // ---------- the workspace: git repo with the app ----------
  writeApp(templateDir, sb.appDir, 'v1');
  fs.writeFileSync(path.join(sb.ws, '.gitignore'), 'node_modules/\n.next/\n.env*\n');
  await sb.git(['init', '-q', '-b', 'main']);
  await sb.git(['config', 'commit.gpgsign', 'false']);
  const v1 = await sb.commit('v1');
  log(`workspace ${sb.ws} at ${v1.slice(0, 7)}`);
  await sb.pm2(['ping']); // start the daemon before anything is timed
  // What one PM2 CLI call costs here (pm2-release drives PM2 through its CLI, like an operator).
  {
    const times = [];
    for (let i = 0; i < 5; i++) times.push((await sb.pm2(['jlist'])).ms);
    R.pm2CallMs = median(times);
    log(`one \`pm2 jlist\` CLI call: ${fmtMs(R.pm2CallMs)} (median of 5)`);
  }

  const base = {
    workspace: sb.ws,
    releasesDir: sb.releasesDir,
    keep: 3,
    app: {
      // Explicit: the default strategy is now the router; these runs measure the restart strategy.
      strategy: 'restart',
      env: { FRONT_PORT: String(sb.port) },
      // The default prune list removes `.next`, which for Next.js is the build itself (see performance.md).
      prune: ['.next/cache', '.turbo', 'build/cache'],
    },
  };
  const cfg = {
    restart: writeConfig('restart', base),
    cold: writeConfig('cold', { ...base, app: { ...base.app, reuseDependencies: false } }),
    // Router: releases on private ports below the ephemeral range; next start reads FRONT_PORT (package.json).
    // Soak off: a routed deploy otherwise watches the new release for 60 s after the route change (it serves
    // all the while); `npm run bench:soak` measures the soak.
    router: writeConfig('router', {
      ...base,
      app: { ...base.app, strategy: 'router' },
      router: { releasePorts: [23001, 23099] },
      soak: { durationMs: 0 },
    }),
    cluster: writeConfig('cluster', {
      ...base,
      app: {
        ...base.app,
        strategy: 'cluster',
        script: 'node_modules/next/dist/bin/next',
        args: ['start'],
        env: { FRONT_PORT: String(sb.port), PORT: String(sb.port) },
        portEnv: 'PORT',
      },
    }),
  };
  // Calls run one at a time: `events` holds the phase events (with wall-clock times) of the latest one.
  let events = [];
  const call = (config, label, extra = {}) => {
    events = [];
    const onEvent = (e) => {
      if (e.type === 'phase') events.push({ phase: e.phase, state: e.state, at: epoch() });
      if (!label) return;
      if (e.type === 'phase' && e.state === 'start') log(`  ${label}: ${e.phase}…`);
      if (e.type === 'warning') log(`  ${label}: warning: ${e.message}`);
    };
    return { configPath: config, env: sb.env, cwd: sb.root, signal: controller.signal, onEvent, ...extra };
  };
  /** Wall-clock start and end of the latest call's `switch` phase (end = PM2 has started the target). */
  const switchPhase = () => ({
    switchStartAt: events.find((e) => e.phase === 'switch' && e.state === 'start')?.at,
    switchEndAt: events.find((e) => e.phase === 'switch' && e.state !== 'start')?.at,
    // Cluster: the old workers are deleted at the end of the health phase; router: the route phase.
    healthEndAt: events.find((e) => e.phase === 'health' && e.state !== 'start')?.at,
    routeAt: events.find((e) => e.phase === 'route' && e.state === 'start')?.at,
  });
  const manifest = (id) => JSON.parse(fs.readFileSync(path.join(sb.releasesDir, id, '.pm2-release/manifest.json'), 'utf8'));
  const mustAnswer = async (marker, what) => {
    const a = await waitAnswer(sb.url, { marker, timeoutMs: 60_000 });
    if (!a.ok) throw new Error(`${what}: ${sb.url} never answered with ${marker} (last: ${a.last})`);
  };

  // ================= 1. baseline: the seed flow by hand =================
  const seedDirs = [];
  for (let i = 1; i <= opts.runs; i++) {
    log(`baseline ${i}/${opts.runs}: git archive | tar, env files, npm ci, npm run build, prune, pm2 delete+start, wait 200, pm2 save`);
    const r = await seedDeploy(i);
    seedDirs.push(r.appDir);
    R.baseline.push(r);
    R.boot.push(r.bootMs);
    log(`baseline ${i}: total ${fmtMs(r.totalMs)} (npm ci ${fmtMs(r.ciMs)}, build ${fmtMs(r.buildMs)}, boot ${fmtMs(r.bootMs)})`);
  }

  // ================= 3a. the seed's switch (delete + start) under load =================
  for (let j = 0; j < opts.runs; j++) {
    const dir = seedDirs[(j + 1) % seedDirs.length];
    const id = `seed-switch-${j + 1}`;
    log(`switch (a) seed delete+start ${j + 1}/${opts.runs} under load`);
    const m = await underLoad(async () => {
      const t = now();
      const callAt = epoch();
      const sw = await seedSwitch(dir, id);
      await sb.pm2(['save']);
      return {
        callMs: now() - t,
        callAt,
        switchStartAt: callAt,
        switchEndAt: sw.startedAt,
        bootMs: sw.bootMs,
        deleteMs: sw.deleteMs,
        deleteToStartMs: sw.deleteToStartMs,
        startMs: sw.startMs,
      };
    });
    if (j === 0) R.timelines.seed = cutTimeline(m, m.switchStartAt, '`pm2 delete` of the old release', true);
    delete m.buckets;
    R.switchSeed.push(m);
    logSwitch('seed', m);
  }
  await sb.pm2(['delete', APP]);
  await sb.pm2(['save', '--force']);
  for (const d of seedDirs) fs.rmSync(path.dirname(d), { recursive: true, force: true });

  // ================= 2. pm2-release deploys =================
  for (let i = 1; i <= opts.runs; i++) {
    const sha = await sb.commit(`cold ${i}`, { 'app/page.js': pageSource(`cold-${i}`) });
    log(`deploy cold ${i}/${opts.runs} (reuseDependencies: false)`);
    const t = now();
    const r = await api.deploy(call(cfg.cold, `cold ${i}`));
    const ms = now() - t;
    await mustAnswer(`release=${r.release.id}`, 'cold deploy');
    const m = manifest(r.release.id);
    R.cold.push({ id: r.release.id, sha, ms, mode: r.mode, durations: r.durationsMs, dep: m.dependencies, sizeBytes: m.sizeBytes });
    log(`deploy cold ${i}: ${fmtMs(ms)} (install ${fmtMs(r.durationsMs.install)}, build ${fmtMs(r.durationsMs.build)}, method ${m.dependencies?.method})`);
  }
  for (let i = 1; i <= opts.runs; i++) {
    const sha = await sb.commit(`warm ${i}`, { 'app/page.js': pageSource(`warm-${i}`) });
    log(`deploy unchanged lockfile ${i}/${opts.runs}`);
    const t = now();
    const r = await api.deploy(call(cfg.restart, `warm ${i}`));
    const ms = now() - t;
    await mustAnswer(`release=${r.release.id}`, 'deploy');
    const m = manifest(r.release.id);
    R.warm.push({ id: r.release.id, sha, ms, mode: r.mode, durations: r.durationsMs, dep: m.dependencies, sizeBytes: m.sizeBytes });
    log(
      `deploy unchanged ${i}: ${fmtMs(ms)} (dependencies ${m.dependencies?.method} ${fmtMs(m.dependencies?.durationMs)}, build ${fmtMs(r.durationsMs.build)})`,
    );
  }
  const built = [...R.cold, ...R.warm];
  const B = built[built.length - 1];
  const A = built[built.length - 2];
  const other = (activeId) => (activeId === A.id ? B : A);
  let active = B.id;

  // A release that crashes at boot, built once (ready, never active); the deploys below reactivate it.
  const crashSha = await sb.commit('crash at boot', { 'next.config.js': CRASH_CONFIG });
  log('build: the crash-at-boot release');
  const crash = await api.build(call(cfg.restart, 'build crash'));
  await sb.commit('no crash', { 'next.config.js': null });
  log(`crash-at-boot release ${crash.release.id} is ready`);

  // ---------- redeploy of a retained sha, rollback: time until the target answers ----------
  for (let j = 0; j < opts.runs; j++) {
    const target = other(active);
    log(`redeploy retained sha ${target.sha.slice(0, 7)} ${j + 1}/${opts.runs}`);
    const m = await timedSwitch(`release=${target.id}`, () => api.deploy(call(cfg.restart, `redeploy ${j + 1}`, { ref: target.sha })));
    if (m.result.mode !== 'reactivated') R.notes.push(`redeploy ${j + 1}: mode ${m.result.mode}, expected reactivated`);
    R.redeploy.push({ ...m, mode: m.result.mode, result: undefined });
    active = target.id;
    log(`redeploy ${j + 1}: answered after ${fmtMs(m.answerMs)}, call ${fmtMs(m.callMs)} (mode ${m.result.mode})`);
  }
  for (let j = 0; j < opts.runs; j++) {
    const target = other(active);
    log(`rollback ${j + 1}/${opts.runs} (to ${target.id})`);
    const m = await timedSwitch(`release=${target.id}`, () => api.rollback(call(cfg.restart, `rollback ${j + 1}`)));
    if (m.result.release.id !== target.id) R.notes.push(`rollback ${j + 1} went to ${m.result.release.id}, expected ${target.id}`);
    R.rollback.push({ ...m, result: undefined });
    active = m.result.release.id;
    log(`rollback ${j + 1}: answered after ${fmtMs(m.answerMs)}, call ${fmtMs(m.callMs)}`);
  }

  // A pm2 wrapper that logs each call's start, end (ms) and command, then runs the real pm2. Used only for
  // the extra "logged" operations below, never for the measured ones. It sits in a copy of the pm2 package
  // (package.json, and links to its lib/ and constants), so pm2-release's socket client takes it for the
  // real PM2: over the socket it logs nothing (the count below); with PM2_RELEASE_PM2_TRANSPORT=cli every
  // operation is a logged CLI process (the accounting below, kept to show what the socket removed).
  const pm2Pkg = path.dirname(path.dirname(fs.realpathSync(PM2_BIN)));
  const loggedPkg = path.join(sb.root, 'pm2-logged');
  fs.mkdirSync(path.join(loggedPkg, 'bin'), { recursive: true });
  fs.copyFileSync(path.join(pm2Pkg, 'package.json'), path.join(loggedPkg, 'package.json'));
  for (const f of ['lib', 'constants.js', 'paths.js', 'index.js']) fs.symlinkSync(path.join(pm2Pkg, f), path.join(loggedPkg, f));
  const wrapper = path.join(loggedPkg, 'bin', 'pm2');
  const callLog = path.join(sb.root, 'pm2-calls.log');
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh\ns=$(date +%s%3N)\n"${PM2_BIN}" "$@"\nrc=$?\nprintf '%s %s %s\\n' "$s" "$(date +%s%3N)" "$1" >> "${callLog}"\nexit $rc\n`,
    { mode: 0o755 },
  );
  const viaCli = { PM2_RELEASE_PM2: wrapper, PM2_RELEASE_PM2_TRANSPORT: 'cli' };
  const loggedCalls = () =>
    fs
      .readFileSync(callLog, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [a, b, cmd] = l.split(' ');
        return { start: Number(a), end: Number(b), cmd };
      });

  // ---------- where a redeploy's and a rollback's time went through the CLI: every PM2 CLI call, by phase ----------
  // One extra redeploy and rollback (not in the medians above) with PM2_RELEASE_PM2 pointing at a wrapper
  // that logs each call's start, end and command, then runs the real pm2, and PM2_RELEASE_PM2_TRANSPORT=cli
  // (the way before the socket client). (--force: the rollbacks above marked the target's sha bad.)
  {
    const account = async (label, fn) => {
      fs.writeFileSync(callLog, '');
      const t = epoch();
      const m = await fn({ env: { ...sb.env, ...viaCli } });
      const end = epoch();
      const calls = loggedCalls();
      const windows = events
        .filter((e) => e.state === 'start')
        .map((e) => ({ phase: e.phase, start: e.at, end: events.find((x) => x.phase === e.phase && x.state !== 'start' && x.at >= e.at)?.at ?? end }));
      const byPhase = {};
      for (const c of calls) {
        const w = windows.filter((x) => c.start >= x.start - 1 && c.end <= x.end + 1).pop();
        const k = w?.phase ?? '(between phases)';
        byPhase[k] ??= { count: 0, ms: 0, cmds: {} };
        byPhase[k].count++;
        byPhase[k].ms += c.end - c.start;
        byPhase[k].cmds[c.cmd] = (byPhase[k].cmds[c.cmd] ?? 0) + 1;
      }
      const sw = windows.find((x) => x.phase === 'switch');
      const beforeSwitch = calls.filter((c) => sw && c.end <= sw.start + 1);
      R.accounting[label] = {
        totalMs: end - t,
        calls: calls.length,
        callsMs: calls.reduce((a, c) => a + c.end - c.start, 0),
        beforeSwitch: { count: beforeSwitch.length, ms: beforeSwitch.reduce((a, c) => a + c.end - c.start, 0), untilMs: sw ? sw.start - t : undefined },
        byPhase,
        answerMs: m.answerMs,
      };
      log(`accounting ${label}: ${calls.length} PM2 CLI calls, ${fmtMs(R.accounting[label].callsMs)} in them; ${beforeSwitch.length} before the switch phase`);
    };
    let target = other(active);
    await account('redeploy', (extra) =>
      timedSwitch(`release=${target.id}`, () => api.deploy(call(cfg.restart, 'accounting redeploy', { ref: target.sha, force: true, ...extra }))),
    );
    active = target.id;
    target = other(active);
    await account('rollback', (extra) => timedSwitch(`release=${target.id}`, () => api.rollback(call(cfg.restart, 'accounting rollback', extra))));
    active = target.id;
  }

  // ---------- the same over the socket (the default): pm2 CLI processes spawned ----------
  // A redeploy, a rollback, an activate, a status and a list with the logged pm2 and the default transport.
  {
    fs.writeFileSync(callLog, '');
    const env = { ...sb.env, PM2_RELEASE_PM2: wrapper };
    let target = other(active);
    const t = epoch();
    const re = await timedSwitch(`release=${target.id}`, () => api.deploy(call(cfg.restart, 'socket redeploy', { ref: target.sha, force: true, env })));
    active = target.id;
    target = other(active);
    const rb = await timedSwitch(`release=${target.id}`, () => api.rollback(call(cfg.restart, 'socket rollback', { env })));
    active = target.id;
    target = other(active);
    await api.activate(call(cfg.restart, 'socket activate', { id: target.id, env }));
    active = target.id;
    await api.status(call(cfg.restart, 'socket status', { env }));
    await api.list(call(cfg.restart, 'socket list', { env }));
    R.socketCalls = {
      cliCalls: loggedCalls().length,
      cmds: [...new Set(loggedCalls().map((c) => c.cmd))].join(', '),
      ms: epoch() - t,
      redeployAnswerMs: re.answerMs,
      rollbackAnswerMs: rb.answerMs,
    };
    log(`socket: ${R.socketCalls.cliCalls} pm2 CLI processes over a redeploy, a rollback, an activate, a status and a list`);
  }

  // ================= 3b. restart strategy under load =================
  for (let j = 0; j < opts.runs; j++) {
    const target = other(active);
    log(`switch (b) restart strategy ${j + 1}/${opts.runs} under load → ${target.id}`);
    const m = await underLoad(() => activateTimed(cfg.restart, `restart ${j + 1}`, target));
    active = target.id;
    if (j === 0) R.timelines.restart = cutTimeline(m, m.switchStartAt, 'switch phase starts (`pm2 delete` of the old release)', true);
    delete m.buckets;
    R.switchRestart.push(m);
    logSwitch('restart', m);
  }

  // One extra restart switch under load with the logged pm2 (not in the medians): where its gap goes.
  {
    const target = other(active);
    log(`switch (b, logged) restart strategy under load → ${target.id}`);
    fs.writeFileSync(callLog, '');
    const m = await underLoad(() => activateTimed(cfg.restart, 'restart (logged)', target, false, { env: { ...sb.env, ...viaCli } }));
    active = target.id;
    delete m.buckets;
    const calls = loggedCalls();
    const del = calls.find((c) => c.cmd === 'delete');
    const start = calls.find((c) => c.cmd === 'start');
    const gapEnd = m.ac.maxGapAt + m.ac.maxGapMs;
    const duringBoot = start ? calls.filter((c) => c.start >= start.end && c.start < gapEnd) : [];
    R.restartLogged = {
      gapMs: m.ac.maxGapMs,
      deleteMs: del && del.end - del.start,
      deleteToStartMs: del && start && start.start - del.end,
      startMs: start && start.end - start.start,
      startToAnswerMs: start && gapEnd - start.end,
      bootCalls: duringBoot.length,
      bootCallsMs: duringBoot.reduce((a, c) => a + c.end - c.start, 0),
      bootCallCmds: [...new Set(duringBoot.map((c) => c.cmd))].join(', '),
    };
    log(`  restart (logged): ${JSON.stringify(R.restartLogged)}`);
  }

  // ================= 3c. cluster strategy under load =================
  {
    const target = other(active);
    log(`cluster: first switch from fork mode (a restart, not measured) → ${target.id}`);
    await activateTimed(cfg.cluster, 'cluster warm-up', target);
    active = target.id;
    const procs = await jlist();
    R.clusterModeOk = procs.filter((p) => p.name === APP).every((p) => p.pm2_env?.exec_mode === 'cluster_mode');
  }
  for (let j = 0; j < opts.runs; j++) {
    const target = other(active);
    log(`switch (c) cluster strategy ${j + 1}/${opts.runs} under load → ${target.id}`);
    const kills = sb.countPm2Log(/sending SIGKILL/);
    const m = await underLoad(() => activateTimed(cfg.cluster, `cluster ${j + 1}`, target));
    m.sigkills = sb.countPm2Log(/sending SIGKILL/) - kills;
    active = target.id;
    if (j === 0) R.timelines.cluster = cutTimeline(m, m.healthEndAt, 'health gate passed: old workers deleted', true);
    delete m.buckets;
    R.switchCluster.push(m);
    logSwitch('cluster', m);
  }

  // ================= 3d. cluster switch to a release that crashes at boot =================
  for (let j = 0; j < opts.runs; j++) {
    log(`switch (d) cluster → crash-at-boot release ${j + 1}/${opts.runs} under load (deploy --no-verify, the health gate must revert)`);
    const m = await underLoad(() => crashDeploy(j));
    delete m.failTimes;
    delete m.buckets;
    R.switchCrash.push(m);
    logSwitch('crash', m);
  }

  // ================= 3e. many cluster switches under one long load =================
  {
    const S = opts.switches;
    const crashAt = new Set(S >= 10 ? [Math.floor(S / 3), Math.floor((2 * S) / 3)] : S >= 3 ? [Math.floor(S / 2)] : []);
    log(`marathon: ${S} cluster switches (${crashAt.size} to the crash-at-boot release) under one load run`);
    const kills = sb.countPm2Log(/sending SIGKILL/);
    const steps = [];
    const m = await underLoad(
      async () => {
        for (let i = 0; i < S; i++) {
          const startAt = epoch();
          if (crashAt.has(i)) {
            const s = await crashDeploy(`m${i}`);
            steps.push({ kind: 'crash', startAt, endAt: epoch() + 1_000, ...s });
            log(`  marathon ${i + 1}/${S}: crash deploy → ${s.outcome} in ${fmtMs(s.callMs)}`);
          } else {
            const target = other(active);
            const s = await activateTimed(cfg.cluster, `marathon ${i + 1}`, target, true);
            active = target.id;
            steps.push({ kind: 'switch', startAt, endAt: epoch() + 1_000, ...s });
            log(`  marathon ${i + 1}/${S}: → ${target.id} in ${fmtMs(s.callMs)}`);
          }
          await sleep(1_000);
        }
        return {};
      },
      { maxSeconds: S * 45 + 60 },
    );
    m.sigkills = sb.countPm2Log(/sending SIGKILL/) - kills;
    delete m.buckets;
    m.callMs = median(steps.map((st) => st.callMs));
    // Which failures happened during which kind of step (each step's window includes the 1 s pause after it).
    const attribute = (times) => {
      const out = { switch: 0, crash: 0, between: 0 };
      for (const t of times ?? []) out[steps.find((st) => t >= st.startAt && t <= st.endAt)?.kind ?? 'between']++;
      return out;
    };
    const byKind = { autocannon: attribute(m.failTimes?.autocannon), poller: attribute(m.failTimes?.poller) };
    delete m.failTimes;
    R.marathon = { ...m, switches: S, crashSwitches: crashAt.size, steps, byKind };
    log(
      `marathon: failed ${m.failed} (errors ${m.ac.errors} ${JSON.stringify(m.ac.errorCodes)}, non-2xx ${m.ac.non2xx}), dropped ${m.ac.dropped}, poller failed ${m.poller.failed} ${JSON.stringify(m.poller.codes)}, longest gap ${fmtMs(m.ac.maxGapMs)}; by step ${JSON.stringify(R.marathon.byKind)}`,
    );
  }

  // ================= 4. disk: retained releases with one lockfile =================
  {
    const { diskUsage, reflinkSupported, fsType } = await import('./lib.mjs');
    const lst = await api.list(call(cfg.restart, 'list'));
    const ready = lst.releases.filter((r) => r.status === 'ready');
    const byLock = new Map();
    for (const r of ready) {
      const m = manifest(r.id);
      const k = m.lockfileHash ?? 'none';
      byLock.set(k, [...(byLock.get(k) ?? []), { ...r, dep: m.dependencies }]);
    }
    const group = [...byLock.values()].sort((a, b) => b.length - a.length)[0] ?? [];
    const three = group.slice(0, 3); // newest first
    const singles = [];
    for (const r of three)
      singles.push({ id: r.id, method: r.dep?.method, bytes: await diskUsage([r.dir]), nodeModules: await diskUsage([path.join(r.cwd, 'node_modules')]) });
    const together = await diskUsage(three.map((r) => r.dir));
    R.disk = { singles, together, count: three.length, fs: fsType(sb.releasesDir), reflink: reflinkSupported(sb.releasesDir) };
    log(`disk: ${three.length} releases ${together} bytes together, singles ${singles.map((s) => s.bytes).join(', ')}`);
  }

  // ================= 4b. peak RSS of the pm2-release process during a deploy =================
  {
    await sb.commit('rss', { 'app/page.js': pageSource('rss') });
    log('peak RSS: pm2-release deploy via the CLI (unchanged lockfile: node_modules cloned in-process)');
    R.rss = await measureRss([process.execPath, CLI, 'deploy', '--config', cfg.cluster, '--json']);
    log(`peak RSS ${(R.rss.hwmKb / 1024).toFixed(1)} MiB over ${fmtMs(R.rss.ms)} (exit ${R.rss.code})`);
  }

  // ================= 5. router strategy (front door on the app port, releases on private ports) =================
  {
    const { RouterControl } = await import(pathToFileURL(path.join(ROOT, 'dist/router/client.js')).href);
    const { portHolder } = await import(pathToFileURL(path.join(ROOT, 'dist/health.js')).href);
    const control = new RouterControl(sb.releasesDir, APP);
    // The two newest ready releases that boot (retention kept them) alternate, as above.
    const lst = await api.list(call(cfg.restart, ''));
    const pair = lst.releases
      .filter((r) => r.status === 'ready' && r.id !== crash.release.id)
      .sort((a, b) => b.id.localeCompare(a.id))
      .slice(0, 2);
    if (pair.length < 2) throw new Error(`router: need two ready releases, found ${pair.map((r) => r.id).join(', ') || 'none'}`);
    active = lst.active ?? active;
    const otherR = (id) => (id === pair[0].id ? pair[1] : pair[0]);
    {
      const target = otherR(active);
      // Under the same load: the one gap the router strategy has, once per VM (the port changes hands).
      log(`router: take-over of the app port from the cluster strategy, under load → ${target.id}`);
      const m = await underLoad(() => activateTimed(cfg.router, 'router take-over', target));
      delete m.buckets;
      delete m.failTimes;
      R.routerTakeover = m;
      active = target.id;
      log(
        `router take-over: failed ${m.failed} (errors ${m.ac.errors} ${JSON.stringify(m.ac.errorCodes)}, non-2xx ${m.ac.non2xx}), dropped ${m.ac.dropped}, ` +
          `poller failed ${m.poller.failed} ${JSON.stringify(m.poller.codes)}, longest gap ${fmtMs(m.ac.maxGapMs)} (poller ${fmtMs(m.poller.maxGapMs)})`,
      );
    }
    const st0 = await control.status(15_000);
    const routerPid = st0.pid;
    log(`router: pid ${routerPid}, routing to ${st0.live?.release} on :${st0.live?.port}`);

    // ---------- 5a. N switches under one load run: activates, rollbacks, crash-at-boot deploys ----------
    {
      const S = opts.switches;
      const crashAt = new Set(S >= 10 ? [Math.floor(S / 3), Math.floor((2 * S) / 3)] : S >= 3 ? [1, S - 1] : [1]);
      log(`router marathon: ${S} router switches (${crashAt.size} deploys of the crash-at-boot release) under one load run`);
      const steps = [];
      let k = 0;
      const m = await underLoad(
        async () => {
          for (let i = 0; i < S; i++) {
            const startAt = epoch();
            const kind = crashAt.has(i) ? 'crash' : k++ % 2 === 1 ? 'rollback' : 'activate';
            let s;
            try {
              if (kind === 'crash') s = await crashDeploy(`r${i}`, cfg.router);
              else if (kind === 'rollback') s = await rollbackTimed(cfg.router, `router rollback ${i + 1}`);
              else {
                const target = otherR(active);
                s = await activateTimed(cfg.router, `router ${i + 1}`, target, true);
                active = target.id;
              }
            } catch (e) {
              R.notes.push(`router switch ${i + 1} (${kind}) failed: ${e.code ?? ''} ${e.message.split('\n')[0]}`);
              s = { error: e.code ?? e.message };
            }
            steps.push({ kind, startAt, endAt: epoch() + 1_000, ...s });
            log(`  router ${i + 1}/${S}: ${kind}${s.outcome ? ` → ${s.outcome}` : ` → ${active}`} in ${fmtMs(s.callMs)}`);
            await sleep(1_000);
          }
          return {};
        },
        { maxSeconds: S * 45 + 60 },
      );
      const first = steps.find((st) => st.kind === 'activate' && st.routeAt);
      if (first) R.timelines.router = cutTimeline(m, first.routeAt, 'route phase starts (new requests go to the new release)', false);
      delete m.buckets;
      const attribute = (times) => {
        const out = { activate: 0, rollback: 0, crash: 0, between: 0 };
        for (const t of times ?? []) out[steps.find((st) => t >= st.startAt && t <= st.endAt)?.kind ?? 'between']++;
        return out;
      };
      const byKind = { autocannon: attribute(m.failTimes?.autocannon), poller: attribute(m.failTimes?.poller) };
      delete m.failTimes;
      m.callMs = median(steps.filter((st) => st.kind !== 'crash').map((st) => st.callMs));
      const n = (kind) => steps.filter((st) => st.kind === kind).length;
      R.routerMarathon = { ...m, switches: S, crashSwitches: n('crash'), rollbacks: n('rollback'), activates: n('activate'), steps, byKind };
      log(
        `router marathon: failed ${m.failed} (errors ${m.ac.errors} ${JSON.stringify(m.ac.errorCodes)}, non-2xx ${m.ac.non2xx}), dropped ${m.ac.dropped}, poller failed ${m.poller.failed} ${JSON.stringify(m.poller.codes)}, longest gap ${fmtMs(m.ac.maxGapMs)} (poller ${fmtMs(m.poller.maxGapMs)}); by step ${JSON.stringify(byKind)}`,
      );
    }

    // ---------- 5a''. rollback to the warm standby under the same load: the call (the decision) → the old release answering ----------
    {
      const runs = [];
      const m = await underLoad(
        async () => {
          for (let j = 0; j < opts.runs; j++) {
            const s = await api.status(call(cfg.router, ''));
            if (s.standby?.state !== 'warm') {
              R.notes.push(`standby rollback ${j + 1}: no warm standby (${s.standby?.state ?? 'none'}: ${s.standby?.reason ?? '-'})`);
              break;
            }
            const target = s.standby.release;
            const t = now();
            const callAt = epoch();
            const answer = waitAnswer(sb.url, { marker: `release=${target}`, timeoutMs: 30_000, intervalMs: 2 });
            const r = await api.rollback(call(cfg.router, ''));
            const callMs = now() - t;
            const a = await answer;
            if (!a.ok) R.notes.push(`standby rollback ${j + 1}: ${target} never answered`);
            // The decision: the route phase starting (the standby checked, the route about to change).
            const routeAt = events.find((e) => e.phase === 'route' && e.state === 'start')?.at;
            const decisionMs = routeAt === undefined ? undefined : callAt + (a.at - t) - routeAt;
            runs.push({
              target,
              answerMs: a.at - t,
              decisionMs,
              callMs,
              flipped: r.durationsMs.switch === undefined && r.durationsMs.health === undefined,
              durations: r.durationsMs,
            });
            active = r.release.id;
            log(
              `  standby rollback ${j + 1}: ${target} answered ${fmtMs(decisionMs)} after the route decision, ${fmtMs(a.at - t)} after the call started; call ${fmtMs(callMs)}${runs.at(-1).flipped ? '' : ' (NOT a route flip)'}`,
            );
            await sleep(1_000);
          }
          return {};
        },
        { maxSeconds: opts.runs * 10 + 30 },
      );
      delete m.buckets;
      delete m.failTimes;
      R.standbyRollback = { runs, failed: m.failed, dropped: m.ac.dropped, pollerFailed: m.poller.failed, maxGapMs: m.ac.maxGapMs };
      log(`standby rollbacks: failed ${m.failed}, dropped ${m.ac.dropped}, poller failed ${m.poller.failed}, longest gap ${fmtMs(m.ac.maxGapMs)}`);
    }

    // ---------- 5a'. the same load with no switch: the longest gap the load itself makes, router vs direct ----------
    {
      const st = await control.status(10_000);
      const direct = `http://127.0.0.1:${st.live.port}/`;
      const quiet = async (url) => {
        const m = await underLoad(() => sleep(QUIET_SECONDS * 1_000), { url });
        return { seconds: QUIET_SECONDS, gapMs: m.ac.maxGapMs, pollerGapMs: m.poller.maxGapMs, failed: m.failed + m.ac.dropped + m.poller.failed };
      };
      R.routerQuiet = { router: await quiet(sb.url), direct: await quiet(direct) };
      log(
        `no switch, ${QUIET_SECONDS} s of the same load: longest gap through the router ${fmtMs(R.routerQuiet.router.gapMs)} (poller ${fmtMs(R.routerQuiet.router.pollerGapMs)}), ` +
          `direct ${fmtMs(R.routerQuiet.direct.gapMs)} (poller ${fmtMs(R.routerQuiet.direct.pollerGapMs)})`,
      );
    }

    // ---------- 5b. router cost on the Next page: direct to the private port vs through the router ----------
    {
      const st = await control.status(10_000);
      const direct = `http://127.0.0.1:${st.live.port}/`;
      const reps = opts.quick ? 1 : 2;
      log(`router cost: warm-up, then ${reps}× saturation and ${reps}× a fixed rate, ${COST_SECONDS} s each, direct (${direct}) vs router (${sb.url})`);
      await measureLoad(sb.url, 3, 0);
      const runs = { fixedDirect: [], fixedRouter: [], satDirect: [], satRouter: [] };
      for (let i = 0; i < reps; i++) {
        runs.satDirect.push(await measureLoad(direct, COST_SECONDS, 0));
        runs.satRouter.push(await measureLoad(sb.url, COST_SECONDS, 0));
      }
      // The latency comparison needs a rate the app sustains without queueing: COST_RATE, or half of the
      // direct saturation throughput when the app cannot do COST_RATE here (a queue would swamp the hop).
      // On one connection: autocannon paces a rate per connection by sending each second's share back to
      // back, so ten connections would queue ten requests at the app at once and measure the queue.
      const satD = median(runs.satDirect.map((x) => x.reqPerSec)) ?? 0;
      const rate = Math.max(5, Math.min(COST_RATE, Math.floor(satD / 2)));
      if (rate < COST_RATE) log(`router cost: direct saturation is ${satD.toFixed(0)} req/s: fixed rate ${rate} req/s instead of ${COST_RATE}`);
      for (let i = 0; i < reps; i++) {
        runs.fixedDirect.push(await measureLoad(direct, COST_SECONDS, rate, COST_FIXED_CONNECTIONS));
        runs.fixedRouter.push(await measureLoad(sb.url, COST_SECONDS, rate, COST_FIXED_CONNECTIONS));
      }
      R.routerCost = {
        rate,
        rateWanted: COST_RATE,
        seconds: COST_SECONDS,
        connections: opts.connections,
        fixedConnections: COST_FIXED_CONNECTIONS,
        ...runs,
        hwmKbAfter: procMem(routerPid)?.hwmKb,
      };
      const p = (xs, f) => fmtMs(median(xs.map(f)));
      log(
        `router cost: fixed p50 direct ${median(runs.fixedDirect.map((x) => x.p50))?.toFixed(2)} ms, router ${median(runs.fixedRouter.map((x) => x.p50))?.toFixed(2)} ms; ` +
          `saturation direct ${median(runs.satDirect.map((x) => x.reqPerSec))?.toFixed(0)} req/s, router ${median(runs.satRouter.map((x) => x.reqPerSec))?.toFixed(0)} req/s (p50 ${p(runs.satDirect, (x) => x.p50)} / ${p(runs.satRouter, (x) => x.p50)})`,
      );
    }

    // ---------- 5c. hold: SIGKILL the live release's server under load, PM2 restarts it ----------
    {
      log('router hold: SIGKILL the process holding the live release port, under load');
      const restartsOf = async (port) =>
        (await jlist())
          .filter((x) => x.name === APP && (x.pm2_env?.env?.[APP_PORT_ENV] ?? x.pm2_env?.[APP_PORT_ENV]) === String(port))
          .map((x) => x.pm2_env?.restart_time ?? 0)[0];
      const m = await underLoad(async () => {
        const st = await control.status(10_000);
        const port = st.live.port;
        const pid = await portHolder(port);
        if (!pid) throw new Error(`router hold: nothing holds port ${port}`);
        // Only a process of ours: its cwd is inside the sandbox's releases dir.
        const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
        if (!cwd.startsWith(sb.releasesDir + path.sep)) throw new Error(`router hold: pid ${pid} on port ${port} runs in ${cwd}, not in the sandbox`);
        const comm = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
        const before = await restartsOf(port);
        const t = now();
        const killAt = epoch();
        process.kill(pid, 'SIGKILL');
        const a = await waitAnswer(`http://127.0.0.1:${port}/`, { timeoutMs: 60_000, intervalMs: 20 });
        if (!a.ok) throw new Error(`router hold: port ${port} did not answer within 60 s after the kill`);
        const after = await restartsOf(port);
        return { killAt, pid, cmd: comm.slice(0, 120), port, backMs: a.at - t, restarts: (after ?? 0) - (before ?? 0) };
      });
      R.timelines['router-hold'] = cutTimeline(m, m.killAt, 'SIGKILL of the live release server', true);
      delete m.buckets;
      delete m.failTimes;
      R.routerHold = m;
      log(
        `router hold: killed pid ${m.pid} (${m.cmd}); port answered again after ${fmtMs(m.backMs)} (PM2 restarts +${m.restarts}); ` +
          `failed ${m.failed}, dropped ${m.ac.dropped}, poller failed ${m.poller.failed} ${JSON.stringify(m.poller.codes)}, longest gap ${fmtMs(m.ac.maxGapMs)} (poller ${fmtMs(m.poller.maxGapMs)})`,
      );
    }

    // ---------- 5d. deploy with an unchanged lockfile, router strategy (one boot: no verify run) ----------
    for (let i = 1; i <= opts.runs; i++) {
      const sha = await sb.commit(`router ${i}`, { 'app/page.js': pageSource(`router-${i}`) });
      log(`deploy unchanged lockfile, router strategy ${i}/${opts.runs}`);
      const t = now();
      const r = await api.deploy(call(cfg.router, `router deploy ${i}`));
      const ms = now() - t;
      await mustAnswer(`release=${r.release.id}`, 'router deploy');
      const m = manifest(r.release.id);
      R.routerWarm.push({ id: r.release.id, sha, ms, mode: r.mode, durations: r.durationsMs, dep: m.dependencies });
      log(
        `deploy unchanged, router ${i}: ${fmtMs(ms)} (dependencies ${m.dependencies?.method} ${fmtMs(m.dependencies?.durationMs)}, build ${fmtMs(r.durationsMs.build)})`,
      );
    }

    // ---------- 5e. deploy with nothing to do (the live release serves HEAD), through the CLI as the executor calls it ----------
    {
      R.noop = [];
      for (let i = 1; i <= opts.runs; i++) {
        const t = now();
        const r = await run([process.execPath, CLI, 'deploy', '--config', cfg.router, '--json'], { cwd: sb.root, env: sb.env, allowFail: true });
        const ms = now() - t;
        let out;
        try {
          out = JSON.parse(r.stdout);
        } catch {
          out = undefined;
        }
        if (out?.changed !== false) R.notes.push(`no-op deploy ${i}: ${out ? `changed ${out.changed}` : `exit ${r.code}`}`);
        R.noop.push({ ms, durations: out?.durationsMs });
        log(`no-op deploy ${i}: ${fmtMs(ms)} (CLI process, start to exit)`);
      }
    }

    const stEnd = await control.status(10_000);
    R.routerRss = { pid: routerPid, samePid: stEnd.pid === routerPid, ...procMem(routerPid), stats: stEnd.stats };
    log(
      `router: VmHWM ${((R.routerRss.hwmKb ?? 0) / 1024).toFixed(1)} MiB, VmRSS ${((R.routerRss.rssKb ?? 0) / 1024).toFixed(1)} MiB (pid ${routerPid}${R.routerRss.samePid ? '' : `, now ${stEnd.pid}: it restarted`})`,
    );
  }

  R.finished = new Date();
  R.machine.loadEnd = os.loadavg();
  saveResults();
  const md = writeReport(R, opts.out);
  process.stdout.write(md.tables + '\n');
  log(`wrote ${path.relative(ROOT, opts.out)}`);

  // ---------------- helpers that need the sandbox ----------------
  /** Slices one switch out of a load run's 50 ms buckets: from 1 s before `anchorAt` to 3 s after (longer
   * when the run's longest gap starts in the window and ends later, up to 10 s). */
  function cutTimeline(m, anchorAt, anchor, extend) {
    const b = m.buckets;
    if (!b || !anchorAt) return undefined;
    let afterMs = 3_000;
    const gapEnd = m.ac.maxGapAt + m.ac.maxGapMs;
    if (extend && m.ac.maxGapAt >= anchorAt - 1_000 && gapEnd - anchorAt + 500 > afterMs) afterMs = Math.min(10_000, Math.ceil(gapEnd - anchorAt + 500));
    const from = Math.floor((anchorAt - 1_000 - b.t0) / b.bucketMs);
    const to = Math.ceil((anchorAt + afterMs - b.t0) / b.bucketMs);
    const sl = (a) => Array.from({ length: to - from }, (_, i) => a[from + i] ?? 0);
    return {
      anchor,
      bucketMs: b.bucketMs,
      startMs: b.t0 + from * b.bucketMs - anchorAt,
      acOk: sl(b.acOk),
      acFail: sl(b.acFail),
      pollOk: sl(b.pollOk),
      pollFail: sl(b.pollFail),
      connections: m.ac.connections,
    };
  }

  /** One autocannon run in a child (load.mjs --measure); rate 0 = as fast as it goes. */
  async function measureLoad(url, seconds, rate, connections = opts.connections) {
    const child = fork(path.join(ROOT, 'bench/load.mjs'), ['--measure', url, String(connections), String(seconds), String(rate)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: cleanEnv(),
    });
    loadChild = child;
    children.add(child);
    try {
      return await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`load.mjs --measure: no result within ${seconds + 40} s`)), (seconds + 40) * 1000);
        child.on('message', (msg) => {
          if (msg?.type === 'result') {
            clearTimeout(timer);
            resolve(msg.measure);
          }
        });
        child.on('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`load.mjs --measure exited (${code}) without a result`));
        });
      });
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      children.delete(child);
      loadChild = undefined;
    }
  }

  async function rollbackTimed(config, label) {
    const t = now();
    const callAt = epoch();
    const r = await api.rollback(call(config, '', {}));
    const callMs = now() - t;
    const b = await httpGet(sb.url);
    if (!(b.status === 200 && b.body.includes(`release=${r.release.id}`)))
      R.notes.push(`${label}: after rollback, ${sb.url} did not serve ${r.release.id} (${b.status ?? b.error})`);
    active = r.release.id;
    return { callMs, callAt, ...switchPhase(), durations: r.durationsMs };
  }

  function writeConfig(name, obj) {
    const p = path.join(sb.root, `${name}.config.json`);
    fs.writeFileSync(p, JSON.stringify(obj, null, 2) + '\n');
    return p;
  }

  async function jlist() {
    const r = await sb.pm2(['jlist']);
    // PM2 may print a `[PM2]` line (a warning, an update notice) before or after the JSON array.
    for (const line of r.stdout.split('\n').filter((l) => l.trim().startsWith('[{') || l.trim() === '[]'))
      try {
        return JSON.parse(line);
      } catch {
        /* the next line */
      }
    throw new Error(`pm2 jlist printed no process list: ${r.stdout.slice(0, 200)}`);
  }

  /** The seed flow, each step an argv array. */
  async function seedDeploy(i) {
    const dir = path.join(sb.seedDir, `r${i}`);
    fs.mkdirSync(dir, { recursive: true });
    const logFile = path.join(sb.logsDir, `seed-${i}.log`);
    const t0 = now();
    await runPipe(['git', 'archive', '--format=tar', 'HEAD'], ['tar', '-x', '-C', dir], { cwd: sb.ws, env: sb.env });
    const appDir = path.join(dir, 'frontend');
    for (const f of ENV_FILES) {
      const src = path.join(sb.appDir, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(appDir, f));
    }
    const ci = await run(['npm', 'ci'], { cwd: appDir, env: sb.env, logFile, timeoutMs: 900_000 });
    const build = await run(['npm', 'run', 'build'], { cwd: appDir, env: sb.env, logFile, timeoutMs: 900_000 });
    await run(['rm', '-rf', '.next/cache', '.turbo', 'build/cache'], { cwd: appDir, env: sb.env });
    const sw = await seedSwitch(appDir, `seed-${i}`);
    await sb.pm2(['save']);
    return { totalMs: now() - t0, ciMs: ci.ms, buildMs: build.ms, bootMs: sw.bootMs, appDir };
  }

  /** The seed's switch: pm2 delete (ignore if absent), pm2 start npm … -- run start, wait for a 200. */
  async function seedSwitch(appDir, id) {
    const delAt = epoch();
    await sb.pm2(['delete', APP], {}, true);
    const delEndAt = epoch();
    const tStart = now();
    const startAt = epoch();
    await sb.pm2(['start', 'npm', '--name', APP, '--cwd', appDir, '--', 'run', 'start'], { FRONT_PORT: String(sb.port), RELEASE_ID: id });
    const startedAt = epoch();
    const a = await waitAnswer(sb.url, { marker: `release=${id}`, timeoutMs: 90_000, intervalMs: 20 });
    if (!a.ok) throw new Error(`seed start of ${id} never answered (last: ${a.last})`);
    return { bootMs: a.at - tStart, answerAt: a.at, startedAt, deleteMs: delEndAt - delAt, deleteToStartMs: startAt - delEndAt, startMs: startedAt - startAt };
  }

  /** Runs fn while polling for `marker`; answerMs = call start → first 200 with the marker. */
  async function timedSwitch(marker, fn) {
    const t = now();
    const callAt = epoch();
    const answer = waitAnswer(sb.url, { marker, timeoutMs: 120_000, intervalMs: 20 });
    const result = await fn();
    const callMs = now() - t;
    const a = await answer;
    if (!a.ok) throw new Error(`never answered with ${marker}`);
    const answerAt = callAt + (a.at - t);
    const { switchStartAt, switchEndAt } = switchPhase();
    return {
      callMs,
      answerMs: a.at - t,
      // Where the time to answer goes: before the switch phase, in it (up to `pm2 start` returning), after it.
      beforeSwitchMs: switchStartAt - callAt,
      switchMs: switchEndAt - switchStartAt,
      afterStartMs: answerAt - switchEndAt,
      result,
      durations: result.durationsMs,
    };
  }

  async function activateTimed(config, label, target, quiet = false, extra = {}) {
    const t = now();
    const callAt = epoch();
    const r = await api.activate(call(config, quiet ? '' : label, { id: target.id, ...extra }));
    const callMs = now() - t;
    const b = await httpGet(sb.url);
    if (!(b.status === 200 && b.body.includes(`release=${target.id}`)))
      R.notes.push(`${label}: after activate, ${sb.url} did not serve ${target.id} (${b.status ?? b.error})`);
    return { callMs, callAt, ...switchPhase(), durations: r.durationsMs };
  }

  /** deploy --no-verify of the crash-at-boot sha (--force: the gate marked it bad the previous time). */
  async function crashDeploy(label, config = cfg.cluster) {
    const before = await httpGet(sb.url);
    const t = now();
    let outcome = 'deployed (unexpected)';
    try {
      await api.deploy(call(config, '', { ref: crashSha, verify: false, force: true }));
    } catch (e) {
      outcome = e.code ?? e.message;
    }
    const callMs = now() - t;
    const after = await httpGet(sb.url);
    const stillOld = after.status === 200 && before.body !== undefined && after.body.includes(`release=${active}`);
    if (!stillOld) R.notes.push(`crash deploy ${label}: the previous release did not answer afterwards (${after.status ?? after.error})`);
    return { callMs, outcome, stillOld, ...switchPhase() };
  }

  /**
   * Starts the load child (bench/load.mjs: scripts/traffic.mjs, keep-alive clients + a fresh-connection poller),
   * waits for steady 2xx, runs fn, keeps the load 2 s more, stops, collects. `ac` keeps its name: it holds the
   * keep-alive clients' counts (autocannon's before).
   */
  async function underLoad(fn, { maxSeconds = 180, url = sb.url } = {}) {
    const child = fork(path.join(ROOT, 'bench/load.mjs'), [url, String(opts.connections), String(maxSeconds), '20'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: cleanEnv(),
    });
    loadChild = child;
    children.add(child);
    child.on('error', (e) => log(`load generator: ${e.message}`));
    const messages = [];
    const waiters = [];
    child.on('message', (m) => {
      messages.push(m);
      for (const w of [...waiters]) w();
    });
    const waitFor = (type, ms) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = messages.find((x) => x.type === type);
          if (m) {
            clearTimeout(timer);
            waiters.splice(waiters.indexOf(check), 1);
            resolve(m);
          } else if (child.exitCode !== null) {
            clearTimeout(timer);
            reject(new Error(`load generator exited (${child.exitCode}) before ${type}`));
          }
        };
        const timer = setTimeout(() => reject(new Error(`load generator: no ${type} within ${ms} ms`)), ms);
        waiters.push(check);
        child.once('exit', check);
        check();
      });
    try {
      await waitFor('ready', 30_000);
      await sleep(2_000);
      const inner = await fn();
      await sleep(2_000);
      if (!child.connected) throw new Error('the load generator is gone');
      child.send({ cmd: 'stop' });
      const res = await waitFor('result', 30_000);
      return {
        ...inner,
        ac: res.autocannon,
        poller: res.poller,
        failTimes: res.failTimes,
        buckets: res.buckets,
        // The keep-alive clients' failures other than drops (`ac.dropped`, counted apart): with the poller's,
        // failed + ac.dropped + poller.failed is every failed request (scripts/traffic.mjs counts each once).
        failed: res.autocannon.errors + res.autocannon.non2xx,
        loadSeconds: res.durationS,
      };
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      children.delete(child);
      loadChild = undefined;
    }
  }

  function logSwitch(what, m) {
    log(
      `  ${what}: failed ${m.failed} (errors ${m.ac.errors} ${JSON.stringify(m.ac.errorCodes)}, non-2xx ${m.ac.non2xx}), dropped ${m.ac.dropped}, ` +
        `longest gap ${fmtMs(m.ac.maxGapMs)}, poller failed ${m.poller.failed} ${JSON.stringify(m.poller.codes)} gap ${fmtMs(m.poller.maxGapMs)}${m.outcome ? `, outcome ${m.outcome}` : ''}`,
    );
  }

  async function measureRss(argv) {
    const t = now();
    const child = spawn(argv[0], argv.slice(1), { cwd: sb.root, env: sb.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err = (err + d).slice(-8000)));
    let hwmKb = 0;
    let samples = 0;
    const timer = setInterval(() => {
      const m = procMem(child.pid);
      if (m?.hwmKb) {
        hwmKb = Math.max(hwmKb, m.hwmKb);
        samples++;
      }
    }, 20);
    const killer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 900_000);
    const code = await new Promise((resolve) => child.on('close', (c) => resolve(c)));
    clearInterval(timer);
    clearTimeout(killer);
    children.delete(child);
    let result;
    try {
      result = JSON.parse(out.trim().split('\n').pop());
    } catch {
      result = undefined;
    }
    if (code !== 0) R.notes.push(`CLI deploy for the RSS measurement exited ${code}: ${err.split('\n').slice(-5).join(' ')}`);
    const id = result?.release?.id;
    return { hwmKb, samples, code, ms: now() - t, method: id ? manifest(id).dependencies?.method : undefined, id };
  }
}

/** The raw measurements, kept in the cache dir so --report-only can re-render them. */
function saveResults() {
  try {
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    fs.writeFileSync(
      RESULTS_FILE,
      JSON.stringify(R, (k, v) => (k === 'failTimes' || k === 'buckets' ? undefined : v), 1),
    );
  } catch (e) {
    log(`could not save the results: ${e.message}`);
  }
}

async function machineInfo(templateDir) {
  const { fsType } = await import('./lib.mjs');
  const npmV = await run(['npm', '--version'], { env: cleanEnv(), cwd: os.tmpdir(), timeoutMs: 60_000 }).catch(() => ({ stdout: '?' }));
  const pm2V = JSON.parse(fs.readFileSync(path.join(path.dirname(path.dirname(PM2_BIN)), 'package.json'), 'utf8')).version;
  const cpus = os.cpus();
  const fsInfo = fsType(sb.root);
  const git = async (args) => (await run(['git', ...args], { cwd: ROOT, env: cleanEnv(), timeoutMs: 30_000, allowFail: true })).stdout.trim();
  const newest = (dir) => {
    let t = 0;
    for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true }))
      if (e.isFile()) t = Math.max(t, fs.statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
    return t;
  };
  const distStale = newest(path.join(ROOT, 'src')) > newest(path.join(ROOT, 'dist'));
  if (distStale) log('WARNING: dist/ is older than src/: the bench measures the stale build (run `npx tsc -p .`)');
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    ramBytes: os.totalmem(),
    fsType: fsInfo.type,
    fsMount: fsInfo.mnt,
    tmpdir: os.tmpdir(),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    commit: await git(['rev-parse', '--short', 'HEAD']),
    srcDirty: (await git(['status', '--porcelain', '--', 'src'])).length > 0,
    distStale,
    npm: npmV.stdout.trim(),
    pm2: pm2V,
    app: lockedVersions(templateDir),
    loadStart: os.loadavg(),
    date: new Date().toISOString(),
  };
}

let exitCode = 0;
try {
  const p = main();
  mainDone = p.then(
    () => undefined,
    () => undefined,
  );
  await p;
} catch (err) {
  exitCode = 1;
  log(`FAILED: ${interrupted ? 'interrupted' : (err?.stack ?? err)}`);
  // A failed run leaves the last complete performance.md alone; what it measured goes to the cache dir.
  if (!interrupted)
    try {
      R.error = String(err?.message ?? err).split('\n')[0];
      R.finished = new Date();
      R.machine.loadEnd = os.loadavg();
      const partial = path.join(CACHE_DIR, 'performance.incomplete.md');
      writeReport(R, partial);
      log(`wrote what was measured to ${partial}`);
    } catch (e) {
      log(`could not write the report: ${e.message}`);
    }
} finally {
  clearTimeout(watchdog);
  await cleanup();
}
if (exitCode === 0 && !opts.skipNext && !interrupted) {
  // Its own sandbox and time limit; it rewrites only its section of the report.
  log('the Next.js section (bench/next.mjs)');
  // The main sandbox is gone (cleanup refuses new children from then on); this section brings its own.
  nextSection = run([process.execPath, path.join(ROOT, 'bench/next.mjs'), '--runs', String(opts.runs), '--out', opts.out], {
    cwd: ROOT,
    env: process.env,
    timeoutMs: (12 + opts.runs * 10) * 60_000,
    allowFail: true,
    evenWhenStopping: true,
  });
  const r = await nextSection;
  process.stderr.write(r.stderr.slice(-4000));
  if (r.code !== 0) exitCode = 1;
}
process.exit(exitCode);

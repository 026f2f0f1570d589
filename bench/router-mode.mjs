// The cost of running the router (`<app>-router`, dist/router/main.js) in PM2 cluster mode (1 instance) rather
// than fork mode. In cluster mode PM2's daemon is the cluster primary: it holds the listening socket, accepts
// each connection and hands it to the worker over IPC, so the cost is per connection and shows most when
// every request brings a new one.
//
// One private PM2 daemon (PM2_HOME in a temp dir, never ~/.pm2) runs two routers started exactly as
// pm2-release starts one (routerDefinition + the Pm2 client, from dist/): one in fork mode, one in cluster
// mode (1 instance), each on its own loopback port with its own releases dir and app name, both routed
// (RouterControl) to one tiny HTTP app this script starts on a private 127.0.0.1 port. Then, ROUNDS times,
// interleaved (direct, fork, cluster; keep-alive, then a new connection per request), a SECONDS-long
// saturation run with the bench's load tool (bench/load.mjs): autocannon with CONNECTIONS keep-alive
// connections, and its --measure-fresh mode (CONNECTIONS requests in flight, each on a new connection).
// Medians of the rounds and cluster/fork ratios are printed and written to bench/results/router-mode.json.
//
//   npm run bench:router-mode            (builds dist/ first)
//   node bench/router-mode.mjs [--rounds N] [--seconds S] [--connections C]
//
// On the way out, also on error or a signal: the app is killed by its pid, then the daemon by `pm2 kill`
// with that PM2_HOME (then by the pid it wrote), and the temp dir is removed.
import { fork, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);

// ---------- the app: `node router-mode.mjs --serve PORT` (a child of the bench, never under PM2) ----------
if (process.argv[2] === '--serve') {
  const port = Number(process.argv[3]);
  const body = Buffer.from('<!doctype html><title>router-mode-app</title><p>router-mode-app: hello</p>\n');
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': body.length });
    res.end(body);
  });
  server.listen(port, '127.0.0.1');
  // Never outlive the bench: gone with its IPC channel, and bounded anyway.
  process.on('disconnect', () => process.exit(0));
  setTimeout(() => process.exit(0), 15 * 60_000).unref();
} else {
  await bench();
}

async function bench() {
  const { children, cleanEnv, createSandbox, freePort, log, median, PM2_BIN, procMem, ROOT, run, sleep, state, table, waitAnswer } = {
    ...(await import('./lib.mjs')),
    ...(await import('./sandbox.mjs')),
  };

  const argv = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = argv.indexOf(`--${name}`);
    const v = i >= 0 ? Number(argv[i + 1]) : dflt;
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
    return v;
  };
  const ROUNDS = opt('rounds', 3);
  const SECONDS = opt('seconds', 5);
  const CONNECTIONS = opt('connections', 10);
  const WARM_SECONDS = 1;
  // pm2-release's default router.holdMs (src/config.ts): the router holds requests this long while no release answers.
  const HOLD_MS = 15_000;
  // Any valid release id: the router only names it in its state and status.
  const RELEASE = '20260101T000000Z-0000000';
  const MODES = ['fork', 'cluster'];
  const OUT_DIR = path.join(ROOT, 'bench/results');
  const OUT = path.join(OUT_DIR, 'router-mode.json');
  // The whole run is bounded (setup ~10 s, 6 runs of SECONDS + ~0.5 s per round, warm-ups).
  const LIMIT_MS = Math.max(170_000, (20 + ROUNDS * 6 * (SECONDS + 2) + 6 * (WARM_SECONDS + 2)) * 1000);

  for (const f of ['dist/router/main.js', 'dist/router/client.js', 'dist/lifecycle/switch-release.js', 'dist/pm2/client.js', 'dist/log.js'])
    if (!fs.existsSync(path.join(ROOT, f))) throw new Error(`${f} is missing: run \`npm run build\` first`);
  const { routerDefinition } = await import(path.join(ROOT, 'dist/lifecycle/switch-release.js'));
  const { RouterControl } = await import(path.join(ROOT, 'dist/router/client.js'));
  const { Pm2 } = await import(path.join(ROOT, 'dist/pm2/client.js'));
  const { createLogger } = await import(path.join(ROOT, 'dist/log.js'));

  // ---------- lifecycle: always clean up (app by pid, then the daemon of our PM2_HOME) ----------
  let sb;
  let appChild;
  let loadChild;
  let cleaning;
  const killPid = (pid, signal = 'SIGKILL') => {
    try {
      process.kill(pid, signal);
    } catch {
      /* gone */
    }
  };
  const cleanup = () =>
    (cleaning ??= (async () => {
      state.stopping = true;
      if (loadChild?.exitCode === null) killPid(loadChild.pid);
      if (appChild?.pid && appChild.exitCode === null) {
        log(`cleanup: killing the app (pid ${appChild.pid})`);
        killPid(appChild.pid, 'SIGTERM');
        for (let i = 0; i < 20 && appChild.exitCode === null; i++) await sleep(50);
        if (appChild.exitCode === null) killPid(appChild.pid);
        children.delete(appChild);
      }
      await sb?.close().catch((e) => log(`cleanup failed: ${e.message}`));
    })());
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
    process.on(sig, () => {
      log(`${sig}: stopping and cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  for (const ev of ['uncaughtException', 'unhandledRejection'])
    process.on(ev, (err) => {
      log(`${ev}: ${err?.stack ?? err}; cleaning up`);
      void cleanup().finally(() => process.exit(1));
    });
  const watchdog = setTimeout(() => {
    log(`time limit of ${Math.round(LIMIT_MS / 1000)} s reached: stopping`);
    void cleanup().finally(() => process.exit(124));
  }, LIMIT_MS);

  /** CPU time (user + system, ms) a process has used so far; undefined when it is gone. */
  const clkTck = Number((await run(['getconf', 'CLK_TCK'], { allowFail: true }).catch(() => ({ stdout: '' }))).stdout.trim()) || 100;
  const cpuMs = (pid) => {
    try {
      const rest = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').pop().split(' ');
      return ((Number(rest[11]) + Number(rest[12])) * 1000) / clkTck;
    } catch {
      return undefined;
    }
  };

  /** One load run in a child (bench/load.mjs): `keepalive` = autocannon, `fresh` = a new connection per request. */
  async function measureLoad(url, kind, seconds) {
    const args =
      kind === 'fresh' ? ['--measure-fresh', url, String(CONNECTIONS), String(seconds)] : ['--measure', url, String(CONNECTIONS), String(seconds), '0'];
    const child = fork(path.join(ROOT, 'bench/load.mjs'), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: cleanEnv() });
    loadChild = child;
    children.add(child);
    try {
      return await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`load.mjs ${args[0]}: no result within ${seconds + 40} s`)), (seconds + 40) * 1000);
        child.on('message', (msg) => {
          if (msg?.type === 'result') {
            clearTimeout(timer);
            resolve(msg.measure);
          }
        });
        child.on('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`load.mjs ${args[0]} exited (${code}) without a result`));
        });
      });
    } finally {
      if (child.exitCode === null) killPid(child.pid);
      children.delete(child);
      loadChild = undefined;
    }
  }

  const R = {
    started: new Date().toISOString(),
    params: {
      rounds: ROUNDS,
      seconds: SECONDS,
      connections: CONNECTIONS,
      warmSeconds: WARM_SECONDS,
      order: 'per round: keepalive (direct, fork, cluster), then fresh (direct, fork, cluster)',
    },
    machine: {},
    routers: {},
    runs: [],
    medians: {},
    ratios: {},
  };

  let exitCode = 0;
  try {
    sb = await createSandbox();
    log(`sandbox ${sb.root} (PM2_HOME ${sb.pm2Home})`);
    const env = sb.env;
    const logger = createLogger({ level: 'warn' });
    const pm2 = new Pm2({ env, logger });

    // ---------- the app ----------
    const appPort = await freePort();
    const appUrl = `http://127.0.0.1:${appPort}/`;
    appChild = spawn(process.execPath, [SELF, '--serve', String(appPort)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: cleanEnv() });
    children.add(appChild);
    const appUp = await waitAnswer(appUrl, { marker: 'router-mode-app', timeoutMs: 15_000 });
    if (!appUp.ok) throw new Error(`the app does not answer on ${appUrl} (${appUp.last})`);
    log(`app: pid ${appChild.pid} on ${appUrl}`);

    // ---------- the two routers, started as pm2-release starts one ----------
    const targets = { direct: { url: appUrl, pid: appChild.pid } };
    for (const mode of MODES) {
      const app = `rm-${mode}`;
      const port = await freePort();
      const releasesDir = path.join(sb.root, `releases-${mode}`);
      fs.mkdirSync(releasesDir, { recursive: true });
      const def = routerDefinition({ config: { app: { name: app, portEnv: 'PORT', env: { PORT: String(port) } }, router: { holdMs: HOLD_MS }, releasesDir } });
      if (mode === 'fork') {
        def.execMode = 'fork';
        delete def.instances;
      } else if (def.execMode !== 'cluster' || def.instances !== 1)
        throw new Error(`routerDefinition is ${def.execMode} × ${def.instances}, not cluster × 1: this bench measures the cluster router`);
      await pm2.start(def);
      const control = new RouterControl(releasesDir, app);
      await control.route({ port: appPort, release: RELEASE }, { waitMs: 20_000 });
      const url = `http://127.0.0.1:${port}/`;
      const up = await waitAnswer(url, { marker: 'router-mode-app', timeoutMs: 20_000 });
      if (!up.ok) throw new Error(`${def.name} (${mode}) does not answer on ${url} (${up.last})`);
      const [proc] = await pm2.processes(def.name, { fresh: true });
      const want = mode === 'fork' ? 'fork_mode' : 'cluster_mode';
      if (proc?.execMode !== want) throw new Error(`${def.name} runs in ${proc?.execMode}, not ${want}`);
      const st = await control.status(5_000);
      targets[mode] = { url, pid: proc.pid };
      R.routers[mode] = {
        name: def.name,
        pid: proc.pid,
        execMode: proc.execMode,
        port,
        args: def.args,
        nodeArgs: def.nodeArgs,
        killTimeoutMs: def.killTimeoutMs,
        live: st.live,
      };
      log(`${def.name}: ${proc.execMode}, pid ${proc.pid}, ${url} → ${appUrl}`);
    }
    const daemonPid = sb.daemonPid();
    R.machine = await machine(daemonPid);

    // ---------- warm-up (JIT, upstream agents), then the interleaved rounds ----------
    const ORDER = ['direct', ...MODES];
    log(`warm-up: ${WARM_SECONDS} s of each load on each target`);
    for (const kind of ['keepalive', 'fresh']) for (const t of ORDER) await measureLoad(targets[t].url, kind, WARM_SECONDS);

    for (let round = 1; round <= ROUNDS; round++) {
      for (const kind of ['keepalive', 'fresh']) {
        for (const t of ORDER) {
          const pids = { app: appChild.pid, router: targets[t].pid === appChild.pid ? undefined : targets[t].pid, daemon: daemonPid };
          const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, pid ? cpuMs(pid) : undefined]));
          const m = await measureLoad(targets[t].url, kind, SECONDS);
          const cpu = Object.fromEntries(
            Object.entries(pids).map(([k, pid]) => [k, pid && before[k] !== undefined ? (cpuMs(pid) ?? NaN) - before[k] : undefined]),
          );
          const perK = (ms) => (ms !== undefined && m.ok ? (ms * 1000) / m.ok : undefined);
          const run1 = {
            round,
            kind,
            target: t,
            reqPerSec: m.reqPerSec,
            p50: m.p50,
            p90: m.p90,
            p99: m.p99,
            mean: m.mean,
            ok: m.ok,
            non2xx: m.non2xx,
            errors: m.errors,
            ...(m.errorCodes && Object.keys(m.errorCodes).length ? { errorCodes: m.errorCodes } : {}),
            seconds: m.seconds,
            cpuMs: cpu,
            // CPU the routing layer spent per 1000 answered requests: the router process plus PM2's daemon (the
            // cluster primary accepts and hands over every connection; in fork mode it is idle).
            cpuMsPer1kRouting: t === 'direct' ? undefined : perK((cpu.router ?? 0) + (cpu.daemon ?? 0)),
            cpuMsPer1kDaemon: perK(cpu.daemon),
          };
          R.runs.push(run1);
          log(
            `round ${round}/${ROUNDS} ${kind.padEnd(9)} ${t.padEnd(7)}: ${m.reqPerSec?.toFixed(0)} req/s, p50 ${m.p50?.toFixed(2)} ms, p99 ${m.p99?.toFixed(2)} ms` +
              `${m.errors || m.non2xx ? `, ${m.errors} errors, ${m.non2xx} non-2xx` : ''}; CPU router ${cpu.router?.toFixed(0) ?? '-'} ms, daemon ${cpu.daemon?.toFixed(0)} ms`,
          );
        }
      }
    }
    R.routers.fork.hwmKb = procMem(targets.fork.pid)?.hwmKb;
    R.routers.cluster.hwmKb = procMem(targets.cluster.pid)?.hwmKb;
    R.machine.daemonHwmKb = procMem(daemonPid)?.hwmKb;

    // ---------- medians, ratios, table ----------
    const FIELDS = ['reqPerSec', 'p50', 'p90', 'p99', 'cpuMsPer1kRouting', 'cpuMsPer1kDaemon'];
    for (const kind of ['keepalive', 'fresh']) {
      R.medians[kind] = {};
      for (const t of ORDER) {
        const rs = R.runs.filter((r) => r.kind === kind && r.target === t);
        R.medians[kind][t] = Object.fromEntries(FIELDS.map((f) => [f, median(rs.map((r) => r[f]))]));
        R.medians[kind][t].errors = rs.reduce((a, r) => a + r.errors + r.non2xx, 0);
      }
      const c = R.medians[kind].cluster;
      const f = R.medians[kind].fork;
      const d = R.medians[kind].direct;
      const div = (a, b) => (a !== undefined && b ? a / b : undefined);
      // Ratio of the medians, and (as a check on drift between rounds) the median of the per-round ratios.
      const perRound = (field) =>
        median(
          Array.from({ length: ROUNDS }, (_, i) => {
            const at = (t) => R.runs.find((r) => r.kind === kind && r.target === t && r.round === i + 1)?.[field];
            return div(at('cluster'), at('fork'));
          }),
        );
      R.ratios[kind] = {
        clusterOverFork: {
          reqPerSec: div(c.reqPerSec, f.reqPerSec),
          p50: div(c.p50, f.p50),
          p99: div(c.p99, f.p99),
          cpuMsPer1kRouting: div(c.cpuMsPer1kRouting, f.cpuMsPer1kRouting),
        },
        clusterOverForkPerRoundMedian: { reqPerSec: perRound('reqPerSec'), p50: perRound('p50'), p99: perRound('p99') },
        forkOverDirect: { reqPerSec: div(f.reqPerSec, d.reqPerSec), p50: div(f.p50, d.p50), p99: div(f.p99, d.p99) },
        clusterOverDirect: { reqPerSec: div(c.reqPerSec, d.reqPerSec), p50: div(c.p50, d.p50), p99: div(c.p99, d.p99) },
      };
    }
    R.machine.loadEnd = os.loadavg();
    R.finished = new Date().toISOString();

    const n0 = (x) => (x === undefined ? 'n/a' : x.toFixed(0));
    const n2 = (x) => (x === undefined ? 'n/a' : x.toFixed(2));
    const x2 = (x) => (x === undefined ? 'n/a' : `${x.toFixed(2)}×`);
    const LABEL = { keepalive: `keep-alive (${CONNECTIONS} conns)`, fresh: `new connection per request (${CONNECTIONS} in flight)` };
    const rows = [];
    for (const kind of ['keepalive', 'fresh'])
      for (const t of ORDER) {
        const m = R.medians[kind][t];
        const each = R.runs.filter((r) => r.kind === kind && r.target === t).map((r) => n0(r.reqPerSec));
        rows.push([
          LABEL[kind],
          t === 'direct' ? 'direct to the app' : `router, ${t}`,
          n0(m.reqPerSec),
          n2(m.p50),
          n2(m.p99),
          each.join(' / '),
          t === 'direct' ? '' : n2(m.cpuMsPer1kRouting),
          n2(m.cpuMsPer1kDaemon),
          m.errors,
        ]);
      }
    const ratioRows = ['keepalive', 'fresh'].map((kind) => {
      const r = R.ratios[kind];
      return [
        LABEL[kind],
        x2(r.clusterOverFork.reqPerSec),
        x2(r.clusterOverFork.p50),
        x2(r.clusterOverFork.p99),
        x2(r.clusterOverFork.cpuMsPer1kRouting),
        x2(r.forkOverDirect.reqPerSec),
        x2(r.clusterOverDirect.reqPerSec),
      ];
    });
    const text = [
      `Router: PM2 fork vs cluster (1 instance). Saturation, ${SECONDS} s per run, medians of ${ROUNDS} interleaved rounds; ${R.machine.cores} cores (${R.machine.cpu}), Node ${R.machine.node}, PM2 ${R.machine.pm2}, commit ${R.machine.commit}.`,
      '',
      table(['load', 'target', 'req/s', 'p50 ms', 'p99 ms', 'req/s per round', 'routing CPU ms / 1k req', 'daemon CPU ms / 1k req', 'errors'], rows),
      '',
      table(
        ['load', 'req/s cluster/fork', 'p50 cluster/fork', 'p99 cluster/fork', 'routing CPU cluster/fork', 'req/s fork/direct', 'req/s cluster/direct'],
        ratioRows,
      ),
      '',
      'routing CPU = the router process + the PM2 daemon (the cluster primary accepts each connection and hands it to the worker).',
    ].join('\n');
    process.stdout.write(text + '\n');
    fs.mkdirSync(OUT_DIR, { recursive: true });
    fs.writeFileSync(OUT, JSON.stringify(R, null, 2) + '\n');
    log(`wrote ${path.relative(ROOT, OUT)}`);
  } catch (err) {
    exitCode = 1;
    log(`FAILED: ${err?.stack ?? err}`);
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
  process.exit(exitCode);

  async function machine(daemonPid) {
    const cpus = os.cpus();
    const git = async (args) => (await run(['git', ...args], { cwd: ROOT, env: cleanEnv(), timeoutMs: 30_000, allowFail: true })).stdout.trim();
    const newest = (dir) => {
      let t = 0;
      for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true }))
        if (e.isFile()) t = Math.max(t, fs.statSync(path.join(e.parentPath ?? e.path, e.name)).mtimeMs);
      return t;
    };
    const distStale = newest(path.join(ROOT, 'src')) > newest(path.join(ROOT, 'dist'));
    if (distStale) log('WARNING: dist/ is older than src/: this measures the stale build (npm run bench:router-mode builds first)');
    return {
      cpu: cpus[0]?.model ?? 'unknown',
      cores: cpus.length,
      ramBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      pm2: JSON.parse(fs.readFileSync(path.join(path.dirname(path.dirname(PM2_BIN)), 'package.json'), 'utf8')).version,
      daemonPid,
      // Node's cluster default on Linux is round-robin: the primary accepts and hands each connection over.
      clusterSchedPolicy: process.env.NODE_CLUSTER_SCHED_POLICY ?? 'default (rr on Linux)',
      commit: await git(['rev-parse', '--short', 'HEAD']),
      branch: await git(['rev-parse', '--abbrev-ref', 'HEAD']),
      srcDirty: (await git(['status', '--porcelain', '--', 'src'])).length > 0,
      distStale,
      loadStart: os.loadavg(),
    };
  }
}

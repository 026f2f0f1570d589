// Turns the bench's measurements into documentation/performance.md (overwritten) and a console summary.
import fs from 'node:fs';
import path from 'node:path';
import { fmtBytes, fmtMs, max, median, ratio, sum, table } from './lib.mjs';
import { timelineSvg } from './svg.mjs';
import { NEXT_RESULTS, renderNextSection } from './next-report.mjs';

const PHASES = ['lock', 'preflight', 'resolve', 'archive', 'env', 'install', 'build', 'prune', 'verify', 'switch', 'health', 'route', 'save', 'retain'];
const TIMELINES = [
  ['seed', 'seed: pm2 delete + pm2 start'],
  ['restart', 'pm2-release restart strategy'],
  ['cluster', 'pm2-release cluster strategy'],
  ['router', 'pm2-release router strategy'],
  ['router-hold', 'router: live release SIGKILLed, PM2 restarts it'],
];
const ms2 = (v) => (typeof v === 'number' ? `${v.toFixed(2)} ms` : 'n/a');
const pick = (xs, f) => xs.map(f).filter((v) => typeof v === 'number');
const med = (xs, f) => median(pick(xs, f));
const cmdList = (v) =>
  Object.entries(v.cmds)
    .map(([c, n]) => `\`pm2 ${c}\`×${n}`)
    .join(', ');
const met = (ok) => (ok === undefined ? 'n/a' : ok ? '**met**' : '**not met**');

export function summarize(R) {
  const S = {};
  S.base = { total: med(R.baseline, (r) => r.totalMs), ci: med(R.baseline, (r) => r.ciMs), build: med(R.baseline, (r) => r.buildMs) };
  S.boot = median(R.boot);
  S.cold = {
    total: med(R.cold, (r) => r.ms),
    install: med(R.cold, (r) => r.durations.install),
    dep: med(R.cold, (r) => r.dep?.durationMs),
    build: med(R.cold, (r) => r.durations.build),
  };
  S.warm = {
    total: med(R.warm, (r) => r.ms),
    install: med(R.warm, (r) => r.durations.install),
    dep: med(R.warm, (r) => r.dep?.durationMs),
    build: med(R.warm, (r) => r.durations.build),
    methods: [...new Set(R.warm.map((r) => r.dep?.method))].join(', '),
  };
  const anatomy = (xs) => ({ before: med(xs, (r) => r.beforeSwitchMs), switch: med(xs, (r) => r.switchMs), after: med(xs, (r) => r.afterStartMs) });
  S.redeploy = {
    answer: med(R.redeploy, (r) => r.answerMs),
    call: med(R.redeploy, (r) => r.callMs),
    modes: [...new Set(R.redeploy.map((r) => r.mode))].join(', '),
    ...anatomy(R.redeploy),
  };
  S.rollback = { answer: med(R.rollback, (r) => r.answerMs), call: med(R.rollback, (r) => r.callMs), ...anatomy(R.rollback) };
  const sw = (xs) =>
    xs.length
      ? {
          n: xs.length,
          failed: sum(xs.map((m) => m.failed)),
          failedPer: xs.map((m) => m.failed).join('/'),
          errors: sum(xs.map((m) => m.ac.errors)),
          non2xx: sum(xs.map((m) => m.ac.non2xx)),
          dropped: sum(xs.map((m) => m.ac.dropped)),
          pollFailed: sum(xs.map((m) => m.poller.failed)),
          gap: med(xs, (m) => m.ac.maxGapMs),
          gapMax: max(xs.map((m) => m.ac.maxGapMs)),
          pollGap: med(xs, (m) => m.poller.maxGapMs),
          call: med(xs, (m) => m.callMs),
          sigkills: xs.some((m) => m.sigkills !== undefined) ? sum(xs.map((m) => m.sigkills ?? 0)) : undefined,
          codes: mergeCodes(xs.map((m) => m.ac.errorCodes)),
          pollCodes: mergeCodes(xs.map((m) => m.poller.codes)),
          // Anatomy of the longest gap (wall clock): when it began after the call, when `pm2 start`
          // returned relative to its start, and how long after that the first success came.
          gapStartAfterCall: med(xs, (m) => (m.ac.maxGapAt && m.callAt ? m.ac.maxGapAt - m.callAt : undefined)),
          startReturnedInGap: med(xs, (m) => (m.ac.maxGapAt && m.switchEndAt ? m.switchEndAt - m.ac.maxGapAt : undefined)),
          answerAfterStart: med(xs, (m) => (m.ac.maxGapAt && m.switchEndAt ? m.ac.maxGapAt + m.ac.maxGapMs - m.switchEndAt : undefined)),
          gaps: xs.map((m) => m.ac.maxGapMs),
          outcomes: [...new Set(xs.map((m) => m.outcome).filter(Boolean))].join(', '),
        }
      : undefined;
  S.seed = sw(R.switchSeed);
  if (S.seed)
    S.seedParts = {
      deleteMs: med(R.switchSeed, (m) => m.deleteMs),
      deleteToStartMs: med(R.switchSeed, (m) => m.deleteToStartMs),
      startMs: med(R.switchSeed, (m) => m.startMs),
      startToAnswerMs: S.seed.answerAfterStart,
      gapMs: S.seed.gap,
    };
  S.restart = sw(R.switchRestart);
  S.cluster = sw(R.switchCluster);
  S.crash = sw(R.switchCrash);
  S.marathon = R.marathon ? sw([R.marathon]) : undefined;
  S.router = R.routerMarathon ? sw([R.routerMarathon]) : undefined;
  S.hold = R.routerHold ? sw([R.routerHold]) : undefined;
  S.takeover = R.routerTakeover ? sw([R.routerTakeover]) : undefined;
  S.routerWarm = R.routerWarm?.length
    ? {
        total: med(R.routerWarm, (r) => r.ms),
        dep: med(R.routerWarm, (r) => r.dep?.durationMs),
        install: med(R.routerWarm, (r) => r.durations.install),
        build: med(R.routerWarm, (r) => r.durations.build),
        methods: [...new Set(R.routerWarm.map((r) => r.dep?.method))].join(', '),
      }
    : undefined;
  if (R.routerCost) {
    const C = R.routerCost;
    const m = (xs, f) => median((xs ?? []).map(f).filter((v) => typeof v === 'number'));
    S.cost = {
      p50Direct: m(C.fixedDirect, (x) => x.p50),
      p50Router: m(C.fixedRouter, (x) => x.p50),
      p99Direct: m(C.fixedDirect, (x) => x.p99),
      p99Router: m(C.fixedRouter, (x) => x.p99),
      rateDirect: m(C.fixedDirect, (x) => x.reqPerSec),
      rateRouter: m(C.fixedRouter, (x) => x.reqPerSec),
      satDirect: m(C.satDirect, (x) => x.reqPerSec),
      satRouter: m(C.satRouter, (x) => x.reqPerSec),
      satP50Direct: m(C.satDirect, (x) => x.p50),
      satP50Router: m(C.satRouter, (x) => x.p50),
      failed: sum([...C.fixedDirect, ...C.fixedRouter, ...C.satDirect, ...C.satRouter].map((x) => (x.non2xx ?? 0) + (x.errors ?? 0))),
    };
    S.cost.added = S.cost.p50Router - S.cost.p50Direct;
    S.cost.share = S.cost.satDirect ? S.cost.satRouter / S.cost.satDirect : undefined;
  }
  if (R.disk) {
    const one = median(R.disk.singles.map((s) => s.bytes));
    S.disk = { one, together: R.disk.together, ratio: one ? R.disk.together / one : undefined, count: R.disk.count };
  }
  return S;
}

function mergeCodes(list) {
  const out = {};
  for (const c of list) for (const [k, v] of Object.entries(c ?? {})) out[k] = (out[k] ?? 0) + v;
  return Object.entries(out)
    .map(([k, v]) => `${k}×${v}`)
    .join(', ');
}

function targets(R, S) {
  const rows = [];
  const reasons = [];
  const m = R.marathon;
  // 1. cluster: 0 failed requests over the switches, crash switches included.
  if (m) {
    // Strict: a request lost in flight or a refused/reset fresh connection is a failed request too.
    const lost = m.failed + m.ac.dropped + m.poller.failed;
    const ok = lost === 0;
    rows.push([
      `cluster: 0 failed requests over ${m.switches} consecutive switches under load (${m.crashSwitches} to a crashing release)`,
      `${lost} lost: keep-alive errors + non-2xx ${m.failed}, requests dropped in flight ${m.ac.dropped}, fresh-connection failures ${m.poller.failed}`,
      met(ok) + (m.failed === 0 && !ok ? ' (the keep-alive errors + non-2xx count alone is 0)' : ''),
    ]);
    const bk = m.byKind;
    if (!ok || m.ac.dropped > 0 || m.poller.failed > 0)
      reasons.push(
        `**Cluster switches lose requests.** Over ${m.switches} switches: ${m.ac.errors} keep-alive errors (${mergeCodes([m.ac.errorCodes]) || 'none'}), ${m.ac.non2xx} non-2xx, ${m.ac.dropped} requests written on keep-alive connections that the server closed before answering, and ${m.poller.failed} failed fresh connections (${mergeCodes([m.poller.codes]) || 'none'}). ` +
          (bk
            ? `By step: keep-alive failures ${bk.autocannon.switch} during normal switches, ${bk.autocannon.crash} during crash switches, ${bk.autocannon.between} outside any; poller failures ${bk.poller.switch} / ${bk.poller.crash} / ${bk.poller.between}. `
            : '') +
          `Normal switches: the cluster strategy retires the old release with \`pm2 delete <id>\` (src/pm2/switch.ts, \`commit()\`); PM2 sends SIGINT, Next's handler calls \`server.close()\`, which waits for busy keep-alive connections that a steady client never lets go idle; ` +
          `after PM2's kill_timeout (1600 ms) PM2 sends SIGKILL (${m.sigkills ?? '?'} "sending SIGKILL" lines in pm2.log during this run, for ${m.switches - m.crashSwitches} normal switches) and the requests in flight on those connections are lost. ` +
          `That is ${((m.failed + m.ac.dropped) / Math.max(1, m.switches - m.crashSwitches)).toFixed(1)} lost keep-alive requests per normal switch with ${m.ac.connections} connections open: about one per connection, the request in flight when the old worker is killed. ` +
          `A client or proxy that keeps backend connections alive (Apache mod_proxy reuses them by default) sees these as failed requests. Crash switches: see the next point.`,
      );
  }
  const crashPoll = (S.crash?.pollFailed ?? 0) + 0;
  if (S.crash && (crashPoll > 0 || S.crash.failed > 0))
    reasons.push(
      `**Switching a cluster to a release that crashes at boot fails some new connections.** With verify off, ${S.crash.n} crash deploy(s) cost ${S.crash.failed} failed keep-alive requests and ${S.crash.pollFailed} failed fresh connections (${S.crash.pollCodes || 'no codes'}); the deploy failed with ${S.crash.outcomes} every time and the previous release kept answering. ` +
        `Next.js 15 calls \`server.listen()\` before it loads next.config.js (next/dist/server/lib/start-server.js), so each crashing worker joins PM2's cluster round robin for a moment; connections handed to it then are reset when it exits, and PM2 restarts it until the gate sees the restart. ` +
        (S.crash.failed === 0 ? 'Established keep-alive connections stay on the old workers and were not affected. ' : '') +
        `With verify on (the default), a release that crashes at boot never joins the live cluster.`,
    );
  // 2. restart gap <= seed gap.
  if (S.restart && S.seed) {
    const ok = S.restart.gap <= S.seed.gap;
    rows.push(["restart strategy: longest gap ≤ the seed's delete+start gap", `${fmtMs(S.restart.gap)} vs ${fmtMs(S.seed.gap)} (medians)`, met(ok)]);
    if (!ok) {
      const overlap = Math.min(...S.restart.gaps) <= Math.max(...S.seed.gaps);
      const healthCalls = R.accounting?.redeploy?.byPhase?.health;
      const L = R.restartLogged;
      const P = S.seedParts;
      let logged = '';
      if (L && P) {
        const parts = [
          ['`pm2 delete`', L.deleteMs, P.deleteMs],
          ["from `pm2 delete` returning to `pm2 start` being run (the strategy's port-free probe and bookkeeping)", L.deleteToStartMs, P.deleteToStartMs],
          ['`pm2 start`', L.startMs, P.startMs],
          ['from `pm2 start` returning to the first success (Next booting)', L.startToAnswerMs, P.startToAnswerMs],
        ];
        const worst = parts.filter(([, a, b]) => a !== undefined && b !== undefined).sort((x, y) => y[1] - y[2] - (x[1] - x[2]))[0];
        logged =
          `One extra restart switch under load, with every PM2 CLI call logged (seed medians in brackets): ${parts.map(([n, a, b]) => `${n} ${fmtMs(a)} (${fmtMs(b)})`).join('; ')}; gap ${fmtMs(L.gapMs)} (${fmtMs(P.gapMs)}). ` +
          `While the new release booted, pm2-release's health gate ran ${L.bootCalls} PM2 CLI calls (${L.bootCallCmds || 'none'}, ${fmtMs(L.bootCallsMs)} in them), each a new Node process on the same 2 cores as the booting server; the seed flow only polls HTTP. ` +
          (worst && worst[1] - worst[2] > 50 ? `The largest difference is ${worst[0]}: +${fmtMs(worst[1] - worst[2])}. ` : '');
      }
      reasons.push(
        `**The restart strategy's gap is longer than the seed's.** Longest gap per run: restart ${S.restart.gaps.map(fmtMs).join(', ')}; seed ${S.seed.gaps.map(fmtMs).join(', ')}. ` +
          `Anatomy (medians): the gap opens when \`pm2 delete\` stops the old process; \`pm2 start\` returned ${fmtMs(S.restart.startReturnedInGap)} into the gap for restart vs ${fmtMs(S.seed.startReturnedInGap)} for the seed, and the first success came ${fmtMs(S.restart.answerAfterStart)} vs ${fmtMs(S.seed.answerAfterStart)} after that (Next booting). ` +
          `Both do delete then start (src/pm2/switch.ts adds only a port-free probe in between). ` +
          logged +
          (!L && healthCalls && S.restart.answerAfterStart - S.seed.answerAfterStart > 300
            ? `While Next boots, pm2-release's health gate samples PM2 through its CLI back to back (the logged redeploy made ${healthCalls.count} PM2 CLI calls, ${fmtMs(healthCalls.ms)}, in its health phase), each a new Node process on the same 2 cores as the booting server; the seed flow only polls HTTP. `
            : '') +
          (overlap
            ? `The per-run ranges overlap (fastest restart run ${fmtMs(Math.min(...S.restart.gaps))}, slowest seed run ${fmtMs(Math.max(...S.seed.gaps))}): the two gaps are the same downtime within run-to-run variation on a 2-core machine saturated by the load generator's reconnect loop; the strategy does not shorten it, which only the cluster strategy does.`
            : 'Every restart run was slower than every seed run here.'),
      );
    }
  }
  // 3. unchanged lockfile: dependency step < 10% of cold npm ci; whole deploy <= 0.6x baseline.
  if (S.warm.dep !== undefined && S.base.ci) {
    const ok = S.warm.dep < 0.1 * S.base.ci;
    rows.push([
      `unchanged lockfile: dependency step < 10% of a cold npm ci`,
      `${fmtMs(S.warm.dep)} (${S.warm.methods}) vs npm ci ${fmtMs(S.base.ci)} = ${((100 * S.warm.dep) / S.base.ci).toFixed(0)}%`,
      met(ok),
    ]);
    if (!ok) {
      const nm = R.disk?.singles?.[0]?.nodeModules;
      reasons.push(
        `**Dependency reuse is not < 10% of npm ci.** The clone took ${fmtMs(S.warm.dep)} (method \`${S.warm.methods}\`; per run ${R.warm.map((r) => fmtMs(r.dep?.durationMs)).join(', ')}) against ${fmtMs(S.base.ci)} for npm ci from a warm cache (per run ${R.baseline.map((r) => fmtMs(r.ciMs)).join(', ')}). ` +
          (R.disk && !R.disk.reflink
            ? `The releases dir is on ${R.disk.fs.type}, which has no reflink, so reusing node_modules (src/release/dependencies.ts) means copying all of it (${fmtBytes(nm)} allocated) byte for byte; npm ci from a warm cache is itself mostly writing those same files, so a full copy saves only part of it. Hard links would avoid the copy but would share every later write between releases; the code deliberately does not use them.`
            : `The clone still copies node_modules file by file.`),
      );
    }
  }
  if (S.warm.total !== undefined && S.base.total) {
    const ok = S.warm.total <= 0.6 * S.base.total;
    rows.push([
      `unchanged lockfile: whole deploy ≤ 0.6× the baseline`,
      `${fmtMs(S.warm.total)} vs ${fmtMs(S.base.total)} = ${ratio(S.warm.total, S.base.total)}`,
      met(ok),
    ]);
    if (!ok) {
      const w = R.warm.map((r) => r.durations);
      const d = (k) => median(w.map((x) => x[k]).filter((v) => v !== undefined));
      reasons.push(
        `**A deploy with an unchanged lockfile is not ≤ 0.6× the seed flow.** Median phases: build ${fmtMs(d('build'))} (the seed's build: ${fmtMs(S.base.build)}), install/clone ${fmtMs(d('install'))}, verify ${fmtMs(d('verify'))} (a second boot on a spare port plus a ${'1.5 s'} settle), switch ${fmtMs(d('switch'))}, health ${fmtMs(d('health'))} (includes the 1.5 s settle), save ${fmtMs(d('save'))}, retain ${fmtMs(d('retain'))}. ` +
          `\`next build\` is the same work in both flows and dominates; the only step reuse can shrink is the install, and verify + settle add time the seed flow does not spend. ` +
          (d('build') !== undefined && d('build') >= 0.6 * S.base.total
            ? `0.6× the baseline is ${fmtMs(0.6 * S.base.total)}, less than the build alone (${fmtMs(d('build'))}): no dependency step makes this target reachable while every deploy runs a full \`next build\`.`
            : `Even with a free dependency step the deploy would take about ${fmtMs(S.warm.total - (S.warm.dep ?? 0))}, against a target of ${fmtMs(0.6 * S.base.total)}.`),
      );
    }
  }
  // 4. redeploy / rollback without a standby (restart strategy) healthy within boot + 300 ms (issue 21; was + 1 s).
  for (const [name, s] of [
    ['redeploy of a retained sha', S.redeploy],
    ['rollback', S.rollback],
  ]) {
    if (s.answer === undefined || S.boot === undefined) continue;
    const ok = s.answer <= S.boot + 300;
    rows.push([`${name} (no standby): answers within boot time + 300 ms`, `${fmtMs(s.answer)} vs ${fmtMs(S.boot)} + 300 ms`, met(ok)]);
    if (!ok) {
      const src = name === 'rollback' ? R.rollback : R.redeploy;
      const d = (k) => median(src.map((x) => x.durations?.[k]).filter((v) => v !== undefined));
      const pre = ['lock', 'preflight', 'resolve']
        .filter((k) => d(k) !== undefined)
        .map((k) => `${k} ${fmtMs(d(k))}`)
        .join(', ');
      const acc = R.accounting?.[name === 'rollback' ? 'rollback' : 'redeploy'];
      reasons.push(
        `**${name[0].toUpperCase() + name.slice(1)} answers later than boot + 300 ms** (${fmtMs(s.answer)} after the call, boot ${fmtMs(S.boot)}). Measured split (medians): ${fmtMs(s.before)} before the switch phase starts (${pre}${acc?.byPhase?.['(between phases)'] ? `; ${cmdList(acc.byPhase['(between phases)'])} outside phases` : ''}), ${fmtMs(s.switch)} in the switch phase until \`pm2 start\` returns (${acc?.byPhase?.switch ? `PM2 CLI calls: ${cmdList(acc.byPhase.switch)}, plus a port-free probe` : 'delete, port-free probe, start'}), then ${fmtMs(s.after)} until the first 200 (Next booting). ` +
          `The call itself returns later still (${fmtMs(s.call)}): health settle (1.5 s) and \`pm2 save\`.` +
          (acc
            ? ` Logged in one extra ${name === 'rollback' ? 'rollback' : 'redeploy'}: ${acc.calls} PM2 CLI calls (${fmtMs(acc.callsMs)} in them, one call ≈ ${fmtMs(R.pm2CallMs)} here), ${acc.beforeSwitch.count} of them (${fmtMs(acc.beforeSwitch.ms)}) before the switch phase, which began ${fmtMs(acc.beforeSwitch.untilMs)} after the call; see "PM2 CLI calls" above.`
            : ''),
      );
    }
  }
  // 6. router strategy.
  routerTargets(R, S, rows, reasons);
  // 5. disk.
  if (S.disk) {
    const ok = S.disk.ratio < 1.3;
    rows.push([
      `${S.disk.count} retained releases (same lockfile) < 1.3× one release on disk`,
      `${fmtBytes(S.disk.together)} vs ${fmtBytes(S.disk.one)} = ${S.disk.ratio.toFixed(2)}×`,
      met(ok),
    ]);
    if (!ok)
      reasons.push(
        `**Retained releases do not share disk.** ${S.disk.count} releases take ${S.disk.ratio.toFixed(2)}× one. The releases dir is on ${R.disk.fs.type} (reflink ${R.disk.reflink ? 'supported' : 'not supported'}): node_modules was ${R.disk.singles.map((s) => s.method).join('/')} per release, so every release holds a full copy (${fmtBytes(R.disk.singles[0]?.nodeModules)} of node_modules each). ` +
          `Only a reflink filesystem (XFS with reflink=1, btrfs) would let copies share blocks; hard links would, but would share every later write too, and are not used by design.`,
      );
  }
  return { rows, reasons };
}

function routerTargets(R, S, rows, reasons) {
  if (R.noop?.length) {
    const ms = median(R.noop.map((x) => x.ms));
    rows.push([`deploy with nothing to do (CLI process, start to exit): ≤ 300 ms`, `${fmtMs(ms)} (median of ${R.noop.length})`, met(ms <= 300)]);
    if (ms > 300) {
      const d = (k) => median(R.noop.map((x) => x.durations?.[k]).filter((v) => v !== undefined));
      const phases = Object.keys(R.noop[0]?.durations ?? {});
      reasons.push(
        `**A deploy with nothing to do takes ${fmtMs(ms)}** from spawning the CLI to its exit (a Node process start alone is ~50–90 ms here). Its phases (medians): ${phases.map((k) => `${k} ${fmtMs(d(k))}`).join(', ') || 'none recorded'}; the rest is loading the CLI and connecting to PM2's socket.`,
      );
    }
  }
  const sb = R.standbyRollback;
  if (sb?.runs?.length) {
    const answer = median(sb.runs.map((r) => r.answerMs));
    const decision = median(sb.runs.map((r) => r.decisionMs).filter((v) => v !== undefined));
    const flips = sb.runs.filter((r) => r.flipped).length;
    const failed = sb.failed + sb.dropped + sb.pollerFailed;
    const ok = decision <= 100 && failed === 0 && flips === sb.runs.length;
    rows.push([
      `rollback to the warm standby: ≤ 100 ms from the decision (the route phase) to the old release answering, 0 failed`,
      `${fmtMs(decision)} (median of ${sb.runs.length}; from the call's start ${fmtMs(answer)}; ${flips} route flips, no boot), ${failed} failed, longest gap ${fmtMs(sb.maxGapMs)}`,
      met(ok),
    ]);
    if (!ok)
      reasons.push(
        `**Rollback to the standby**: median ${fmtMs(decision)} from the route decision and ${fmtMs(answer)} from the call to the first answer of the old release (calls ${sb.runs.map((r) => fmtMs(r.answerMs)).join(', ')}), ${flips}/${sb.runs.length} route flips, ${failed} failed requests. Phases (medians): ${[
          'lock',
          'route',
          'save',
        ]
          .map((k) => `${k} ${fmtMs(median(sb.runs.map((r) => r.durations?.[k]).filter((v) => v !== undefined)))}`)
          .join(', ')}.`,
      );
  }
  const m = R.routerMarathon;
  if (m) {
    const lost = m.failed + m.ac.dropped + m.poller.failed;
    const what = `${m.switches} router switches under load (${m.activates} activates, ${m.rollbacks} rollbacks, ${m.crashSwitches} deploys of a release crashing at boot)`;
    rows.push([
      `router: 0 failed requests over ${what}`,
      `${lost} lost: keep-alive errors + non-2xx ${m.failed}, dropped in flight ${m.ac.dropped}, fresh-connection failures ${m.poller.failed}`,
      met(lost === 0),
    ]);
    rows.push([
      'router: longest gap between two successful responses ≤ 100 ms (over the same switches)',
      `keep-alive clients ${fmtMs(m.ac.maxGapMs)}, fresh-connection poller ${fmtMs(m.poller.maxGapMs)}`,
      met(m.ac.maxGapMs <= 100),
    ]);
    if (lost > 0) {
      const bk = m.byKind;
      reasons.push(
        `**Router switches lost requests.** Over ${what}: ${m.ac.errors} keep-alive errors (${mergeCodes([m.ac.errorCodes]) || 'none'}), ${m.ac.non2xx} non-2xx, ${m.ac.dropped} dropped in flight, ${m.poller.failed} failed fresh connections (${mergeCodes([m.poller.codes]) || 'none'}). ` +
          `By step (keep-alive / poller): activates ${bk.autocannon.activate}/${bk.poller.activate}, rollbacks ${bk.autocannon.rollback}/${bk.poller.rollback}, crash deploys ${bk.autocannon.crash}/${bk.poller.crash}, outside any step ${bk.autocannon.between}/${bk.poller.between}.`,
      );
    }
    if (!(m.ac.maxGapMs <= 100)) {
      const gapAt = m.ac.maxGapAt;
      const step = m.steps.find((st) => gapAt >= st.startAt && gapAt <= st.endAt);
      const phaseAt = step
        ? step.routeAt && gapAt >= step.routeAt
          ? 'after its route phase began (route, drain of the old release, `pm2 delete` of it)'
          : step.switchStartAt && gapAt >= step.switchStartAt
            ? 'while the new release was starting or in its health gate (the old one still serving)'
            : step.switchStartAt
              ? 'before its switch phase (lock, preflight, finding the release)'
              : ''
        : '';
      reasons.push(
        `**The router's longest gap is over 100 ms** (${fmtMs(m.ac.maxGapMs)}). ` +
          (step
            ? `It opened during a ${step.kind} step, ${fmtMs(gapAt - step.startAt)} after the step began${phaseAt ? `, ${phaseAt}` : ''}. `
            : 'It opened outside any switch step. ') +
          `No request failed in it (see the row above): responses were slow, not lost. On ${R.machine.cores} cores, the keep-alive load clients, the fresh-connection poller, the router, the live Next server, the booting one and the PM2 CLI calls of the switch (each a new Node process) compete for the CPU; a new Next server compiles its routes on the first requests it gets after the route change.` +
          (R.routerQuiet
            ? ` For scale, the same load with no switch at all (${R.routerQuiet.router.seconds} s each): longest gap ${fmtMs(R.routerQuiet.router.gapMs)} through the router and ${fmtMs(R.routerQuiet.direct.gapMs)} straight to the release's private port (fresh-connection poller ${fmtMs(R.routerQuiet.router.pollerGapMs)} / ${fmtMs(R.routerQuiet.direct.pollerGapMs)}; ${R.routerQuiet.router.failed + R.routerQuiet.direct.failed} failed).`
            : ''),
      );
    }
  }
  const h = R.routerHold;
  if (h) {
    const lost = h.failed + h.ac.dropped + h.poller.failed;
    rows.push([
      'router hold: live release SIGKILLed under load (PM2 restarts it): 0 failed requests',
      `${lost} lost (keep-alive ${h.failed}, dropped ${h.ac.dropped}, poller ${h.poller.failed}); longest gap ${fmtMs(h.ac.maxGapMs)} (port answered again after ${fmtMs(h.backMs)}, PM2 restarts +${h.restarts})${h.poller.slowestMs !== undefined ? `; slowest fresh-connection request ${fmtMs(h.poller.slowestMs)}` : ''}`,
      met(lost === 0),
    ]);
    if (lost > 0)
      reasons.push(
        `**The hold lost requests.** After SIGKILL of pid ${h.pid} (\`${h.cmd}\`) on the live private port ${h.port}: ${h.ac.errors} keep-alive errors (${mergeCodes([h.ac.errorCodes]) || 'none'}), ${h.ac.non2xx} non-2xx, ${h.ac.dropped} dropped, ${h.poller.failed} failed fresh connections (${mergeCodes([h.poller.codes]) || 'none'}). ` +
          `The router retries a GET that failed before any response byte up to 3 times (src/router/router.ts, MAX_RETRIES) and holds connects while the port refuses them (src/router/target.ts): every request that had no answer yet when the process died was answered once PM2 had restarted it. What was lost are responses the killed server had already begun (Next streams its pages: the status line and the first chunk go out before the render ends): no proxy can finish a response whose producer died, and the router does not buffer responses (streaming is a requirement). The router resets those clients' connections at once, so each fails fast; the slowest fresh-connection request took ${fmtMs(h.poller.slowestMs)}.`,
      );
  }
  const c = S.cost;
  if (c) {
    const okLat = c.added <= 1;
    rows.push([
      `router cost: added p50 latency ≤ 1 ms at ${R.routerCost.rate} req/s on the Next page${R.routerCost.rateWanted && R.routerCost.rate < R.routerCost.rateWanted ? ` (${R.routerCost.rateWanted} req/s is above what the app sustains here: half its direct saturation throughput)` : ''}`,
      `+${ms2(c.added)} (p50 ${ms2(c.p50Router)} through the router vs ${ms2(c.p50Direct)} direct)`,
      met(okLat),
    ]);
    const okSat = c.share >= 0.9;
    rows.push([
      'router cost: throughput through the router ≥ 90 % of direct at saturation',
      `${c.satRouter?.toFixed(0)} vs ${c.satDirect?.toFixed(0)} req/s = ${((c.share ?? 0) * 100).toFixed(0)} %`,
      met(okSat),
    ]);
    if (!okLat)
      reasons.push(
        `**The router adds more than 1 ms at the median** (+${ms2(c.added)} at ${R.routerCost.rate} req/s; p99 ${ms2(c.p99Router)} vs ${ms2(c.p99Direct)}). Every request makes one more loopback hop through a Node process (http-proxy-3 over Node's HTTP parser on both sides), on ${R.machine.cores} cores shared with autocannon and Next.`,
      );
    if (!okSat)
      reasons.push(
        `**Throughput through the router is under 90 % of direct** (${((c.share ?? 0) * 100).toFixed(0)} %). At saturation on ${R.machine.cores} cores, direct runs two busy processes (autocannon, Next); through the router a third one (the router, single-threaded Node parsing and writing every request twice) takes CPU from Next. The router is the same work per request as any Node reverse proxy; with more cores than busy processes the share would be set by the router's own per-request cost.`,
      );
  }
  const rr = R.routerRss;
  if (rr?.hwmKb) {
    const ok = rr.hwmKb <= 60 * 1024;
    rows.push([
      'router process: peak RSS (VmHWM) ≤ 60 MiB',
      `${(rr.hwmKb / 1024).toFixed(1)} MiB after all router runs (saturation included)${rr.samePid ? '' : '; **the router restarted during the run**'}`,
      met(ok),
    ]);
    if (!ok)
      reasons.push(
        `**The router's peak RSS is over 60 MiB** (${(rr.hwmKb / 1024).toFixed(1)} MiB; VmRSS at the end ${((rr.rssKb ?? 0) / 1024).toFixed(1)} MiB; after the cost runs ${((R.routerCost?.hwmKbAfter ?? 0) / 1024).toFixed(1)} MiB). Node 20 alone is about 40 MiB resident here; with pino (redaction on) and http-proxy-3 (with debug and follow-redirects) loaded the router starts at about 55 MiB, and the peak adds the sockets, buffers and garbage of saturation load (it runs with \`--max-semi-space-size=2\`).`,
      );
  }
  if (S.routerWarm && S.base.total) {
    const ok = S.routerWarm.total <= S.base.total;
    rows.push([
      'router: deploy with an unchanged lockfile no slower than the seed flow',
      `${fmtMs(S.routerWarm.total)} vs ${fmtMs(S.base.total)} = ${ratio(S.routerWarm.total, S.base.total)} (restart strategy with verify: ${fmtMs(S.warm.total)})`,
      met(ok),
    ]);
    if (!ok) {
      const d = (k) => median(R.routerWarm.map((r) => r.durations?.[k]).filter((v) => v !== undefined));
      reasons.push(
        `**A router deploy with an unchanged lockfile is slower than the seed flow** (${fmtMs(S.routerWarm.total)} vs ${fmtMs(S.base.total)}). Median phases: install/clone ${fmtMs(d('install'))} (seed npm ci ${fmtMs(S.base.ci)}), build ${fmtMs(d('build'))} (seed ${fmtMs(S.base.build)}), switch ${fmtMs(d('switch'))}, health ${fmtMs(d('health'))} (includes the 1.5 s settle), route ${fmtMs(d('route'))} (includes the drain of the old release), save ${fmtMs(d('save'))}, retain ${fmtMs(d('retain'))}.`,
      );
    }
  }
}

/** Writes one SVG per strategy timeline into <dir of outFile>/images; returns the markdown lines. */
function writeTimelines(R, outFile) {
  const out = [];
  const dir = path.join(path.dirname(outFile), 'images');
  for (const [key, title] of TIMELINES) {
    const tl = R.timelines?.[key];
    if (!tl) continue;
    const file = `switch-timeline-${key}.svg`;
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, file), timelineSvg(tl, title));
    const okN = sum(tl.acOk) + sum(tl.pollOk);
    const failN = sum(tl.acFail) + sum(tl.pollFail);
    out.push(`**${title}** (0 = ${tl.anchor}; ${okN} successes, ${failN} failures in the window)\n`);
    out.push(`![${title}: successes and failures per ${tl.bucketMs} ms](images/${file})\n`);
  }
  return out;
}

export function writeReport(R, outFile) {
  const S = summarize(R);
  const M = R.machine;
  const t = [];

  t.push('### Deploy: whole time, dependency step, time to answer (medians)\n');
  t.push(
    table(
      ['scenario', 'runs', 'whole', 'vs baseline', 'dependency step', 'build', 'notes'],
      [
        [
          'baseline: seed flow by hand',
          R.baseline.length,
          fmtMs(S.base.total),
          '1.00×',
          `npm ci ${fmtMs(S.base.ci)}`,
          fmtMs(S.base.build),
          `boot (pm2 start → first 200) ${fmtMs(S.boot)}`,
        ],
        [
          'pm2-release deploy, cold (reuseDependencies: false)',
          R.cold.length,
          fmtMs(S.cold.total),
          ratio(S.cold.total, S.base.total),
          `install ${fmtMs(S.cold.dep)} (phase ${fmtMs(S.cold.install)})`,
          fmtMs(S.cold.build),
          'includes verify (boot on a spare port) and health settle',
        ],
        [
          'pm2-release deploy, unchanged lockfile',
          R.warm.length,
          fmtMs(S.warm.total),
          ratio(S.warm.total, S.base.total),
          `${S.warm.methods} ${fmtMs(S.warm.dep)} (phase ${fmtMs(S.warm.install)}) = ${ratio(S.warm.dep, S.base.ci)} of npm ci`,
          fmtMs(S.warm.build),
          'manifest.dependencies.method / durationMs',
        ],
        ...(S.routerWarm
          ? [
              [
                'pm2-release deploy, unchanged lockfile, router strategy',
                R.routerWarm.length,
                fmtMs(S.routerWarm.total),
                ratio(S.routerWarm.total, S.base.total),
                `${S.routerWarm.methods} ${fmtMs(S.routerWarm.dep)} (phase ${fmtMs(S.routerWarm.install)})`,
                fmtMs(S.routerWarm.build),
                'one boot: health gate on the private port, no verify run',
              ],
            ]
          : []),
        [
          'redeploy of a retained sha',
          R.redeploy.length,
          fmtMs(S.redeploy.call),
          ratio(S.redeploy.call, S.base.total),
          '—',
          '—',
          `mode ${S.redeploy.modes}; answers after ${fmtMs(S.redeploy.answer)} = ${fmtMs(S.redeploy.before)} before switch + ${fmtMs(S.redeploy.switch)} switch + ${fmtMs(S.redeploy.after)} boot (app boot ${fmtMs(S.boot)})`,
        ],
        [
          'rollback',
          R.rollback.length,
          fmtMs(S.rollback.call),
          ratio(S.rollback.call, S.base.total),
          '—',
          '—',
          `answers after ${fmtMs(S.rollback.answer)} = ${fmtMs(S.rollback.before)} before switch + ${fmtMs(S.rollback.switch)} switch + ${fmtMs(S.rollback.after)} boot (app boot ${fmtMs(S.boot)})`,
        ],
      ],
    ),
  );
  t.push(
    '\n"whole" is the wall time of the call (baseline: from `git archive` to `pm2 save`); "answers after" is from the call to the first 200 served by the target release.\n',
  );

  t.push('### pm2-release phases (medians, from `result.durationsMs`)\n');
  const phaseRows = [];
  const groups = [
    ['cold deploy', R.cold],
    ['unchanged-lockfile deploy', R.warm],
    ['redeploy (reactivated)', R.redeploy],
    ['rollback', R.rollback],
    ['activate, restart strategy', R.switchRestart],
    ['activate, cluster strategy', R.switchCluster],
    ['unchanged-lockfile deploy, router strategy', R.routerWarm ?? []],
    ['router switches (activate, rollback)', (R.routerMarathon?.steps ?? []).filter((x) => x.kind !== 'crash')],
  ];
  const used = PHASES.filter((p) => groups.some(([, xs]) => xs.some((x) => x.durations?.[p] !== undefined)));
  for (const [name, xs] of groups)
    if (xs.length) phaseRows.push([name, ...used.map((p) => fmtMs(median(xs.map((x) => x.durations?.[p]).filter((v) => v !== undefined))))]);
  t.push(table(['operation', ...used], phaseRows));

  if (R.accounting && Object.keys(R.accounting).length) {
    t.push(
      `\n### PM2 CLI calls by phase, through the CLI (\`PM2_RELEASE_PM2_TRANSPORT=cli\`: one extra redeploy and rollback, restart strategy; one \`pm2 jlist\` ≈ ${fmtMs(R.pm2CallMs)} here)\n`,
    );
    const rowsA = [];
    for (const [op, a] of Object.entries(R.accounting)) {
      for (const [ph, v] of Object.entries(a.byPhase))
        rowsA.push([
          op,
          ph,
          v.count,
          fmtMs(v.ms),
          Object.entries(v.cmds)
            .map(([c, n]) => `${c}×${n}`)
            .join(', '),
        ]);
      rowsA.push([
        op,
        '**total**',
        a.calls,
        fmtMs(a.callsMs),
        `call ${fmtMs(a.totalMs)}; target answered after ${fmtMs(a.answerMs)}; switch phase began after ${fmtMs(a.beforeSwitch.untilMs)}`,
      ]);
    }
    t.push(table(['operation', 'phase', 'PM2 CLI calls', 'time in them', 'commands'], rowsA));
    t.push(
      '\nThrough the CLI every call is a new Node process that connects to the daemon: the way before the socket client, kept behind `PM2_RELEASE_PM2_TRANSPORT=cli`. Calls in "(between phases)" are made outside a timed phase (recovering interrupted runs, finding the active release).\n',
    );
  }
  if (R.socketCalls) {
    const c = R.socketCalls;
    t.push(
      `\nOver the daemon's socket (the default), with the same logging \`pm2\`: **${c.cliCalls} pm2 CLI process(es)** over a redeploy, a rollback, an activate, a status and a list${c.cmds ? ` (${c.cmds})` : ''}; the redeploy answered after ${fmtMs(c.redeployAnswerMs)}, the rollback after ${fmtMs(c.rollbackAnswerMs)}.\n`,
    );
  }
  t.push(`\n### Switch under steady load (scripts/traffic.mjs: ${R.opts.connections} keep-alive clients, + a fresh-connection poller every 20 ms)\n`);
  const swRow = (name, s, extra = '') =>
    s
      ? [
          name,
          s.n,
          `${s.failed} (${s.failedPer})`,
          s.dropped,
          s.pollFailed,
          `${fmtMs(s.gap)} (max ${fmtMs(s.gapMax)})`,
          fmtMs(s.pollGap),
          fmtMs(s.call),
          s.sigkills ?? '—',
          [s.codes && `keep-alive ${s.codes}`, s.pollCodes && `poller ${s.pollCodes}`, s.outcomes && `deploy → ${s.outcomes}`, extra]
            .filter(Boolean)
            .join('; '),
        ]
      : [name, 0, 'n/a', '', '', '', '', '', '', ''];
  t.push(
    table(
      [
        'switch',
        'runs',
        'failed = errors + non-2xx (per run)',
        'dropped in flight',
        'poller failed',
        'longest gap, median',
        'poller gap',
        'switch call',
        'old workers SIGKILLed',
        'error codes / outcome',
      ],
      [
        swRow('(a) seed: pm2 delete + pm2 start', S.seed),
        swRow('(b) pm2-release restart strategy', S.restart),
        swRow('(c) pm2-release cluster strategy', S.cluster),
        swRow('(d) cluster → release crashing at boot (deploy --no-verify)', S.crash),
        swRow(
          `(e) ${R.marathon?.switches ?? 0} cluster switches in one run (${R.marathon?.crashSwitches ?? 0} to the crashing release)`,
          S.marathon,
          R.marathon ? `${R.marathon.loadSeconds} s of load` : '',
        ),
        swRow(
          `(f) ${R.routerMarathon?.switches ?? 0} router switches in one run (${R.routerMarathon?.activates ?? 0} activates, ${R.routerMarathon?.rollbacks ?? 0} rollbacks, ${R.routerMarathon?.crashSwitches ?? 0} deploys of the crashing release)`,
          S.router,
          R.routerMarathon ? `${R.routerMarathon.loadSeconds} s of load` : '',
        ),
        ...(S.takeover
          ? [
              swRow(
                '(f0) router take-over: the app port passes from the cluster workers to the router (once per VM)',
                S.takeover,
                'the old workers are deleted, then the router binds the port',
              ),
            ]
          : []),
        swRow(
          '(g) router hold: the live release server SIGKILLed, PM2 restarts it',
          S.hold,
          R.routerHold ? `port answered again ${fmtMs(R.routerHold.backMs)} after the kill` : '',
        ),
      ],
    ),
  );
  t.push(
    '\nThe load is scripts/traffic.mjs, the integration tests\' load loop too, so both count the same way. "failed": errors + non-2xx of the keep-alive clients (an error is a request with no answer that is not a drop: refused, timed out); while nothing listens, each client retries at once in a tight loop, so a delete+start switch yields thousands of ECONNREFUSED per second of downtime; compare those rows by the gap. "dropped in flight": requests written on a keep-alive connection that the server then closed or reset before the answer was complete (ECONNRESET, "socket hang up", a response cut short), counted one by one and not in "failed". "longest gap": the longest time between two successful keep-alive answers during the run. "poller": a fresh connection every 20 ms, as a health check or a proxy without keep-alive would make; its failures include its own drops. (Runs before scripts/traffic.mjs used autocannon: its "dropped" was estimated as sent − answered − errors − one per connection, and it counted some resets of requests in flight as errors.)\n',
  );
  if (R.routerQuiet) {
    const q = R.routerQuiet;
    t.push(
      `No switch at all, for scale: the same load for ${q.router.seconds} s, with nothing else running, has a longest gap of ${fmtMs(q.router.gapMs)} through the router and ${fmtMs(q.direct.gapMs)} straight to the live release's private port (poller ${fmtMs(q.router.pollerGapMs)} / ${fmtMs(q.direct.pollerGapMs)}; failed ${q.router.failed} / ${q.direct.failed}).\n`,
    );
  }
  if (S.cost) {
    const C = R.routerCost;
    t.push(
      `### Router cost on the Next page (autocannon, ${C.seconds} s per run, medians of ${C.fixedDirect.length} run(s) each: the fixed rate on ${C.fixedConnections ?? C.connections} keep-alive connection(s), saturation on ${C.connections})\n`,
    );
    const c = S.cost;
    t.push(
      table(
        ['load', 'direct to the private port', 'through the router', 'difference'],
        [
          [`${C.rate} req/s: p50 latency`, ms2(c.p50Direct), ms2(c.p50Router), `+${ms2(c.added)}`],
          [`${C.rate} req/s: p99 latency`, ms2(c.p99Direct), ms2(c.p99Router), `+${ms2(c.p99Router - c.p99Direct)}`],
          [
            'saturation: throughput',
            `${c.satDirect?.toFixed(0)} req/s`,
            `${c.satRouter?.toFixed(0)} req/s`,
            `${((c.share ?? 0) * 100).toFixed(0)} % of direct`,
          ],
          ['saturation: p50 latency', ms2(c.satP50Direct), ms2(c.satP50Router), `+${ms2(c.satP50Router - c.satP50Direct)}`],
          [
            'router process peak RSS (VmHWM)',
            '',
            R.routerRss?.hwmKb ? `${(R.routerRss.hwmKb / 1024).toFixed(1)} MiB` : 'n/a',
            R.routerRss?.rssKb ? `VmRSS at the end ${(R.routerRss.rssKb / 1024).toFixed(1)} MiB` : '',
          ],
        ],
      ),
    );
    t.push(
      `\nLatency per response as autocannon measures it (hrtime, sub-ms). ${c.failed} request(s) failed over these runs. The router's VmHWM is read from /proc/<pid>/status after all router runs (the switches, the saturation runs and the hold), for the same router pid.\n`,
    );
  }
  const tl = writeTimelines(R, outFile);
  if (tl.length) {
    t.push('### One switch per strategy, 50 ms buckets\n');
    t.push(
      'Green: successful responses (keep-alive clients + poller) per 50 ms, from 1 s before the moment the old release stops serving (or the router changes route) to 3 s after, longer when the gap lasts longer. Red, below the axis: failed requests (errors, non-2xx, drops, failed fresh connections), on their own scale. The seed, restart and cluster charts come from the first run of (a), (b), (c); the router one from the first activate of (f).\n',
    );
    t.push(...tl);
  }
  if (R.restartLogged && S.seedParts) {
    const L = R.restartLogged;
    const P = S.seedParts;
    t.push(
      'Where a delete+start switch spends its gap under load: the seed (medians of its runs, timed around each command) vs one extra restart-strategy switch with every PM2 CLI call logged:\n',
    );
    t.push(
      table(
        ['step', '(a) seed', '(b) restart, logged run'],
        [
          ['`pm2 delete`', fmtMs(P.deleteMs), fmtMs(L.deleteMs)],
          ['`pm2 delete` returned → `pm2 start` run', fmtMs(P.deleteToStartMs), fmtMs(L.deleteToStartMs)],
          ['`pm2 start`', fmtMs(P.startMs), fmtMs(L.startMs)],
          ['`pm2 start` returned → first success', fmtMs(P.startToAnswerMs), fmtMs(L.startToAnswerMs)],
          ['PM2 CLI calls while the app boots', '0 (HTTP polling only)', `${L.bootCalls} (${L.bootCallCmds || '—'}; ${fmtMs(L.bootCallsMs)})`],
          ['longest gap', fmtMs(P.gapMs), fmtMs(L.gapMs)],
        ],
      ),
    );
    t.push('');
  }
  if (S.seed || S.restart) {
    t.push('Anatomy of the longest gap (medians, wall clock):\n');
    t.push(
      table(
        ['switch', 'gap opens after the call started', '`pm2 start` returned, after the gap opened', 'first success after `pm2 start` returned', 'longest gap'],
        [
          ['(a) seed', S.seed],
          ['(b) restart strategy', S.restart],
        ]
          .filter(([, x]) => x)
          .map(([n, x]) => [n, fmtMs(x.gapStartAfterCall), fmtMs(x.startReturnedInGap), fmtMs(x.answerAfterStart), fmtMs(x.gap)]),
      ),
    );
    t.push('');
  }

  if (R.disk) {
    t.push(`### Disk (allocated blocks, hard links counted once; releases dir on ${R.disk.fs.type}, reflink ${R.disk.reflink ? 'yes' : 'no'})\n`);
    t.push(
      table(
        ['release', 'node_modules from', 'release size', 'its node_modules'],
        [
          ...R.disk.singles.map((s) => [s.id, s.method ?? '?', fmtBytes(s.bytes), fmtBytes(s.nodeModules)]),
          [`${R.disk.count} releases together`, '', fmtBytes(R.disk.together), ''],
          ['ratio to one release (median)', '', S.disk.ratio?.toFixed(2) + '×', ''],
        ],
      ),
    );
  }
  if (R.rss) {
    t.push('\n### Peak memory of the pm2-release process during a deploy\n');
    t.push(
      table(
        ['deploy (CLI, `--json`)', 'peak RSS (VmHWM)', 'duration', 'exit', 'samples'],
        [
          [
            `unchanged lockfile, node_modules ${R.rss.method ?? '?'}, cluster switch`,
            `${(R.rss.hwmKb / 1024).toFixed(1)} MiB`,
            fmtMs(R.rss.ms),
            R.rss.code,
            R.rss.samples,
          ],
        ],
      ),
    );
    t.push('\nVmHWM of the pm2-release node process only (npm, next build and PM2 are separate processes), polled every 20 ms from /proc.\n');
  }

  const { rows, reasons } = targets(R, S);
  t.push('\n### Targets\n');
  t.push(table(['target', 'measured', 'result'], rows));
  const tables = t.join('\n');

  const lines = [];
  lines.push('# Performance');
  lines.push('');
  lines.push('Generated by `npm run bench` (bench/run.mjs); every run overwrites this file. Numbers are from one run on the machine below.');
  if (R.error) lines.push(`\n**This run did not finish:** ${R.error}. Tables hold what was measured before it stopped.`);
  lines.push('');
  lines.push('## Machine');
  lines.push('');
  lines.push(
    table(
      ['', ''],
      [
        ['CPU', `${M.cpu}, ${M.cores} cores`],
        ['RAM', fmtBytes(M.ramBytes)],
        ['disk', `${M.fsType} (mount ${M.fsMount}, sandbox under ${M.tmpdir})`],
        ['OS', M.kernel],
        ['Node / npm / PM2', `${M.node} / ${M.npm} / ${M.pm2} (one \`pm2 jlist\` CLI call: ${fmtMs(R.pm2CallMs)})`],
        [
          'pm2-release measured',
          `commit ${M.commit ?? '?'}${M.srcDirty ? ' with uncommitted changes in src/' : ''}; dist/ ${M.distStale ? '**older than src/ (stale build)**' : 'built from it'}`,
        ],
        ['app', `Next.js ${M.app?.next}, React ${M.app?.react} (app router, one force-dynamic page)`],
        ['date', `${M.date} (run took ${R.finished ? fmtMs(R.finished - R.started) : 'n/a'})`],
        ['load average at start / end', `${(M.loadStart ?? []).map((x) => x.toFixed(2)).join(' ')} / ${(M.loadEnd ?? []).map((x) => x.toFixed(2)).join(' ')}`],
      ],
    ),
  );
  lines.push('');
  lines.push('## How it was measured');
  lines.push('');
  lines.push(
    [
      `- ${R.opts.runs} run(s) per scenario, medians shown; ${R.opts.switches} switches in the long cluster run. Sandbox under the temp dir with its own PM2_HOME; loopback traffic only.`,
      '- Baseline: the seed flow by hand, each step a child process: `git archive HEAD | tar -x` into a new dir, copy the env files, `npm ci`, `npm run build`, `rm -rf .next/cache .turbo build/cache`, `pm2 delete frontend-dev`, `pm2 start npm --name frontend-dev --cwd <dir> -- run start` (FRONT_PORT set), wait for HTTP 200, `pm2 save`.',
      '- Every install (both flows) uses the same private, warm npm cache with prefer-offline and no audit; the only registry access is one `npm install` for the lockfile, cached between runs.',
      '- pm2-release through its library API (`deploy`, `rollback`, `activate`, `build`, `list` from dist/), config defaults except: `strategy: "restart"` (the default is now `router`; it has its own runs below), `keep: 3`, `app.prune: [".next/cache", ".turbo", "build/cache"]` (see the note below), and for the cluster runs `strategy: "cluster"`, `script: "node_modules/next/dist/bin/next"`, `args: ["start"]`, `portEnv: "PORT"`. Health check and verify use the defaults (1.5 s settle each); install and build run at low priority (default).',
      '- Cold deploys: `reuseDependencies: false`. Unchanged-lockfile deploys: a new commit (page text) with the same package-lock.json. Redeploy: `deploy --ref <sha>` of a retained release (mode `reactivated`). Rollback: `rollback`.',
      '- Crashing release: a commit whose next.config.js exits when the production server loads it. Built once with `build`, then deployed with `verify: false, force: true` (the health gate marks the sha bad each time), so each crash switch reactivates that release and the health gate must revert it.',
      "- Load: scripts/traffic.mjs in a separate process (bench/load.mjs): keep-alive clients (each one connection, one request at a time, back to back), steady for 2 s before the switch and 2 s after, and a poller that opens a fresh connection every 20 ms. Both give up on a request after 10 s (Apache's ProxyTimeout defaults to 60 s), so a request the router holds is counted slow, not failed, unless it waits longer.",
      "- Router strategy (last, on the releases left by the runs above): `strategy: \"router\"`, `router.releasePorts: [23001, 23099]`, other router settings default (holdMs 15000, drainTimeoutMs 30000); `next start --port ${FRONT_PORT}` reads its private port. The first router switch takes the app port over from the cluster, under the same load (f0). Then (f): activates alternating between two releases, rollbacks, and deploys of the crash-at-boot sha with `force: true`, one after another with 1 s between them, under one load run on the router port. (g): under load, the pid holding the live release's private port (found through /proc/net/tcp and /proc/<pid>/fd, as src/health.ts `portHolder` does; checked to run inside the sandbox) gets SIGKILL and PM2 restarts the app. Router cost: autocannon straight to the live release's private port and through the router, at a fixed rate on one keep-alive connection (autocannon sends each second's share of a fixed rate back to back on each connection: on ten connections the app would queue ten at once and the run would measure the queue) and unlimited on the usual connections. Then unchanged-lockfile deploys with the router strategy. The router config turns the soak off (`soak.durationMs: 0`; by default a routed deploy watches the new release for 60 s after the route change while it serves, see the soak section).",
    ].join('\n'),
  );
  lines.push('');
  lines.push('## Results');
  lines.push('');
  lines.push(tables);
  lines.push('');
  if (reasons.length) {
    lines.push('## Why targets are not met');
    lines.push('');
    for (const r of reasons) lines.push(`- ${r}`);
    lines.push('');
  }
  lines.push('## Notes');
  lines.push('');
  lines.push(
    '- The default `app.prune` (`[".next", ".turbo", "build/cache"]`, src/config.ts) removes `.next`, which for Next.js is the production build itself, not a cache: with the defaults `next start` finds no build and the release fails verify. The bench sets `.next/cache` instead (what the seed runbook removes).',
  );
  if (S.cold.total !== undefined && S.base.total) {
    const c = (k) => median(R.cold.map((r) => r.durations?.[k]).filter((v) => v !== undefined));
    lines.push(
      `- Cold deploy vs the seed flow (${ratio(S.cold.total, S.base.total)}): install ${fmtMs(c('install'))} (per run ${R.cold.map((r) => fmtMs(r.durations?.install)).join(', ')}) against the seed's npm ci ${fmtMs(S.base.ci)} (per run ${R.baseline.map((r) => fmtMs(r.ciMs)).join(', ')}), build ${fmtMs(c('build'))} against ${fmtMs(S.base.build)}, plus verify ${fmtMs(c('verify'))} and health ${fmtMs(c('health'))} that the seed flow does not spend. pm2-release runs install and build under \`nice -n 10\` and \`ionice -c2 -n7\` (app.buildLowPriority, default on) and with \`--prefer-offline --no-audit --no-fund\`; the load average during this run was ${(M.loadStart ?? []).map((x) => x.toFixed(1)).join('/')} at start on ${M.cores} cores${(M.loadStart?.[0] ?? 0) > M.cores ? ' (other work was running)' : ''}.${c('install') > 1.25 * S.base.ci ? " Why its npm ci is slower than the seed's was not isolated: the niced build took as long as the seed's." : ''}`,
    );
  }
  for (const n of R.notes) lines.push(`- ${n}`);
  lines.push('');
  // The Next.js section (bench/next.mjs) as last measured: `--only next` and the end of a full run refresh it.
  if (fs.existsSync(NEXT_RESULTS))
    try {
      lines.push(renderNextSection(JSON.parse(fs.readFileSync(NEXT_RESULTS, 'utf8'))));
      lines.push('');
    } catch {
      /* an unreadable result file: the section is left out */
    }
  // The soak section (bench/soak.mjs, `npm run bench:soak`) is its own run: kept as it was last written.
  const soak = fs.existsSync(outFile)
    ? /\n## Traffic-aware rollout[^\n]*\n+<!-- soak:start -->[\s\S]*?<!-- soak:end -->\n?/.exec(fs.readFileSync(outFile, 'utf8'))
    : null;
  if (soak) lines.push(soak[0].replace(/^\n+/, ''));
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, lines.join('\n'));
  return { tables };
}

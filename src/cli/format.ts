/** Human output: aligned tables and one-line summaries. Pure functions of the typed results. */
import type { ReleaseError } from '../errors.js';
import type { DoctorResult } from '../lifecycle/checks.js';
import type { InitResult } from '../commands/init.js';
import { renderConfig } from '../lifecycle/proposal.js';
import type { HistoryResult } from '../lifecycle/results.js';
import type { ActivateResult, BuildResult, DeployResult, ListResult, PackResult, PruneResult, ReleaseInfo, StatusResult } from '../lifecycle/results.js';
import { sharePercent } from '../router/protocol.js';
import { standbyText } from '../lifecycle/standby.js';
import { bytes, ratePercent } from '../units.js';
import { closestToBudget, peakText, type StepMemory } from '../release/memory-budget.js';

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

export function shortTime(iso: string | null): string {
  return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

function total(d: Record<string, number>): number {
  return Object.values(d).reduce((a, b) => a + b, 0);
}

export function formatDeploy(r: DeployResult): string {
  const removed = r.removed.length ? `; removed ${r.removed.map((x) => x.id).join(', ')}` : '';
  const why = r.reason ? `: ${r.reason}` : '';
  if (r.mode === 'unchanged') return `${r.release.id} (${r.release.shortSha}) is already active${why} → ${r.url}; nothing to do (--rebuild builds it again)\n`;
  if (r.mode === 'reactivated')
    return `reactivated retained ${r.release.id} (${r.release.shortSha})${why} without a build in ${seconds(total(r.durationsMs))} → ${r.url}${r.previous ? ` (was ${r.previous})` : ''}\n`;
  if (r.mode === 'unpacked')
    return (
      `deployed ${r.release.id} (${r.release.shortSha}) from artifact ${r.release.artifact?.file ?? '?'} (sha256 ${r.release.artifact?.sha256.slice(0, 12) ?? '?'}, packed on ${r.release.artifact?.packedOn ?? '?'}; no build) in ${seconds(total(r.durationsMs))} → ${r.url}` +
      `${r.previous ? ` (was ${r.previous})` : ''}${removed}\n${soakLine(r)}`
    );
  return (
    `deployed ${r.release.id} (${r.release.shortSha}) in ${seconds(total(r.durationsMs))} → ${r.url}` +
    `${r.previous ? ` (was ${r.previous})` : ''}${removed}\n${soakLine(r)}`
  );
}

function soakLine(r: DeployResult): string {
  const s = r.soak;
  if (!s) return '';
  const share = s.share < 1 ? `${sharePercent(s.share)} of visitors` : 'every visitor';
  if (s.state === 'running')
    return `soaking: ${share} on it until ${shortTime(s.endsAt)}; \`pm2-release status\` shows the numbers, \`pm2-release rollback\` reverts at once\n`;
  return `soak ${s.state}: ${s.reason ?? ''}\n`;
}

/** One release's soak numbers: "212 req, 5xx 0.5 %, p99 12 ms". */
function trafficText(n: { requests: number; rate5xx: number; p99Ms: number | null } | null): string {
  if (!n) return 'no requests';
  return `${n.requests} req, 5xx ${ratePercent(n.rate5xx)}, p99 ${n.p99Ms ?? '-'} ms`;
}

export function formatBuild(r: BuildResult): string {
  if (r.release.artifact) {
    const verb = r.changed ? 'unpacked' : `already unpacked as`;
    return `${verb} ${r.release.id} (${r.release.shortSha}) from artifact ${r.release.artifact.file}; activate it with: pm2-release activate ${r.release.id}\n`;
  }
  return `built ${r.release.id} (${r.release.shortSha}) in ${seconds(total(r.durationsMs))}; activate it with: pm2-release activate ${r.release.id}\n`;
}

export function formatPack(r: PackResult): string {
  const a = r.artifact;
  const made = r.built ? `built and packed ${r.release.id}` : `packed ${r.release.id}`;
  return (
    `${made} (${r.release.shortSha}) into ${a.file}: ${bytes(a.bytes)} (${a.files} files, ${bytes(a.appBytes)} before ${a.compression}` +
    `${a.withDependencies ? ', node_modules included' : ''}), sha256 ${a.sha256}\n` +
    `  beside it: ${a.sha256File}${a.signature ? `, ${a.signature}` : ''}\n` +
    `  build-time public variables baked in: ${a.publicEnv.length ? a.publicEnv.join(', ') : 'none'}\n` +
    `  deploy it with: pm2-release deploy --artifact ${a.file}\n` +
    (a.signature ? `  (add --allowed-signers with a file that lists the signing key to refuse it unsigned)\n` : '')
  );
}

export function formatActivate(r: ActivateResult): string {
  const verb = r.action === 'rollback' ? 'rolled back to' : 'activated';
  return `${verb} ${r.release.id} (${r.release.shortSha}) in ${seconds(total(r.durationsMs))} → ${r.url}${r.previous ? ` (was ${r.previous})` : ''}\n`;
}

export function formatList(r: ListResult): string {
  const here = r.releases.length === 0 ? 'no releases yet (run `pm2-release deploy`)\n' : releasesTable(r);
  const elsewhere = r.elsewhere ?? [];
  if (elsewhere.length === 0) return here;
  return (
    here +
    '\nelsewhere (built before releasesDir moved: listed only, not rollback targets; the runbook says how to go back to one):\n' +
    table(
      ['', 'ID', 'SHA', 'STATUS', 'CREATED', 'DIR'],
      elsewhere.map((x) => [x.active ? '*' : '', x.id, x.shortSha ?? '-', x.status, shortTime(x.createdAt), x.elsewhere ?? '-']),
    )
  );
}

function releasesTable(r: ListResult): string {
  return table(
    ['', 'ID', 'SHA', 'STATUS', 'CREATED', 'SIZE', 'PEAK', 'NOTE'],
    r.releases.map((x: ReleaseInfo) => [
      x.active ? '*' : '',
      x.id,
      x.shortSha ?? '-',
      x.status,
      shortTime(x.createdAt),
      bytes(x.sizeBytes),
      memoryCell(x.memory ?? undefined),
      [
        x.bad ? `BAD: ${x.bad.reason}` : x.error ? `${x.error.code} in ${x.error.phase}` : '',
        x.artifact ? `artifact ${x.artifact.sha256.slice(0, 12)} from ${x.artifact.packedOn}` : '',
        alsoServes(x),
      ]
        .filter(Boolean)
        .join('; '),
    ]),
  );
}

/** The step closest to its memory budget: "build 312.0 MiB 26 %" ("-" before the guard). */
export function memoryCell(m: Partial<Record<'install' | 'build', StepMemory | null>> | undefined): string {
  const c = closestToBudget({ install: m?.install ?? undefined, build: m?.build ?? undefined });
  if (!c) return '-';
  return `${c.step} ${bytes(c.m.peakBytes)} ${Math.round(((c.m.peakBytes ?? 0) / c.m.budgetBytes) * 100)} %${c.m.stopped ? ' STOPPED' : ''}`;
}

/** "install 80.0 MiB (20 % of 400.0 MiB), build 312.0 MiB (26 % of 1.2 GiB)". */
export function memoryLine(m: Partial<Record<'install' | 'build', StepMemory | null>> | undefined): string {
  const parts = (['install', 'build'] as const).flatMap((s) => {
    const x = m?.[s];
    return x ? [`${s} ${peakText(x)}${x.stopped ? ' STOPPED by the guard' : ''}`] : [];
  });
  return parts.length ? parts.join(', ') : '-';
}

/** "also serves 1a2b3c4, 5d6e7f8": the later commits whose inputs this release was already the build of. */
export function alsoServes(x: Pick<ReleaseInfo, 'sha' | 'commits'>): string {
  const others = (x.commits ?? []).filter((c) => c !== x.sha);
  if (others.length === 0) return '';
  const shown = others
    .slice(-3)
    .reverse()
    .map((c) => c.slice(0, 7));
  return `also serves ${shown.join(', ')}${others.length > 3 ? ` (+${others.length - 3} older)` : ''}`;
}

export function formatStatus(r: StatusResult): string {
  const rows: string[][] = [
    ['app', r.app],
    [
      'pm2',
      r.pm2
        ? `${r.pm2.status} (pid ${r.pm2.pid}, id ${r.pm2.pmId}, restarts ${r.pm2.restarts}${r.pm2.processes > 1 ? `, ${r.pm2.processes} processes` : ''})`
        : 'not running',
    ],
    ['cwd', r.pm2?.cwd ?? '-'],
    ['active', r.active ? `${r.active.id} (${r.active.shortSha})${alsoServes(r.active) ? `, ${alsoServes(r.active)}` : ''}` : '-'],
    ['recorded', r.recorded ?? '-'],
    ['health', `${r.health.ok ? 'ok' : 'FAILING'} ${r.health.url} → ${r.health.status ?? r.health.error ?? '-'}`],
    ['drift', r.drift.detected ? `YES: ${r.drift.reason}` : 'none'],
    // What the live release's install and build used against their budget (releases from before the guard: none).
    ...(r.active?.memory ? [['memory', `peak ${memoryLine(r.active.memory)}`]] : []),
    ...routerRows(r),
    ...routerConfigRows(r),
    ...soakRows(r),
  ];
  const w = Math.max(...rows.map((x) => x[0].length));
  return warnings(r.warnings) + rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n';
}

function soakRows(r: StatusResult): string[][] {
  const s = r.soak;
  if (!s) return [];
  if (!s.running) return [['last soak', `${s.state}: ${s.release} (${s.reason ?? '-'}) at ${shortTime(s.endedAt ?? s.startedAt)}`]];
  const share = s.share < 1 ? `${sharePercent(s.share)} canary` : 'all visitors';
  return [
    ['soak', `${s.release} on trial (${share}), ${Math.ceil(s.timeLeftMs / 1000)} s left; \`pm2-release rollback\` reverts at once`],
    ['  new', `${s.release}: ${trafficText(s.candidate)}${s.judged ? '' : ` (judged from ${s.thresholds.minRequests} requests)`}`],
    ['  before', `${s.previous}: ${trafficText(s.baseline)}`],
  ];
}

/** The router's definition in PM2 next to the config's, only when they differ. */
function routerConfigRows(r: StatusResult): string[][] {
  const c = r.routerConfig;
  if (!c?.differences.length) return [];
  const rows = c.differences.map((d) => [`  ${d.key}`, `running ${d.running} | config ${d.config}`]);
  const next =
    c.next === 'replace'
      ? 'the next deploy, activate or rollback replaces the router (routing state carried over)'
      : `a deploy refuses it; apply with: ${c.command ?? '-'}`;
  return [['router config', `the router PM2 runs (${c.running?.name ?? '-'}) differs from the config: ${next}`], ...rows];
}

function routerRows(r: StatusResult): string[][] {
  const ro = r.router;
  if (!ro) return [];
  if (!ro.running)
    return [['router', `NOT RUNNING (${ro.error ?? 'no answer'})${ro.live ? `; it would route to ${ro.live.release} on :${ro.live.port}` : ''}`]];
  const rows: string[][] = [
    [
      'router',
      `${ro.listening ? 'listening' : 'WAITING for the port'} on :${ro.port} → ${ro.live ? `${ro.live.release} on :${ro.live.port}` : 'no release yet'}`,
    ],
  ];
  if (ro.canary) rows.push(['canary', `${sharePercent(ro.canary.share)} of visitors → ${ro.canary.upstream.release} on :${ro.canary.upstream.port}`]);
  // A soak's previous release (warm, unrouted, until the soak ends); the recorded standby has its own row.
  for (const u of ro.upstreams.filter((x) => x.role === 'standby' && x.release !== r.standby?.release))
    rows.push(['standby', `${u.release} on :${u.port} (warm, for an instant revert)`]);
  if (r.standby && (r.standby.state !== 'none' || !ro.upstreams.some((x) => x.role === 'standby'))) rows.push(['standby', standbyText(r.standby)]);
  for (const u of ro.upstreams.filter((x) => x.role === 'draining')) rows.push(['draining', `${u.release} on :${u.port} (${u.inflight} in flight)`]);
  if (ro.held > 0) rows.push(['held', `${ro.held} request(s) waiting for the release to answer`]);
  const live = ro.stats.find((x) => x.release === ro.live?.release);
  const ms = (v: number | null) => (v === null ? '-' : `${v}`);
  rows.push([
    'last minute',
    live
      ? `${live.rps} req/s, 5xx ${ratePercent(live.rate5xx)}, p50 ${ms(live.p50Ms)} ms, p99 ${ms(live.p99Ms)} ms (${live.requests} requests)`
      : 'no requests',
  ]);
  return rows;
}

export function formatPrune(r: PruneResult): string {
  const verb = r.dryRun ? 'would remove' : 'removed';
  if (r.removed.length === 0) return `nothing to remove (keeping ${r.kept.length}: ${r.kept.join(', ') || '-'})\n`;
  return r.removed.map((x) => `${verb} ${x.id}: ${x.reason}`).join('\n') + `\nkept ${r.kept.join(', ') || '-'}\n`;
}

/** Cause, then what to do, then where to read more: the three lines an operator needs at 3 a.m. */
export function formatError(e: ReleaseError, verbose: boolean): string {
  let out = '';
  if (e.outputTail)
    out +=
      e.outputTail
        .split('\n')
        .slice(-15)
        .map((l) => `  | ${l}`)
        .join('\n') + '\n';
  out += `error: ${e.message} [${e.code} in ${e.phase}]\n`;
  if (e.hint) out += `fix: ${e.hint}\n`;
  if (e.logFile) out += `log: ${e.logFile}\n`;
  if (verbose && e.stack) out += e.stack + '\n';
  return out;
}

function warnings(list: string[]): string {
  return list.map((w) => `warning: ${w}\n`).join('');
}

export function formatDoctor(r: DoctorResult): string {
  const rows = r.checks.map((c) => [c.status.toUpperCase(), c.name, c.message + (c.fix && c.status !== 'ok' ? `\n${' '.repeat(6)}fix: ${c.fix}` : '')]);
  const w = Math.max(...r.checks.map((c) => c.name.length));
  return (
    rows.map(([s, n, m]) => `${s.padEnd(4)}  ${n.padEnd(w)}  ${m}`).join('\n') + `\n${r.ok ? 'ready to deploy' : 'NOT ready to deploy: fix the FAIL lines'}\n`
  );
}

export function formatHistory(r: HistoryResult): string {
  if (r.entries.length === 0) return 'no history yet\n';
  return table(
    ['TIME', 'ACTION', 'RESULT', 'FROM', 'TO', 'SHA', 'TRIGGER', 'BY', 'TOOK', 'PEAK', 'DETAIL'],
    r.entries.map((e) => [
      shortTime(e.time),
      e.action,
      e.result,
      e.from ?? '-',
      e.to ?? '-',
      e.sha ? e.sha.slice(0, 7) : '-',
      e.trigger,
      `${e.user}@${e.host}`,
      seconds(total(e.durationsMs)),
      memoryCell(e.memory),
      // An error is its code and phase; otherwise a note ("frontend tree unchanged since 3f2a9c1", "soak passed: …").
      e.error
        ? `error ${e.error.code} in ${e.error.phase}`
        : (e.action === 'deploy' || e.action === 'revert' || e.action === 'rollback') && e.detail
          ? e.detail
          : '',
    ]),
  );
}

/**
 * `init`: the proposed config as JSONC (a `// why` line above each inferred key; the file written is the
 * same JSON without them), then doctor, what the first deploy does, and the commands to run.
 */
export function formatInit(r: InitResult): string {
  const out: string[] = [];
  out.push(`// config proposed for the PM2 app ${r.app.name} (cwd ${r.app.cwd}, PM2_HOME ${r.app.pm2Home}), read from \`pm2 jlist\` and the app dir`);
  out.push(
    r.written ? `// written to ${r.configPath} (mode 0600, plain JSON without these comments)` : `// not written (--write writes it to ${r.configPath})`,
  );
  out.push(renderConfig(r.config, r.comments));
  const others = r.app.envNames.filter((n) => n !== r.config.app?.portEnv);
  if (others.length)
    out.push(
      `// ${r.app.name}'s PM2 env has ${others.length} other variables, not copied (names: --json app.envNames)${r.app.secretNames.length ? `; secret by name: ${r.app.secretNames.join(', ')}` : ''}`,
    );
  out.push('');
  for (const w of r.warnings) out.push(`warning: ${w}`);
  for (const p of r.problems) out.push(`problem: ${p}`);
  if (r.warnings.length || r.problems.length) out.push('');
  out.push('doctor (on the proposed config)');
  out.push(indent(formatDoctor(r.doctor).trimEnd()));
  out.push('');
  const f = r.firstDeploy;
  const rows: [string, string][] = [
    ['strategy', `${f.strategy}: ${r.app.name}-router holds the public port, each release runs on a private one`],
    [
      'ports',
      `public :${f.publicPort ?? '?'} (router) → first release on :${f.releasePort ?? '?'}${r.config.router ? ` (of ${r.config.router.releasePorts?.join('-')})` : ''}`,
    ],
    ['take-over', f.takeOver],
    ['disk', `~${bytes(f.diskNeededBytes)} for the releases (node_modules + build output × (keep ${r.config.keep ?? 2} + 1)), ${bytes(f.diskFreeBytes)} free`],
    ['pm2', `${r.app.pm2Version ?? 'unknown version'}, systemd ${r.app.systemd}`],
  ];
  out.push('first deploy');
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) out.push(`  ${k.padEnd(w)}  ${v}`);
  out.push('');
  out.push('next');
  out.push(`  ${r.next.command}`);
  out.push('');
  out.push('reboot path (when the PM2 dump is missing or stale)');
  for (const l of r.next.reboot) out.push(`  ${l}`);
  out.push('');
  out.push('executor (library call)');
  out.push(`  ${r.next.executor}`);
  out.push(r.ok ? 'ready for the first deploy' : r.problems.length ? 'NOT ready: fix the problem lines' : 'NOT ready to deploy: fix the FAIL lines');
  return out.join('\n') + '\n';
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

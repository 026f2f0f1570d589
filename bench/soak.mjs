// The traffic-aware rollout on a real Next.js app behind the router (npm run bench:soak):
//   1. revert within the soak: `rollback` while the previous release is warm, under keep-alive load:
//      time from the decision to the previous release answering, and failed requests;
//   2. a release whose / is healthy but /broken throws (500): reverted by the gate during a 10 % canary
//      soak, under a load that hits both routes; failed requests against the canary share;
//   3. version skew: the chunks of a page loaded from build A, fetched after the switch to build B, with
//      the retained releases' hashed assets linked in (app.staticAssets) and without (staticAssets: []).
// Writes its figures between the soak markers of documentation/performance.md and prints them.
import fs from 'node:fs';
import path from 'node:path';
import { CACHE_DIR, ensureTemplate, lockedVersions, writeApp } from './app.mjs';
import { createSandbox } from './sandbox.mjs';
import { CLI, fmtMs, httpGet, log, ROOT, run, sleep } from './lib.mjs';
import { isAnswer, startTraffic } from '../scripts/traffic.mjs';

const BROKEN_PAGE = `export const dynamic = 'force-dynamic';
export default function Broken() {
  throw new Error('bench: this route is broken in this release');
}
`;

/**
 * 8 keep-alive clients on `paths` until stopped (scripts/traffic.mjs, the tests' load loop too). Each request
 * is a new visitor (its own address), so a canary share gets its share of the requests. A failure is what a
 * visitor would call one: a 5xx or no answer (`isAnswer`: a 404 for a page a build lacks is an answer). The
 * report reads `counts` (requests per "path status") and `fails` ({at, path, status} per failure, at in epoch ms).
 */
const load = (port, paths = ['/']) =>
  startTraffic({
    port,
    clients: 8,
    poller: false,
    paths,
    headers: (n, client) => ({ 'x-forwarded-for': `10.${n & 255}.${(n >> 8) & 255}.${client}` }),
    okStatus: isAnswer,
    countReleases: false,
    timeoutMs: 10_000,
    // Bounded like the CLI calls it runs under (900 s each).
    maxMs: 1_800_000,
  });

const chunksOf = (html) => [...new Set([...(html ?? '').matchAll(/\/_next\/static\/[^"'\s)]+\.(?:js|css)/g)].map((m) => m[0]))];

async function main() {
  const sb = await createSandbox();
  const results = {};
  try {
    const template = await ensureTemplate(sb.env);
    const versions = lockedVersions(template);
    writeApp(template, sb.appDir, '1.0.0');
    fs.writeFileSync(path.join(sb.ws, '.gitignore'), 'node_modules/\n.env*\n.next/\n');
    await sb.git(['init', '-q', '-b', 'main']);
    await sb.git(['config', 'commit.gpgsign', 'false']);
    await sb.git(['add', '-A']);
    await sb.git(['commit', '-q', '-m', 'v1']);
    const configPath = path.join(sb.root, 'pm2-release.config.json');
    const writeConfig = (extra = {}) =>
      fs.writeFileSync(
        configPath,
        JSON.stringify(
          {
            workspace: sb.ws,
            releasesDir: sb.releasesDir,
            keep: 4,
            preflight: { minFreeDiskMB: 200, minFreeInodes: 1000 },
            app: {
              env: { FRONT_PORT: String(sb.port) },
              strategy: 'router',
              // distDir .next: only its cache is pruned; .next/static holds the hashed chunks.
              prune: ['.next/cache'],
              healthcheck: { timeoutMs: 120_000, settleMs: 1_000 },
              ...extra.app,
            },
            router: { drainTimeoutMs: 10_000 },
            soak: { durationMs: 60_000, minRequests: 50, healthIntervalMs: 1_000, ...extra.soak },
          },
          null,
          2,
        ),
      );
    writeConfig();
    const cli = (args, allowFail = false) =>
      run([process.execPath, CLI, '--config', configPath, '--json', ...args], { cwd: sb.root, env: sb.env, timeoutMs: 900_000, allowFail });
    const json = (r) => JSON.parse(r.stdout.trim().split('\n').pop());
    const soakRecord = () => JSON.parse(fs.readFileSync(path.join(sb.releasesDir, '.router', 'frontend-dev.soak.json'), 'utf8'));

    log('deploy v1 (take-over: no soak)');
    const v1 = json(await cli(['deploy']));

    // --- 1. revert within the soak -------------------------------------------------------------------
    await sb.commit('v2', { 'app/page.js': fs.readFileSync(path.join(sb.appDir, 'app/page.js'), 'utf8').replace('1.0.0', '2.0.0') });
    log('deploy v2 with --no-wait-soak, then rollback under load');
    const traffic = load(sb.port);
    await sleep(2_000);
    const v2 = json(await cli(['deploy', '--no-wait-soak', '--soak', '120']));
    await sleep(3_000);
    const tRollback = Date.now();
    const rb = json(await cli(['rollback']));
    const rollbackCommandMs = Date.now() - tRollback;
    await sleep(1_000);
    const t1 = await traffic.stop();
    const s1 = soakRecord();
    results.revert = {
      revertMs: s1.revertMs,
      rollbackCommandMs,
      state: s1.state,
      requests: Object.values(t1.counts).reduce((a, b) => a + b, 0),
      failed: t1.failed,
      counts: t1.counts,
      back: rb.release?.id === v1.release.id,
    };
    log(`revert within the soak: route back in ${s1.revertMs} ms, ${t1.failed} failed of ${results.revert.requests}`);
    await waitUnlocked(sb);

    // --- 2. half-broken release, canary 10 % -----------------------------------------------------------
    await sb.commit('v3 broken route', {
      'app/page.js': fs.readFileSync(path.join(sb.appDir, 'app/page.js'), 'utf8').replace(/\d\.0\.0/, '3.0.0'),
      'app/broken/page.js': BROKEN_PAGE,
    });
    log('deploy v3 (/broken throws) with --canary 10% under load on / and /broken');
    const t2load = load(sb.port, ['/', '/broken']);
    await sleep(2_000);
    const t2start = Date.now();
    const v3 = await cli(['deploy', '--canary', '10%', '--soak', '120'], true);
    const t2end = Date.now();
    await sleep(500);
    const t2 = await t2load.stop();
    const s2 = soakRecord();
    const v3json = json(v3);
    results.gate = {
      exitCode: v3.code,
      code: v3json.error?.code,
      phase: v3json.error?.phase,
      reason: s2.reason,
      soakMs: Date.parse(s2.endedAt) - Date.parse(s2.startedAt),
      candidate: s2.candidate,
      baseline: s2.baseline,
      requests: Object.values(t2.counts).reduce((a, b) => a + b, 0),
      failed: t2.fails.filter((f) => f.at >= t2start && f.at <= t2end + 500).length,
      failedRoot: t2.fails.filter((f) => f.path === '/').length,
      counts: t2.counts,
    };
    log(`gate: exit ${v3.code} (${results.gate.code} in ${results.gate.phase}): ${s2.reason}; ${results.gate.failed} failed of ${results.gate.requests}`);
    await waitUnlocked(sb);

    // --- 3. version skew -------------------------------------------------------------------------------
    let version = 3;
    const skew = async (label) => {
      const before = await httpGet(sb.url, 5_000);
      const chunks = chunksOf(before.body);
      version++;
      // A client component whose code changes with each build, so the page's chunks change too.
      await sb.commit(`v${version}`, {
        'app/page.js': `import Clock from './clock';\nexport const dynamic = 'force-dynamic';\nexport default function Page() {\n  return (\n    <main>\n      <h1>{'version=${version}.0.0'}</h1>\n      <p>{\`release=\${process.env.RELEASE_ID ?? 'none'}\`}</p>\n      <Clock />\n    </main>\n  );\n}\n`,
        'app/broken/page.js': null,
        'app/clock.js': `'use client';\nexport default function Clock() {\n  return <span>{'${label}-${version}'}</span>;\n}\n`,
      });
      json(await cli(['deploy', '--soak', '0']));
      const after = await Promise.all(chunks.map(async (c) => (await httpGet(`http://127.0.0.1:${sb.port}${c}`, 5_000)).status));
      const fresh = chunksOf((await httpGet(sb.url, 5_000)).body);
      return {
        chunks: chunks.length,
        notFound: after.filter((x) => x === 404).length,
        other: after.filter((x) => x !== 200 && x !== 404).length,
        changed: chunks.filter((c) => !fresh.includes(c)).length,
      };
    };
    log('skew: with the retained builds linked in (default app.staticAssets)');
    await skew('warm'); // the first build with the client component: its chunks are the ones a page will ask for
    results.skewOn = await skew('on');
    log(`skew on: ${results.skewOn.notFound} of ${results.skewOn.chunks} old chunks 404 (${results.skewOn.changed} differ from the new build's)`);
    writeConfig({ app: { staticAssets: [] } });
    results.skewOff = await skew('off');
    log(`skew off: ${results.skewOff.notFound} of ${results.skewOff.chunks} old chunks 404`);
    results.versions = versions;
    results.v2 = v2.release?.id;
  } finally {
    await sb.close();
  }
  report(results);
}

async function waitUnlocked(sb) {
  for (let i = 0; i < 600; i++) {
    if (!fs.existsSync(path.join(sb.releasesDir, '.lock'))) return;
    await sleep(200);
  }
}

function report(r) {
  const pct = (a, b) => (b ? `${((a / b) * 100).toFixed(2)} %` : 'n/a');
  const lines = [
    '<!-- soak:start -->',
    `Measured by \`npm run bench:soak\` on ${new Date().toISOString().slice(0, 10)} (Next.js ${r.versions?.next}, React ${r.versions?.react}, router strategy, this machine's 2 cores; one run each).`,
    '',
    '| target | measured | met |',
    '|---|---|---|',
    `| revert within the soak ≤ 100 ms from decision to the old release answering | route back in ${fmtMs(r.revert.revertMs)} (the \`rollback\` command itself, process start to exit: ${fmtMs(r.revert.rollbackCommandMs)}) | ${r.revert.revertMs <= 100 ? 'yes' : 'no'} |`,
    `| 0 failed requests during that revert | ${r.revert.failed} failed of ${r.revert.requests} (8 keep-alive clients) | ${r.revert.failed === 0 ? 'yes' : 'no'} |`,
    `| a release whose \`/\` is healthy but \`/broken\` throws is reverted within the soak | exit ${r.gate.exitCode}, ${r.gate.code} in ${r.gate.phase} after ${fmtMs(r.gate.soakMs)} of a 120 s soak: "${r.gate.reason}" | ${r.gate.exitCode === 5 ? 'yes' : 'no'} |`,
    `| its failed requests bounded by the canary share (10 %) and the minimum request count (50) | ${r.gate.failed} failed of ${r.gate.requests} during the deploy (${pct(r.gate.failed, r.gate.requests)}); \`/\` failed ${r.gate.failedRoot} times | ${r.gate.failedRoot === 0 && r.gate.failed <= 50 ? 'yes' : 'no'} |`,
    `| 0 of the old build's chunk requests get 404 after a switch | ${r.skewOn.notFound} of ${r.skewOn.chunks} (of which ${r.skewOn.changed} not in the new build); without linking (\`staticAssets: []\`): ${r.skewOff.notFound} of ${r.skewOff.chunks} | ${r.skewOn.notFound === 0 ? 'yes' : 'no'} |`,
    '',
    "Skew protection links the other retained releases' own files under `.next/static` into the release before it starts (hard links: no",
    'extra disk while both are kept). Serving old chunks from the router instead was not taken: it would need the router to read release',
    'directories and buffer 404s, and the link also works for the restart and cluster strategies.',
    '<!-- soak:end -->',
  ];
  const text = lines.join('\n');
  process.stdout.write(text + '\n');
  const doc = path.join(ROOT, 'documentation/performance.md');
  const cur = fs.readFileSync(doc, 'utf8');
  const next = /<!-- soak:start -->[\s\S]*<!-- soak:end -->/.test(cur)
    ? cur.replace(/<!-- soak:start -->[\s\S]*<!-- soak:end -->/, text)
    : `${cur.trimEnd()}\n\n## Traffic-aware rollout (soak, gate, canary, skew)\n\n${text}\n`;
  fs.writeFileSync(doc, next);
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  fs.writeFileSync(path.join(CACHE_DIR, 'soak-results.json'), JSON.stringify(r, null, 2) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});

#!/usr/bin/env node
// The memory guard's own numbers (issue 18), without the registry: `npm run bench -- --only memory [--runs N]`.
//   cost: a CPU-bound stand-in for a build (a parent and two workers, a fixed amount of work each) timed
//         with the guard watching its tree and without, alternating; the ratio of the medians (target ≤ 1.02).
//   stop: examples/app/hog.mjs (Buffers in two processes) under a 120 MiB budget: from the sample that saw
//         the tree over the budget to the tree gone (stopMs), plus the sampling interval near the budget,
//         which bounds the time from the crossing itself (target ≤ 1 s).
// The Next.js build's peak memory beside its time is in the Next section (bench/next.mjs: every cold deploy's
// log line and results carry the manifest's memory record).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fmtMs, log, median, now, ROOT } from './lib.mjs';

const { MemoryGuard } = await import(path.join(ROOT, 'dist/release/memory-guard.js'));
const { SAMPLE_MS } = await import(path.join(ROOT, 'dist/release/memory-budget.js'));
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const MiB = 2 ** 20;

const WORK = `
const { fork } = require('node:child_process');
const spin = (n) => { let x = 0; for (let i = 0; i < n; i++) x = (x + Math.sqrt(i)) % 1e9; return x; };
if (process.argv[2] === 'worker') { spin(Number(process.argv[3])); process.exit(0); }
const n = Number(process.argv[2]);
let left = 2;
for (let w = 0; w < 2; w++) fork(__filename, ['worker', String(n)]).on('exit', () => --left || process.exit(0));
`;

function runTree(file, argv, guard) {
  return new Promise((resolve, reject) => {
    const t = now();
    const child = spawn(process.execPath, [file, ...argv], { detached: true, stdio: 'ignore' });
    guard?.watch(child.pid);
    child.on('error', reject);
    child.on('exit', async (code, signal) => {
      const memory = guard ? await guard.finish({ scope: false }) : undefined;
      resolve({ ms: now() - t, code, signal, memory });
    });
  });
}

const budget = (mb) => ({
  bytes: mb * MiB,
  source: 'configured',
  availableBytes: os.freemem(),
  cgroupLimitBytes: null,
  cgroupFreeBytes: null,
  reserveBytes: 0,
});
const guardFor = (mb) => new MemoryGuard({ budget: budget(mb), enabled: true, raiseOomScore: false, redact: (t) => t, logger: quiet });

export async function main(argv) {
  const at = argv.indexOf('--runs');
  const runs = at >= 0 ? Number(argv[at + 1]) : 5;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-bench-memory-'));
  try {
    const work = path.join(dir, 'work.cjs');
    fs.writeFileSync(work, WORK);
    // Calibrate to ~4 s of work per worker on this machine.
    const probe = await runTree(work, ['20000000']);
    const n = Math.round((20_000_000 * 4_000) / Math.max(probe.ms, 1));
    const on = [];
    const off = [];
    for (let i = 0; i < runs; i++) {
      off.push((await runTree(work, [String(n)])).ms);
      const r = await runTree(work, [String(n)], guardFor(64 * 1024));
      on.push(r.ms);
      log(`memory: cost run ${i + 1}/${runs}: off ${fmtMs(off.at(-1))}, on ${fmtMs(on.at(-1))} (peak ${(r.memory.peakBytes / MiB).toFixed(1)} MiB)`);
    }
    const ratio = median(on) / median(off);

    const marker = path.join(dir, 'HOG');
    fs.writeFileSync(marker, '400\n');
    const stops = [];
    for (let i = 0; i < runs; i++) {
      const r = await runTree(path.join(ROOT, 'examples/app/hog.mjs'), [marker], guardFor(120));
      if (!r.memory.stopped) throw new Error(`stop run ${i + 1}: the guard did not stop the hog (peak ${r.memory.peakBytes})`);
      stops.push(r.memory.stopMs);
      log(
        `memory: stop run ${i + 1}/${runs}: peak ${(r.memory.peakBytes / MiB).toFixed(1)} MiB, tree gone ${r.memory.stopMs} ms after the sample over the budget`,
      );
    }
    const worst = Math.max(...stops) + SAMPLE_MS.near;
    const out = [
      `guard cost (CPU-bound tree, ${runs} runs each, medians): off ${fmtMs(median(off))}, on ${fmtMs(median(on))}, ratio ${ratio.toFixed(3)} (target ≤ 1.02)`,
      `stop (hog under a 120 MiB budget, ${runs} runs): tree gone in median ${median(stops)} ms, max ${Math.max(...stops)} ms after the sample; ` +
        `crossing → gone ≤ ${worst} ms with the ${SAMPLE_MS.near} ms sampling near the budget (target ≤ 1000 ms)`,
    ];
    for (const l of out) log(`memory: ${l}`);
    return { ratio, stops, off, on };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main(process.argv.slice(2));

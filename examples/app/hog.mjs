// Test fixture: a build (or install) that holds native memory, as next build's SWC and workers do: Buffers,
// which no --max-old-space-size bounds. `node hog.mjs MARKER` reads the MiB to hold from the committed file
// MARKER (nothing to do without it); half is held by this process, half by a child it starts (the memory
// guard must sum the whole tree). Both allocate and touch 8 MiB every 10 ms, hold it for 3 s, and exit 0.
// With BUILD_TRACE=<file> in the environment, each appends "hog <role> <pid>" to it when it starts.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const STEP = 8 * 2 ** 20;

async function hold(mib) {
  const held = [];
  for (let got = 0; got < mib * 2 ** 20; got += STEP) {
    held.push(Buffer.alloc(STEP, 1)); // filled: every page touched, resident
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, 3_000));
  return held.length;
}

function trace(role) {
  if (process.env.BUILD_TRACE) fs.appendFileSync(process.env.BUILD_TRACE, `hog ${role} ${process.pid}\n`);
}

/** Holds `mib` MiB across this process and one child; resolves when both are done. */
export async function hog(mib) {
  trace('parent');
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', String(mib / 2)], { stdio: 'inherit' });
  const childDone = new Promise((resolve, reject) =>
    child.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`hog child exited ${code ?? signal}`)))),
  );
  await hold(mib / 2);
  await childDone;
  console.log(`held ${mib} MiB`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === '--child') {
    trace('child');
    await hold(Number(process.argv[3]));
  } else if (process.argv[2] && fs.existsSync(process.argv[2])) await hog(Number(fs.readFileSync(process.argv[2], 'utf8').trim()));
}

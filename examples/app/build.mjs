// The example's "npm run build": like the VM frontend's `next build` (distDir "build"), it writes the runtime output to build/ and leaves caches
// (.next/, build/cache/) that pm2-release prunes from the release.
//
// Test fixtures, each switched on by a committed marker file:
//   FAIL_BUILD   the build fails.
//   SLOW_BUILD   the build starts a long-lived child (like next build's workers) and waits ~60 s for it.
//   BIG_BUILD    the build writes as many MiB of output as the file says (to fill a small disk).
// With BUILD_TRACE=<file> in the environment, every build appends "start|end|stopped <release> <ms>" to it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';

const release = process.env.RELEASE_ID ?? null;
const trace = (what) => {
  if (process.env.BUILD_TRACE) fs.appendFileSync(process.env.BUILD_TRACE, `${what} ${release} ${Date.now()} ${process.pid}\n`);
};
trace('start');

if (fs.existsSync('FAIL_BUILD')) {
  console.error('build failed: FAIL_BUILD is present (the test fixture asks for a broken build)');
  process.exit(1);
}
if (fs.existsSync('SLOW_BUILD')) {
  process.on('SIGTERM', () => {
    trace('stopped');
    process.exit(143);
  });
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  console.log(`slow build: waiting for child ${child.pid}`);
  await new Promise((resolve) => child.on('exit', resolve));
}
const version = fs.readFileSync('version.txt', 'utf8').trim();
fs.mkdirSync('build/cache', { recursive: true });
fs.mkdirSync('.next/cache', { recursive: true });
fs.writeFileSync('build/cache/webpack.pack', 'cache '.repeat(1000));
fs.writeFileSync('.next/cache/dev.pack', 'dev cache');
if (fs.existsSync('BIG_BUILD')) {
  const mib = Number(fs.readFileSync('BIG_BUILD', 'utf8').trim()) || 64;
  const fd = fs.openSync('build/big.bin', 'w');
  const chunk = Buffer.alloc(2 ** 20, 1);
  for (let i = 0; i < mib; i++) fs.writeSync(fd, chunk); // throws ENOSPC when the disk fills
  fs.closeSync(fd);
}
fs.writeFileSync('build/build.json', JSON.stringify({ version, builtAt: new Date().toISOString(), release }) + '\n');
console.log(`built ${version}`);
trace('end');

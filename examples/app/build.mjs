// The example's "npm run build": like the VM frontend's `next build` (distDir "build"), it writes the runtime output to build/ and leaves caches
// (.next/, build/cache/) that pm2-release prunes from the release.
import fs from 'node:fs';

if (fs.existsSync('FAIL_BUILD')) {
  console.error('build failed: FAIL_BUILD is present (the test fixture asks for a broken build)');
  process.exit(1);
}
const version = fs.readFileSync('version.txt', 'utf8').trim();
fs.mkdirSync('build/cache', { recursive: true });
fs.mkdirSync('.next/cache', { recursive: true });
fs.writeFileSync('build/cache/webpack.pack', 'cache '.repeat(1000));
fs.writeFileSync('.next/cache/dev.pack', 'dev cache');
fs.writeFileSync('build/build.json', JSON.stringify({ version, builtAt: new Date().toISOString(), release: process.env.RELEASE_ID ?? null }) + '\n');
console.log(`built ${version}`);

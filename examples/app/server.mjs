// The example's "npm start": like `next start`, it refuses to run without a build, listens on $FRONT_PORT,
// and reports which release it runs (RELEASE_ID / RELEASE_SHA come from pm2-release through PM2's env).
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const greeting = require('greeting');

if (fs.existsSync('CRASH_ON_BOOT')) {
  console.error('crashing at boot: CRASH_ON_BOOT is present (the test fixture asks for a broken release)');
  process.exit(1);
}
if (fs.existsSync('CRASH_AFTER_MS')) {
  // Answers for a moment, then dies: the crash loop a single health probe would miss.
  const ms = Number(fs.readFileSync('CRASH_AFTER_MS', 'utf8')) || 300;
  setTimeout(() => {
    console.error(`crashing after ${ms} ms: CRASH_AFTER_MS is present`);
    process.exit(1);
  }, ms);
}
let build;
try {
  build = JSON.parse(fs.readFileSync('build/build.json', 'utf8'));
} catch {
  console.error('no production build found in build/: run `npm run build` first');
  process.exit(1);
}
const port = Number(process.env.FRONT_PORT ?? process.env.PORT ?? 3001);
const host = process.env.HOST ?? '127.0.0.1';

const server = http.createServer((req, res) => {
  if (req.url === '/api/protected') {
    res.writeHead(401, { 'content-type': 'application/json' });
    return res.end('{"error":"unauthorized"}\n');
  }
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(
      JSON.stringify({ status: 'ok', version: build.version, release: process.env.RELEASE_ID ?? null, sha: process.env.RELEASE_SHA ?? null }) + '\n',
    );
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`${greeting(build.version)} (release ${process.env.RELEASE_ID ?? 'none'})\n`);
});
server.listen(port, host, () => console.log(`example-frontend ${build.version} listening on http://${host}:${port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));

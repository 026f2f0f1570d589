// The example's "npm start": like `next start`, it refuses to run without a build, listens on $FRONT_PORT,
// and reports which release it runs (RELEASE_ID / RELEASE_SHA come from pm2-release through PM2's env).
import crypto from 'node:crypto';
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
// NEXT_DEFAULT_DIST: like a Next app without distDir, the production build is read from .next/.
const distDir = fs.existsSync('NEXT_DEFAULT_DIST') ? '.next' : 'build';
let build;
try {
  build = JSON.parse(fs.readFileSync(`${distDir}/build.json`, 'utf8'));
} catch {
  console.error(`no production build found in ${distDir}/: run \`npm run build\` first`);
  process.exit(1);
}
// ANSWER_500: boots and listens, then answers 500 to every request (a release broken at run time).
const answer500 = fs.existsSync('ANSWER_500');
// next start lists <distDir>/static once, at start: a file added later is not served.
const staticFiles = new Set();
const listStatic = (dir) => {
  for (const e of fs.existsSync(`build/static/${dir}`) ? fs.readdirSync(`build/static/${dir}`, { withFileTypes: true }) : []) {
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) listStatic(rel);
    else if (e.isFile()) staticFiles.add(rel);
  }
};
listStatic('');
const port = Number(process.env.FRONT_PORT ?? process.env.PORT ?? 3001);
const host = process.env.HOST ?? '127.0.0.1';

const server = http.createServer((req, res) => {
  if (answer500) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    return res.end(`500 from ${process.env.RELEASE_ID ?? 'none'}\n`);
  }
  if (req.url === '/api/protected') {
    res.writeHead(401, { 'content-type': 'application/json' });
    return res.end('{"error":"unauthorized"}\n');
  }
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(
      JSON.stringify({
        status: 'ok',
        version: build.version,
        release: process.env.RELEASE_ID ?? null,
        sha: process.env.RELEASE_SHA ?? null,
        // Where it was built and where it runs: a release built in one directory and renamed must still serve.
        builtIn: build.builtIn ?? null,
        cwd: process.cwd(),
        warmCache: build.warmCache ?? null,
      }) + '\n',
    );
  }
  const release = process.env.RELEASE_ID ?? 'none';
  if (req.url === '/page') {
    // A page of this build: its scripts are this build's hashed chunks (a browser fetches them next).
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end(`<!doctype html><title>${build.version}</title>${(build.chunks ?? []).map((c) => `<script src="/_next/static/${c}"></script>`).join('')}\n`);
  }
  if (req.url?.startsWith('/_next/static/')) {
    // Like next start: the files of <distDir>/static as they were when the server started.
    const name = decodeURIComponent(req.url.slice('/_next/static/'.length).split('?')[0]);
    if (!staticFiles.has(name)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found\n');
    }
    res.writeHead(200, { 'content-type': 'application/javascript', 'cache-control': 'public, max-age=31536000, immutable' });
    return res.end(fs.readFileSync(`build/static/${name}`));
  }
  if (req.url === '/upload' && req.method === 'POST') {
    // Echoes what it received: size and sha256 (a large upload must arrive whole through any proxy).
    const h = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (c) => {
      bytes += c.length;
      h.update(c);
    });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ release, bytes, sha256: h.digest('hex') }) + '\n');
    });
    return;
  }
  if (req.url?.startsWith('/stream') || req.url?.startsWith('/events')) {
    // A slow streamed answer (like an RSC page or server-sent events): 10 parts, 100 ms apart.
    const sse = req.url.startsWith('/events');
    res.writeHead(200, { 'content-type': sse ? 'text/event-stream' : 'text/plain', 'cache-control': 'no-cache' });
    let i = 0;
    const t = setInterval(() => {
      res.write(sse ? `data: ${release} ${i}\n\n` : `part ${i} of ${release}\n`);
      if (++i === 10) {
        clearInterval(t);
        res.end();
      }
    }, 100);
    return;
  }
  if (fs.existsSync('SLOW_MS')) {
    // A release that answers every request slowly (the latency gate's fixture).
    const ms = Number(fs.readFileSync('SLOW_MS', 'utf8')) || 2000;
    return void setTimeout(() => res.end(`${greeting(build.version)} (release ${release}) slowly\n`), ms);
  }
  if (fs.existsSync('FAIL_PATHS') && fs.readFileSync('FAIL_PATHS', 'utf8').split('\n').includes(req.url)) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    return res.end(`broken route ${req.url}\n`);
  }
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`${greeting(build.version)} (release ${release})\n`);
});

// A WebSocket echo without a library (the fixture installs offline): the RFC 6455 handshake, then each
// masked text frame from the client is answered with "<release>:<text>"; a close frame is answered.
server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (!key) return socket.destroy();
  const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 6) {
      const opcode = buf[0] & 0x0f;
      const len = buf[1] & 0x7f; // the fixture's messages are short (< 126 bytes)
      if (buf.length < 6 + len) return;
      const mask = buf.subarray(2, 6);
      const data = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
      buf = buf.subarray(6 + len);
      if (opcode === 0x8) {
        socket.end(Buffer.from([0x88, 0x02, 0x03, 0xe8]));
        return;
      }
      const out = Buffer.from(`${process.env.RELEASE_ID ?? 'none'}:${data.toString('utf8')}`);
      socket.write(Buffer.concat([Buffer.from([0x81, out.length]), out]));
    }
  });
  socket.on('error', () => socket.destroy());
});
server.listen(port, host, () => console.log(`example-frontend ${build.version} listening on http://${host}:${port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));

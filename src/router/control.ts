/**
 * The control channel: HTTP on a Unix socket in the releases dir (the directory mode 0700, the socket
 * 0600), so only the owner can reach it and nothing of the router's own listens on a network port.
 * One JSON request per `POST /control`, one JSON answer.
 */
import fs from 'node:fs';
import http from 'node:http';
import { parseControlRequest } from './protocol.js';
import type { Router } from './router.js';

const MAX_BODY = 64 * 1024;

export async function startControl(router: Router, socketPath: string, log: (msg: string) => void): Promise<http.Server> {
  // A socket file left by a router that died (SIGKILL) would make listen() fail with EADDRINUSE.
  fs.rmSync(socketPath, { force: true });
  const server = http.createServer((req, res) => {
    const reply = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body) + '\n');
    };
    if (req.method !== 'POST' || req.url !== '/control') return reply(404, { ok: false, error: 'POST /control only' });
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      void (async () => {
        try {
          const msg = parseControlRequest(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          switch (msg.op) {
            case 'status':
              return reply(200, router.status());
            case 'route':
              await router.route({ live: msg.live, canary: msg.canary }, msg.keep);
              return reply(200, router.status());
            case 'drain':
              return reply(200, { ok: true, port: msg.port, ...(await router.drain(msg.port, msg.timeoutMs)) });
          }
        } catch (err) {
          log(`control request refused: ${(err as Error).message}`);
          reply(400, { ok: false, error: (err as Error).message.split('\n')[0] });
        }
      })();
    });
  });
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // exclusive: under PM2's cluster mode a worker's listen() is otherwise done by the cluster primary, which
      // would hand a replacement router the old router's socket for the same path (and its requests).
      server.listen({ path: socketPath, exclusive: true }, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
  fs.chmodSync(socketPath, 0o600);
  return server;
}

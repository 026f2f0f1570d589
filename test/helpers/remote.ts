/**
 * A bare "origin" for a sandbox workspace, a second clone that pushes to it, and a small HTTP client for
 * talking to the webhook listener (fresh connection per request, no keep-alive pool).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Sandbox } from './sandbox.js';

export interface Remote {
  origin: string;
  pusher: string;
  /** git with argv, in `cwd`, with the sandbox env (author/committer set); returns trimmed stdout. */
  git(cwd: string, ...args: string[]): string;
  /** Commits `files` (paths relative to the repository root) in the pusher clone and pushes to `branch`. */
  push(message: string, files: Record<string, string>, branch?: string): string;
  /** The sha origin has for `branch`. */
  originSha(branch?: string): string;
}

export function setupRemote(sb: Sandbox): Remote {
  const origin = path.join(sb.root, 'origin.git');
  const pusher = path.join(sb.root, 'pusher');
  const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, env: sb.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

  git(sb.root, 'clone', '-q', '--bare', sb.workspace, origin);
  git(sb.workspace, 'remote', 'add', 'origin', origin);
  git(sb.workspace, 'fetch', '-q', 'origin');
  git(sb.workspace, 'branch', '--set-upstream-to=origin/main', 'main');
  git(sb.root, 'clone', '-q', origin, pusher);
  git(pusher, 'config', 'commit.gpgsign', 'false');

  return {
    origin,
    pusher,
    git,
    push(message, files, branch = 'main') {
      git(pusher, 'checkout', '-q', '-B', branch, branch === 'main' ? 'origin/main' : 'HEAD');
      for (const [rel, content] of Object.entries(files)) {
        const p = path.join(pusher, rel);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        fs.writeFileSync(p, content);
      }
      git(pusher, 'add', '-A');
      git(pusher, 'commit', '-q', '--allow-empty', '-m', message);
      git(pusher, 'push', '-q', 'origin', `HEAD:refs/heads/${branch}`);
      git(pusher, 'fetch', '-q', 'origin');
      return git(pusher, 'rev-parse', 'HEAD');
    },
    originSha(branch = 'main') {
      return git(origin, 'rev-parse', `refs/heads/${branch}`);
    },
  };
}

export interface HttpResult {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** One HTTP request on a fresh loopback connection; rejects only on a transport error. */
export function request(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', agent: false, timeout: 10_000, headers: { connection: 'close', ...opts.headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('ETIMEDOUT')));
    req.on('error', reject);
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}

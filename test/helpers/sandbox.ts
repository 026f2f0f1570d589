/**
 * A throwaway world for integration tests: a git workspace holding the example app, a releases dir, and a
 * private PM2 daemon (PM2_HOME in the sandbox; never ~/.pm2). `close()` kills only that daemon, by its
 * PM2_HOME and then by the pid it wrote, never by process name.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopDaemon } from '../../scripts/pm2-sandbox.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const EXAMPLE_APP = path.join(ROOT, 'examples/app');
export const PM2_BIN = path.join(ROOT, 'node_modules/pm2/bin/pm2');
export const CLI = path.join(ROOT, 'dist/cli/bin.js');
const PM2_LIST = path.join(ROOT, 'test/helpers/pm2-list.cjs');

export interface Sandbox {
  root: string;
  workspace: string;
  appDir: string;
  releasesDir: string;
  pm2Home: string;
  port: number;
  env: Record<string, string | undefined>;
  config: Record<string, unknown>;
  configPath: string;
  /** Writes files into the app dir (relative paths) and commits; returns the full sha. */
  commit(message: string, files?: Record<string, string | null>): string;
  pm2(...args: string[]): string;
  jlist(): { name: string; pid: number; pm_id: number; pm2_env: Record<string, unknown> }[];
  close(): Promise<void>;
}

/** A block of 100 ports below the ephemeral range for a router's releases (one per sandbox, chosen at random). */
export function releasePortRange(): [number, number] {
  const first = 20_000 + Math.floor(Math.random() * 120) * 100;
  return [first, first + 99];
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export async function createSandbox(opts: { keep?: number; app?: Record<string, unknown>; config?: Record<string, unknown> } = {}): Promise<Sandbox> {
  // Short path: PM2's unix sockets live in PM2_HOME and sun_path is limited to ~107 bytes.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-'));
  const workspace = path.join(root, 'ws');
  const appDir = path.join(workspace, 'frontend');
  const releasesDir = path.join(root, 'releases');
  const pm2Home = path.join(root, 'pm2');
  fs.mkdirSync(pm2Home);
  fs.cpSync(EXAMPLE_APP, appDir, { recursive: true, filter: (src) => !src.includes('node_modules') });
  const port = await freePort();

  const env: Record<string, string | undefined> = {
    ...process.env,
    PM2_HOME: pm2Home,
    PM2_RELEASE_PM2: PM2_BIN,
    PM2_RELEASE_CONFIG: undefined,
    FRONTEND_RELEASES_KEEP: undefined,
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    npm_config_offline: 'true',
    GIT_AUTHOR_NAME: 'pm2-release test',
    GIT_AUTHOR_EMAIL: 'test@example.invalid',
    GIT_COMMITTER_NAME: 'pm2-release test',
    GIT_COMMITTER_EMAIL: 'test@example.invalid',
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];

  const git = (...args: string[]) => execFileSync('git', args, { cwd: workspace, env: env, encoding: 'utf8' }).trim();
  git('init', '-q', '-b', 'main');
  git('config', 'commit.gpgsign', 'false');
  fs.writeFileSync(path.join(workspace, '.gitignore'), 'node_modules/\n.env*\n');
  git('add', '-A');
  git('commit', '-q', '-m', 'v1');

  const config = {
    workspace,
    releasesDir,
    keep: opts.keep ?? 2,
    // CI machines can be short of disk; the example app needs a few MB.
    preflight: { minFreeDiskMB: 50, minFreeInodes: 1000 },
    app: {
      env: { FRONT_PORT: String(port) },
      // The suites written for the seed's delete+start pin it; the router has suites of its own.
      strategy: 'restart',
      healthcheck: { timeoutMs: 20_000, settleMs: 500 },
      verify: { settleMs: 500 },
      ...opts.app,
    },
    // The soak has suites of its own; elsewhere a routed deploy retires the previous release at once.
    soak: { durationMs: 0 },
    ...opts.config,
    // So does the standby (standby.test.ts): the suites that count a routed app's processes expect one.
    router: { standby: false, ...(opts.config?.router as Record<string, unknown> | undefined) },
  };
  const configPath = path.join(root, 'pm2-release.config.json');
  fs.writeFileSync(configPath, JSON.stringify(config, null, 2));

  const pm2 = (...args: string[]) => {
    const r = spawnSync(PM2_BIN, args, { env: env, encoding: 'utf8', cwd: root });
    if (r.status !== 0) throw new Error(`pm2 ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };

  return {
    root,
    workspace,
    appDir,
    releasesDir,
    pm2Home,
    port,
    env,
    config,
    configPath,
    commit(message, files = {}) {
      for (const [rel, content] of Object.entries(files)) {
        const p = path.join(appDir, rel);
        if (content === null) fs.rmSync(p, { force: true });
        else {
          fs.mkdirSync(path.dirname(p), { recursive: true });
          fs.writeFileSync(p, content);
        }
      }
      git('add', '-A');
      git('commit', '-q', '--allow-empty', '-m', message);
      return git('rev-parse', 'HEAD');
    },
    pm2,
    jlist() {
      // Over the daemon's socket (pm2-list.cjs); through the CLI when no daemon answers (the CLI starts one).
      const fast = spawnSync(process.execPath, [PM2_LIST, pm2Home], { encoding: 'utf8', cwd: root, timeout: 20_000 });
      if (fast.status === 0) return JSON.parse(fast.stdout);
      // The call that starts the daemon prints "[PM2] …" lines first: take the line holding the JSON array.
      const out = pm2('jlist');
      const line = out
        .split('\n')
        .reverse()
        .find((l) => l.trim().startsWith('[{') || l.trim() === '[]');
      return JSON.parse(line ?? '[]');
    },
    async close() {
      stopDaemon({ pm2Bin: PM2_BIN, pm2Home, env });
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** GET on loopback over a fresh connection (no keep-alive pool); resolves to {status, body} or {error}. */
export function get(url: string, timeoutMs = 3_000): Promise<{ status?: number; body?: string; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', (err) => resolve({ error: String(err) }));
    });
    req.on('timeout', () => req.destroy(new Error('ETIMEDOUT')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

/**
 * Waits until `http://127.0.0.1:<port>/` answers 200 with a body containing `text` (a release id, a marker);
 * throws with the last answer after `ms`.
 */
export async function waitServing(port: number, text: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    const r = await get(`http://127.0.0.1:${port}/`);
    last = r.body ?? r.error ?? '';
    if (r.status === 200 && last.includes(text)) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`:${port} never served ${text} (last: ${last.slice(0, 300)})`);
}

export interface CliExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The built CLI as a child, without blocking the event loop (the caller polls the app or /proc meanwhile).
 * `done` resolves after 'exit' and then 'close' (the output read to its end), or 2 s after 'exit' at most:
 * an orphaned build may keep the pipes open.
 */
export function startCli(
  sb: Sandbox,
  args: string[],
  extraEnv: Record<string, string> = {},
  onStderr?: (all: string) => void,
): { child: ChildProcess; done: Promise<CliExit> } {
  const child = spawn(process.execPath, [CLI, '--config', sb.configPath, ...args], {
    env: { ...sb.env, ...extraEnv },
    cwd: sb.root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    onStderr?.(stderr);
  });
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const done = new Promise<CliExit>((resolve) =>
    child.on('exit', (code, signal) => {
      void Promise.race([closed, new Promise((r) => setTimeout(r, 2_000))]).then(() => resolve({ code, signal, stdout, stderr }));
    }),
  );
  return { child, done };
}

/** Commits a new package version into the app's package.json and package-lock.json: a lockfile change. */
export function commitLockfileBump(sb: Sandbox, version = '1.0.1'): string {
  const lock = JSON.parse(fs.readFileSync(path.join(sb.appDir, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  lock.packages[''].version = version;
  const pkg = JSON.parse(fs.readFileSync(path.join(sb.appDir, 'package.json'), 'utf8')) as { version: string };
  pkg.version = version;
  return sb.commit('bump', { 'package-lock.json': JSON.stringify(lock, null, 2) + '\n', 'package.json': JSON.stringify(pkg, null, 2) + '\n' });
}

/** Runs the built CLI; never throws on a non-zero exit. */
export function cli(sb: Sandbox, args: string[], extraEnv: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, '--config', sb.configPath, ...args], {
    env: { ...sb.env, ...extraEnv },
    encoding: 'utf8',
    cwd: sb.root,
    timeout: 180_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every regular file under dir (symlinks not followed). */
export function walkFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isSymbolicLink()) return [];
    return e.isDirectory() ? walkFiles(p) : [p];
  });
}

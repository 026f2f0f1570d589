// The bench's world: a temp dir holding a git workspace (the Next.js app), a releases dir, the seed flow's
// hand-made directories and a private PM2 daemon (PM2_HOME inside the sandbox; never ~/.pm2). close()
// ends that daemon by its PM2_HOME, then by the pid it wrote, and removes the sandbox.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NPM_CACHE } from './app.mjs';
import { stopDaemon } from '../scripts/pm2-sandbox.mjs';
import { freePort, killTracked, log, PM2_BIN, run } from './lib.mjs';

/** The caller's environment minus an outer `npm run`'s variables (npm_config_local_prefix would send
 * the app's npm ci to this repository), PM2 and Node settings, and node_modules/.bin on PATH. */
export function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (/^(npm_|pm2_|INIT_CWD$|NODE_OPTIONS$|NODE_ENV$|FRONTEND_RELEASES_KEEP$|NEXT_|RELEASE_|FRONT_PORT$|PORT$)/i.test(k)) continue;
    env[k] = v;
  }
  env.PATH = (process.env.PATH ?? '')
    .split(path.delimiter)
    .filter((d) => d && !/node_modules[\\/]\.bin$/.test(d) && !/node-gyp-bin$/.test(d))
    .join(path.delimiter);
  return env;
}

export async function createSandbox() {
  // Short path: PM2's unix sockets live in PM2_HOME and sun_path is limited to ~107 bytes.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'p2rb-'));
  const pm2Home = path.join(root, 'pm2');
  const ws = path.join(root, 'ws');
  const appDir = path.join(ws, 'frontend');
  const releasesDir = path.join(root, 'releases');
  const seedDir = path.join(root, 'seed');
  const logsDir = path.join(root, 'logs');
  for (const d of [pm2Home, appDir, seedDir, logsDir]) fs.mkdirSync(d, { recursive: true });
  const port = await freePort();

  const env = {
    ...cleanEnv(),
    PM2_HOME: pm2Home,
    PM2_RELEASE_PM2: PM2_BIN,
    NEXT_TELEMETRY_DISABLED: '1',
    // Next's build would otherwise ask the registry to "patch" the lockfile's missing swc entries.
    NEXT_IGNORE_INCORRECT_LOCKFILE: '1',
    npm_config_cache: NPM_CACHE,
    npm_config_prefer_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    GIT_AUTHOR_NAME: 'pm2-release bench',
    GIT_AUTHOR_EMAIL: 'bench@example.invalid',
    GIT_COMMITTER_NAME: 'pm2-release bench',
    GIT_COMMITTER_EMAIL: 'bench@example.invalid',
  };

  let closed = false;
  const sb = {
    root,
    pm2Home,
    ws,
    appDir,
    releasesDir,
    seedDir,
    logsDir,
    port,
    url: `http://127.0.0.1:${port}/`,
    env,
    git: (args) => run(['git', ...args], { cwd: ws, env, timeoutMs: 60_000 }),
    // `jlist` prints one JSON line for every process (a few kB each): keep all of it, not run()'s usual tail.
    pm2: (args, extraEnv = {}, allowFail = false) =>
      run([PM2_BIN, ...args], { cwd: root, env: { ...env, ...extraEnv }, timeoutMs: 90_000, allowFail, tail: args[0] === 'jlist' ? 64 * 2 ** 20 : undefined }),
    async commit(message, files = {}) {
      for (const [rel, content] of Object.entries(files)) {
        const p = path.join(appDir, rel);
        if (content === null) fs.rmSync(p, { force: true });
        else {
          fs.mkdirSync(path.dirname(p), { recursive: true });
          fs.writeFileSync(p, content);
        }
      }
      await sb.git(['add', '-A']);
      await sb.git(['commit', '-q', '--allow-empty', '-m', message]);
      return (await sb.git(['rev-parse', 'HEAD'])).stdout.trim();
    },
    daemonPid() {
      try {
        const pid = Number(fs.readFileSync(path.join(pm2Home, 'pm2.pid'), 'utf8'));
        return pid > 0 ? pid : undefined;
      } catch {
        return undefined;
      }
    },
    /** Lines of the daemon log matching `re` (e.g. SIGKILLs of workers that did not exit in time). */
    countPm2Log(re) {
      try {
        return fs
          .readFileSync(path.join(pm2Home, 'pm2.log'), 'utf8')
          .split('\n')
          .filter((l) => re.test(l)).length;
      } catch {
        return 0;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      stopDaemon({ pm2Bin: PM2_BIN, pm2Home, env, log });
      killTracked();
      fs.rmSync(root, { recursive: true, force: true });
      log(`cleanup: removed ${root}`);
    },
  };
  return sb;
}

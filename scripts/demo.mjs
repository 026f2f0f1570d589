#!/usr/bin/env node
// `npm run demo`: a sandbox with its own PM2 daemon (PM2_HOME inside it, never ~/.pm2), a git workspace
// holding examples/app, two deploys and a rollback. `npm run demo -- --stop` kills that daemon and removes
// the sandbox.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopDaemon } from './pm2-sandbox.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sandbox = path.join(os.tmpdir(), 'pm2-release-demo');
const pm2Bin = path.join(root, 'node_modules/pm2/bin/pm2');
const pm2Home = path.join(sandbox, 'pm2');

function stop() {
  if (!fs.existsSync(sandbox)) return false;
  stopDaemon({ pm2Bin, pm2Home });
  fs.rmSync(sandbox, { recursive: true, force: true });
  return true;
}

if (process.argv.includes('--stop')) {
  console.log(stop() ? `stopped the demo's PM2 daemon and removed ${sandbox}` : `no demo sandbox at ${sandbox}`);
  process.exit(0);
}

if (!fs.existsSync(path.join(root, 'dist/index.js'))) {
  console.error('dist/ is missing: run `npm ci` (it builds) or `npm run build` first');
  process.exit(1);
}
const { deploy, rollback, list, createLogger } = await import('../dist/index.js');
const { formatList } = await import('../dist/cli/format.js');
const { createProgress } = await import('../dist/cli/progress.js');

if (stop()) console.log('(removed the previous demo sandbox)');
const workspace = path.join(sandbox, 'workspace');
const appDir = path.join(workspace, 'frontend');
fs.mkdirSync(pm2Home, { recursive: true });
fs.cpSync(path.join(root, 'examples/app'), appDir, { recursive: true, filter: (s) => !s.includes('node_modules') });
fs.writeFileSync(path.join(workspace, '.gitignore'), 'node_modules/\n.env*\n');
fs.writeFileSync(path.join(appDir, '.env.local'), 'DEMO_SECRET=kept-out-of-logs\n', { mode: 0o600 });

const gitEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: 'pm2-release demo',
  GIT_AUTHOR_EMAIL: 'demo@example.invalid',
  GIT_COMMITTER_NAME: 'pm2-release demo',
  GIT_COMMITTER_EMAIL: 'demo@example.invalid',
};
const git = (...args) => execFileSync('git', args, { cwd: workspace, env: gitEnv, encoding: 'utf8' });
git('init', '-q', '-b', 'main');
git('add', '-A');
git('commit', '-q', '-m', 'example app v1');

const port = await freePort();
const configPath = path.join(sandbox, 'pm2-release.config.json');
fs.writeFileSync(
  configPath,
  JSON.stringify(
    { workspace, releasesDir: path.join(sandbox, 'releases'), keep: 2, app: { env: { FRONT_PORT: String(port) } }, soak: { durationMs: 5000 } },
    null,
    2,
  ) + '\n',
);

const env = { ...process.env, PM2_HOME: pm2Home, PM2_RELEASE_PM2: pm2Bin, npm_config_offline: 'true' };
const logger = createLogger({ level: 'warn', pretty: !!process.stderr.isTTY });
const onEvent = createProgress({ write: (s) => process.stderr.write(s), tty: !!process.stderr.isTTY, quiet: false, columns: process.stderr.columns });
const common = { configPath, env, cwd: sandbox, logger, onEvent, trigger: 'cli' };
const url = `http://127.0.0.1:${port}/`;
const show = async (label) => console.log(`${label}: ${url} → ${(await (await fetch(url)).text()).trim()}`);

try {
  console.log(`sandbox ${sandbox} (PM2_HOME=${pm2Home})\n`);
  const first = await deploy(common);
  await show(`deployed ${first.release.id}`);

  fs.writeFileSync(path.join(appDir, 'version.txt'), 'v2\n');
  git('commit', '-q', '-am', 'example app v2');
  const second = await deploy(common);
  await show(`deployed ${second.release.id}`);
  if (second.soak) console.log(`  soak ${second.soak.state} (5 s in this demo, 60 s by default): ${second.soak.reason}`);

  const back = await rollback(common);
  await show(`rolled back to ${back.release.id}`);

  console.log(`\n${formatList(await list(common))}`);
  console.log(`the app is served at ${url}`);
  console.log(`try: PM2_HOME=${pm2Home} node ${path.join(root, 'dist/cli/bin.js')} --config ${configPath} status`);
  console.log('stop the demo with: npm run demo -- --stop');
} catch (err) {
  console.error(`demo failed: ${err.message}${err.hint ? `\nhint: ${err.hint}` : ''}`);
  console.error('clean up with: npm run demo -- --stop');
  process.exit(1);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

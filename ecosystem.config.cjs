/**
 * PM2's entry for the reboot path when the dump is missing or stale:
 *
 *   PM2_RELEASE_CONFIG=/path/to/pm2-release.config.json pm2 start ecosystem.config.cjs && pm2 save
 *
 * It starts the app from the release pm2-release recorded as active (<releasesDir>/active.json), with the
 * same name, script, args, cwd and env a deploy used, and, when the app runs behind the router, the router
 * too (`<app>-router`, from the same record; it routes to the release its own state file names). It deliberately depends on nothing but Node: it must
 * work even if pm2-release's own build is broken.
 *
 * Config lookup, as the CLI's: pm2-release.config.json in the current directory, else $PM2_RELEASE_CONFIG,
 * else pm2-release.config.json beside this file, else the defaults (releasesDir ~/executor/frontend-releases).
 *
 * It also declares `pm2-release-webhook` (`pm2-release serve`) when the config has a `serve` section and a
 * secret is available (serve.secretFile, or $PM2_RELEASE_WEBHOOK_SECRET in the environment of `pm2 start`;
 * prefer the file: PM2 copies env vars into dump.pm2). Otherwise the listener stays off.
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const RELEASE_ID = /^\d{8}T\d{6}Z-[0-9a-f]{7,40}$/;

function expandHome(p) {
  const home = process.env.HOME || os.homedir();
  if (p === '~') return home;
  return p.startsWith('~/') ? path.join(home, p.slice(2)) : p;
}

function findConfig() {
  // The CLI's order (./pm2-release.config.json, then $PM2_RELEASE_CONFIG), then the file beside this one.
  const local = path.join(process.cwd(), 'pm2-release.config.json');
  if (fs.existsSync(local)) return local;
  if (process.env.PM2_RELEASE_CONFIG) {
    const file = path.resolve(expandHome(process.env.PM2_RELEASE_CONFIG));
    if (!fs.existsSync(file)) throw new Error(`pm2-release: PM2_RELEASE_CONFIG names ${file}, which does not exist`);
    return file;
  }
  const beside = path.join(__dirname, 'pm2-release.config.json');
  return fs.existsSync(beside) ? beside : undefined;
}

function loadConfig() {
  const file = findConfig();
  if (!file) return { file: undefined, config: {} };
  return { file, config: JSON.parse(fs.readFileSync(file, 'utf8')) };
}

function releasesDir(file, config) {
  const base = file ? path.dirname(file) : process.cwd();
  return path.resolve(base, expandHome(config.releasesDir || '~/executor/frontend-releases'));
}

function activeApp(dir) {
  const statePath = path.join(dir, 'active.json');
  if (!fs.existsSync(statePath)) return undefined;
  const state = JSON.parse(fs.readFileSync(statePath, 'utf8'));
  const app = state.app;
  if (!RELEASE_ID.test(state.active) || !app || typeof app.cwd !== 'string') throw new Error(`pm2-release: ${statePath} is not a valid state file`);
  // The recorded cwd must be inside the active release, which must be complete.
  const releaseDir = path.join(dir, state.active);
  if (path.relative(releaseDir, app.cwd).startsWith('..')) throw new Error(`pm2-release: ${statePath} points outside ${releaseDir}`);
  const manifest = JSON.parse(fs.readFileSync(path.join(releaseDir, '.pm2-release', 'manifest.json'), 'utf8'));
  if (manifest.status !== 'ready') throw new Error(`pm2-release: active release ${state.active} is ${manifest.status}, not ready`);
  const release = {
    name: app.name,
    script: app.script,
    args: app.args,
    cwd: app.cwd,
    env: app.env,
    ...(app.execMode === 'cluster' ? { exec_mode: 'cluster', instances: app.instances || 1 } : {}),
  };
  // Behind the router the release listens on a private port and the router, which reads its own state
  // file, holds the public one: both come back.
  const router = state.router;
  if (!router) return [release];
  const standby = standbyApp(dir, state.standby, app.name);
  if (typeof router.script !== 'string' || !Array.isArray(router.args)) throw new Error(`pm2-release: ${statePath} has an invalid router entry`);
  return [
    release,
    {
      name: router.name,
      script: router.script,
      args: router.args,
      cwd: router.cwd,
      env: router.env || {},
      kill_timeout: router.killTimeoutMs || 10000,
      // Cluster mode (as pm2-release starts it): PM2's daemon holds the port, so a replacement router shares it.
      ...(router.execMode === 'cluster' ? { exec_mode: 'cluster', instances: 1 } : {}),
      ...(Array.isArray(router.nodeArgs) ? { node_args: router.nodeArgs.join(' ') } : {}),
    },
    ...(standby ? [standby] : []),
  ];
}

/**
 * The standby behind the router (the previous release, kept running unrouted on its private port), when it is
 * still a ready release of this dir; anything else is left out: the live release and the router come first.
 */
function standbyApp(dir, standby, name) {
  if (!standby || !RELEASE_ID.test(standby.id) || !standby.app || typeof standby.app.cwd !== 'string') return undefined;
  const releaseDir = path.join(dir, standby.id);
  if (path.relative(releaseDir, standby.app.cwd).startsWith('..') || standby.app.name !== name) return undefined;
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(releaseDir, '.pm2-release', 'manifest.json'), 'utf8'));
    if (manifest.status !== 'ready') return undefined;
  } catch {
    return undefined;
  }
  return { name: standby.app.name, script: standby.app.script, args: standby.app.args, cwd: standby.app.cwd, env: standby.app.env };
}

function webhookApp(file, config) {
  if (!config.serve) return undefined;
  const hasSecret = Boolean(process.env.PM2_RELEASE_WEBHOOK_SECRET) || Boolean(config.serve.secretFile);
  if (!hasSecret) {
    console.error('pm2-release: "serve" is configured but no secret (serve.secretFile or PM2_RELEASE_WEBHOOK_SECRET): webhook listener not started');
    return undefined;
  }
  return {
    name: 'pm2-release-webhook',
    script: path.join(__dirname, 'dist', 'cli', 'bin.js'),
    args: ['serve'],
    cwd: file ? path.dirname(file) : process.cwd(),
    autorestart: true,
    max_restarts: 10,
    // On stop/restart the listener finishes a running deploy before exiting: give it time.
    kill_timeout: 15 * 60 * 1000,
    env: file ? { PM2_RELEASE_CONFIG: file } : {},
  };
}

function apps() {
  const { file, config } = loadConfig();
  const dir = releasesDir(file, config);
  const list = [...(activeApp(dir) || []), webhookApp(file, config)].filter(Boolean);
  if (list.length === 0) throw new Error(`pm2-release: no active release recorded in ${dir} (deploy one first)`);
  if (!list[0] || list[0].name === 'pm2-release-webhook') console.error(`pm2-release: no active release recorded in ${dir} yet`);
  return list;
}

module.exports = { apps: apps() };

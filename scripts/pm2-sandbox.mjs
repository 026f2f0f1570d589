// Ending a sandbox's private PM2 daemon, shared by the tests, the bench and the demo: `pm2 kill` for exactly
// that PM2_HOME, then the pid the daemon wrote if it is still alive, twice (a call that was in flight can
// bring a daemon back and write a new pm2.pid), then, as a last resort, any daemon whose process title names
// exactly that PM2_HOME (a unique temp path, so it is ours). Never by process name alone, never ~/.pm2.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

function daemonPid(pm2Home) {
  try {
    const pid = Number(fs.readFileSync(path.join(pm2Home, 'pm2.pid'), 'utf8'));
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Live PM2 daemons whose title is `PM2 vX: God Daemon (<pm2Home>)` for exactly this PM2_HOME. */
export function daemonsOf(pm2Home) {
  const out = [];
  let pids = [];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return out;
  }
  for (const p of pids) {
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      const st = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      if (cmd.endsWith(`God Daemon (${pm2Home})`) && !/\) Z /.test(st)) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

function sigkill(pid) {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** Stops the daemon of `pm2Home` (and its apps). `log` gets one line per step that did something. */
export function stopDaemon({ pm2Bin, pm2Home, env = process.env, log = () => undefined }) {
  if (!fs.existsSync(pm2Home)) return;
  for (let round = 0; round < 2; round++) {
    const pid = daemonPid(pm2Home);
    if (!pid && round > 0) break;
    log(`cleanup: pm2 kill (PM2_HOME=${pm2Home})`);
    spawnSync(pm2Bin, ['kill'], { env: { ...env, PM2_HOME: pm2Home }, cwd: os.tmpdir(), stdio: 'ignore', timeout: 30_000 });
    const deadline = Date.now() + 3_000;
    while (pid && alive(pid) && Date.now() < deadline) spawnSync('sleep', ['0.1']);
    if (pid && alive(pid)) {
      log(`cleanup: the daemon ${pid} is still alive: SIGKILL`);
      sigkill(pid);
    }
    if (daemonPid(pm2Home) === pid) break;
  }
  for (const pid of daemonsOf(pm2Home)) {
    log(`cleanup: a daemon for ${pm2Home} is still running (pid ${pid}): SIGKILL`);
    sigkill(pid);
  }
}

/**
 * A fleet of VMs on one machine, for the Ansible playbooks: each host is a Linux network namespace with its
 * own sshd (on the namespace's address, port 22), its own Linux user and home (so its own workspace, releases
 * dir and ~/.pm2), and the same app port. A bridge in the root namespace links them to the controller.
 * Needs root, ansible-playbook and sshd. `close()` stops what it started by pid (the sshds it spawned, the
 * PM2 daemon each host wrote in its pm2.pid, then any process left of the host's own user), deletes the
 * namespaces, the bridge, the users and the temp dir. Never by process name.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { EXAMPLE_APP, ROOT } from './sandbox.js';
import { alive } from '../../scripts/pm2-sandbox.mjs';

export const ANSIBLE_DIR = path.join(ROOT, 'ansible');
export const APP_PORT = 3001;

/** Why the fleet test cannot run here, or undefined when it can. */
export function fleetUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux (network namespaces)';
  if (process.getuid?.() !== 0) return 'not root (network namespaces, users, sshd)';
  const have = (cmd: string) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { encoding: 'utf8' }).status === 0;
  for (const cmd of ['ansible-playbook', 'ip', 'ssh', 'ssh-keygen', 'useradd', 'runuser', 'git', 'npm'])
    if (!have(cmd)) return `${cmd} is not installed (.ci/run installs ansible-core, openssh-server and iproute2)`;
  if (!fs.existsSync('/usr/sbin/sshd')) return '/usr/sbin/sshd is missing (apt-get install openssh-server)';
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/bin.js'))) return 'dist/ is not built (npm run build)';
  return undefined;
}

export interface FleetHost {
  name: string;
  ns: string;
  ip: string;
  user: string;
  uid: number;
  home: string;
  sshd?: ChildProcess;
  sshdConfig: string;
}

export interface PlaybookRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Whether options.onOutput ran. */
  hooked: boolean;
}

export interface PlaybookOptions {
  /** Run `run` once, as soon as the playbook's stdout so far matches `when`. */
  onOutput?: { when: RegExp; run: () => Promise<void> };
}

export interface Fleet {
  root: string;
  hosts: FleetHost[];
  origin: string;
  /** Commits into the origin's main (files relative to the app dir; null deletes); returns the full sha. */
  commit(message: string, files?: Record<string, string | null>): string;
  writeInventory(hostVars?: Record<string, Record<string, unknown>>): string;
  /** `cd ansible && ansible-playbook -i <inventory> <name> -e <extraVars>`, as the docs print it. */
  playbook(
    name: 'rollout.yml' | 'rollback.yml',
    extraVars?: Record<string, unknown>,
    hostVars?: Record<string, Record<string, unknown>>,
    options?: PlaybookOptions,
  ): Promise<PlaybookRun>;
  /** Any other Ansible command, run the same way (cwd ansible/, the same environment); its stdout. */
  ansible(argv: string[]): string;
  /** The offline tarball every host installs (npm run pack:offline). */
  tarball: string;
  /** Runs argv as the host's user inside its namespace (HOME set, PATH minimal). */
  exec(host: FleetHost, argv: string[]): { code: number | null; stdout: string; stderr: string };
  /** The installed pm2-release of the host (`<prefix>/bin/pm2-release`). */
  bin(host: FleetHost): string;
  /** Runs the installed pm2-release as the host's user inside its namespace; parses --json. */
  cli<T = Record<string, unknown>>(host: FleetHost, ...args: string[]): { code: number | null; json: T; stderr: string };
  stopSshd(host: FleetHost): Promise<void>;
  startSshd(host: FleetHost): Promise<void>;
  summary(): { host: string; from: string; to: string; result: string }[];
  close(): Promise<void>;
}

const sh = (argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts }).trim();
const tryRun = (argv: string[]) => spawnSync(argv[0], argv.slice(1), { stdio: 'ignore', timeout: 30_000 });

function waitPort(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    const attempt = () => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) resolve(false);
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/**
 * pm2-release as an operator packs it for hosts without a registry: the shipped `npm run pack:offline` (the
 * published package's `pm2-release-pack-offline`), one tarball with the production dependencies bundled,
 * shared by every host. Returns its path.
 */
function packOffline(root: string): string {
  return sh([process.execPath, path.join(ROOT, 'scripts/pack-offline.mjs'), '--out', root], { cwd: root })
    .split('\n')
    .pop()!;
}

/** The pids of every process of `uid` (the host's own test user), read from /proc. */
function processesOf(uid: number): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const status = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      const m = /^Uid:\s+(\d+)/m.exec(status);
      if (m && Number(m[1]) === uid) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

export async function createFleet(names = ['h1', 'h2', 'h3'], canary = ['h1']): Promise<Fleet> {
  const tag = crypto.randomBytes(2).toString('hex');
  const net3 = 1 + crypto.randomInt(250);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'p2rf-'));
  fs.chmodSync(root, 0o755);
  const bridge = `p2rf${tag}br`;
  const hosts: FleetHost[] = [];
  const running = new Set<ChildProcess>();
  const log = (line: string) => fs.appendFileSync(path.join(root, 'fleet.log'), `${new Date().toISOString()} ${line}\n`);

  const fleet: Fleet = {
    root,
    hosts,
    origin: path.join(root, 'origin.git'),
    commit,
    writeInventory,
    playbook,
    ansible,
    tarball: '',
    exec,
    bin: (h) => path.join(prefix(h), 'bin/pm2-release'),
    cli,
    stopSshd,
    startSshd,
    summary: () => JSON.parse(fs.readFileSync(path.join(root, 'summary.json'), 'utf8')),
    close,
  };

  const source = path.join(root, 'source');
  const gitEnv = {
    ...process.env,
    GIT_AUTHOR_NAME: 'pm2-release test',
    GIT_AUTHOR_EMAIL: 'test@example.invalid',
    GIT_COMMITTER_NAME: 'pm2-release test',
    GIT_COMMITTER_EMAIL: 'test@example.invalid',
  };
  const git = (...args: string[]) => sh(['git', ...args], { cwd: source, env: gitEnv });
  function commit(message: string, files: Record<string, string | null> = {}): string {
    for (const [rel, content] of Object.entries(files)) {
      const p = path.join(source, 'frontend', rel);
      if (content === null) fs.rmSync(p, { force: true });
      else fs.writeFileSync(p, content);
    }
    git('add', '-A');
    git('commit', '-q', '--allow-empty', '-m', message);
    git('push', '-q', 'origin', 'main');
    return git('rev-parse', 'HEAD');
  }

  const key = path.join(root, 'id_ed25519');
  // %C: a hash of the local host, remote host, port and user (short: a unix socket path has ~107 bytes).
  const controlPath = path.join(root, 'cp', '%C');
  fs.mkdirSync(path.join(root, 'cp'), { mode: 0o700 });
  // JSON is YAML: the file is named as the docs name an inventory.
  const inventory = path.join(root, 'inventory.yml');
  let tarball = '';
  function writeInventory(hostVars: Record<string, Record<string, unknown>> = {}): string {
    const entry = (h: FleetHost) => ({ ansible_host: h.ip, ansible_user: h.user, ...hostVars[h.name] });
    const group = (list: FleetHost[]) => Object.fromEntries(list.map((h) => [h.name, entry(h)]));
    const inv = {
      all: {
        children: {
          fleet: {
            vars: {
              ansible_ssh_private_key_file: key,
              ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5',
              ansible_python_interpreter: '/usr/bin/python3',
              pm2_release_repo: fleet.origin,
              pm2_release_tarball: tarball,
              // As an operator writes it (a string); a test passes the list form for a host. The hosts have no
              // route to a registry, and the registry is a closed port besides: the bundled tarball installs offline.
              pm2_release_npm_args: '--offline --no-audit --no-fund --registry http://127.0.0.1:9',
              pm2_release_port: APP_PORT,
              pm2_release_canary_soak_seconds: 1,
              pm2_release_http_retries: 3,
              pm2_release_http_delay: 1,
              pm2_release_summary_file: path.join(root, 'summary.json'),
              pm2_release_config: {
                keep: 3,
                // Test hosts share one small disk and the machine's memory with other suites.
                preflight: { minFreeDiskMB: 50, minFreeInodes: 1000, minFreeMemoryMB: 0 },
                app: {
                  env: { FRONT_PORT: String(APP_PORT) },
                  healthcheck: { timeoutMs: 20_000, settleMs: 500 },
                  verify: { settleMs: 500 },
                  buildLowPriority: false,
                },
              },
            },
            children: {
              canary: { hosts: group(hosts.filter((h) => canary.includes(h.name))) },
              rest: { hosts: group(hosts.filter((h) => !canary.includes(h.name))) },
            },
          },
        },
      },
    };
    fs.writeFileSync(inventory, JSON.stringify(inv, null, 2));
    return inventory;
  }

  /** The environment of every Ansible command: the docs' own, plus what keeps a test run clean. */
  function ansibleEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ANSIBLE_LOCAL_TEMP: path.join(root, 'ansible-tmp'),
      ANSIBLE_NOCOLOR: '1',
      ANSIBLE_FORCE_COLOR: '0',
      ANSIBLE_HOST_KEY_CHECKING: 'False',
      // One SSH connection per host, reused by every task (a new one per task costs a handshake, a login and
      // a session on both ends: most of a task's time here). The masters' sockets live in the fleet's root;
      // stopSshd() and close() end a host's master through its socket (`ssh -O exit`), so a stopped sshd's
      // host is unreachable at once and no master outlives the test.
      ANSIBLE_SSH_ARGS: `-o ControlMaster=auto -o ControlPersist=60s -o ControlPath=${controlPath}`,
    };
    delete env.ANSIBLE_CONFIG;
    return env;
  }

  function ansible(argv: string[]): string {
    return sh(argv, { cwd: ANSIBLE_DIR, env: ansibleEnv() });
  }

  async function playbook(
    name: string,
    extraVars: Record<string, unknown> = {},
    hostVars: Record<string, Record<string, unknown>> = {},
    options: PlaybookOptions = {},
  ): Promise<PlaybookRun> {
    const hook = options.onOutput;
    let hooked: Promise<void> | undefined;
    writeInventory(hostVars);
    fs.rmSync(path.join(root, 'summary.json'), { force: true });
    const started = Date.now();
    // As the docs print it: `cd ansible && ansible-playbook -i <inventory> rollout.yml`, so that ansible.cfg is
    // read from the working directory (no ANSIBLE_CONFIG).
    const child = spawn('ansible-playbook', ['-i', inventory, name, '-e', JSON.stringify(extraVars)], {
      cwd: ANSIBLE_DIR,
      env: ansibleEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: close() ends a run a timed-out test left (ansible's workers and ssh with it).
      detached: true,
    });
    running.add(child);
    let stdout = '';
    let stderr = '';
    const logFile = path.join(root, `${name}-${started}.log`);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      fs.appendFileSync(logFile, d);
      // The hook runs once, while the playbook goes on (e.g. a host becomes unreachable mid-rollout).
      if (hook && !hooked && hook.when.test(stdout)) hooked = Promise.resolve().then(hook.run);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      fs.appendFileSync(logFile, d);
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    running.delete(child);
    const ms = Date.now() - started;
    await hooked;
    return { code, stdout, stderr, ms, hooked: hooked !== undefined };
  }

  const prefix = (h: FleetHost) => path.join(h.home, '.local/pm2-release');
  const configPath = (h: FleetHost) => path.join(h.home, 'pm2-release/pm2-release.config.json');
  const asHost = (h: FleetHost, argv: string[]) => [
    'ip',
    'netns',
    'exec',
    h.ns,
    'runuser',
    '-u',
    h.user,
    '--',
    'env',
    `HOME=${h.home}`,
    'PATH=/usr/local/bin:/usr/bin:/bin',
    ...argv,
  ];
  function exec(h: FleetHost, argv: string[]) {
    const full = asHost(h, argv);
    const r = spawnSync(full[0], full.slice(1), { encoding: 'utf8', cwd: '/', timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  function cli<T>(h: FleetHost, ...args: string[]) {
    const argv = asHost(h, [path.join(prefix(h), 'bin/pm2-release'), '--config', configPath(h), ...args, '--json']);
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', cwd: '/', timeout: 60_000 });
    let json = {} as T;
    try {
      json = JSON.parse(r.stdout) as T;
    } catch {
      /* the caller asserts on it */
    }
    return { code: r.status, json, stderr: r.stderr };
  }

  async function startSshd(h: FleetHost): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', h.ns, '/usr/sbin/sshd', '-D', '-f', h.sshdConfig, '-E', path.join(root, `sshd-${h.name}.log`)], {
      stdio: 'ignore',
    });
    h.sshd = child;
    log(`sshd for ${h.name}: pid ${child.pid}`);
    if (!(await waitPort(h.ip, 22, 10_000))) throw new Error(`sshd of ${h.name} does not listen on ${h.ip}:22 (see ${root}/sshd-${h.name}.log)`);
  }

  /** Ends the controller's SSH master connection to a host, if one is open (through its control socket). */
  function closeMaster(h: FleetHost): void {
    spawnSync('ssh', ['-O', 'exit', '-o', `ControlPath=${controlPath}`, '-o', 'BatchMode=yes', `${h.user}@${h.ip}`], { stdio: 'ignore', timeout: 10_000 });
  }

  async function stopSshd(h: FleetHost): Promise<void> {
    const child = h.sshd;
    h.sshd = undefined;
    if (!child?.pid || child.exitCode !== null) return closeMaster(h);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))]);
    if (alive(child.pid)) child.kill('SIGKILL');
    // An open master would keep the host reachable through the session sshd already forked for it.
    closeMaster(h);
  }

  async function close(): Promise<void> {
    for (const child of running) {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const h of hosts) await stopSshd(h).catch(() => undefined);
    for (const h of hosts) {
      // PM2 first (it stops the apps and the router), as the host's user, inside its namespace.
      const pm2 = path.join(prefix(h), 'lib/node_modules/pm2-release/node_modules/pm2/bin/pm2');
      const pidFile = path.join(h.home, '.pm2/pm2.pid');
      if (fs.existsSync(pm2) && fs.existsSync(pidFile)) {
        const argv = asHost(h, ['node', pm2, 'kill']);
        spawnSync(argv[0], argv.slice(1), { stdio: 'ignore', timeout: 30_000, cwd: '/' });
      }
      try {
        const pid = Number(fs.readFileSync(pidFile, 'utf8'));
        if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        /* no daemon */
      }
      // Whatever is left of this host's own user (an app PM2 did not reap): by pid, the user is ours alone.
      for (let round = 0; round < 3; round++) {
        const left = h.uid > 0 ? processesOf(h.uid) : [];
        if (left.length === 0) break;
        for (const pid of left) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      tryRun(['ip', 'netns', 'del', h.ns]);
      tryRun(['userdel', h.user]);
    }
    tryRun(['ip', 'link', 'del', bridge]);
    fs.rmSync(root, { recursive: true, force: true });
  }

  try {
    // The network: a bridge for the controller, one namespace per host behind a veth.
    sh(['ip', 'link', 'add', bridge, 'type', 'bridge']);
    sh(['ip', 'addr', 'add', `10.77.${net3}.1/24`, 'dev', bridge]);
    sh(['ip', 'link', 'set', bridge, 'up']);
    sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key]);
    sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', path.join(root, 'host_key')]);
    fs.mkdirSync(path.join(root, 'keys'));
    fs.mkdirSync('/run/sshd', { recursive: true });
    for (const [i, name] of names.entries()) {
      const h: FleetHost = {
        name,
        ns: `p2rf${tag}${name}`,
        ip: `10.77.${net3}.${11 + i}`,
        user: `p2rf${tag}${name}`,
        uid: -1,
        home: path.join(root, name),
        sshdConfig: path.join(root, `sshd-${name}.conf`),
      };
      hosts.push(h);
      sh(['ip', 'netns', 'add', h.ns]);
      sh(['ip', 'link', 'add', `p2rf${tag}v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      sh(['ip', 'link', 'set', `p2rf${tag}v${i}`, 'master', bridge, 'up']);
      sh(['ip', '-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0']);
      sh(['ip', '-n', h.ns, 'link', 'set', 'eth0', 'up']);
      sh(['ip', '-n', h.ns, 'link', 'set', 'lo', 'up']);
      sh(['useradd', '-m', '-d', h.home, '-s', '/bin/bash', h.user]);
      // '*' instead of useradd's locked '!': sshd without PAM refuses a locked account even with a key.
      sh(['usermod', '-p', '*', h.user]);
      h.uid = Number(sh(['id', '-u', h.user]));
      fs.copyFileSync(`${key}.pub`, path.join(root, 'keys', h.user));
      // The origin is owned by root: the host's git must accept it; user.* for the workspace's reflog.
      fs.writeFileSync(path.join(h.home, '.gitconfig'), '[safe]\n\tdirectory = *\n[user]\n\tname = fleet host\n\temail = host@example.invalid\n');
      sh(['chown', '-R', `${h.user}:`, h.home]);
      fs.writeFileSync(
        h.sshdConfig,
        [
          `ListenAddress ${h.ip}:22`,
          `HostKey ${path.join(root, 'host_key')}`,
          `AuthorizedKeysFile ${path.join(root, 'keys')}/%u`,
          `AllowUsers ${h.user}`,
          'StrictModes no',
          'UsePAM no',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          `PidFile ${path.join(root, `sshd-${name}.pid`)}`,
          'Subsystem sftp internal-sftp',
          'LogLevel ERROR',
          '',
        ].join('\n'),
      );
      await startSshd(h);
    }

    // The origin: a bare repo every host clones and fetches from, holding the example app as frontend/.
    fs.mkdirSync(source);
    fs.cpSync(EXAMPLE_APP, path.join(source, 'frontend'), { recursive: true, filter: (src) => !src.includes('node_modules') });
    fs.writeFileSync(path.join(source, '.gitignore'), 'node_modules/\n.env*\n');
    sh(['git', 'init', '-q', '--bare', '-b', 'main', fleet.origin]);
    git('init', '-q', '-b', 'main');
    git('config', 'commit.gpgsign', 'false');
    git('remote', 'add', 'origin', fleet.origin);
    commit('v1');

    tarball = fleet.tarball = packOffline(root);
    sh(['chmod', '-R', 'a+rX', fleet.origin, tarball]);
    writeInventory();
    return fleet;
  } catch (err) {
    await close();
    throw err;
  }
}

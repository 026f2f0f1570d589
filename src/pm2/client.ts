/**
 * Everything that talks to PM2 goes through here. The daemon is the one of the `pm2` binary operators run
 * (the one on PATH, the one the VM's systemd unit runs): pm2-release talks to it over its RPC socket with
 * that installation's own client (daemon-socket.ts), one connection per process, and falls back to the
 * `pm2` CLI, with the reason logged, where it cannot (no daemon yet: the CLI starts the first one, as
 * `pm2 start` does; a pm2 outside 5.x–7.x; PM2_RELEASE_PM2_TRANSPORT=cli). Outputs that carry the apps'
 * environments (the process list) are parsed here and never logged or returned whole: callers get the
 * fields they need.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { CommandFailure, run } from '../exec.js';
import { EnvironmentError } from '../errors.js';
import type { Logger, Redactor } from '../log.js';
import type { AppDefinition } from '../release/store.js';
import type { RunningRouter } from './router-drift.js';
import { DaemonSocket, SocketCallFailed, SocketUnavailable, type ProcessEvent, type SocketStartSpec } from './daemon-socket.js';

export interface Pm2Process {
  pmId: number;
  name: string;
  pid: number;
  status: string;
  cwd: string;
  restarts: number;
  /** PM2's exec_mode: fork_mode or cluster_mode. */
  execMode: string;
  uptimeSince?: number;
  releaseId?: string;
  releaseSha?: string;
  /** Values of the env keys the Pm2 instance was asked to expose (the app's port variable): never secrets. */
  vars: Record<string, string>;
}

/** What we need to start an app again exactly as it ran (the revert path). Holds env values: never log it. */
export interface Pm2Snapshot {
  name: string;
  script: string;
  args: string[];
  cwd: string;
  interpreter?: string;
  env: Record<string, string>;
}

/**
 * State shared by the instances withEnv() makes (they talk to the same daemon). The list is reused briefly
 * between mutations (over the CLI a `pm2 jlist` costs a Node start; over the socket a round trip).
 */
interface JlistCache {
  at: number;
  data?: RawProcess[];
  /** The open connection to the daemon's socket (or the attempt in flight). */
  socket?: Promise<DaemonSocket | undefined>;
  /** Set once the socket could not be used: the reason, logged once; the CLI is used from then on. */
  socketUnavailable?: string;
  /** Closes an idle connection (a long-running `serve` makes a context per deploy). */
  idle?: NodeJS.Timeout;
  /** Operations in flight over the socket: it is closed for idleness only when none is. */
  inflight?: number;
  /** Set once a daemon was seen running: from then on, a vanished daemon is an error, never re-spawned. */
  sawDaemon?: boolean;
  /** The pid of that daemon. */
  daemonPid?: number;
}
const JLIST_TTL_MS = 1_000;
/** An open connection with no call for this long is closed; the next call opens one again (~10 ms). */
const SOCKET_IDLE_MS = 5_000;

export interface Pm2Options {
  /** Shared by the instances withEnv() makes: they talk to the same daemon. */
  cache?: JlistCache;
  /** Environment for the pm2 CLI (PM2_HOME, PATH). */
  env: Record<string, string | undefined>;
  logger: Logger;
  redactor?: Redactor;
  bin?: string;
  /** Env keys whose values processes() reports (non-secret, e.g. the port variable). */
  exposeEnv?: string[];
}

/**
 * The pm2 binary: `PM2_RELEASE_PM2` when set, else `pm2` on PATH (the one systemd runs; a CLI/daemon
 * version mismatch makes PM2 print warnings), else the copy bundled with pm2-release.
 */
export function resolvePm2Bin(env: Record<string, string | undefined>): string {
  if (env.PM2_RELEASE_PM2) return env.PM2_RELEASE_PM2;
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'pm2');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      /* keep looking */
    }
  }
  return bundledPm2Bin();
}

export function bundledPm2Bin(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('pm2/package.json')), 'bin', 'pm2');
}

/** PM2_HOME as PM2 computes it (lib/paths.js): $PM2_HOME, else $HOME/.pm2. */
export function pm2Home(env: Record<string, string | undefined>): string {
  return env.PM2_HOME ?? path.join(env.HOME ?? os.homedir(), '.pm2');
}

export class Pm2 {
  readonly bin: string;
  private readonly cache: JlistCache;
  constructor(private readonly opts: Pm2Options) {
    this.bin = opts.bin ?? resolvePm2Bin(opts.env);
    this.cache = opts.cache ?? { at: 0 };
  }

  /** The same daemon, with another environment for the CLI (and so for the apps it starts). */
  withEnv(env: Record<string, string | undefined>): Pm2 {
    return new Pm2({ ...this.opts, env, bin: this.bin, cache: this.cache });
  }

  get home(): string {
    return pm2Home(this.opts.env);
  }
  get dumpPath(): string {
    return path.join(this.home, 'dump.pm2');
  }

  /** Which way to the daemon: the socket unless PM2_RELEASE_PM2_TRANSPORT=cli. */
  get transport(): 'socket' | 'cli' {
    return this.opts.env.PM2_RELEASE_PM2_TRANSPORT === 'cli' || this.cache.socketUnavailable ? 'cli' : 'socket';
  }

  /**
   * The connection to the daemon's socket, opened on first use; undefined when there is no daemon (reads
   * see no processes; a start goes through the CLI, which starts the daemon) or the socket cannot be used.
   */
  private async socket(): Promise<DaemonSocket | undefined> {
    if (this.transport === 'cli') return undefined;
    const open = await this.cache.socket;
    if (open?.usable) return open;
    if (!this.daemonRunning()) return undefined;
    this.cache.socket = DaemonSocket.open(this.bin, this.home).then(
      (s) => {
        this.noteDaemon(undefined, false);
        return s;
      },
      (err: unknown) => {
        if (!(err instanceof SocketUnavailable)) throw err;
        // A daemon that vanished between the check and the connection is not a reason to give up the socket.
        if (!this.daemonRunning()) return undefined;
        this.cache.socketUnavailable = err.message;
        this.opts.logger.warn(`talking to PM2 through its CLI (a process per call): ${err.message}`);
        return undefined;
      },
    );
    return this.cache.socket;
  }

  /**
   * PM2's process events as they happen (its bus: exit, restart, online, …), for processes named `name`.
   * Resolves with the unsubscribe; undefined where the socket cannot be used (the caller polls instead).
   */
  async watch(name: string, onEvent: (e: ProcessEvent) => void): Promise<(() => void) | undefined> {
    const s = await this.socket().catch(() => undefined);
    if (!s) return undefined;
    try {
      return await s.watch((e) => {
        if (e.name === name) onEvent(e);
      });
    } catch (err) {
      this.opts.logger.debug(`PM2's bus is not available (${(err as Error).message}): polling the process list`);
      return undefined;
    }
  }

  /** Closes the connection to the daemon (a finished process does not wait for it: it is unref'd). */
  async close(): Promise<void> {
    clearTimeout(this.cache.idle);
    const pending = this.cache.socket;
    this.cache.socket = undefined;
    const s = await pending?.catch(() => undefined);
    await s?.close();
  }

  /**
   * One PM2 operation: over the socket when it is open, else through the CLI. A call the daemon did not
   * answer because it went away is PM2_DAEMON_GONE, like a CLI call that found no daemon.
   */
  private async op<T>(command: string, viaSocket: (s: DaemonSocket) => Promise<T>, viaCli: () => Promise<T>): Promise<T> {
    this.ensureDaemonNotGone();
    clearTimeout(this.cache.idle);
    this.cache.inflight = (this.cache.inflight ?? 0) + 1;
    let socket: DaemonSocket | undefined;
    try {
      socket = await this.socket();
    } catch (err) {
      this.cache.inflight--;
      throw err;
    }
    if (!socket) {
      this.cache.inflight--;
      return viaCli();
    }
    try {
      return await viaSocket(socket);
    } catch (err) {
      if (!(err instanceof SocketCallFailed)) throw err;
      // A daemon that closed the connection is on its way out (`pm2 kill` stops the apps, then exits; systemd
      // stopping the unit, the same): give it a moment to be gone, so the failure says what happened.
      for (let i = 0; err.connectionLost && i < 50 && this.daemonRunning(); i++) await new Promise((r) => setTimeout(r, 100));
      this.noteDaemon(command, false);
      this.ensureDaemonNotGone();
      throw new EnvironmentError('PM2_FAILED', `${err.message}`, {
        phase: 'switch',
        hint: `check the PM2 daemon: PM2_HOME=${this.home} ${this.bin} status`,
        cause: err,
      });
    } finally {
      this.noteDaemon(command, false);
      this.cache.inflight--;
      clearTimeout(this.cache.idle);
      if (this.cache.inflight === 0) {
        this.cache.idle = setTimeout(() => void this.close(), SOCKET_IDLE_MS);
        this.cache.idle.unref();
      }
    }
  }

  private async pm2(args: string[], extraEnv?: Record<string, string | undefined>, baseEnv?: Record<string, string | undefined>) {
    this.ensureDaemonNotGone();
    try {
      return await run([this.bin, ...args], {
        cwd: os.tmpdir(),
        logger: this.opts.logger,
        baseEnv: baseEnv ?? this.opts.env,
        env: extraEnv,
        redactor: this.opts.redactor,
        timeoutMs: 60_000,
      }).finally(() => this.noteDaemon(args[0]));
    } catch (err) {
      if (err instanceof CommandFailure)
        throw new EnvironmentError('PM2_FAILED', `pm2 ${args[0]} failed: ${err.reason}${err.tail ? ` (${lastLine(err.tail)})` : ''}`, {
          phase: 'switch',
          hint: `check the PM2 daemon: PM2_HOME=${this.home} ${this.bin} status`,
          cause: err,
        });
      throw err;
    }
  }

  /**
   * After each command: remember the daemon we talk to. If its pid changed, the daemon died while the
   * command ran and the command spawned a new, empty one (the check before it cannot close that race). A
   * daemon systemd started (its cgroup is the pm2 unit's) is left alone; one our command started is
   * stopped again, by its pid, and the operation fails like any vanished daemon. Over the socket nothing of
   * ours can start a daemon (`spawned` false): a new pid is someone else's daemon, only noted as a change.
   */
  private noteDaemon(command: string | undefined, spawned = true): void {
    const pid = this.daemonPid();
    if (pid === undefined) return;
    if (this.cache.daemonPid === undefined || !this.cache.sawDaemon) {
      this.cache.sawDaemon = true;
      this.cache.daemonPid = pid;
      return;
    }
    if (pid === this.cache.daemonPid) return;
    if (!spawned) {
      this.cache.daemonPid = -1;
      return;
    }
    const cgroup = (() => {
      try {
        return fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      } catch {
        return '';
      }
    })();
    // A `pm2 save` that spawned the new daemon saved its empty list: PM2 copied the real dump to .bak first.
    if (command === 'save') {
      try {
        fs.copyFileSync(`${this.dumpPath}.bak`, this.dumpPath);
      } catch {
        /* no backup to restore */
      }
    }
    if (!/pm2-[^/\s]*\.service/.test(cgroup)) {
      this.opts.logger.warn(`the PM2 daemon was gone and a pm2 command started a new one (pid ${pid}): stopping it`);
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    this.cache.daemonPid = -1; // never matches again: every later command fails as PM2_DAEMON_GONE
  }

  private daemonPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8'));
      if (pid > 0 && this.daemonRunning()) return pid;
    } catch {
      /* none */
    }
    return undefined;
  }

  /**
   * Every pm2 CLI command spawns a daemon when none answers (lib/Client.js). If the daemon we were talking
   * to is gone (systemd stopped it, it crashed), a new one would start outside systemd with an empty list:
   * fail instead, and let the next run recover once PM2 is back.
   */
  private ensureDaemonNotGone(): void {
    if (this.cache.sawDaemon && (this.cache.daemonPid === -1 || !this.daemonRunning()))
      throw new EnvironmentError('PM2_DAEMON_GONE', `the PM2 daemon (PM2_HOME ${this.home}) stopped during the operation: not starting a new one`, {
        phase: 'switch',
        hint: 'bring PM2 back (`sudo systemctl start pm2-<user>` or `pm2 resurrect`), then run the command again: it recovers what was interrupted',
      });
  }

  /** `pm2 jlist`, parsed defensively (PM2 may print warnings around the JSON). Raw entries hold env values. */
  async jlistRaw(opts: { fresh?: boolean } = {}): Promise<RawProcess[]> {
    // Asking a stopped daemon for its list would start a new one outside systemd: no daemon, no processes
    // (unless the daemon vanished under us, which is an error).
    this.ensureDaemonNotGone();
    if (!this.daemonRunning()) return [];
    if (!opts.fresh && this.cache.data && Date.now() - this.cache.at < JLIST_TTL_MS) return this.cache.data;
    const data = await this.op(
      'jlist',
      async (s) => (await s.list()).filter((p): p is RawProcess => typeof p === 'object' && p !== null),
      async () => parseJlist((await this.pm2(['jlist'])).stdout),
    );
    this.cache.at = Date.now();
    this.cache.data = data;
    return data;
  }

  /** Any command that changes the process list makes the cached list stale. */
  private invalidate(): void {
    this.cache.data = undefined;
  }

  async list(opts: { fresh?: boolean } = {}): Promise<Pm2Process[]> {
    return (await this.jlistRaw(opts)).map((p) => toProcess(p, this.opts.exposeEnv ?? []));
  }

  /** The app's processes. Pollers (health gates) pass `fresh`: they watch for changes. */
  async processes(name: string, opts: { fresh?: boolean } = {}): Promise<Pm2Process[]> {
    return (await this.list(opts)).filter((p) => p.name === name);
  }

  /**
   * The routers PM2 runs (any app's: a process whose script is a pm2-release `router/main.js`), with their
   * definition. Only the router's own arguments are read: never an env.
   */
  async routers(opts: { fresh?: boolean } = {}): Promise<RunningRouter[]> {
    return (await this.jlistRaw(opts))
      .filter((p) => /(^|\/)router\/main\.js$/.test(String(p.pm2_env?.pm_exec_path ?? '')))
      .map((p) => {
        const e = p.pm2_env ?? {};
        return {
          pmId: Number(p.pm_id ?? -1),
          pid: Number(p.pid ?? 0),
          name: String(p.name ?? ''),
          status: String(e.status ?? 'unknown'),
          script: String(e.pm_exec_path ?? ''),
          args: Array.isArray(e.args) ? e.args.map(String) : typeof e.args === 'string' ? e.args.split(' ') : [],
          execMode: String(e.exec_mode ?? ''),
        };
      });
  }

  /** Everything needed to start this app again as it runs now. */
  async snapshot(name: string): Promise<Pm2Snapshot | undefined> {
    const raw = (await this.jlistRaw()).find((p) => p.name === name);
    if (!raw) return undefined;
    const e = raw.pm2_env ?? {};
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(e.env ?? {})) if (typeof v === 'string') env[k] = v;
    this.opts.redactor?.addSecretEnv(env);
    return {
      name,
      script: String(e.pm_exec_path ?? ''),
      args: Array.isArray(e.args) ? e.args.map(String) : typeof e.args === 'string' ? [e.args] : [],
      cwd: String(e.pm_cwd ?? ''),
      interpreter: typeof e.exec_interpreter === 'string' ? e.exec_interpreter : undefined,
      env,
    };
  }

  /**
   * Starts an app the way the seed runbook does (`FRONT_PORT=3001 pm2 start npm --name X -- run start`
   * from the release directory): its env is the pm2 CLI's environment, which PM2 copies into the app.
   */
  async start(app: AppDefinition, opts: { alongside?: boolean } = {}): Promise<void> {
    this.invalidate();
    const spec: SocketStartSpec = { ...app, env: definedEnv({ ...this.opts.env, ...app.env }) };
    await this.op<unknown>(
      'start',
      // Over the socket every start is a new process (the CLI's `-f`): PM2 keeps a second app of the same name.
      (s) => s.start(spec),
      () => {
        const args = ['start', app.script, '--name', app.name, '--cwd', app.cwd];
        if (app.execMode === 'cluster') args.push('-i', String(app.instances ?? 1));
        if (app.killTimeoutMs !== undefined) args.push('--kill-timeout', String(app.killTimeoutMs));
        if (app.nodeArgs?.length) args.push('--node-args', app.nodeArgs.join(' '));
        // PM2 refuses a second app with the same name unless forced; the cluster switch wants exactly that.
        if (opts.alongside) args.push('-f');
        // A trailing `--` with no arguments makes PM2 look for ecosystem.config.js.
        return this.pm2(app.args.length ? [...args, '--', ...app.args] : args, app.env);
      },
    );
    this.invalidate();
  }

  /** Starts an app again from a snapshot (the revert path), with exactly the environment it had. */
  async startSnapshot(snap: Pm2Snapshot): Promise<void> {
    this.invalidate();
    // The snapshot env replaces ours, but PM2_HOME and PATH must still point at this daemon and its node.
    const keep = { PM2_HOME: this.opts.env.PM2_HOME, PATH: this.opts.env.PATH };
    await this.op<unknown>(
      'start',
      (s) =>
        s.start({
          name: snap.name,
          script: snap.script,
          args: snap.args,
          cwd: snap.cwd,
          env: definedEnv({ ...snap.env, ...keep }),
        }),
      () => {
        const args = ['start', snap.script, '--name', snap.name, '--cwd', snap.cwd];
        if (snap.args.length) args.push('--', ...snap.args);
        return this.pm2(args, keep, snap.env);
      },
    );
    this.invalidate();
  }

  async delete(nameOrId: string | number): Promise<void> {
    this.invalidate();
    await this.op<unknown>(
      'delete',
      (s) => s.delete(nameOrId),
      () => this.pm2(['delete', String(nameOrId)]),
    );
    this.invalidate();
  }

  /** `pm2 save`, then the dump (it holds every app's env: tokens, passwords) made readable by its owner only. */
  async save(): Promise<void> {
    await this.op<unknown>(
      'save',
      (s) => s.save(this.dumpPath),
      () => this.pm2(['save', '--force']),
    );
    for (const f of [this.dumpPath, `${this.dumpPath}.bak`]) {
      await fsp.chmod(f, 0o600).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
  }

  /** Puts `dump.pm2.bak` (the dump before the last save) back as `dump.pm2`. */
  async restorePreviousDump(): Promise<void> {
    await fsp.copyFile(`${this.dumpPath}.bak`, this.dumpPath);
    await fsp.chmod(this.dumpPath, 0o600);
  }

  /**
   * The daemon's version: asked over the socket; through the CLI, read from the "In memory PM2 version: X"
   * PM2 prints when it differs from the CLI's (lib/binaries/CLI.js), else the CLI's own.
   */
  async daemonVersion(): Promise<string | undefined> {
    return this.op(
      'ping',
      (s) => s.daemonVersion(),
      async () => {
        const { stdout } = await this.pm2(['ping']);
        const m = /In memory PM2 version:\s*(?:\x1b\[[0-9;]*m)*([0-9][^\s\x1b]*)/.exec(stdout);
        return m ? m[1] : this.version();
      },
    );
  }

  /** The interpreter PM2 runs the app with (e.g. /usr/bin/node). */
  async interpreter(name: string): Promise<string | undefined> {
    const raw = (await this.jlistRaw()).find((p) => p.name === name);
    const i = raw?.pm2_env?.exec_interpreter;
    return typeof i === 'string' && i !== 'none' ? i : undefined;
  }

  /** True when a daemon for this PM2_HOME is alive (checked without starting one). */
  daemonRunning(): boolean {
    try {
      const pid = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8'));
      if (!(pid > 0)) return false;
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  }

  /**
   * The CLI's version, read from the package.json beside the binary: `pm2 --version` would connect to (and
   * so start) a daemon, which must not happen outside systemd just to answer a question.
   */
  async version(): Promise<string> {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(fs.realpathSync(this.bin)), '..', 'package.json'), 'utf8')) as {
        name?: unknown;
        version?: unknown;
      };
      if (pkg.name === 'pm2' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      /* an unusual install: ask the binary */
    }
    if (!this.daemonRunning()) throw new Error(`cannot read the version of ${this.bin} without starting a daemon`);
    const { stdout } = await this.pm2(['--version']);
    return lastLine(stdout).trim();
  }
}

export interface RawProcess {
  pid?: number;
  name?: string;
  pm_id?: number;
  pm2_env?: {
    status?: string;
    pm_cwd?: string;
    pm_exec_path?: string;
    exec_interpreter?: string;
    exec_mode?: string;
    args?: unknown;
    restart_time?: number;
    pm_uptime?: number;
    env?: Record<string, unknown>;
    [key: string]: unknown;
  };
}

export function parseJlist(stdout: string): RawProcess[] {
  const trimmed = stdout.trim();
  const attempts = [trimmed];
  // Warnings (e.g. "In-memory PM2 is out-of-date") can precede or follow the JSON array.
  const start = trimmed.indexOf('[');
  const end = trimmed.lastIndexOf(']');
  if (start >= 0 && end > start) attempts.push(trimmed.slice(start, end + 1));
  for (const line of trimmed.split('\n')) if (line.trim().startsWith('[')) attempts.push(line.trim());
  for (const text of attempts) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (Array.isArray(parsed)) return parsed.filter((p): p is RawProcess => typeof p === 'object' && p !== null);
    } catch {
      /* next attempt */
    }
  }
  // Never echo the output: it holds environments.
  throw new EnvironmentError('PM2_OUTPUT', 'could not parse `pm2 jlist` output', {
    phase: 'status',
    hint: 'run `pm2 jlist` by hand and check for errors from the daemon',
  });
}

function toProcess(raw: RawProcess, expose: string[]): Pm2Process {
  const e = raw.pm2_env ?? {};
  const env = e.env ?? {};
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const vars: Record<string, string> = {};
  for (const k of expose) {
    const v = str(env[k]) ?? str(e[k]);
    if (v !== undefined) vars[k] = v;
  }
  return {
    vars,
    pmId: Number(raw.pm_id ?? -1),
    name: String(raw.name ?? ''),
    pid: Number(raw.pid ?? 0),
    status: String(e.status ?? 'unknown'),
    cwd: String(e.pm_cwd ?? ''),
    restarts: Number(e.restart_time ?? 0),
    execMode: String(e.exec_mode ?? ''),
    uptimeSince: typeof e.pm_uptime === 'number' ? e.pm_uptime : undefined,
    releaseId: str(env.RELEASE_ID) ?? str(e.RELEASE_ID),
    releaseSha: str(env.RELEASE_SHA) ?? str(e.RELEASE_SHA),
  };
}

/** An environment without its unset keys (PM2 would store them as the string "undefined"). */
function definedEnv(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

function lastLine(text: string): string {
  const lines = text
    .replace(/\x1b\[[0-9;]*m/g, '')
    .trim()
    .split('\n');
  return lines[lines.length - 1] ?? '';
}

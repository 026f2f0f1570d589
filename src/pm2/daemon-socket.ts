/**
 * PM2's daemon over its own RPC socket (`$PM2_HOME/rpc.sock`), in this process, with the client the PM2
 * installation in use ships (`lib/Client.js` and `lib/Common.js` of the package beside the `pm2` binary we
 * resolved, so the client matches the daemon operators run: 5.x to 7.x). One connection per pm2-release
 * process instead of one `pm2` CLI process (a Node start, PM2's modules, a connection: ~250–350 ms of CPU)
 * per call.
 *
 * It never starts a daemon: it connects only when `pm2.pid` names a live process and the socket exists, and
 * every call has a deadline (PM2's client would wait forever for a daemon that died mid-call). What PM2's CLI
 * does around each RPC is done here the same way: `start` resolves the app with PM2's own
 * `Common.resolveAppAttributes` then calls `prepare`; `delete` resolves the name to ids; `save` writes the
 * dump as `pm2 save` does (the list minus modules, the previous dump kept as `.bak`), but atomically and 0600.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { AppDefinition } from '../release/store.js';

/** An error PM2 handed back (an Error, a string, or a plain object), as one line. */
function describe(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0];
  if (typeof err === 'string') return err.split('\n')[0];
  try {
    return JSON.stringify(err);
  } catch {
    return 'unknown error';
  }
}

/** Why the socket cannot be used (the caller falls back to the CLI and logs this). */
export class SocketUnavailable extends Error {}

/** The daemon stopped answering (gone, or hung): the caller decides whether that is PM2_DAEMON_GONE. */
export class SocketCallFailed extends Error {
  constructor(
    readonly method: string,
    message: string,
    readonly timedOut = false,
    /** The daemon closed the connection (it is going away: `pm2 kill`, systemd stopping it, a crash). */
    readonly connectionLost = false,
  ) {
    super(message);
  }
}

/**
 * The app to start: pm2-release's own definition (the CLI's flags, as PM2's config keys below), whose `env`
 * is the whole environment of the app: nothing of this process's own environment is merged in.
 */
export type SocketStartSpec = AppDefinition;

interface RpcClient {
  call(method: string, arg: unknown, cb: (err: unknown, res?: unknown) => void): void;
}
interface Pm2ClientInstance {
  client?: RpcClient;
  client_sock?: {
    socks?: { unref?: () => void }[];
    close?: () => void;
    set?: (key: string, value: unknown) => void;
    on?: (e: string, f: (...a: unknown[]) => void) => void;
  };
  launchRPC(cb: (err?: unknown) => void): void;
  disconnectRPC(cb: (err?: unknown) => void): void;
  launchBus(cb: (err: unknown, bus: BusEmitter, sock: BusSocket) => void): void;
  /** The bus connection launchBus opened (set before it connects). */
  sub_sock?: BusSocket;
}
interface BusEmitter {
  on(event: string, f: (data: unknown) => void): void;
}
interface BusSocket {
  socks?: { unref?: () => void }[];
  close?: () => void;
  set?: (key: string, value: unknown) => void;
  on?: (e: string, f: (...a: unknown[]) => void) => void;
}

/** One of PM2's `process:event`s: what the daemon did to a process, as it happened. */
export interface ProcessEvent {
  /** exit, restart, online, start, stop, delete, restart overlimit, … */
  event: string;
  pmId: number;
  name: string;
  /** An operator's (or pm2-release's) command, not a crash. */
  manually: boolean;
  status: string;
  restarts: number;
}

/** A `process:event` payload (PM2's Utility.formatCLU: the process's pm2_env, flattened). */
export function toProcessEvent(data: unknown): ProcessEvent | undefined {
  if (!data || typeof data !== 'object') return undefined;
  const d = data as { event?: unknown; manually?: unknown; process?: Record<string, unknown> };
  const p = d.process ?? {};
  if (typeof d.event !== 'string' || typeof p.pm_id !== 'number') return undefined;
  return {
    event: d.event,
    pmId: p.pm_id,
    name: typeof p.name === 'string' ? p.name : '',
    manually: d.manually === true,
    status: typeof p.status === 'string' ? p.status : '',
    restarts: typeof p.restart_time === 'number' ? p.restart_time : 0,
  };
}
interface Pm2Modules {
  version: string;
  conf: Record<string, unknown>;
  Client: new (opts: Record<string, unknown>) => Pm2ClientInstance;
  Common: {
    verifyConfs(conf: unknown): unknown;
    resolveAppAttributes(opts: { cwd: string; pm2_home: string }, conf: unknown): Record<string, unknown>;
  };
}

const CONNECT_TIMEOUT_MS = 3_000;

/** The PM2 package a `pm2` binary belongs to (`<pkg>/bin/pm2`), or a reason it is not one. */
export function pm2PackageOf(bin: string): { dir: string; version: string } | { unavailable: string } {
  let real: string;
  try {
    real = fs.realpathSync(bin);
  } catch {
    return { unavailable: `${bin} does not exist` };
  }
  const dir = path.resolve(path.dirname(real), '..');
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
    if (pkg.name !== 'pm2' || typeof pkg.version !== 'string') return { unavailable: `${real} is not inside a pm2 package` };
    const major = Number(pkg.version.split('.')[0]);
    if (!(major >= 5 && major <= 7)) return { unavailable: `pm2 ${pkg.version} (the socket client is used with pm2 5.x to 7.x)` };
    return { dir, version: pkg.version };
  } catch {
    return { unavailable: `${real} is not inside a pm2 package (no readable package.json)` };
  }
}

/** PM2's own modules, loaded once per package dir and PM2_HOME. */
const loaded = new Map<string, Pm2Modules>();
function loadModules(dir: string, version: string, home: string): Pm2Modules {
  const key = `${dir}\0${home}`;
  const hit = loaded.get(key);
  if (hit) return hit;
  const req = createRequire(path.join(dir, 'package.json'));
  // constants.js reads PM2_HOME when first loaded; PM2's API overrides its paths the same way for a pm2_home.
  const conf = { ...(req('./constants.js') as Record<string, unknown>), ...(req('./paths.js') as (home: string) => Record<string, unknown>)(home) };
  const modules: Pm2Modules = {
    version,
    conf,
    Client: req('./lib/Client.js') as Pm2Modules['Client'],
    Common: req('./lib/Common.js') as Pm2Modules['Common'],
  };
  loaded.set(key, modules);
  return modules;
}

/**
 * Runs `fn` with process.env set as the pm2 CLI's would be (PATH, for PM2's `which` of the script; PM2_SILENT
 * so PM2's helpers print nothing on our stdout), then restores it. PM2's helpers are synchronous.
 */
function withProcessEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved: Record<string, string | undefined> = {};
  for (const k of [...Object.keys(vars), 'PWD']) saved[k] = process.env[k];
  try {
    for (const [k, v] of Object.entries(vars)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

export class DaemonSocket {
  private closed = false;
  /** Why the connection ended under us (the daemon closed it), for the calls after. */
  private lost: string | undefined;
  private readonly pending = new Set<(reason: string) => void>();
  private constructor(
    private readonly modules: Pm2Modules,
    private readonly client: Pm2ClientInstance,
    readonly home: string,
  ) {
    // A daemon that goes away closes the connection: every call in flight fails now (not at its deadline),
    // and nothing re-dials (see open()).
    client.client_sock?.on?.('close', () => this.lose('the PM2 daemon closed the connection'));
    client.client_sock?.on?.('error', (err) => this.lose(`the connection to the PM2 daemon failed: ${describe(err)}`));
  }

  private lose(reason: string): void {
    this.lost ??= reason;
    for (const fail of [...this.pending]) fail(reason);
    this.pending.clear();
  }

  /** False once the daemon closed the connection or close() ran. */
  get usable(): boolean {
    return !this.closed && !this.lost;
  }

  /** The PM2 version whose client this is. */
  get clientVersion(): string {
    return this.modules.version;
  }

  /** Connects to the daemon of `home` through the client of the pm2 package of `bin`. Never starts a daemon. */
  static async open(bin: string, home: string): Promise<DaemonSocket> {
    const pkg = pm2PackageOf(bin);
    if ('unavailable' in pkg) throw new SocketUnavailable(pkg.unavailable);
    let modules: Pm2Modules;
    try {
      modules = withProcessEnv({ PM2_HOME: home, PM2_SILENT: 'true' }, () => loadModules(pkg.dir, pkg.version, home));
    } catch (err) {
      throw new SocketUnavailable(`cannot load PM2's client from ${pkg.dir}: ${(err as Error).message.split('\n')[0]}`);
    }
    const socketPath = typeof modules.conf.DAEMON_RPC_PORT === 'string' ? modules.conf.DAEMON_RPC_PORT : path.join(home, 'rpc.sock');
    if (!fs.existsSync(socketPath)) throw new SocketUnavailable(`no PM2 daemon socket at ${socketPath}`);
    let client: Pm2ClientInstance;
    try {
      // PM2_PROGRAMMATIC: PM2's client would otherwise print its banner on our stdout (and ask pm2.io for a
      // newer version) the first time it sees a PM2_HOME without its `touch` file.
      client = withProcessEnv(
        { PM2_HOME: home, PM2_SILENT: 'true', PM2_PROGRAMMATIC: 'true' },
        () => new modules.Client({ conf: modules.conf, daemon_mode: true }),
      );
    } catch (err) {
      throw new SocketUnavailable(`PM2's client failed to start: ${(err as Error).message.split('\n')[0]}`);
    }
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        try {
          client.client_sock?.close?.();
        } catch {
          /* never connected */
        }
        reject(new SocketUnavailable(`the PM2 daemon socket ${socketPath} did not accept a connection within ${CONNECT_TIMEOUT_MS} ms`));
      }, CONNECT_TIMEOUT_MS);
      client.launchRPC((err) => {
        clearTimeout(timer);
        if (err) reject(new SocketUnavailable(`cannot connect to ${socketPath}: ${describe(err)}`));
        else resolve();
      });
      // PM2's client re-dials a closed connection forever (axon's retry): a daemon that died would then keep
      // this process alive, and a new daemon's empty list could answer a call meant for the old one. No retry:
      // a lost connection is a lost daemon (the caller checks pm2.pid and says PM2_DAEMON_GONE).
      client.client_sock?.set?.('retry timeout', 0);
      // A socket file nobody listens on (a daemon killed without cleaning up): refused at once, not re-dialled.
      client.client_sock?.on?.('close', () => {
        clearTimeout(timer);
        reject(new SocketUnavailable(`the PM2 daemon socket ${socketPath} refused the connection`));
      });
    });
    // The connection must not keep a finished pm2-release process alive: each call holds a timer instead.
    for (const s of client.client_sock?.socks ?? []) s.unref?.();
    return new DaemonSocket(modules, client, home);
  }

  /** One RPC with a deadline. */
  call<T>(method: string, arg: unknown, timeoutMs: number): Promise<T> {
    if (this.closed || !this.client.client) return Promise.reject(new SocketCallFailed(method, `pm2 ${method}: the socket is closed`));
    if (this.lost) return Promise.reject(new SocketCallFailed(method, `pm2 ${method}: ${this.lost}`, false, true));
    const rpc = this.client.client;
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = () => {
        done = true;
        clearTimeout(timer);
        this.pending.delete(onLost);
      };
      const onLost = (reason: string) => {
        if (done) return;
        finish();
        reject(new SocketCallFailed(method, `pm2 ${method}: ${reason}`, false, true));
      };
      // The timer also keeps this process alive while it waits (the connection itself is unref'd).
      const timer = setTimeout(() => {
        if (done) return;
        finish();
        reject(new SocketCallFailed(method, `pm2 ${method}: no answer from the daemon within ${Math.round(timeoutMs / 1000)} s`, true));
      }, timeoutMs);
      this.pending.add(onLost);
      rpc.call(method, arg, (err, res) => {
        if (done) return;
        finish();
        if (err) reject(new SocketCallFailed(method, `pm2 ${method}: ${describe(err)}`));
        else resolve(res as T);
      });
    });
  }

  /** `pm2 jlist`: the daemon's list (entries hold the apps' environments: never log them). */
  list(timeoutMs = 15_000): Promise<unknown[]> {
    return this.call<unknown[]>('getMonitorData', {}, timeoutMs).then((l) => (Array.isArray(l) ? l : []));
  }

  /** The daemon's own version (`In memory PM2 version` of the CLI). */
  async daemonVersion(): Promise<string> {
    return String(await this.call<unknown>('getVersion', {}, 15_000));
  }

  /**
   * `pm2 start <script> --name … --cwd … [-i n] [--kill-timeout ms] [--node-args …] [-f] -- <args>`, as PM2's
   * CLI does it for a new app: verify, resolve (script on PATH, interpreter, exec mode), `prepare`.
   */
  async start(spec: SocketStartSpec, timeoutMs = 60_000): Promise<void> {
    const conf: Record<string, unknown> = {
      name: spec.name,
      script: spec.script,
      args: spec.args,
      cwd: spec.cwd,
      namespace: 'default',
      env: { ...spec.env },
    };
    if (spec.execMode === 'cluster') {
      conf.exec_mode = 'cluster_mode';
      conf.instances = spec.instances ?? 1;
    }
    if (spec.killTimeoutMs !== undefined) conf.kill_timeout = spec.killTimeoutMs;
    if (spec.nodeArgs?.length) conf.node_args = [...spec.nodeArgs];
    const resolved = withProcessEnv({ PATH: spec.env.PATH, PM2_HOME: this.home, PM2_SILENT: 'true' }, () => {
      const verified = this.modules.Common.verifyConfs(conf);
      if (verified instanceof Error) throw new SocketCallFailed('start', `pm2 start: ${verified.message}`);
      const app = (verified as unknown[])[0];
      if (!app) throw new SocketCallFailed('start', 'pm2 start: PM2 refused the app definition');
      return this.modules.Common.resolveAppAttributes({ cwd: spec.cwd, pm2_home: this.home }, app);
    });
    // PM2's helpers name the log and pid files from the PM2_HOME its constants were first loaded with (one
    // per process): in a process that drives more than one PM2_HOME (a library caller), that is the wrong
    // one. The same names (Common.prepareAppConf), in this daemon's home.
    const file = spec.name.replace(/[^a-zA-Z0-9\\.\\-]/g, '-');
    const dirOf = (key: string, fallback: string) => (typeof this.modules.conf[key] === 'string' ? this.modules.conf[key] : path.join(this.home, fallback));
    resolved.pm_out_log_path = path.join(dirOf('DEFAULT_LOG_PATH', 'logs'), `${file}-out.log`);
    resolved.pm_err_log_path = path.join(dirOf('DEFAULT_LOG_PATH', 'logs'), `${file}-error.log`);
    resolved.pm_pid_path = path.join(dirOf('DEFAULT_PID_PATH', 'pids'), `${file}.pid`);
    // The app's environment is exactly spec.env (the CLI's would be the CLI process's own environment, which
    // pm2-release sets to the same). PM2's helper merged this process's environment in (process.env of a
    // library caller: its tokens): replaced, not filtered.
    resolved.env = { ...spec.env, PM2_HOME: this.home };
    await this.call('prepare', resolved, timeoutMs);
  }

  /** `pm2 delete <name|id>`: every process of that name (or that id); an error when there is none. */
  async delete(nameOrId: string | number, timeoutMs = 60_000): Promise<void> {
    let ids: number[];
    if (typeof nameOrId === 'number' || /^\d+$/.test(nameOrId)) ids = [Number(nameOrId)];
    else {
      // PM2's Client.getProcessIdByName: by name, or by the full path of the script.
      const list = (await this.list()) as { pm_id?: number; pm2_env?: { name?: unknown; pm_exec_path?: unknown } }[];
      ids = list.filter((p) => p.pm2_env?.name === nameOrId || p.pm2_env?.pm_exec_path === path.resolve(nameOrId)).map((p) => Number(p.pm_id));
    }
    if (!ids.length) throw new SocketCallFailed('delete', `pm2 delete: process or namespace ${nameOrId} not found`);
    for (const id of ids) await this.call('deleteProcessId', id, timeoutMs);
  }

  /**
   * `pm2 save --force`: the process list (modules left out, as PM2 does) written to `dump.pm2`, the previous
   * dump kept as `dump.pm2.bak`; both written atomically with mode 0600 (the dump holds every app's env).
   */
  async save(dumpPath: string): Promise<void> {
    const list = (await this.list()) as { pm2_env?: Record<string, unknown> }[];
    const apps: Record<string, unknown>[] = [];
    for (const p of list) {
      const e = { ...(p.pm2_env ?? {}) };
      delete e.instances;
      delete e.pm_id;
      delete e.prev_restart_delay;
      if (!e.pmx_module) apps.push(e);
    }
    try {
      const previous = fs.readFileSync(dumpPath);
      await writeFileAtomic(`${dumpPath}.bak`, previous, { mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await writeFileAtomic(dumpPath, JSON.stringify(apps, null, 2), { mode: 0o600 });
  }

  /**
   * Subscribes to the daemon's bus (its pub socket, as `pm2 logs` and PM2's own tools do) and calls `onEvent`
   * for each process event from now on. Resolves with the unsubscribe once connected; rejects when the bus
   * does not answer within `timeoutMs`. Like the RPC connection, it never re-dials and never keeps the process alive.
   */
  async watch(onEvent: (e: ProcessEvent) => void, timeoutMs = 2_000): Promise<() => void> {
    if (!this.usable) throw new SocketCallFailed('launchBus', `pm2 launchBus: ${this.lost ?? 'the socket is closed'}`, false, !!this.lost);
    const pub = typeof this.modules.conf.DAEMON_PUB_PORT === 'string' ? this.modules.conf.DAEMON_PUB_PORT : path.join(this.home, 'pub.sock');
    if (!fs.existsSync(pub)) throw new SocketCallFailed('launchBus', `pm2 launchBus: no PM2 bus socket at ${pub}`);
    const sock = await new Promise<BusSocket>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.client.sub_sock?.close?.();
        reject(new SocketCallFailed('launchBus', `pm2 launchBus: ${pub} did not accept a connection within ${timeoutMs} ms`));
      }, timeoutMs);
      try {
        this.client.launchBus((err, bus, s) => {
          clearTimeout(timer);
          if (err) return reject(new SocketCallFailed('launchBus', `pm2 launchBus: ${describe(err)}`));
          bus.on('process:event', (data) => {
            const e = toProcessEvent(data);
            if (e) onEvent(e);
          });
          resolve(s);
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new SocketCallFailed('launchBus', `pm2 launchBus: ${describe(err)}`));
      }
      this.client.sub_sock?.set?.('retry timeout', 0);
    });
    for (const s of sock.socks ?? []) s.unref?.();
    return () => {
      try {
        sock.close?.();
      } catch {
        /* already closed */
      }
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1_000);
      try {
        this.client.disconnectRPC(() => {
          clearTimeout(timer);
          resolve();
        });
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}

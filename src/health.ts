/** Health: HTTP checks on loopback, PM2 stability, and waiting for a port to be released. */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface HttpCheck {
  url: string;
  expectStatus: number[];
}

export interface ProbeResult {
  url: string;
  ok: boolean;
  status?: number;
  error?: string;
}

/**
 * One GET on a fresh connection (no keep-alive pool: a pooled socket to the process we just replaced would
 * fail the check for the wrong reason), no redirects followed (a 301/302 is an answer), bounded by
 * `timeoutMs`.
 */
export function probe(check: HttpCheck, timeoutMs = 2_000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: Omit<ProbeResult, 'url'>) => {
      if (settled) return;
      settled = true;
      resolve({ url: check.url, ...r });
    };
    let url: URL;
    try {
      url = new URL(check.url);
    } catch {
      return done({ ok: false, error: 'bad URL' });
    }
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.get(url, { agent: false, timeout: timeoutMs, headers: { 'user-agent': 'pm2-release-health', connection: 'close' } }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done({ ok: check.expectStatus.includes(status), status });
    });
    req.on('timeout', () => {
      req.destroy();
      done({ ok: false, error: 'ETIMEDOUT' });
    });
    req.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, error: err.code ?? err.message }));
  });
}

export async function probeAll(checks: HttpCheck[], timeoutMs?: number): Promise<ProbeResult[]> {
  return Promise.all(checks.map((c) => probe(c, timeoutMs)));
}

export interface StabilitySample {
  /** online, errored, stopped, launching… as PM2 reports it; `missing` when the process is gone. */
  status: string;
  restarts: number;
}

export interface WaitHealthyOptions {
  checks: HttpCheck[];
  timeoutMs: number;
  settleMs: number;
  /** Samples the PM2 processes under test. */
  sample: () => Promise<StabilitySample[]>;
  signal?: AbortSignal;
  intervalMs?: number;
}

export interface HealthOutcome {
  ok: boolean;
  /** One line: why it is not healthy. */
  reason?: string;
  probes: ProbeResult[];
  elapsedMs: number;
}

/**
 * Healthy = every HTTP check answers an expected status, and then for `settleMs` the PM2 processes stay
 * online with no restart while the checks keep passing. A crash loop answers between restarts, which is
 * why a single good answer is not enough.
 */
export async function waitHealthy(opts: WaitHealthyOptions): Promise<HealthOutcome> {
  const started = Date.now();
  const interval = opts.intervalMs ?? 200;
  const deadline = started + opts.timeoutMs;
  let healthySince: number | undefined;
  let probes: ProbeResult[] = [];
  let reason = 'no answer yet';
  while (true) {
    if (opts.signal?.aborted) return { ok: false, reason: 'cancelled', probes, elapsedMs: Date.now() - started };
    const samples = await opts.sample();
    const bad = samples.find((s) => s.status !== 'online' && s.status !== 'launching');
    const restarted = samples.find((s) => s.restarts > 0);
    if (samples.length === 0 || bad) {
      reason = samples.length === 0 ? 'the PM2 process is gone' : `PM2 shows the app ${bad!.status}`;
      return { ok: false, reason, probes, elapsedMs: Date.now() - started };
    }
    if (restarted) {
      reason = `PM2 restarted the app ${restarted.restarts} time(s): it crashes after starting`;
      return { ok: false, reason, probes, elapsedMs: Date.now() - started };
    }
    probes = await probeAll(opts.checks);
    const failing = probes.find((p) => !p.ok);
    if (!failing) {
      healthySince ??= Date.now();
      if (Date.now() - healthySince >= opts.settleMs) return { ok: true, probes, elapsedMs: Date.now() - started };
    } else {
      healthySince = undefined;
      reason = failing.status !== undefined ? `${failing.url} answered ${failing.status}` : `${failing.url}: ${failing.error}`;
    }
    if (Date.now() >= deadline) return { ok: false, reason: `not healthy after ${opts.timeoutMs} ms: ${reason}`, probes, elapsedMs: Date.now() - started };
    await sleep(interval);
  }
}

/** True when nothing accepts connections on 127.0.0.1:port (nor on ::1, where Node servers often listen). */
export async function portFree(port: number): Promise<boolean> {
  const a = await accepts('127.0.0.1', port);
  if (a) return false;
  return !(await accepts('::1', port));
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (v: boolean) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export async function waitPortFree(port: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (await portFree(port)) return true;
    if (Date.now() >= deadline || signal?.aborted) return false;
    await sleep(100);
  }
}

/** A free loopback port picked by the kernel. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** The listening sockets of a TCP port, from /proc/net/tcp and tcp6: local address (hex) and socket inode. */
async function listeningSockets(port: number): Promise<{ address: string; inode: string }[]> {
  const { readFile } = await import('node:fs/promises');
  const out: { address: string; inode: string }[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== '0A') continue; // 0A = LISTEN
      const [address, portHex] = cols[1].split(':');
      if (parseInt(portHex ?? '', 16) === port) out.push({ address, inode: cols[9] });
    }
  }
  return out;
}

/**
 * The local addresses a TCP port listens on, e.g. `127.0.0.1`, `0.0.0.0`, `::`. Empty when nothing listens
 * (or not on Linux).
 */
export async function listenAddresses(port: number): Promise<string[]> {
  return [...new Set((await listeningSockets(port)).map((s) => procAddress(s.address)))].sort();
}

/** /proc/net/tcp's hex address (little-endian words) as text. */
export function procAddress(hex: string): string {
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => (w.match(/../g) ?? []).reverse().map((b) => parseInt(b, 16)));
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return bytes.slice(12).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  const text = groups.join(':');
  if (text === '0:0:0:0:0:0:0:0') return '::';
  if (text === '0:0:0:0:0:0:0:1') return '::1';
  return text;
}

/** True for an address only this machine can reach. */
export function isLoopbackAddress(a: string): boolean {
  return a.startsWith('127.') || a === '::1';
}

/** The pid holding a TCP port, from /proc (Linux), when visible to us. */
export async function portHolder(port: number): Promise<number | undefined> {
  const { readdir, readlink } = await import('node:fs/promises');
  const inodes = new Set((await listeningSockets(port)).map((s) => s.inode));
  if (inodes.size === 0) return undefined;
  const pids = await readdir('/proc').catch(() => [] as string[]);
  for (const pid of pids) {
    if (!/^\d+$/.test(pid)) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1])) return Number(pid);
    }
  }
  return undefined;
}

// Helpers for the benchmark: child processes (argv arrays only), loopback HTTP, timing, disk usage,
// machine facts. Every child we start is tracked so the bench can end it (and only it) on the way out.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const PM2_BIN = path.join(ROOT, 'node_modules/pm2/bin/pm2');
export const CLI = path.join(ROOT, 'dist/cli/bin.js');

const started = Date.now();
export function log(msg) {
  const s = Math.round((Date.now() - started) / 1000);
  const stamp = `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  process.stderr.write(`[bench ${stamp}] ${msg}\n`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const now = () => performance.now();
/** Wall-clock ms with sub-ms resolution, comparable across processes (the load child uses the same). */
export const epoch = () => performance.timeOrigin + performance.now();

/** Children we spawned (each in its own process group), so cleanup can end exactly these. */
export const children = new Set();

/** Set once cleanup begins: no new child process may start (it could bring a PM2 daemon back). */
export const state = { stopping: false };

/** Signals every tracked child's process group (SIGKILL unless told), and forgets them. */
export function killTracked(signal = 'SIGKILL') {
  for (const c of children) {
    try {
      process.kill(-c.pid, signal);
    } catch {
      try {
        c.kill(signal);
      } catch {
        /* gone */
      }
    }
  }
  children.clear();
}

const TAIL = 16_000;

/**
 * Runs argv (never a shell string) in its own process group; resolves {code, signal, stdout, stderr, ms}.
 * Rejects on a non-zero exit unless allowFail. Bounded by timeoutMs (the group is killed).
 */
export function run(argv, { cwd, env, timeoutMs = 600_000, allowFail = false, stdin, logFile, evenWhenStopping = false, tail = TAIL } = {}) {
  const t0 = now();
  if (state.stopping && !evenWhenStopping) return Promise.reject(new Error(`not starting ${argv[0]}: the bench is stopping`));
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd, env, stdio: [stdin ?? 'ignore', 'pipe', 'pipe'], detached: true });
    children.add(child);
    let stdout = '';
    let stderr = '';
    const out = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : undefined;
    out?.write(`$ ${argv.join(' ')}\n`);
    child.stdout.on('data', (d) => {
      stdout = (stdout + d).slice(-tail);
      out?.write(d);
    });
    child.stderr.on('data', (d) => {
      stderr = (stderr + d).slice(-TAIL);
      out?.write(d);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      children.delete(child);
      out?.end();
      reject(new Error(`${argv[0]}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      out?.end();
      const r = { code, signal, stdout, stderr, ms: now() - t0 };
      if ((code !== 0 || timedOut) && !allowFail) {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : `exit ${code ?? signal}`;
        reject(new Error(`${argv.join(' ')}: ${why}\n${(stderr || stdout).split('\n').slice(-25).join('\n')}`));
      } else resolve(r);
    });
  });
}

/** `a | b`, both argv arrays (e.g. git archive HEAD | tar -x). */
export function runPipe(a, b, { cwd, env, timeoutMs = 300_000 } = {}) {
  const t0 = now();
  if (state.stopping) return Promise.reject(new Error('the bench is stopping'));
  return new Promise((resolve, reject) => {
    const pa = spawn(a[0], a.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const pb = spawn(b[0], b.slice(1), { cwd, env, stdio: ['pipe', 'ignore', 'pipe'], detached: true });
    children.add(pa);
    children.add(pb);
    pa.stdout.pipe(pb.stdin);
    let err = '';
    pa.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
    pb.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
    const timer = setTimeout(() => {
      for (const p of [pa, pb])
        try {
          process.kill(-p.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
    }, timeoutMs);
    const codes = [];
    const done = () => {
      if (codes.length < 2) return;
      clearTimeout(timer);
      if (codes.some((c) => c !== 0)) reject(new Error(`${a.join(' ')} | ${b.join(' ')}: exit ${codes.join(',')}\n${err}`));
      else resolve({ ms: now() - t0 });
    };
    for (const p of [pa, pb]) {
      p.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      p.on('close', (code) => {
        children.delete(p);
        codes.push(code);
        done();
      });
    }
  });
}

/** One GET on a fresh loopback connection. */
export function httpGet(url, timeoutMs = 3_000) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', (e) => resolve({ error: e.code ?? e.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => resolve({ error: e.code ?? e.message }));
  });
}

/** Polls until a 200 whose body contains `marker` (when given). Resolves {ok, at (performance.now()), tries}. */
export async function waitAnswer(url, { marker, timeoutMs = 90_000, intervalMs = 25 } = {}) {
  const deadline = now() + timeoutMs;
  let tries = 0;
  let last;
  while (now() < deadline && !state.stopping) {
    tries++;
    last = await httpGet(url, 2_000);
    if (last.status === 200 && (!marker || last.body.includes(marker))) return { ok: true, at: now(), tries };
    await sleep(intervalMs);
  }
  return { ok: false, at: now(), tries, last: last?.error ?? last?.status };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => resolve(a.port));
    });
  });
}

export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export const sum = (xs) => xs.reduce((a, b) => a + (b ?? 0), 0);
export const max = (xs) => (xs.length ? Math.max(...xs) : undefined);

export function fmtMs(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return 'n/a';
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.round(ms)} ms`;
}

export function fmtBytes(b) {
  if (b === undefined || b === null) return 'n/a';
  if (b >= 1024 ** 3) return `${(b / 1024 ** 3).toFixed(2)} GiB`;
  if (b >= 1024 ** 2) return `${(b / 1024 ** 2).toFixed(1)} MiB`;
  return `${(b / 1024).toFixed(0)} KiB`;
}

export const ratio = (a, b) => (a !== undefined && b ? `${(a / b).toFixed(2)}×` : 'n/a');

/**
 * `du`-style usage of several trees together: allocated blocks (st_blocks × 512), each inode counted
 * once (hard links, and a file reachable from two roots, count once), symlinks not followed.
 */
export async function diskUsage(roots) {
  const seen = new Set();
  let total = 0;
  const visit = async (p) => {
    const st = await fsp.lstat(p).catch(() => undefined);
    if (!st) return;
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) return;
    seen.add(key);
    total += st.blocks * 512;
    if (st.isDirectory()) {
      const names = await fsp.readdir(p).catch(() => []);
      for (const n of names) await visit(path.join(p, n));
    }
  };
  for (const r of roots) await visit(r);
  return total;
}

/** True when the filesystem holding `dir` clones files with a reflink (the same probe as pm2-release). */
export function reflinkSupported(dir) {
  const a = path.join(dir, `.bench-reflink-${process.pid}`);
  try {
    fs.writeFileSync(a, 'probe');
    fs.copyFileSync(a, `${a}.clone`, fs.constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(a, { force: true });
    fs.rmSync(`${a}.clone`, { force: true });
  }
}

/** The filesystem type of the mount holding `p` (longest mount point prefix in /proc/mounts). */
export function fsType(p) {
  let real = p;
  try {
    real = fs.realpathSync(p);
  } catch {
    /* keep p */
  }
  let best = { mnt: '', type: 'unknown', dev: '' };
  try {
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, mnt, type] = line.split(' ');
      if (!mnt) continue;
      const m = mnt.replace(/\\040/g, ' ');
      if ((real === m || real.startsWith(m.endsWith('/') ? m : m + '/')) && m.length > best.mnt.length) best = { mnt: m, type, dev };
    }
  } catch {
    /* not Linux */
  }
  return best;
}

/** Reads VmHWM / VmRSS (kB) of a pid from /proc; undefined when gone. */
export function procMem(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const hwm = /VmHWM:\s+(\d+) kB/.exec(s);
    const rss = /VmRSS:\s+(\d+) kB/.exec(s);
    return { hwmKb: hwm ? Number(hwm[1]) : undefined, rssKb: rss ? Number(rss[1]) : undefined };
  } catch {
    return undefined;
  }
}

export { alive } from '../scripts/pm2-sandbox.mjs';

/** Markdown table. */
export function table(header, rows) {
  const esc = (c) => String(c ?? '').replaceAll('|', '\\|');
  return [`| ${header.map(esc).join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

/**
 * Builds that outlive their deploy. Install and build run in their own process group (exec.ts, detached), so
 * a deploy killed with SIGKILL (OOM killer, systemd stop) leaves `npm ci` / `next build` running. While a step
 * runs, its group is recorded in the release's meta dir; the next run stops a group whose deploy is dead
 * before it deletes that release or starts a second build beside it (two Next.js builds at once can take a
 * 4 GiB VM down).
 *
 * A group is stopped only when /proc shows it still runs inside that release's directory: a process group id
 * is a pid, and pids are reused. Nothing is ever killed by name.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import writeFileAtomic from 'write-file-atomic';
import { isInside } from '../config.js';

export const BUILD_PROCESS_FILE = 'build-process.json';

export interface BuildProcessRecord {
  version: 1;
  release: string;
  /** The release directory when the step started (absolute). */
  releaseDir: string;
  step: string;
  /** The step's process group id: the child's pid, since it runs detached as the group's leader. */
  pgid: number;
  /** The leader's start time (clock ticks since boot, /proc/PID/stat field 22), to tell a reused pid apart. */
  leaderStart?: number;
  /** The pm2-release process that started the step. */
  deployPid: number;
  host: string;
  startedAt: string;
}

export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  pgid: number;
  /** Field 6: the session id. */
  session: number;
  /** Field 22: start time in clock ticks after boot. */
  startTime: number;
}

/**
 * Parses /proc/PID/stat. The command name (field 2) is in parentheses and may itself hold spaces and ')',
 * so the fields are counted from the last ')'.
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 1 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // After ") ": state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9) minflt… starttime(22).
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  if (rest.length < 20) return undefined;
  const [state, ppid, pgid, session] = [rest[0], Number(rest[1]), Number(rest[2]), Number(rest[3])];
  const startTime = Number(rest[19]);
  if (!Number.isInteger(pid) || pid <= 0 || !/^[A-Za-z]$/.test(state) || !Number.isInteger(ppid) || !Number.isInteger(pgid) || !Number.isInteger(startTime))
    return undefined;
  return { pid, state, ppid, pgid, session, startTime };
}

/** The directory a /proc/PID/cwd link names: the kernel appends " (deleted)" once that directory is removed. */
export function cwdPath(link: string): { path: string; deleted: boolean } {
  const suffix = ' (deleted)';
  return link.endsWith(suffix) ? { path: link.slice(0, -suffix.length), deleted: true } : { path: link, deleted: false };
}

export interface GroupMember {
  pid: number;
  startTime: number;
  /** readlink of /proc/PID/cwd; undefined when it could not be read. */
  cwd?: string;
}

export type OrphanVerdict =
  { stop: true; pids: number[] } | { stop: false; reason: 'deploy-alive' | 'other-host' | 'gone' | 'pid-reused' | 'outside' | 'unreadable'; detail?: string };

/**
 * Whether a recorded build's process group is an orphan of ours to stop. Pure: `members` are the live
 * (non-zombie) processes whose pgid is the recorded one; `dirs` are where that release is or was (its path,
 * and its `.removing-…` name if a removal renamed it). Every member must run inside one of them: a group
 * with a single stranger in it is not ours.
 */
export function judgeOrphan(
  record: BuildProcessRecord,
  members: readonly GroupMember[],
  dirs: readonly string[],
  env: { host: string; deployAlive: boolean },
): OrphanVerdict {
  if (record.host !== env.host) return { stop: false, reason: 'other-host' };
  if (env.deployAlive) return { stop: false, reason: 'deploy-alive' };
  if (members.length === 0) return { stop: false, reason: 'gone' };
  const leader = members.find((m) => m.pid === record.pgid);
  // The leader's pid came back as a new process (and so a new group): not the one we recorded.
  if (leader && record.leaderStart !== undefined && leader.startTime !== record.leaderStart) return { stop: false, reason: 'pid-reused' };
  for (const m of members) {
    if (m.cwd === undefined) return { stop: false, reason: 'unreadable', detail: `pid ${m.pid}` };
    const cwd = cwdPath(m.cwd).path;
    if (!dirs.some((d) => cwd === d || isInside(cwd, d))) return { stop: false, reason: 'outside', detail: `pid ${m.pid} runs in ${cwd}` };
  }
  return { stop: true, pids: members.map((m) => m.pid) };
}

/** Live processes of process group `pgid`, from /proc (zombies excluded: they are dead, only unreaped). */
export function groupMembers(pgid: number): GroupMember[] {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  const out: GroupMember[] = [];
  for (const d of entries) {
    let st: ProcStat | undefined;
    try {
      st = parseProcStat(fs.readFileSync(`/proc/${d}/stat`, 'utf8'));
    } catch {
      continue; // exited meanwhile
    }
    if (!st || st.pgid !== pgid || st.state === 'Z' || st.state === 'X') continue;
    let cwd: string | undefined;
    try {
      cwd = fs.readlinkSync(`/proc/${d}/cwd`);
    } catch {
      cwd = undefined;
    }
    out.push({ pid: st.pid, startTime: st.startTime, cwd });
  }
  return out;
}

export function procStartTime(pid: number): number | undefined {
  try {
    return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))?.startTime;
  } catch {
    return undefined;
  }
}

export function recordPath(metaDir: string): string {
  return path.join(metaDir, BUILD_PROCESS_FILE);
}

/** Written atomically: a run killed mid-write leaves the previous record or none, never half a record. */
export async function writeBuildProcess(metaDir: string, rec: Omit<BuildProcessRecord, 'version' | 'host' | 'leaderStart' | 'startedAt'>): Promise<void> {
  const full: BuildProcessRecord = {
    version: 1,
    ...rec,
    leaderStart: procStartTime(rec.pgid),
    host: os.hostname(),
    startedAt: new Date().toISOString(),
  };
  await writeFileAtomic(recordPath(metaDir), JSON.stringify(full) + '\n', { mode: 0o644 });
}

export async function clearBuildProcess(metaDir: string): Promise<void> {
  await fsp.rm(recordPath(metaDir), { force: true });
}

export async function readBuildProcess(metaDir: string): Promise<BuildProcessRecord | undefined> {
  try {
    const r = JSON.parse(await fsp.readFile(recordPath(metaDir), 'utf8')) as BuildProcessRecord;
    const validPid = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n > 1;
    if (r?.version !== 1 || !validPid(r.pgid) || !validPid(r.deployPid) || typeof r.releaseDir !== 'string' || !path.isAbsolute(r.releaseDir)) return undefined;
    return r;
  } catch {
    return undefined;
  }
}

/**
 * SIGTERM to the group, up to `graceMs` for it to exit, then SIGKILL. Signals go to the group id only after
 * the caller checked (judgeOrphan) that it is ours. Returns how it ended.
 */
export async function stopGroup(pgid: number, graceMs = 5_000): Promise<'terminated' | 'killed' | 'gone'> {
  const send = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pgid, sig);
      return true;
    } catch {
      return false; // ESRCH: the group is gone
    }
  };
  if (!send('SIGTERM')) return 'gone';
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (groupMembers(pgid).length === 0) return 'terminated';
    await sleep(100);
  }
  send('SIGKILL');
  for (let i = 0; i < 50 && groupMembers(pgid).length > 0; i++) await sleep(100);
  return 'killed';
}

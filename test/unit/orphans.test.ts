import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cwdPath, groupMembers, judgeOrphan, parseProcStat, type BuildProcessRecord, type GroupMember } from '../../src/release/orphans.js';
import { isNoSpace } from '../../src/release/builder.js';
import { BuildError } from '../../src/errors.js';

const DIR = '/srv/releases/20260101T120000Z-3f2a9c1';
const REC: BuildProcessRecord = {
  version: 1,
  release: '20260101T120000Z-3f2a9c1',
  releaseDir: DIR,
  step: 'build',
  pgid: 1234,
  leaderStart: 5000,
  deployPid: 999,
  host: 'vm1',
  startedAt: '2026-01-01T12:00:05.000Z',
};
const DEAD = { host: 'vm1', deployAlive: false };
const member = (pid: number, cwd: string | undefined, startTime = 6000): GroupMember => ({ pid, cwd, startTime });

/** A /proc/PID/stat line: pid (comm) state ppid pgrp session tty tpgid flags … starttime (field 22) … */
function stat(pid: number, comm: string, state: string, ppid: number, pgid: number, start: number): string {
  const mid = Array.from({ length: 13 }, (_, i) => String(i)).join(' '); // fields 9–21
  return `${pid} (${comm}) ${state} ${ppid} ${pgid} ${pgid} 0 -1 ${mid} ${start} 12345 678 18446744073709551615\n`;
}

describe('parseProcStat', () => {
  it('reads pid, state, ppid, pgid, session and start time', () => {
    expect(parseProcStat(stat(4321, 'node', 'S', 1, 1234, 777))).toEqual({ pid: 4321, state: 'S', ppid: 1, pgid: 1234, session: 1234, startTime: 777 });
  });

  it('counts fields from the last ")" so a command name with spaces and parentheses cannot shift them', () => {
    expect(parseProcStat(stat(42, 'npm run (x) y', 'R', 7, 42, 9))).toMatchObject({ pid: 42, state: 'R', ppid: 7, pgid: 42, startTime: 9 });
    expect(parseProcStat(stat(43, ') 1 2 3', 'Z', 7, 99, 10))).toMatchObject({ pid: 43, state: 'Z', pgid: 99 });
  });

  it('refuses truncated or malformed lines', () => {
    expect(parseProcStat('')).toBeUndefined();
    expect(parseProcStat('12 (node) S 1 2')).toBeUndefined();
    expect(parseProcStat('x (node) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20')).toBeUndefined();
    expect(parseProcStat('12 node S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20')).toBeUndefined();
  });

  it('parses this process’s own /proc entry (Linux)', () => {
    if (!fs.existsSync('/proc/self/stat')) return;
    const st = parseProcStat(fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8'));
    expect(st?.pid).toBe(process.pid);
    expect(st?.ppid).toBe(process.ppid);
  });
});

describe('cwdPath', () => {
  it('strips the " (deleted)" the kernel appends once the directory is removed', () => {
    expect(cwdPath(`${DIR}/frontend (deleted)`)).toEqual({ path: `${DIR}/frontend`, deleted: true });
    expect(cwdPath(`${DIR}/frontend`)).toEqual({ path: `${DIR}/frontend`, deleted: false });
  });
});

describe('judgeOrphan', () => {
  it('stops a group of a dead deploy whose processes all run inside the release (or its deleted dirs)', () => {
    const members = [member(1234, `${DIR}/frontend`, 5000), member(1240, `${DIR}/frontend/node_modules/x`), member(1250, `${DIR}/frontend/.next (deleted)`)];
    expect(judgeOrphan(REC, members, [DIR], DEAD)).toEqual({ stop: true, pids: [1234, 1240, 1250] });
  });

  it('accepts the release’s other names (a .removing-… rename, the real path)', () => {
    const renamed = '/srv/releases/.removing-20260101T120000Z-3f2a9c1-77';
    expect(judgeOrphan(REC, [member(1300, `${renamed}/frontend`)], [renamed, DIR], DEAD).stop).toBe(true);
  });

  it('leaves the group alone while its deploy is alive, or when it was recorded on another host', () => {
    const members = [member(1234, DIR, 5000)];
    expect(judgeOrphan(REC, members, [DIR], { host: 'vm1', deployAlive: true })).toMatchObject({ stop: false, reason: 'deploy-alive' });
    expect(judgeOrphan(REC, members, [DIR], { host: 'vm2', deployAlive: false })).toMatchObject({ stop: false, reason: 'other-host' });
  });

  it('has nothing to stop when the group is gone', () => {
    expect(judgeOrphan(REC, [], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'gone' });
  });

  it('refuses a group with any process outside the release: the pgid may belong to someone else now', () => {
    expect(judgeOrphan(REC, [member(1234, '/home/me', 5000)], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'outside' });
    expect(judgeOrphan(REC, [member(1234, DIR, 5000), member(1236, '/tmp')], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'outside' });
  });

  it('does not take a sibling directory with the same prefix for the release', () => {
    expect(judgeOrphan(REC, [member(1234, `${DIR}0/frontend`, 5000)], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'outside' });
    expect(judgeOrphan(REC, [member(1234, '/srv/releases', 5000)], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'outside' });
  });

  it('refuses when the leader pid was reused by a newer process', () => {
    expect(judgeOrphan(REC, [member(1234, DIR, 9999)], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'pid-reused' });
  });

  it('refuses a process whose cwd cannot be read', () => {
    expect(judgeOrphan(REC, [member(1234, DIR, 5000), member(1235, undefined)], [DIR], DEAD)).toMatchObject({ stop: false, reason: 'unreadable' });
  });
});

describe('groupMembers', () => {
  it('finds this process in its own process group (Linux)', () => {
    if (!fs.existsSync('/proc/self/stat')) return;
    const own = parseProcStat(fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8'));
    expect(groupMembers(own!.pgid).map((m) => m.pid)).toContain(process.pid);
  });
});

describe('isNoSpace', () => {
  it('sees ENOSPC from our own fs writes, also wrapped as a cause', () => {
    const errno = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    expect(isNoSpace(errno)).toBe(true);
    expect(isNoSpace(new Error('write failed', { cause: errno }))).toBe(true);
  });

  it('sees it in a failed command’s output tail', () => {
    const e = new BuildError('BUILD_FAILED', 'build failed: npm run build exited with code 1', {
      phase: 'build',
      outputTail: 'Error: ENOSPC: no space left on device, write\n    at Object.writeSync',
    });
    expect(isNoSpace(e)).toBe(true);
    expect(isNoSpace(new BuildError('INSTALL_FAILED', 'install failed', { phase: 'install', outputTail: 'npm error tar: No space left on device' }))).toBe(
      true,
    );
  });

  it('does not mistake other failures for a full disk', () => {
    expect(
      isNoSpace(new BuildError('BUILD_FAILED', 'build failed: exited with code 1', { phase: 'build', outputTail: 'TypeError: x is not a function' })),
    ).toBe(false);
    expect(isNoSpace(Object.assign(new Error('EACCES'), { code: 'EACCES' }))).toBe(false);
    expect(isNoSpace(undefined)).toBe(false);
    expect(isNoSpace(new Error('ENOSPCX'))).toBe(false);
  });
});

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { judgeStandby, standbyText, standbyView } from '../../src/lifecycle/standby.js';
import { processTreeBytes } from '../../src/release/memory-guard.js';

const MiB = 2 ** 20;

describe('the standby verdict', () => {
  it('keeps the previous release while the memory available covers one more copy of it plus the reserve', () => {
    expect(judgeStandby(true, { releaseBytes: 200 * MiB, reserveBytes: 512 * MiB, availableBytes: 712 * MiB })).toEqual({ keep: true });
    const short = judgeStandby(true, { releaseBytes: 200 * MiB, reserveBytes: 512 * MiB, availableBytes: 711 * MiB });
    expect(short).toEqual({
      keep: false,
      reason:
        'not enough memory: 711.0 MiB available, a standby needs room for one more copy of the release (200.0 MiB) plus router.standbyReserveMB (512.0 MiB)',
    });
    expect(judgeStandby(false, { releaseBytes: 0, reserveBytes: 0, availableBytes: 1e12 })).toEqual({
      keep: false,
      reason: 'off in the config (router.standby: false)',
    });
  });

  it('status: warm when the recorded standby runs online on its port, down when PM2 lost it, off with the reason, none before the first switch', () => {
    const recorded = { standby: { id: 'R1', app: { env: { FRONT_PORT: '13002' } } } };
    const proc = (status: string, port = '13002', releaseId = 'R1') => ({ releaseId, status, vars: { FRONT_PORT: port } });
    expect(standbyView(recorded, [proc('online'), proc('online', '13001', 'R2')], 'FRONT_PORT')).toEqual({
      state: 'warm',
      release: 'R1',
      port: 13002,
      reason: null,
    });
    expect(standbyView(recorded, [proc('errored')], 'FRONT_PORT')).toMatchObject({ state: 'down', reason: 'errored in PM2' });
    // The same release on another port is not the standby (it is live, after a redeploy of it).
    expect(standbyView(recorded, [proc('online', '13005')], 'FRONT_PORT')).toMatchObject({ state: 'down', reason: 'not running in PM2' });
    expect(standbyView({ standbyOff: 'off in the config (router.standby: false)' }, [], 'FRONT_PORT')).toMatchObject({ state: 'off' });
    expect(standbyView(undefined, [], 'FRONT_PORT').state).toBe('none');
    expect(standbyText(standbyView(recorded, [proc('online')], 'FRONT_PORT'))).toBe('R1 warm on :13002: a rollback to it is a route change');
    expect(standbyText({ state: 'off', release: null, port: null, reason: 'x' })).toBe('off (x): a rollback boots the previous release');
  });

  it("a release's memory is its PM2 process and every descendant (npm start → next-server), anonymous and shared pages only", () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-proc-'));
    const put = (pid: number, ppid: number, anonKb: number, fileKb = 50_000) => {
      fs.mkdirSync(path.join(proc, String(pid)));
      fs.writeFileSync(
        path.join(proc, String(pid), 'status'),
        `Name:\tnode\nState:\tS (sleeping)\nPPid:\t${ppid}\nRssAnon:\t${anonKb} kB\nRssFile:\t${fileKb} kB\nRssShmem:\t0 kB\n`,
      );
    };
    try {
      put(100, 1, 1_000); // npm (the PM2 pid)
      put(101, 100, 10_000); // sh -c next start
      put(102, 101, 100_000); // next-server
      put(200, 1, 500_000); // another app
      fs.mkdirSync(path.join(proc, 'self'));
      expect(processTreeBytes([100], proc)).toBe(111_000 * 1024);
      expect(processTreeBytes([100, 200], proc)).toBe(611_000 * 1024);
      expect(processTreeBytes([999], proc)).toBe(0);
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });
});

/**
 * The warm standby (router strategy): after a switch the previous release keeps running, unrouted, so a
 * rollback to it is one route change (no boot). Kept only when the host can afford it: router.standby on, and
 * MemAvailable (or the free memory of pm2-release's cgroup, the tighter) still covers one more copy of the
 * release, the one the next deploy boots beside live and standby, plus router.standbyReserveMB.
 */
import { bytes } from '../units.js';
import { processTreeBytes, readMemoryFacts } from '../release/memory-guard.js';
import type { Context } from './context.js';

export type StandbyVerdict = { keep: true } | { keep: false; reason: string };

export interface StandbyMemory {
  /** Memory the previous release's processes hold now (with their children). */
  releaseBytes: number;
  /** MemAvailable, or the tightest cgroup's free memory when that is lower. */
  availableBytes: number;
  reserveBytes: number;
}

/** Pure: keep the standby when the memory still available covers one more copy of the release plus the reserve. */
export function judgeStandby(enabled: boolean, m: StandbyMemory | undefined): StandbyVerdict {
  if (!enabled) return { keep: false, reason: 'off in the config (router.standby: false)' };
  if (!m) return { keep: true };
  const need = m.releaseBytes + m.reserveBytes;
  if (m.availableBytes >= need) return { keep: true };
  return {
    keep: false,
    reason:
      `not enough memory: ${bytes(m.availableBytes)} available, a standby needs room for one more copy of the release ` +
      `(${bytes(m.releaseBytes)}) plus router.standbyReserveMB (${bytes(m.reserveBytes)})`,
  };
}

/** The verdict for the previous release whose PM2 processes are `pids`, on this host now. */
export function standbyVerdict(ctx: Context, previous: { pids: number[] }): Promise<StandbyVerdict> {
  const cfg = ctx.config.router;
  if (!cfg.standby) return Promise.resolve(judgeStandby(false, undefined));
  const facts = readMemoryFacts();
  const available = Math.min(facts.meminfo.available, facts.cgroup?.free ?? Infinity);
  const releaseBytes = processTreeBytes(previous.pids.filter((p) => p > 0));
  const verdict = judgeStandby(true, { releaseBytes, availableBytes: available, reserveBytes: cfg.standbyReserveMB * 2 ** 20 });
  if (!verdict.keep) ctx.logger.info(`no standby: ${verdict.reason}`);
  return Promise.resolve(verdict);
}

/** The standby as status and doctor show it. */
export interface StandbyView {
  /** warm: running, unrouted, a rollback to it is a route change; down: recorded but not online in PM2; off: not kept (reason); none: no previous release yet. */
  state: 'warm' | 'down' | 'off' | 'none';
  release: string | null;
  port: number | null;
  reason: string | null;
}

type RecordedStandby = { id: string; app: { env: Record<string, string> } };

/** Pure: whether PM2's process `p` is the recorded standby (its release, on its private port). */
export function isStandbyProcess(standby: RecordedStandby | undefined, p: { releaseId?: string; vars: Record<string, string> }, portEnv: string): boolean {
  if (!standby || p.releaseId !== standby.id) return false;
  const port = standby.app.env[portEnv];
  return port === undefined || p.vars[portEnv] === port;
}

/** Pure: the recorded standby (active.json) against the app's PM2 processes now. */
export function standbyView(
  recorded: { standby?: RecordedStandby; standbyOff?: string } | undefined,
  procs: { releaseId?: string; status: string; vars: Record<string, string> }[],
  portEnv: string,
): StandbyView {
  const sb = recorded?.standby;
  if (!sb)
    return recorded?.standbyOff
      ? { state: 'off', release: null, port: null, reason: recorded.standbyOff }
      : { state: 'none', release: null, port: null, reason: null };
  const port = Number(sb.app.env[portEnv]) || null;
  const mine = procs.filter((p) => isStandbyProcess(sb, p, portEnv));
  if (mine.length === 0) return { state: 'down', release: sb.id, port, reason: 'not running in PM2' };
  if (!mine.every((p) => p.status === 'online')) return { state: 'down', release: sb.id, port, reason: `${mine.map((p) => p.status).join(', ')} in PM2` };
  return { state: 'warm', release: sb.id, port, reason: null };
}

/** One line for status and doctor. */
export function standbyText(v: StandbyView): string {
  switch (v.state) {
    case 'warm':
      return `${v.release} warm on :${v.port}: a rollback to it is a route change`;
    case 'down':
      return `${v.release} is recorded as the standby but ${v.reason}: a rollback boots it`;
    case 'off':
      return `off (${v.reason}): a rollback boots the previous release`;
    default:
      return 'none yet: the next switch keeps the release it replaces';
  }
}

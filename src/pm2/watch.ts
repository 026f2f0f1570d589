/**
 * What PM2's bus says about an app's processes while a health gate or a soak watches them: each crash (an
 * exit PM2 did not ask for, seen the moment it happens, even when PM2 restarts the process before the next
 * look at its list) and each process PM2 is stopping (a `pm2 kill`, systemd stopping the unit: no verdict on
 * the release). The callers still read PM2's list, but seldom: the bus is what they watch.
 */
import type { Pm2 } from './client.js';
import type { ProcessEvent } from './daemon-socket.js';

export class ProcessWatch {
  private readonly crashes = new Map<number, number>();
  private readonly stopping = new Set<number>();
  /** Stopped on a command and not online since: its next exits are the stop's, not crashes. */
  private readonly beingStopped = new Set<number>();
  constructor(private readonly unsubscribe: () => void = () => undefined) {}

  /** Subscribes to PM2's bus for the processes named `name`; undefined when the bus cannot be used (poll instead). */
  static async start(pm2: Pm2, name: string): Promise<ProcessWatch | undefined> {
    const at: { watch?: ProcessWatch } = {};
    const early: ProcessEvent[] = [];
    const off = await pm2.watch(name, (e) => (at.watch ? at.watch.note(e) : early.push(e)));
    if (!off) return undefined;
    at.watch = new ProcessWatch(off);
    for (const e of early) at.watch.note(e);
    return at.watch;
  }

  /**
   * Pure: one event. PM2 marks a process `stopping` before it stops it on command, and then reports its exit
   * twice (5.x and 7.x alike: `stopping`, then `stopped`); a crash exits once, `stopped`, with no stop before.
   */
  note(e: ProcessEvent): void {
    if (e.event === 'online') this.beingStopped.delete(e.pmId);
    if (e.event === 'exit') {
      if (e.manually || e.status === 'stopping') {
        this.stopping.add(e.pmId);
        this.beingStopped.add(e.pmId);
      } else if (!this.beingStopped.has(e.pmId)) this.crashes.set(e.pmId, (this.crashes.get(e.pmId) ?? 0) + 1);
    } else if (e.event === 'restart overlimit') {
      this.crashes.set(e.pmId, (this.crashes.get(e.pmId) ?? 0) + 1);
    } else if (e.event === 'stop' || e.event === 'delete') {
      this.stopping.add(e.pmId);
    }
  }

  /** Crashes seen for `ids` since the watch started. */
  crashesOf(ids: Iterable<number>): number {
    let n = 0;
    for (const id of ids) n += this.crashes.get(id) ?? 0;
    return n;
  }

  /** Whether PM2 began stopping one of `ids` (on a command) since the watch started. */
  stoppingOf(ids: Iterable<number>): boolean {
    for (const id of ids) if (this.stopping.has(id)) return true;
    return false;
  }

  close(): void {
    this.unsubscribe();
  }
}

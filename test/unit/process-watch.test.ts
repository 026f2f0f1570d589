import { describe, expect, it } from 'vitest';
import { toProcessEvent } from '../../src/pm2/daemon-socket.js';
import { ProcessWatch } from '../../src/pm2/watch.js';

/** A `process:event` as PM2's daemon publishes it (lib/Event.js: the process's pm2_env, flattened). */
const bus = (event: string, pmId: number, status: string, manually = false) => ({
  event,
  manually,
  process: { pm_id: pmId, name: 'frontend-dev', status, restart_time: 1, env: undefined },
  at: Date.now(),
});

describe("PM2's bus, as the gate and the soak read it", () => {
  it('parses a process event; anything else is ignored', () => {
    expect(toProcessEvent(bus('exit', 3, 'stopped'))).toEqual({
      event: 'exit',
      pmId: 3,
      name: 'frontend-dev',
      manually: false,
      status: 'stopped',
      restarts: 1,
    });
    expect(toProcessEvent({ event: 'exit' })).toBeUndefined();
    expect(toProcessEvent('log:out')).toBeUndefined();
  });

  it('a crash is an exit PM2 did not ask for; an exit of a process PM2 is stopping (a command, its own kill) is not', () => {
    const w = new ProcessWatch();
    const note = (d: ReturnType<typeof bus>) => w.note(toProcessEvent(d)!);
    note(bus('online', 3, 'online'));
    note(bus('exit', 3, 'stopped'));
    note(bus('restart', 3, 'launching'));
    // `pm2 stop` as 5.x and 7.x report it: exit (stopping), exit (stopped), stop.
    note(bus('exit', 4, 'stopping'));
    note(bus('exit', 4, 'stopped'));
    note(bus('stop', 4, 'stopped', true));
    note(bus('exit', 5, 'stopped', true));
    expect(w.crashesOf([3])).toBe(1);
    expect(w.crashesOf([4, 5])).toBe(0);
    expect(w.stoppingOf([3])).toBe(false);
    expect(w.stoppingOf([4])).toBe(true);
    expect(w.stoppingOf([5])).toBe(true);
    // Back online after a `pm2 restart`: its next exit without a stop is a crash again.
    note(bus('online', 4, 'online'));
    note(bus('exit', 4, 'stopped'));
    expect(w.crashesOf([4])).toBe(1);
    note(bus('restart overlimit', 6, 'errored'));
    expect(w.crashesOf([6])).toBe(1);
    note(bus('delete', 7, 'stopped', true));
    expect(w.stoppingOf([7])).toBe(true);
  });
});

/**
 * How the PM2 app moves from one release to another. PM2 cannot move a process to a new cwd
 * (`restart`/`reload`/`startOrReload` keep the old `pm_cwd`), so the `restart` strategy deletes the app and
 * starts it again from the new release, exactly like the seed runbook. A zero-downtime strategy (start the
 * new release beside the old one, then retire the old) fits the same interface.
 */
import { SwitchError } from '../errors.js';
import { portHolder, waitPortFree } from '../health.js';
import type { Logger } from '../log.js';
import type { AppDefinition } from '../release/store.js';
import type { Pm2, Pm2Snapshot } from './client.js';

export interface SwitchInput {
  pm2: Pm2;
  logger: Logger;
  target: AppDefinition;
  /** The app's port, to wait until the old process let go of it. */
  port?: number;
  portWaitMs?: number;
  signal?: AbortSignal;
  /** Called after the old app stopped and before the new one starts (the fault-injection point). */
  beforeStart?: () => void;
}

export interface SwitchHandle {
  /** How the app ran before the switch (undefined on a first deploy). Holds env values: never log it. */
  before?: Pm2Snapshot;
  /** Puts the app back as it was before the switch (deletes the new processes first). */
  revert(): Promise<void>;
}

export interface SwitchStrategy {
  readonly name: string;
  /** Stops serving the old release and starts the target; resolves once PM2 has started it. */
  switch(input: SwitchInput): Promise<SwitchHandle>;
}

export const restartStrategy: SwitchStrategy = {
  name: 'restart',
  async switch(input) {
    const { pm2, target } = input;
    const before = await pm2.snapshot(target.name);
    const portWaitMs = input.portWaitMs ?? 15_000;

    const freePortOrExplain = async (): Promise<void> => {
      if (input.port === undefined) return;
      if (await waitPortFree(input.port, portWaitMs, input.signal)) return;
      const pid = await portHolder(input.port);
      throw new SwitchError('PORT_BUSY', `port ${input.port} is still in use ${portWaitMs / 1000} s after deleting ${target.name}${pid ? ` (held by pid ${pid})` : ''}`, {
        phase: 'switch',
        hint: pid ? `an orphan of the old app may hold it: check \`ps -o pid,args -p ${pid}\` and stop it` : 'find the process with `ss -ltnp`',
      });
    };

    const revert = async (): Promise<void> => {
      const now = await pm2.processes(target.name);
      if (now.length > 0) await pm2.delete(target.name);
      if (!before) return;
      await freePortOrExplain();
      await pm2.startSnapshot(before);
    };

    if (before) await pm2.delete(target.name);
    try {
      await freePortOrExplain();
      input.beforeStart?.();
      await pm2.start(target);
    } catch (err) {
      input.logger.error('switch failed; putting the previous app back');
      await revert().catch((revertErr: Error) => input.logger.error({ err: revertErr.message }, 'revert failed'));
      throw err;
    }
    return { before, revert };
  },
};

export function strategyFor(name: string): SwitchStrategy {
  if (name === 'restart') return restartStrategy;
  throw new Error(`unknown switch strategy ${name}`);
}

/**
 * `deploy --no-wait-soak` from the CLI: the caller (the executor bridge, cron) wants its answer when the soak
 * starts, but the soak must go on after that with the lock held. So the CLI runs the deploy in a detached
 * child of itself, connected by an IPC channel only: the child sends the early answer when the soak starts
 * (or its final answer if it ends before one), the parent prints it and exits, and the child carries on.
 * The child has no stdout or stderr of the caller's (a pipe kept open would make the caller wait for the
 * soak); its logs go to <releasesDir>/pm2-release.log as always.
 */
import { spawn } from 'node:child_process';

export const HANDOFF_ENV = 'PM2_RELEASE_SOAK_CHILD';

export interface HandOffMessage {
  type: 'soak-started' | 'done';
  text: string;
  code: number;
}

export function handOff(binPath: string, argv: string[], env: Record<string, string | undefined>, cwd: string, out: (text: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [binPath, ...argv], {
      cwd,
      env: { ...env, [HANDOFF_ENV]: '1' },
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    let answered = false;
    child.on('message', (m: HandOffMessage) => {
      if (answered) return;
      answered = true;
      out(m.text);
      child.disconnect();
      child.unref();
      resolve(m.code);
    });
    child.on('exit', (code) => {
      if (answered) return;
      answered = true;
      resolve(code ?? 1);
    });
    child.on('error', (err) => {
      if (answered) return;
      answered = true;
      out(`cannot start the deploy: ${err.message}\n`);
      resolve(1);
    });
  });
}

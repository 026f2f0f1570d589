#!/usr/bin/env node
// The only place that reads process state and calls process.exit.
import { fileURLToPath } from 'node:url';
import { main } from './cli.js';
import { handOff, HANDOFF_ENV, type HandOffMessage } from './handoff.js';

// A detached child running a `deploy --no-wait-soak` for its parent: answers go through the IPC channel.
const child = process.env[HANDOFF_ENV] === '1' && typeof process.send === 'function';
let collected = '';
const send = (m: HandOffMessage) => {
  if (process.connected) process.send!(m);
};

const controller = new AbortController();
let signals = 0;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    signals++;
    if (signals > 1) process.exit(130); // a second Ctrl-C means now
    process.stderr.write(`\n${sig}: cancelling (the live app is left as it was)…\n`);
    controller.abort(new Error(sig));
  });
}

// A promise that never settles (a stream that never ends) lets the event loop drain: Node would exit 0 (or 13)
// with no answer. That is a failure, and says so.
let answered = false;
process.on('exit', (c) => {
  if (answered || c !== 0) return;
  process.stderr.write('pm2-release: internal error: the operation ended without an answer (nothing left to wait for); see the log\n');
  process.exitCode = 1;
});

const code = await main(process.argv.slice(2), {
  stdout: (s) => (child ? void (collected += s) : process.stdout.write(s)),
  stderr: (s) => (child ? undefined : process.stderr.write(s)),
  env: process.env,
  cwd: process.cwd(),
  stderrIsTTY: !!process.stderr.isTTY,
  columns: process.stderr.columns,
  signal: controller.signal,
  handOff: (argv) => handOff(fileURLToPath(import.meta.url), argv, process.env, process.cwd(), (t) => process.stdout.write(t)),
  ...(child ? { soakStarted: (text: string) => send({ type: 'soak-started', text, code: 0 }) } : {}),
});
if (child) {
  send({ type: 'done', text: collected, code });
  if (process.connected) process.disconnect();
}
answered = true;
process.exitCode = code;
// Flush stdout before leaving; a pipe may still hold the JSON result.
process.stdout.write('', () => process.exit(code));

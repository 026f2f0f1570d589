#!/usr/bin/env node
// The only place that reads process state and calls process.exit.
import { main } from './cli.js';

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

const code = await main(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  env: process.env,
  cwd: process.cwd(),
  stderrIsTTY: !!process.stderr.isTTY,
  columns: process.stderr.columns,
  signal: controller.signal,
});
process.exitCode = code;
// Flush stdout before leaving; a pipe may still hold the JSON result.
process.stdout.write('', () => process.exit(code));

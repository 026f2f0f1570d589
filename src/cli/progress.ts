/**
 * Human progress on stderr. On a TTY: one line per phase with its elapsed time, and a live tail of the
 * last few install/build output lines under the running phase, erased when it ends. Not a TTY (or
 * --quiet): plain lines, no ANSI, output lines left to the build log.
 */
import type { ReleaseEvent } from '../lifecycle/context.js';

const TAIL = 6;

export interface ProgressOptions {
  write: (s: string) => void;
  tty: boolean;
  quiet: boolean;
  columns?: number;
}

export function createProgress(opts: ProgressOptions): (e: ReleaseEvent) => void {
  if (opts.quiet) return () => undefined;
  const width = Math.max(40, (opts.columns ?? 100) - 4);
  let tail: string[] = [];
  let drawn = 0; // lines of tail currently on screen

  const erase = () => {
    if (drawn > 0) opts.write(`\x1b[${drawn}A\x1b[0J`);
    drawn = 0;
  };
  const draw = () => {
    erase();
    for (const l of tail) opts.write(`  \x1b[2m${l.slice(0, width)}\x1b[22m\n`);
    drawn = tail.length;
  };

  return (e) => {
    // Warnings reach the operator through the logger (warn level is always shown).
    if (e.type === 'warning') return;
    if (e.type === 'output') {
      if (!opts.tty) return;
      const line = e.line
        .replace(/\x1b\[[0-9;]*[A-Za-z]/g, '')
        .replace(/\r/g, '')
        .trimEnd();
      if (!line) return;
      tail.push(line);
      if (tail.length > TAIL) tail.shift();
      draw();
      return;
    }
    if (e.state === 'start') {
      tail = [];
      if (opts.tty) opts.write(`\x1b[36m▸\x1b[39m ${e.phase}…\n`);
      return;
    }
    const secs = `${(e.durationMs / 1000).toFixed(1)}s`;
    if (opts.tty) {
      erase();
      opts.write('\x1b[1A\x1b[2K'); // replace the "▸ phase…" line
      opts.write(e.state === 'end' ? `\x1b[32m✓\x1b[39m ${e.phase} \x1b[2m${secs}\x1b[22m\n` : `\x1b[31m✗\x1b[39m ${e.phase} \x1b[2m${secs}\x1b[22m\n`);
    } else {
      opts.write(e.state === 'end' ? `${e.phase} ok (${secs})\n` : `${e.phase} FAILED (${secs})\n`);
    }
    tail = [];
  };
}

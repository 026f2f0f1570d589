/**
 * Logging. pino writes to stderr (pretty on a TTY); library callers pass their own logger or get a silent one.
 * Env values never reach a log line: objects are redacted by key (pino `redact`), free text (command output
 * tails, error messages) by value through a Redactor that knows every secret value we have read.
 */
import { pino, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';
import fs from 'node:fs';

export type { Logger } from 'pino';

/** Keys whose values are censored wherever they appear (one or two levels deep). */
export const REDACT_PATHS = [
  'env',
  '*.env',
  '*.*.env',
  'pm2_env',
  '*.pm2_env',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'password',
  '*.password',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
];

export interface LoggerOptions {
  level?: string;
  pretty?: boolean;
  /** With `pretty`: colours (a terminal); plain text otherwise. Default true. */
  colorize?: boolean;
  /** File descriptor or path; default 2 (stderr). */
  destination?: number | string;
  /** Also write JSON lines (level info and up) to this file, rotated at 5 MiB (one old copy kept). */
  file?: string;
}

const LOG_FILE_MAX = 5 * 1024 * 1024;

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const redact = { paths: REDACT_PATHS, censor: '[redacted]' };
  if (opts.file) {
    rotate(opts.file);
    const main = opts.pretty ? prettyStream(opts.destination ?? 2, opts.colorize ?? true) : pino.destination({ dest: opts.destination ?? 2, sync: true });
    const file = pino.destination({ dest: opts.file, sync: true, mkdir: true, mode: 0o640 });
    const fileLevel = level === 'debug' || level === 'trace' ? level : 'info';
    const minLevel = pino.levels.values[level] < pino.levels.values[fileLevel] ? level : fileLevel;
    return pino(
      { level: minLevel, redact, base: undefined, timestamp: pino.stdTimeFunctions.isoTime },
      pino.multistream([
        { level: level as pino.Level, stream: main },
        { level: fileLevel as pino.Level, stream: file },
      ]),
    );
  }
  if (opts.pretty) {
    // pino-pretty as a synchronous stream, not a transport: no worker thread, so nothing is lost when the
    // process exits right after a failure.
    return pino({ level, redact, base: undefined }, prettyStream(opts.destination ?? 2, opts.colorize ?? true));
  }
  return pino({ level, redact, base: undefined }, pino.destination({ dest: opts.destination ?? 2, sync: true }));
}

function prettyStream(dest: number | string, colorize: boolean) {
  return pinoPretty({ destination: dest, sync: true, colorize, translateTime: 'HH:MM:ss', ignore: 'pid,hostname' });
}

function rotate(file: string): void {
  try {
    if (fs.statSync(file).size > LOG_FILE_MAX) fs.renameSync(file, `${file}.1`);
  } catch {
    /* no file yet */
  }
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Variable names that hold secrets by convention. */
export const SECRET_NAME = /(TOKEN|SECRET|PASSW|PASSPHRASE|API_?KEY|PRIVATE|CREDENTIAL|AUTH|COOKIE|SESSION|DSN|DATABASE_URL|_KEY$|^KEY$)/i;

/**
 * Masks known secret values in free text. Values shorter than 4 characters are not masked: they would
 * turn ordinary words into noise and are not secrets worth the name.
 */
export class Redactor {
  private values = new Set<string>();

  add(...values: (string | undefined)[]): void {
    for (const v of values) if (v !== undefined && v.length >= 4) this.values.add(v);
  }

  addEnv(env: Record<string, string | undefined>, skip: (key: string) => boolean = () => false): void {
    for (const [k, v] of Object.entries(env)) if (!skip(k)) this.add(v);
  }

  /**
   * Registers the values of variables whose names say they are secrets. Not every variable: masking PATH
   * or HOME would garble every path we print, and they are not secrets.
   */
  addSecretEnv(env: Record<string, string | undefined>): void {
    for (const [k, v] of Object.entries(env)) if (SECRET_NAME.test(k)) this.add(v);
  }

  redact(text: string): string {
    if (this.values.size === 0 || text === '') return text;
    // Longest first, so a value that contains another is masked whole.
    let out = text;
    for (const v of [...this.values].sort((a, b) => b.length - a.length)) {
      if (out.includes(v)) out = out.split(v).join('[redacted]');
    }
    return out;
  }
}

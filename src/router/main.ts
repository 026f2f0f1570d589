#!/usr/bin/env node
/**
 * The router's entry, run by PM2 as `<app>-router` beside the app:
 *
 *   node dist/router/main.js --app frontend-dev --port 3001 [--host H] --dir <releasesDir>/.router [--hold-ms 15000]
 *
 * It reads its routing state from the state file at start (so after a crash, `pm2 resurrect` or a reboot
 * it routes where it routed before), binds the public port (waiting while another process still holds
 * it: the take-over of a hand-started app), and takes route/drain/status requests on its control socket.
 * Logs are JSON lines on stdout (PM2's log file); nothing per request.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import writeFileAtomic from 'write-file-atomic';
import { startControl } from './control.js';
import { parseRouterState, routerPaths, ROUTER_STATE_VERSION, type Route, type RouterState } from './protocol.js';
import { Router } from './router.js';

interface Args {
  app: string;
  port: number;
  host?: string;
  releasesDir: string;
  holdMs: number;
  maxHeld: number;
}

function parseArgs(argv: string[]): Args {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const int = (name: string, dflt: number, lo: number, hi: number): number => {
    const v = get(name);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`--${name} must be an integer from ${lo} to ${hi}`);
    return n;
  };
  const app = get('app');
  const releasesDir = get('releases-dir');
  if (!app || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(app)) throw new Error('--app must be a PM2 app name');
  if (!releasesDir || !path.isAbsolute(releasesDir)) throw new Error('--releases-dir must be an absolute path');
  return {
    app,
    port: int('port', 0, 1, 65535),
    host: get('host') || undefined,
    releasesDir,
    holdMs: int('hold-ms', 15_000, 0, 600_000),
    maxHeld: int('max-held', 10_000, 1, 1_000_000),
  };
}

// The router logs nothing per request and never an env value; the redaction is a second guard.
const logger = pino({
  base: { app: 'pm2-release-router' },
  redact: { paths: ['env', '*.env', 'headers', '*.headers', 'authorization', '*.authorization', 'cookie', '*.cookie'], censor: '[redacted]' },
});

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (!args.port) throw new Error('--port is required');
  const paths = routerPaths(args.releasesDir, args.app);
  fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(paths.dir, 0o700);

  let state: RouterState | undefined;
  try {
    state = parseRouterState(fs.readFileSync(paths.state, 'utf8'));
    if (state.app !== args.app) throw new Error(`the state file is for ${state.app}, not ${args.app}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger.error(`cannot use ${paths.state}: ${(err as Error).message}; starting with no route`);
    state = undefined;
  }

  const persist = async (route: Route): Promise<void> => {
    const next: RouterState = {
      version: ROUTER_STATE_VERSION,
      app: args.app,
      live: route.live,
      canary: route.canary ?? null,
      updatedAt: new Date().toISOString(),
    };
    await writeFileAtomic(paths.state, JSON.stringify(next, null, 2) + '\n', { mode: 0o600 });
  };
  const router = new Router({
    app: args.app,
    port: args.port,
    host: args.host,
    holdMs: args.holdMs,
    maxHeld: args.maxHeld,
    persist,
    log: (level, msg, fields) => logger[level](fields ?? {}, msg),
  });
  router.restore(state?.live ?? null, state?.canary);
  logger.info(state?.live ? `routing to ${state.live.release} on 127.0.0.1:${state.live.port} (from ${paths.state})` : 'no route recorded yet');

  const control = await startControl(router, paths.socket, (m) => logger.warn(m));
  // A replacement router for the same app and releases dir takes this socket path over (it removes the file
  // and binds its own). Closing our server would unlink the path, and with it the new router's socket.
  const socketIno = fs.statSync(paths.socket).ino;
  const socketStillOurs = () => {
    try {
      return fs.statSync(paths.socket).ino === socketIno;
    } catch {
      return false;
    }
  };
  const stop = new AbortController();
  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      logger.info(`${sig}: closing (requests in flight finish first)`);
      stop.abort();
      if (socketStillOurs()) control.close();
      else logger.info('another router serves the control socket now: leaving it');
      // Under PM2 cluster mode the primary may have sent this worker a connection just before our close
      // reached it: stay a moment so that it is answered "not accepted" and handed to the other router,
      // rather than dying with it unacknowledged (the primary would then hold it open, unanswered).
      void router
        .close(8_000)
        .then(() => new Promise((r) => setTimeout(r, 500)))
        .finally(() => process.exit(0));
    });
  }
  await router.listen(stop.signal);
}

main().catch((err: Error) => {
  logger.fatal(`router failed to start: ${err.message}`);
  process.exit(1);
});

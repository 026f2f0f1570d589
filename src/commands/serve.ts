/**
 * `pm2-release serve`: a small GitHub push webhook listener for VMs without an executor.
 *
 * - Only signed requests are accepted: `X-Hub-Signature-256` = HMAC-SHA256 of the raw body with the shared
 *   secret (from $PM2_RELEASE_WEBHOOK_SECRET or `serve.secretFile`, never argv), compared in constant time.
 * - Pushes to other branches are ignored.
 * - One deploy at a time: pushes that arrive while one runs are coalesced into a single next deploy, which
 *   pulls the branch and so releases the newest commit.
 * - `GET /status` (Authorization: Bearer <secret>) reports what runs, what is queued and the last result.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readSoak, soakRunning } from '../lifecycle/soak.js';
import { asReleaseError, UsageError } from '../errors.js';
import { currentBranch } from '../git.js';
import { createContext, type CommonOptions } from '../lifecycle/context.js';
import type { DeployResult } from '../lifecycle/results.js';

export const SECRET_ENV = 'PM2_RELEASE_WEBHOOK_SECRET';
const MAX_BODY = 1024 * 1024;

/**
 * The deploy a push starts. The library entry (index.ts) passes `deploy` when the caller passes none: a
 * command does not import another command, so the one that composes serve with deploy sits above both.
 */
export type WebhookDeploy = (opts: CommonOptions & { pull: string; waitMs: number }) => Promise<DeployResult>;

export interface ServeOptions extends CommonOptions {
  /** Override config serve.port (0: any free port; tests). */
  port?: number;
  host?: string;
  /** Called once listening, with the bound address. */
  onListening?: (address: AddressInfo) => void;
  /** Replaces the deploy call (tests of the queue). */
  deploy?: WebhookDeploy;
  /** Lock wait for each deploy (default 10 minutes). */
  waitMs?: number;
}

export interface WebhookStatus {
  ok: true;
  branch: string;
  running: { sha: string; since: string } | null;
  pending: string | null;
  deploys: number;
  last: {
    sha: string;
    result: 'ok' | 'failed';
    release: string | null;
    error: { code: string; phase: string; message: string } | null;
    finishedAt: string;
  } | null;
}

export function sign(secret: string, body: Buffer | string): string {
  return 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
}

/** Constant-time comparison that also hides the expected length. */
export function safeEqual(a: string, b: string): boolean {
  const ha = crypto.createHash('sha256').update(a).digest();
  const hb = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(ha, hb) && a.length === b.length;
}

export function readSecret(env: Record<string, string | undefined>, secretFile: string | undefined): string {
  const fromEnv = env[SECRET_ENV];
  let secret = fromEnv;
  if (!secret && secretFile) {
    try {
      secret = fs.readFileSync(secretFile, 'utf8').trim();
    } catch (err) {
      throw new UsageError('WEBHOOK_SECRET_MISSING', `cannot read serve.secretFile ${secretFile} (${(err as NodeJS.ErrnoException).code})`, {
        phase: 'config',
      });
    }
  }
  if (!secret)
    throw new UsageError('WEBHOOK_SECRET_MISSING', `no webhook secret: set ${SECRET_ENV} or serve.secretFile`, {
      phase: 'config',
      hint: 'use the same secret as the GitHub webhook settings; never pass it on the command line',
    });
  if (secret.length < 16) throw new UsageError('WEBHOOK_SECRET_WEAK', 'the webhook secret must be at least 16 characters', { phase: 'config' });
  return secret;
}

export interface WebhookServer {
  server: http.Server;
  status(): WebhookStatus;
  /** Resolves when no deploy is running or queued. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export async function startWebhookServer(opts: ServeOptions & { deploy: WebhookDeploy }): Promise<WebhookServer> {
  const ctx = createContext({ ...opts, trigger: 'webhook' });
  const { config, logger } = ctx;
  const secret = readSecret(ctx.env, config.serve.secretFile);
  ctx.redactor.add(secret);
  const branch = config.serve.branch ?? (await currentBranch(config.workspace, logger));
  if (!branch) throw new UsageError('WEBHOOK_BRANCH', 'set serve.branch: the workspace is on a detached HEAD', { phase: 'config' });
  const runDeploy = opts.deploy;

  const state: WebhookStatus = { ok: true, branch, running: null, pending: null, deploys: 0, last: null };
  let waiters: (() => void)[] = [];

  const start = (sha: string) => {
    state.running = { sha, since: new Date().toISOString() };
    state.deploys++;
    logger.info({ sha }, `webhook: deploying ${branch} (push of ${sha.slice(0, 7)})`);
    runDeploy({
      config: opts.config,
      configPath: opts.configPath,
      cwd: opts.cwd,
      env: opts.env,
      logger,
      trigger: 'webhook',
      pull: branch,
      waitMs: opts.waitMs ?? 600_000,
    })
      .then((r) => {
        state.last = { sha: r.release.sha ?? sha, result: 'ok', release: r.release.id, error: null, finishedAt: new Date().toISOString() };
      })
      .catch((err) => {
        const e = asReleaseError(err);
        logger.error({ code: e.code, phase: e.phase }, `webhook deploy failed: ${ctx.redactor.redact(e.message)}`);
        state.last = {
          sha,
          result: 'failed',
          release: e.releaseId ?? null,
          error: { code: e.code, phase: e.phase, message: ctx.redactor.redact(e.message) },
          finishedAt: new Date().toISOString(),
        };
      })
      .finally(() => {
        state.running = null;
        const next = state.pending;
        state.pending = null;
        if (next) start(next);
        else {
          const w = waiters;
          waiters = [];
          w.forEach((f) => f());
        }
      });
  };

  const enqueue = (sha: string): 'started' | 'queued' => {
    if (state.running) {
      state.pending = sha; // newer pushes replace older queued ones: one deploy of the newest commit
      return 'queued';
    }
    start(sha);
    return 'started';
  };

  const reply = (res: http.ServerResponse, status: number, body: object) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body) + '\n');
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const done = (status: number, body: object, note?: string) => {
      logger.info(
        { method: req.method, path: url.pathname, status, event: req.headers['x-github-event'], delivery: req.headers['x-github-delivery'] },
        note ?? 'webhook request',
      );
      reply(res, status, body);
    };

    if (req.method === 'GET' && url.pathname === '/status') {
      const auth = req.headers.authorization ?? '';
      if (!safeEqual(auth, `Bearer ${secret}`)) return done(401, { ok: false, error: 'unauthorized' });
      // The soak of the last deploy: running (with its numbers) or its verdict.
      void readSoak(config.releasesDir, config.app.name).then((soak) =>
        done(200, {
          ...state,
          soak: soak ? { ...soak, running: soakRunning(soak), timeLeftMs: soakRunning(soak) ? Math.max(0, Date.parse(soak.endsAt) - Date.now()) : 0 } : null,
        }),
      );
      return;
    }
    if (req.method !== 'POST' || (url.pathname !== '/webhook' && url.pathname !== '/')) return done(404, { ok: false, error: 'not found' });

    const chunks: Buffer[] = [];
    let size = 0;
    let aborted = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY && !aborted) {
        aborted = true;
        done(413, { ok: false, error: 'payload too large' });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (aborted) return;
      const body = Buffer.concat(chunks);
      const signature = String(req.headers['x-hub-signature-256'] ?? '');
      if (!signature || !safeEqual(signature, sign(secret, body)))
        return done(401, { ok: false, error: 'bad signature' }, 'webhook: rejected an unsigned or wrongly signed request');
      const event = String(req.headers['x-github-event'] ?? '');
      if (event === 'ping') return done(200, { ok: true, pong: true });
      if (event !== 'push') return done(202, { ok: true, ignored: `event ${event || '(none)'}` });
      let payload: { ref?: unknown; after?: unknown; deleted?: unknown };
      try {
        payload = JSON.parse(body.toString('utf8')) as typeof payload;
      } catch {
        return done(400, { ok: false, error: 'body is not JSON' });
      }
      if (payload.ref !== `refs/heads/${branch}`) return done(202, { ok: true, ignored: `push to ${String(payload.ref).slice(0, 100)}, not ${branch}` });
      if (payload.deleted === true) return done(202, { ok: true, ignored: 'branch deleted' });
      const after = typeof payload.after === 'string' ? payload.after : '';
      if (!/^[0-9a-f]{40}$/.test(after)) return done(400, { ok: false, error: 'push without a commit sha' });
      const how = enqueue(after);
      return done(202, { ok: true, accepted: after, [how]: true }, `webhook: push of ${after.slice(0, 7)} ${how}`);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? config.serve.port, opts.host ?? config.serve.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  logger.info(`webhook listener on http://${address.address}:${address.port}/webhook (branch ${branch})`);
  opts.onListening?.(address);

  return {
    server,
    status: () => structuredClone(state),
    idle: () => (state.running || state.pending ? new Promise<void>((r) => waiters.push(r)) : Promise.resolve()),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Runs until the signal aborts (SIGINT/SIGTERM in the CLI), then waits for a running deploy to finish. */
export async function serve(opts: ServeOptions & { deploy: WebhookDeploy }): Promise<void> {
  const hook = await startWebhookServer(opts);
  await new Promise<void>((resolve) => {
    if (opts.signal?.aborted) return resolve();
    opts.signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  await hook.close();
  await hook.idle();
}

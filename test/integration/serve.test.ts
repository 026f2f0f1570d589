/**
 * The GitHub push webhook listener (`serve`) and `deploy --pull` against a real bare "origin": signed requests
 * only, other branches ignored, bursts of pushes coalesced, the secret never echoed or logged, and the
 * workspace reset to origin/<branch> (refused over uncommitted changes unless --force).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { list, startWebhookServer } from '../../src/index.js';
import { sign, SECRET_ENV, type WebhookServer } from '../../src/commands/serve.js';
import { request, setupRemote, type HttpResult, type Remote } from '../helpers/remote.js';
import { cli, createSandbox, get, type Sandbox, walkFiles as walk } from '../helpers/sandbox.js';

const SECRET = 'whsec-canary-5d2f8a71c3e94b06';
const RELEASE_ID = /^\d{8}T\d{6}Z-[0-9a-f]{7}$/;

describe('webhook listener and deploy --pull', () => {
  let sb: Sandbox;
  let remote: Remote;
  let hook: WebhookServer;
  let base: string;
  const logChunks: string[] = [];
  const bodies: string[] = [];
  const hookShas: string[] = [];

  const appUrl = () => `http://127.0.0.1:${sb.port}/`;
  const opts = () => ({ configPath: sb.configPath, env: sb.env, cwd: sb.root });
  const releaseDirs = () => (fs.existsSync(sb.releasesDir) ? fs.readdirSync(sb.releasesDir).filter((n) => RELEASE_ID.test(n)) : []);
  const wsHead = () => remote.git(sb.workspace, 'rev-parse', 'HEAD');

  /** Every response body is kept: none may ever contain the secret. */
  const call = async (pathname: string, o: Parameters<typeof request>[1] = {}): Promise<HttpResult> => {
    const r = await request(base + pathname, o);
    bodies.push(r.body);
    return r;
  };
  const json = (r: HttpResult) => JSON.parse(r.body);
  const pushPayload = (ref: string, after: string) => JSON.stringify({ ref, after, repository: { full_name: 'acme/frontend' } });
  const webhook = (body: string, headers: Record<string, string>) =>
    call('/webhook', { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const signedPush = (ref: string, after: string) => {
    const body = pushPayload(ref, after);
    return webhook(body, { 'x-github-event': 'push', 'x-github-delivery': `d-${after.slice(0, 8)}`, 'x-hub-signature-256': sign(SECRET, body) });
  };

  beforeAll(async () => {
    sb = await createSandbox({ keep: 3 });
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    cfg.serve = { branch: 'main' };
    fs.writeFileSync(sb.configPath, JSON.stringify(cfg, null, 2));
    remote = setupRemote(sb);
    const stream = new Writable({
      write(chunk, _enc, cb) {
        logChunks.push(String(chunk));
        cb();
      },
    });
    hook = await startWebhookServer({
      configPath: sb.configPath,
      env: { ...sb.env, [SECRET_ENV]: SECRET },
      port: 0,
      host: '127.0.0.1',
      cwd: sb.root,
      logger: pino({ level: 'debug' }, stream),
    });
    const addr = hook.server.address();
    if (!addr || typeof addr !== 'object') throw new Error('webhook server has no address');
    base = `http://127.0.0.1:${addr.port}`;
  });

  afterAll(async () => {
    if (hook) {
      await hook.close();
      // A deploy still running (a failed test) must not outlive the sandbox it writes into.
      await Promise.race([hook.idle(), new Promise((r) => setTimeout(r, 90_000))]);
    }
    await sb?.close();
  }, 150_000);

  it('rejects unsigned and wrongly signed requests with 401 and deploys nothing', async () => {
    const sha = remote.originSha();
    const body = pushPayload('refs/heads/main', sha);
    const rejected = [
      // no signature at all
      await webhook(body, { 'x-github-event': 'push' }),
      // signed with another secret
      await webhook(body, { 'x-github-event': 'push', 'x-hub-signature-256': sign('not-the-secret-0123456789', body) }),
      // a valid signature of a different body (tampered payload)
      await webhook(body, { 'x-github-event': 'push', 'x-hub-signature-256': sign(SECRET, pushPayload('refs/heads/main', 'f'.repeat(40))) }),
      // the right hex without the sha256= prefix
      await webhook(body, { 'x-github-event': 'push', 'x-hub-signature-256': sign(SECRET, body).slice('sha256='.length) }),
      // the secret itself as the signature
      await webhook(body, { 'x-github-event': 'push', 'x-hub-signature-256': SECRET }),
      // an unsigned ping is no better than an unsigned push
      await webhook('{"zen":"hi"}', { 'x-github-event': 'ping' }),
    ];
    for (const r of rejected) {
      expect(r.status).toBe(401);
      expect(json(r)).toMatchObject({ ok: false });
    }
    // the root path is an alias of /webhook: same rule
    const root = await call('/', { method: 'POST', body, headers: { 'x-github-event': 'push' } });
    expect(root.status).toBe(401);
    expect((await call('/webhook')).status).toBe(404);

    const s = hook.status();
    expect(s).toMatchObject({ deploys: 0, running: null, pending: null, last: null });
    await hook.idle();
    expect(releaseDirs()).toEqual([]);
    expect(fs.existsSync(path.join(sb.releasesDir, 'history.jsonl'))).toBe(false);
  });

  it('ignores a signed push to another branch (202) and deploys nothing', async () => {
    const featureSha = remote.push('feature work', { 'frontend/version.txt': 'feature-v9\n' }, 'feature');
    const r = await signedPush('refs/heads/feature', featureSha);
    expect(r.status).toBe(202);
    expect(json(r)).toMatchObject({ ok: true });
    expect(json(r).ignored).toMatch(/feature/);
    expect(json(r).accepted).toBeUndefined();
    // a tag named like the branch is not the branch
    const tag = await signedPush('refs/tags/main', featureSha);
    expect(tag.status).toBe(202);
    expect(json(tag).ignored).toBeDefined();

    expect(hook.status()).toMatchObject({ deploys: 0, running: null, pending: null });
    await hook.idle();
    expect(releaseDirs()).toEqual([]);
    expect(wsHead()).not.toBe(featureSha);
  });

  it('answers a signed ping with 200', async () => {
    const body = JSON.stringify({ zen: 'Keep it logically awesome.', hook_id: 1 });
    const r = await webhook(body, { 'x-github-event': 'ping', 'x-hub-signature-256': sign(SECRET, body) });
    expect(r.status).toBe(200);
    expect(json(r)).toMatchObject({ ok: true });
    expect(hook.status().deploys).toBe(0);
  });

  it('coalesces three quick pushes to main into at most two deploys that end on the newest commit', async () => {
    const answers: HttpResult[] = [];
    for (let i = 1; i <= 3; i++) {
      const sha = remote.push(`hook v${i}`, { 'frontend/version.txt': `hook-v${i}\n` });
      hookShas.push(sha);
      answers.push(await signedPush('refs/heads/main', sha));
    }
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202]);
    expect(answers.map((a) => json(a).accepted)).toEqual(hookShas);
    // the first starts a deploy; the next two arrive while it runs and share one queued slot
    expect(json(answers[0])).toMatchObject({ started: true });
    expect(json(answers[1])).toMatchObject({ queued: true });
    expect(json(answers[2])).toMatchObject({ queued: true });
    const during = hook.status();
    expect(during.running?.sha).toBe(hookShas[0]);
    expect(during.pending).toBe(hookShas[2]);
    expect(during.deploys).toBeLessThanOrEqual(2);

    await hook.idle();
    const after = hook.status();
    expect(after.deploys).toBeGreaterThanOrEqual(1);
    expect(after.deploys).toBeLessThanOrEqual(2);
    expect(after).toMatchObject({ running: null, pending: null, last: { result: 'ok', sha: hookShas[2], error: null } });
    expect(after.last?.release).toMatch(RELEASE_ID);
    expect(releaseDirs().length).toBeLessThanOrEqual(2);

    const res = await get(appUrl());
    expect(res.status).toBe(200);
    expect(res.body).toContain('hook-v3');
    expect(res.body).toContain(after.last!.release!);
    expect(wsHead()).toBe(hookShas[2]);
    const l = await list(opts());
    const active = l.releases.find((r) => r.active);
    expect(active?.id).toBe(after.last!.release);
    expect(active?.sha).toBe(hookShas[2]);
    expect(l.active).toBe(after.last!.release);
    const viaCli = JSON.parse(cli(sb, ['list', '--json']).stdout);
    expect(viaCli.releases.find((r: { active: boolean }) => r.active)).toMatchObject({ sha: hookShas[2] });
  });

  it('GET /status needs the bearer secret and reports branch, deploys and the last result', async () => {
    expect((await call('/status')).status).toBe(401);
    expect((await call('/status', { headers: { authorization: 'Bearer not-the-secret-0123456789' } })).status).toBe(401);
    expect((await call('/status', { headers: { authorization: `Bearer ${SECRET}x` } })).status).toBe(401);
    expect((await call('/status', { headers: { authorization: SECRET } })).status).toBe(401);
    expect((await call('/status', { headers: { authorization: `Basic ${Buffer.from(`x:${SECRET}`).toString('base64')}` } })).status).toBe(401);
    // a signed POST is not a way around it
    expect((await call('/status', { method: 'POST', body: '{}', headers: { 'x-hub-signature-256': sign(SECRET, '{}') } })).status).toBe(404);

    const r = await call('/status', { headers: { authorization: `Bearer ${SECRET}` } });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/application\/json/);
    const s = json(r);
    expect(s).toHaveProperty('soak'); // null here: the restart strategy has no soak
    expect(s).toMatchObject({
      ok: true,
      branch: 'main',
      running: null,
      pending: null,
      deploys: hook.status().deploys,
      last: { result: 'ok', sha: hookShas[2] },
    });
    expect(s.deploys).toBeGreaterThanOrEqual(1);
  });

  it('never shows the secret in responses, logs, the history, build logs or the PM2 state', async () => {
    expect(bodies.length).toBeGreaterThan(10);
    for (const b of bodies) expect(b).not.toContain(SECRET);

    const logs = logChunks.join('');
    // the capture works: the listener and its deploys did log through our logger
    expect(logs).toContain('rejected an unsigned or wrongly signed request');
    expect(logs).toContain('webhook: deploying main');
    expect(logs).not.toContain(SECRET);

    const historyFile = path.join(sb.releasesDir, 'history.jsonl');
    expect(fs.readFileSync(historyFile, 'utf8')).toContain('"trigger":"webhook"');
    expect(fs.readFileSync(historyFile, 'utf8')).not.toContain(SECRET);

    const files = walk(sb.releasesDir);
    const buildLogs = files.filter((f) => f.endsWith('build.log'));
    expect(buildLogs.length).toBeGreaterThanOrEqual(1);
    for (const f of files) expect(fs.readFileSync(f).includes(SECRET), f).toBe(false);

    // the app PM2 runs (and the dump that resurrects it) did not inherit the listener's secret
    const app = sb.jlist().find((p) => p.name === 'frontend-dev')!;
    expect(app).toBeDefined();
    expect(JSON.stringify(app.pm2_env)).not.toContain(SECRET);
    expect(fs.readFileSync(path.join(sb.pm2Home, 'dump.pm2'), 'utf8')).not.toContain(SECRET);
    for (const f of walk(path.join(sb.pm2Home, 'logs'))) expect(fs.readFileSync(f).includes(SECRET), f).toBe(false);
    if (fs.existsSync(`/proc/${app.pid}/environ`)) expect(fs.readFileSync(`/proc/${app.pid}/environ`).includes(SECRET)).toBe(false);
  });

  it('deploy --pull main fetches, resets the workspace and deploys the pushed commit', async () => {
    const untracked = path.join(sb.appDir, 'notes.local');
    fs.writeFileSync(untracked, 'scratch\n');
    const sha = remote.push('pull v1', { 'frontend/version.txt': 'pull-v1\n' });
    expect(wsHead()).not.toBe(sha);

    const r = cli(sb, ['deploy', '--pull', 'main', '--json']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ ok: true, action: 'deploy', release: { sha } });
    expect(wsHead()).toBe(sha);
    expect(remote.git(sb.workspace, 'symbolic-ref', '--short', 'HEAD')).toBe('main');
    expect(remote.git(sb.workspace, 'status', '--porcelain', '--untracked-files=no')).toBe('');
    expect(fs.readFileSync(path.join(sb.appDir, 'version.txt'), 'utf8')).toBe('pull-v1\n');
    // untracked files are not "uncommitted changes" and survive the reset
    expect(fs.existsSync(untracked)).toBe(true);
    const res = await get(appUrl());
    expect(res.body).toContain('pull-v1');
    expect(res.body).toContain(out.release.id);
  });

  it('deploy --pull refuses a workspace with uncommitted changes (exit 2, WORKSPACE_DIRTY) and changes nothing; --force proceeds', async () => {
    const versionFile = path.join(sb.appDir, 'version.txt');
    fs.writeFileSync(versionFile, 'local-edit\n');
    const sha = remote.push('pull v2', { 'frontend/version.txt': 'pull-v2\n' });
    const headBefore = wsHead();
    const trackingBefore = remote.git(sb.workspace, 'rev-parse', 'refs/remotes/origin/main');
    const dirsBefore = releaseDirs().sort();
    const activeBefore = (await list(opts())).active;
    const servedBefore = (await get(appUrl())).body;
    expect(servedBefore).toContain('pull-v1');

    const refused = cli(sb, ['deploy', '--pull', 'main', '--json']);
    expect(refused.code, refused.stderr + refused.stdout).toBe(2);
    expect(JSON.parse(refused.stdout)).toMatchObject({ ok: false, error: { code: 'WORKSPACE_DIRTY' } });
    const human = cli(sb, ['deploy', '--pull', 'main']);
    expect(human.code).toBe(2);
    expect(human.stderr).toMatch(/uncommitted changes/);
    expect(human.stderr).toMatch(/--force/);

    expect(wsHead()).toBe(headBefore);
    expect(remote.git(sb.workspace, 'rev-parse', 'refs/remotes/origin/main')).toBe(trackingBefore);
    expect(fs.readFileSync(versionFile, 'utf8')).toBe('local-edit\n');
    expect(releaseDirs().sort()).toEqual(dirsBefore);
    expect((await list(opts())).active).toBe(activeBefore);
    expect((await get(appUrl())).body).toBe(servedBefore);

    const forced = cli(sb, ['deploy', '--pull', 'main', '--force', '--json']);
    expect(forced.code, forced.stderr + forced.stdout).toBe(0);
    const out = JSON.parse(forced.stdout);
    expect(out).toMatchObject({ ok: true, release: { sha } });
    expect(wsHead()).toBe(sha);
    expect(fs.readFileSync(versionFile, 'utf8')).toBe('pull-v2\n');
    expect((await get(appUrl())).body).toContain('pull-v2');
  });

  it('history --json lists the webhook deploys with trigger "webhook" and the CLI ones with "cli"', async () => {
    const r = cli(sb, ['history', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const { ok, entries } = JSON.parse(r.stdout) as {
      ok: boolean;
      entries: { action: string; trigger: string; sha: string | null; to: string | null; result: string; error: { code: string } | null }[];
    };
    expect(ok).toBe(true);
    const deploys = entries.filter((e) => e.action === 'deploy');
    const byWebhook = deploys.filter((e) => e.trigger === 'webhook');
    expect(byWebhook).toHaveLength(hook.status().deploys);
    for (const e of byWebhook) expect(e).toMatchObject({ result: 'ok', error: null, sha: hookShas[2] });
    expect(byWebhook.map((e) => e.to)).toContain(hook.status().last!.release);

    const byCli = deploys.filter((e) => e.trigger === 'cli');
    expect(byCli.filter((e) => e.result === 'ok')).toHaveLength(2);
    const refusals = byCli.filter((e) => e.result === 'failed');
    expect(refusals).toHaveLength(2);
    for (const e of refusals) expect(e.error?.code).toBe('WORKSPACE_DIRTY');
    // nothing else deployed: every deploy was either the listener's or one of ours
    expect(deploys).toHaveLength(byWebhook.length + byCli.length);
    expect(fs.readFileSync(path.join(sb.releasesDir, 'history.jsonl'), 'utf8')).not.toContain(SECRET);
  });

  it('the fleet contract: --pull main --ref <sha> deploys exactly that commit (changed), again (not changed), refuses a sha main lacks; rollback --if-current skips', async () => {
    const pinned = remote.push('pinned', { 'frontend/version.txt': 'pinned\n' });
    const head = remote.push('newer', { 'frontend/version.txt': 'newer\n' });
    const r = cli(sb, ['deploy', '--pull', 'main', '--ref', pinned.slice(0, 12), '--json']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, changed: true, mode: 'built', release: { sha: pinned } });
    expect(wsHead()).toBe(head);
    expect((await get(appUrl())).body).toContain('pinned');

    const again = cli(sb, ['deploy', '--pull', 'main', '--ref', pinned, '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, changed: false, mode: 'unchanged' });

    const elsewhere = remote.push('on another branch', { 'frontend/version.txt': 'other\n' }, 'other');
    const refused = cli(sb, ['deploy', '--pull', 'main', '--ref', elsewhere, '--json']);
    expect(refused.code, refused.stderr + refused.stdout).toBe(2);
    expect(JSON.parse(refused.stdout)).toMatchObject({ ok: false, changed: false, error: { code: 'REF_NOT_IN_BRANCH', phase: 'pull' } });

    const skipped = cli(sb, ['rollback', '--if-current', elsewhere, '--json']);
    expect(skipped.code, skipped.stderr + skipped.stdout).toBe(0);
    expect(JSON.parse(skipped.stdout)).toMatchObject({ ok: true, changed: false, skipped: true, active: { sha: pinned } });
    expect((await get(appUrl())).body).toContain('pinned');
  });
});

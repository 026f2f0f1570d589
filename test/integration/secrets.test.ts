/**
 * Canary secrets placed in an env file, in the app's PM2 env and in the caller's environment never appear
 * in any stdout, stderr or log file produced by pm2-release, even when the build prints them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createSandbox, type Sandbox, walkFiles as walk } from '../helpers/sandbox.js';

const CANARIES = {
  envFile: 'canary-envfile-7f3a9c',
  appEnv: 'canary-appenv-2b8c1d',
  caller: 'canary-caller-93d1e5',
};

describe('secrets never reach output or logs', () => {
  let sb: Sandbox;
  const outputs: string[] = [];
  const run = (args: string[], configPath?: string) => {
    const r = cli(sb, configPath ? ['--config', configPath, ...args] : args, { DEPLOY_TOKEN: CANARIES.caller });
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  beforeAll(async () => {
    sb = await createSandbox({ app: { env: {}, healthcheck: { timeoutMs: 20_000, settleMs: 300 } } });
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    cfg.app.env = { FRONT_PORT: String(sb.port), API_TOKEN: CANARIES.appEnv };
    fs.writeFileSync(sb.configPath, JSON.stringify(cfg));
    fs.writeFileSync(path.join(sb.appDir, '.env.production'), `SESSION_SECRET=${CANARIES.envFile}\n`, { mode: 0o644 });
  });
  afterAll(async () => sb?.close());

  it('across deploy, verbose deploy, status, list, doctor, rollback, a failing build that prints them, and a failed health gate', () => {
    expect(run(['deploy', '--json']).code).toBe(0);
    sb.commit('v2', { 'version.txt': 'v2\n' });
    expect(run(['--verbose', 'deploy']).code).toBe(0);
    expect(run(['status', '--json']).code).toBe(0);
    expect(run(['--verbose', 'status']).code).toBe(0);
    expect(run(['list', '--json']).code).toBe(0);
    run(['doctor', '--json']);
    expect(run(['rollback', '--verbose']).code).toBe(0);

    // A build that prints every secret it can see, then fails: the log and the error tail are masked.
    const cfg = JSON.parse(fs.readFileSync(sb.configPath, 'utf8'));
    const leaky = path.join(sb.root, 'leaky.json');
    fs.writeFileSync(
      leaky,
      JSON.stringify({
        ...cfg,
        app: {
          ...cfg.app,
          build: [
            'node',
            '-e',
            "console.log(require('fs').readFileSync('.env.production','utf8'), process.env.API_TOKEN, process.env.DEPLOY_TOKEN); process.exit(3)",
          ],
        },
      }),
    );
    sb.commit('v3', { 'version.txt': 'v3\n' });
    const failed = run(['deploy'], leaky);
    expect(failed.code).toBe(4);
    expect(failed.stderr).toContain('[redacted]');
    run(['--verbose', 'deploy', '--json'], leaky);

    // A release that crashes at boot (health gate, --no-verify): the revert path logs too.
    sb.commit('crash', { CRASH_ON_BOOT: '1' });
    expect(run(['--verbose', 'deploy', '--no-verify']).code).toBe(5);

    // The copied env file is 0600 in every release, whatever the source's mode.
    for (const id of fs.readdirSync(sb.releasesDir).filter((n) => /^\d{8}T/.test(n))) {
      const f = path.join(sb.releasesDir, id, 'frontend/.env.production');
      if (fs.existsSync(f)) expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    }

    const logFiles = [
      ...walk(sb.releasesDir).filter((f) => f.endsWith('.log') || f.endsWith('.jsonl')),
      ...walk(path.join(sb.pm2Home, 'logs')),
      path.join(sb.pm2Home, 'pm2.log'),
    ];
    expect(logFiles.some((f) => f.endsWith('build.log'))).toBe(true);
    const haystacks = [...outputs.map((o, i) => [`output #${i}`, o] as const), ...logFiles.map((f) => [f, fs.readFileSync(f, 'utf8')] as const)];
    for (const [where, text] of haystacks) {
      for (const [kind, canary] of Object.entries(CANARIES)) {
        expect(text.includes(canary), `${kind} canary found in ${where}`).toBe(false);
      }
    }
  });
});

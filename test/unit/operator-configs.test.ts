/**
 * The configs and commands operators really write (issue "First try works"), on the pure parts: the runbook's
 * literal health URL, `{}`, a Next app without distDir, the printed chmod and executor call.
 */
import { describe, expect, it } from 'vitest';
import { aimHealthUrl, loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { procAddress, isLoopbackAddress } from '../../src/health.js';
import { dumpChmod } from '../../src/lifecycle/checks.js';
import { executorCall } from '../../src/commands/init.js';
import { loopbackArgs } from '../../src/pm2/routed-switch.js';
import { prunePlan } from '../../src/release/builder.js';

const load = (config: unknown) => loadConfig({ config, cwd: '/home/ubuntu', env: {}, home: '/home/ubuntu' });
const problems = (config: unknown): string[] => {
  try {
    load(config);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
};

describe('a health URL on the public port (the runbook: curl -I http://127.0.0.1:3001)', () => {
  it('is aimed at each new release: the loader rewrites it to {port} and says so in one line', () => {
    const r = load({ app: { healthcheck: { url: 'http://127.0.0.1:3001/' } } });
    expect(r.config.app.healthcheck.url).toBe('http://127.0.0.1:{port}/');
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toBe(
      "app.healthcheck.url: http://127.0.0.1:3001/ names the app's public port 3001: each new release is probed on its own port (http://127.0.0.1:{port}/)",
    );
  });

  it('localhost, no trailing slash, a path and a query keep their path; checks[] are aimed the same way', () => {
    const r = load({
      app: {
        healthcheck: {
          url: 'http://localhost:3001',
          checks: [
            { url: 'http://127.0.0.1:3001/api/health?deep=1', expectStatus: [200] },
            { url: 'http://127.0.0.1:3000/api/protected', expectStatus: [401] },
          ],
        },
      },
    });
    expect(r.config.app.healthcheck.url).toBe('http://127.0.0.1:{port}/');
    expect(r.config.app.healthcheck.checks.map((c) => c.url)).toEqual(['http://127.0.0.1:{port}/api/health?deep=1', 'http://127.0.0.1:3000/api/protected']);
    expect(r.warnings).toHaveLength(2);
  });

  it('the restart strategy gets the same aim (its verify run then checks the new release, not the live one)', () => {
    const r = load({ app: { strategy: 'restart', healthcheck: { url: 'http://127.0.0.1:3001/' } } });
    expect(r.config.app.healthcheck.url).toBe('http://127.0.0.1:{port}/');
  });

  it('behind the router, a main URL the gate cannot aim at the new release is refused at load', () => {
    expect(problems({ app: { healthcheck: { url: 'http://127.0.0.1/' } } }).join('\n')).toContain(
      "app.healthcheck.url: http://127.0.0.1/ is port 80 of this host, not the app's port 3001",
    );
    expect(problems({ app: { healthcheck: { url: 'https://www.example.com/' } } }).join('\n')).toContain('is another host (www.example.com)');
    expect(problems({ app: { healthcheck: { url: 'http://10.0.0.5:3001/' } } }).join('\n')).toContain('not known to be this host');
    expect(problems({ app: { healthcheck: { checks: [{ url: 'http://10.0.0.5:3001/x', expectStatus: [200] }] } } }).join('\n')).toContain(
      'app.healthcheck.checks.0.url',
    );
    // The restart strategy's app binds the public port itself: such a URL reaches it, nothing to refuse.
    expect(problems({ app: { strategy: 'restart', healthcheck: { url: 'https://www.example.com/' } } })).toEqual([]);
  });

  it('router.host counts as this host', () => {
    const r = load({ router: { host: '10.0.0.5' }, app: { healthcheck: { url: 'http://10.0.0.5:3001/' } } });
    expect(r.config.app.healthcheck.url).toBe('http://127.0.0.1:{port}/');
  });

  it('aimHealthUrl: {port} URLs are left alone; https on the public port is not rewritten to http', () => {
    expect(aimHealthUrl('http://127.0.0.1:{port}/x', 3001)).toEqual({ url: 'http://127.0.0.1:{port}/x', rewritten: false });
    expect(aimHealthUrl('https://127.0.0.1:3001/', 3001).rewritten).toBe(false);
    expect(aimHealthUrl('http://[::1]:3001/ok', 3001)).toMatchObject({ url: 'http://127.0.0.1:{port}/ok', rewritten: true });
  });
});

describe('{} is the VM layout', () => {
  it('loads with no warning and no problem', () => {
    expect(load({}).warnings).toEqual([]);
  });
});

describe('prune never deletes a Next.js build (a dir with BUILD_ID)', () => {
  const fsOf = (files: string[]) => (p: string) => files.some((f) => f === p || f.startsWith(p + '/'));
  it('.next holding a build: only .next/cache goes, and the note says so', () => {
    const plan = prunePlan('.next', fsOf(['.next/BUILD_ID', '.next/cache/webpack/x', '.next/server/app.js']));
    expect(plan.remove).toBe('.next/cache');
    expect(plan.note).toBe('prune: kept .next: it holds the Next.js build (.next/BUILD_ID); pruned .next/cache instead');
  });
  it('.next without a build (distDir "build": leftovers) is removed whole; a missing path is nothing', () => {
    expect(prunePlan('.next', fsOf(['.next/cache/x']))).toEqual({ remove: '.next' });
    expect(prunePlan('.turbo', fsOf([]))).toEqual({ remove: undefined });
  });
  it('a build without a cache dir: kept, nothing removed', () => {
    expect(prunePlan('build', fsOf(['build/BUILD_ID']))).toMatchObject({ remove: undefined, note: expect.stringContaining('kept build') as string });
  });
});

describe('printed commands run on the state that prompted them', () => {
  it('the dump chmod names dump.pm2.bak only when there is one', () => {
    expect(dumpChmod('/home/ubuntu/.pm2/dump.pm2', false)).toBe('chmod 600 /home/ubuntu/.pm2/dump.pm2');
    expect(dumpChmod('/home/ubuntu/.pm2/dump.pm2', true)).toBe('chmod 600 /home/ubuntu/.pm2/dump.pm2 /home/ubuntu/.pm2/dump.pm2.bak');
    expect(dumpChmod("/home/o'brien/.pm2/dump.pm2", false)).toBe("chmod 600 '/home/o'\\''brien/.pm2/dump.pm2'");
  });
  it('the executor call passes an explicit env (integration.md), never process.env whole', () => {
    const line = executorCall('/home/ubuntu/pm2-release/pm2-release.config.json');
    expect(line).toContain('env, trigger: "api"');
    expect(line).toContain('["PATH","HOME","USER","LANG","PM2_HOME"');
    expect(line).not.toMatch(/env: process\.env/);
  });
});

describe('a release behind the router listens on loopback only', () => {
  it('next start through npm run start: -H 127.0.0.1 after --', () => {
    expect(loopbackArgs('npm', ['run', 'start'], { start: 'next start --port ${FRONT_PORT:-3001}' })).toEqual(['run', 'start', '--', '-H', '127.0.0.1']);
    expect(loopbackArgs('npm', ['start'], { start: 'next start' })).toEqual(['start', '--', '-H', '127.0.0.1']);
  });
  it('next run directly: -H 127.0.0.1', () => {
    expect(loopbackArgs('/srv/r/node_modules/next/dist/bin/next', ['start'], {})).toEqual(['start', '-H', '127.0.0.1']);
  });
  it('left alone: a host already given, another server, a compound script', () => {
    expect(loopbackArgs('npm', ['run', 'start'], { start: 'next start -H 0.0.0.0' })).toBeUndefined();
    expect(loopbackArgs('npm', ['run', 'start'], { start: 'node server.mjs' })).toBeUndefined();
    expect(loopbackArgs('npm', ['run', 'start'], { start: 'next start && echo done' })).toBeUndefined();
    expect(loopbackArgs('npm', ['run', 'serve'], { start: 'next start' })).toBeUndefined();
  });
  it('reads /proc/net listen addresses', () => {
    expect(procAddress('0100007F')).toBe('127.0.0.1');
    expect(procAddress('00000000')).toBe('0.0.0.0');
    expect(procAddress('00000000000000000000000000000000')).toBe('::');
    expect(procAddress('00000000000000000000000001000000')).toBe('::1');
    expect(procAddress('0000000000000000FFFF00000100007F')).toBe('127.0.0.1');
    expect(isLoopbackAddress('127.0.0.1') && isLoopbackAddress('::1') && !isLoopbackAddress('::') && !isLoopbackAddress('0.0.0.0')).toBe(true);
  });
});

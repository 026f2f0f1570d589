/** `init`'s pure half: the facts read from PM2 and the app dir → the config, a reason per key, warnings and problems. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { proposeConfig, renderConfig, type InitFacts } from '../../src/lifecycle/proposal.js';

/** The runbook's VM: `FRONT_PORT=3001 pm2 start npm --name frontend-dev -- run start` from the workspace's frontend/. */
function runbookFacts(over: Partial<InitFacts> = {}, app: Partial<InitFacts['app']> = {}): InitFacts {
  return {
    app: {
      name: 'frontend-dev',
      cwd: '/home/ubuntu/executor/workspace/frontend',
      script: '/usr/bin/npm',
      args: ['run', 'start'],
      execMode: 'fork_mode',
      instances: 1,
      port: { name: 'FRONT_PORT', value: '3001' },
      envNames: ['FRONT_PORT', 'PATH', 'HOME', 'API_TOKEN'],
      ...app,
    },
    workspace: '/home/ubuntu/executor/workspace',
    files: ['package.json', 'package-lock.json', 'next.config.mjs', '.env.local', 'node_modules', 'build'],
    scripts: { build: 'next build', start: 'next start -p ${FRONT_PORT:-3001} -H 127.0.0.1' },
    envFileNames: { '.env.local': ['API_TOKEN', 'NEXT_PUBLIC_API'] },
    nextDistDir: 'build',
    // The runbook's VM: Apache in front, on the same host.
    front: { name: 'apache2', pid: 812 },
    ...over,
  };
}

const load = (config: unknown) => loadConfig({ config, cwd: '/home/ubuntu', env: {}, home: '/home/ubuntu' });

describe('proposeConfig', () => {
  it('the runbook app: router strategy, workspace and dir from the git top-level, the port only, npm ci, next build caches', () => {
    const p = proposeConfig(runbookFacts());
    expect(p.problems).toEqual([]);
    expect(p.warnings).toEqual([]);
    expect(p.config).toEqual({
      workspace: '/home/ubuntu/executor/workspace',
      releasesDir: '~/executor/frontend-releases',
      keep: 2,
      app: {
        name: 'frontend-dev',
        dir: 'frontend',
        envFiles: ['.env', '.env.local', '.env.production', '.env.production.local'],
        install: ['npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund'],
        build: ['npm', 'run', 'build'],
        prune: ['.next', '.turbo', 'build/cache'],
        script: 'npm',
        args: ['run', 'start'],
        env: { FRONT_PORT: '3001' },
        portEnv: 'FRONT_PORT',
        strategy: 'router',
      },
      router: { host: '127.0.0.1', releasePorts: [13001, 13100] },
    });
    expect(p.comments['router.host']).toContain('apache2 (pid 812) runs on this host');
    // The loader takes it as is, and gives it the same private ports it would compute.
    expect(load(p.config).config.router.releasePorts).toEqual([13001, 13100]);
  });

  it('has a reason for every key it sets', () => {
    const p = proposeConfig(runbookFacts());
    const keys = (o: object, prefix = ''): string[] =>
      Object.entries(o).flatMap(([k, v]) => {
        const dotted = prefix ? `${prefix}.${k}` : k;
        return v && typeof v === 'object' && !Array.isArray(v) && !['app.env'].includes(dotted) ? keys(v, dotted) : [dotted];
      });
    for (const k of keys(p.config).filter((k) => k !== 'app' && k !== 'router')) expect(p.comments[k], k).toBeTruthy();
    expect(p.comments['app.envFiles']).toContain('present now: .env.local');
  });

  it('never carries an env value but the port, and names (only) the PM2 variables no env file defines', () => {
    const p = proposeConfig(runbookFacts({ envFileNames: {} }, { envNames: ['FRONT_PORT', 'PATH', 'SSH_CONNECTION', 'API_TOKEN', 'FEATURE_X'] }));
    expect(p.config.app?.env).toEqual({ FRONT_PORT: '3001' });
    expect(p.warnings).toHaveLength(1);
    expect(p.warnings[0]).toContain('API_TOKEN (secret), FEATURE_X, in no env file');
    expect(p.warnings[0]).not.toContain('PATH');
    expect(p.warnings[0]).not.toContain('SSH_CONNECTION');
  });

  it('an app started from an ecosystem file with a node script: the script relative to the app dir, no args', () => {
    const p = proposeConfig(
      runbookFacts(
        { files: ['package.json', 'package-lock.json', 'server.mjs'], scripts: { build: 'node build.mjs', start: 'node server.mjs' }, nextDistDir: undefined },
        { name: 'shop', script: '/home/ubuntu/executor/workspace/frontend/server.mjs', args: [], envNames: ['FRONT_PORT'] },
      ),
    );
    expect(p.problems).toEqual([]);
    expect(p.config.app).toMatchObject({ name: 'shop', script: 'server.mjs', args: [], prune: ['.next', '.turbo', 'build/cache'] });
    expect(load(p.config).config.app.script).toBe('server.mjs');
  });

  it('an app at the repository root is dir "."; PORT is taken when that is what the app reads', () => {
    const p = proposeConfig(runbookFacts({ workspace: '/srv/site' }, { cwd: '/srv/site', port: { name: 'PORT', value: '8080' }, envNames: ['PORT'] }));
    expect(p.config.app).toMatchObject({ dir: '.', env: { PORT: '8080' }, portEnv: 'PORT' });
    expect(p.config.router).toEqual({ host: '127.0.0.1', releasePorts: [18080, 18179] });
  });

  it('a high app port gets the fixed private range below the ephemeral ports', () => {
    const p = proposeConfig(runbookFacts({}, { port: { name: 'FRONT_PORT', value: '30001' } }));
    expect(p.config.router).toEqual({ host: '127.0.0.1', releasePorts: [20000, 20099] });
  });

  it.each([
    [['yarn.lock'], ['yarn', 'install', '--frozen-lockfile'], ['yarn', 'run', 'build']],
    [['pnpm-lock.yaml'], ['pnpm', 'install', '--frozen-lockfile'], ['pnpm', 'run', 'build']],
    [['npm-shrinkwrap.json'], ['npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund'], ['npm', 'run', 'build']],
  ])('lockfile %j → install %j, build %j', (files, install, build) => {
    const p = proposeConfig(runbookFacts({ files: ['package.json', ...files] }));
    expect(p.config.app?.install).toEqual(install);
    expect(p.config.app?.build).toEqual(build);
  });

  it('no lockfile: npm install and a warning; no build script: no build', () => {
    const p = proposeConfig(runbookFacts({ files: ['package.json'], scripts: { start: 'node server.js' } }));
    expect(p.config.app?.install).toEqual(['npm', 'install', '--no-audit', '--no-fund']);
    expect(p.config.app?.build).toEqual([]);
    expect(p.warnings.join('\n')).toContain('no lockfile');
  });

  it("Next's default distDir: the build lives in .next, only its cache is pruned", () => {
    const p = proposeConfig(runbookFacts({ nextDistDir: undefined }));
    expect(p.config.app?.prune).toEqual(['.next/cache', '.turbo']);
  });

  it('next start without -H: no warning, each release is started with -H 127.0.0.1 (said on app.args)', () => {
    const p = proposeConfig(runbookFacts({ scripts: { build: 'next build', start: 'next start' } }));
    expect(p.problems).toEqual([]);
    expect(p.warnings).toEqual([]);
    expect(p.comments['app.args']).toContain('-H 127.0.0.1');
  });

  it('a start command pm2-release cannot bind to loopback: a warning naming it', () => {
    const p = proposeConfig(runbookFacts({ scripts: { build: 'next build', start: 'node server.js' } }));
    expect(p.warnings.join('\n')).toContain('package.json scripts.start is not a plain next start');
  });

  it('no web front on this host: router.host is not proposed, and a warning says when to set it', () => {
    const p = proposeConfig(runbookFacts({ front: undefined }));
    expect(p.config.router).toEqual({ releasePorts: [13001, 13100] });
    expect(p.warnings.join('\n')).toContain('set router.host to "127.0.0.1"');
  });

  it('a start script that hard-codes the port is a problem: each release listens on a private port', () => {
    const p = proposeConfig(runbookFacts({ scripts: { build: 'next build', start: 'next start -p 3001 -H 127.0.0.1' } }));
    expect(p.problems.join('\n')).toContain('scripts.start hard-codes the port 3001');
  });

  it('PM2 args that hard-code the port, a missing start script, or no port variable are problems', () => {
    expect(proposeConfig(runbookFacts({}, { script: '/srv/app/server.js', args: ['--port', '3001'] })).problems.join()).toContain("PM2's args hard-code");
    expect(proposeConfig(runbookFacts({ scripts: {} })).problems.join()).toContain('no "start" script');
    const noPort = proposeConfig(runbookFacts({}, { port: undefined }));
    expect(noPort.problems.join()).toContain('has no FRONT_PORT or PORT');
    expect(noPort.config.router).toEqual({ host: '127.0.0.1' });
  });

  it('a cluster-mode app: still the router, with a warning naming the cluster strategy', () => {
    const p = proposeConfig(runbookFacts({}, { execMode: 'cluster_mode', instances: 2 }));
    expect(p.config.app?.strategy).toBe('router');
    expect(p.warnings.join('\n')).toContain('cluster mode (2 instances)');
  });

  it('--releases-dir is proposed as given; extra .env files are copied, templates are not', () => {
    const p = proposeConfig(runbookFacts({ releasesDir: '/srv/releases', files: ['package.json', '.env.staging', '.env.example'] }));
    expect(p.config.releasesDir).toBe('/srv/releases');
    expect(p.config.app?.envFiles).toEqual(['.env', '.env.local', '.env.production', '.env.production.local', '.env.staging']);
  });
});

describe('renderConfig', () => {
  const config = { workspace: '/w', keep: 2, app: { name: 'x', args: ['run', 'start'], env: { PORT: '1' } } };

  it('without comments: plain JSON, one key per line, arrays on one line', () => {
    const text = renderConfig(config);
    expect(JSON.parse(text)).toEqual(config);
    expect(text).toContain('  "app": {\n    "name": "x",\n    "args": ["run","start"],');
  });

  it('with comments: a // line above each commented key, at its depth', () => {
    const text = renderConfig(config, { workspace: 'from git', 'app.args': "PM2's args" });
    expect(text.split('\n')).toEqual([
      '{',
      '  // from git',
      '  "workspace": "/w",',
      '  "keep": 2,',
      '  "app": {',
      '    "name": "x",',
      "    // PM2's args",
      '    "args": ["run","start"],',
      '    "env": {',
      '      "PORT": "1"',
      '    }',
      '  }',
      '}',
    ]);
  });
});

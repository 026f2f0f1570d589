/**
 * `pm2-release init`, the pure half: given the facts read from PM2 and the app dir, the config that adopts
 * the running app, a one-line reason per key, and what stands in the way of a first deploy. No IO: the
 * facts come from commands/init.ts, which reads them without changing anything.
 */
import path from 'node:path';
import { DEFAULTS, type ConfigFile } from '../config.js';
import { SECRET_NAME } from '../log.js';
import { runScriptName } from '../pm2/routed-switch.js';

/** What `pm2 jlist` says about the app, with the only env value we keep: the port's. */
export interface AppFacts {
  name: string;
  /** PM2's cwd for the app (pm_cwd), real path. */
  cwd: string;
  /** PM2's resolved script (pm_exec_path), e.g. /usr/bin/npm or /srv/app/server.mjs. */
  script: string;
  args: string[];
  /** fork_mode or cluster_mode. */
  execMode: string;
  instances: number;
  /** The port variable found in the app's PM2 env, and its value (not a secret). */
  port?: { name: string; value: string };
  /** Names of the other variables of its PM2 env, values never read into the facts. */
  envNames: string[];
}

export interface InitFacts {
  app: AppFacts;
  /** `git rev-parse --show-toplevel` from the app's cwd, real path. */
  workspace: string;
  /** File names in the app dir. */
  files: string[];
  /** package.json `scripts` of the app dir (empty when there is none). */
  scripts: Record<string, string>;
  /** For each env file present in the app dir, the names it defines (never the values). */
  envFileNames: Record<string, string[]>;
  /** next.config's `distDir`, when it sets one. */
  nextDistDir?: string;
  /** `--releases-dir`, as the operator wrote it. */
  releasesDir?: string;
  /** A web front (Apache, nginx, …) running on this host, found by process name. */
  front?: { name: string; pid: number };
}

export interface Proposal {
  config: ConfigFile;
  /** Dotted key → why it has that value. */
  comments: Record<string, string>;
  /** Worth reading before the first deploy; the deploy still works. */
  warnings: string[];
  /** The first deploy would fail or misbehave: the proposal is not complete. */
  problems: string[];
}

/** The port variables we recognise, in order: the VM's convention, then the common one (`next start` reads PORT). */
export const PORT_VARS = ['FRONT_PORT', 'PORT'];

/**
 * Variables every login shell or PM2 itself sets: a release gets them from the environment pm2-release runs
 * in, so their absence from the env files is not worth a warning.
 */
const AMBIENT =
  /^(PATH|HOME|USER|LOGNAME|SHELL|PWD|OLDPWD|SHLVL|TERM|TERM_.*|COLORTERM|LANG|LANGUAGE|LC_.*|TZ|MAIL|HOSTNAME|HOSTTYPE|OSTYPE|MACHTYPE|DISPLAY|EDITOR|VISUAL|PAGER|LESS.*|LS_COLORS|_|XDG_.*|SSH_.*|DBUS_.*|MOTD_SHOWN|NVM_.*|NODE_VERSION|YARN_VERSION|npm_.*|NPM_.*|PM2_.*|pm_.*|TMPDIR|TMP|TEMP|HIST.*|PS1|PS2|COLUMNS|LINES|INVOCATION_ID|JOURNAL_STREAM|SYSTEMD_.*|MANAGERPID|GIT_.*|VITEST.*|NODE_APP_INSTANCE|INIT_CWD|COREPACK_.*|unique_id|name|namespace|version|status|exec_mode|pm_id|cwd|args)$/;

const LOCKFILES: [file: string, manager: 'npm' | 'yarn' | 'pnpm'][] = [
  ['package-lock.json', 'npm'],
  ['npm-shrinkwrap.json', 'npm'],
  ['pnpm-lock.yaml', 'pnpm'],
  ['yarn.lock', 'yarn'],
];

const RUNNERS: Record<string, 'npm' | 'yarn' | 'pnpm'> = {
  npm: 'npm',
  'npm-cli.js': 'npm',
  yarn: 'yarn',
  'yarn.js': 'yarn',
  'yarn.cjs': 'yarn',
  pnpm: 'pnpm',
  'pnpm.cjs': 'pnpm',
  'pnpm.js': 'pnpm',
};

/** Env files the app may keep beside the defaults (.env.staging); templates hold no live values. */
function extraEnvFiles(files: string[]): string[] {
  const defaults: readonly string[] = DEFAULTS.app.envFiles;
  return files.filter((f) => /^\.env(\..+)?$/.test(f) && !defaults.includes(f) && !/\.(example|sample|template|dist|defaults)$/.test(f)).sort();
}

/** The port a start command hard-codes (`-p 3001`, `--port 3001`, `--port=3001`), when it is `value`. */
function hardCodesPort(command: string, value: string): boolean {
  return new RegExp(`(^|\\s)(-p|--port)(\\s+|=)${value}(\\s|$)`).test(command);
}

export function proposeConfig(facts: InitFacts): Proposal {
  const { app } = facts;
  const comments: Record<string, string> = {};
  const warnings: string[] = [];
  const problems: string[] = [];
  const say = (key: string, why: string) => (comments[key] = why);

  // Where the releases come from.
  const dir = path.relative(facts.workspace, app.cwd) || '.';
  const releasesDir = facts.releasesDir ?? DEFAULTS.releasesDir;
  say('workspace', `git top-level of ${app.name}'s cwd (git rev-parse --show-toplevel); releases are archived from its commits`);
  say('releasesDir', facts.releasesDir ? 'from --releases-dir' : 'the default; must not be inside the workspace');
  say('keep', 'ready releases kept for rollback, the active one included (the default)');

  // Install: the lockfile names the package manager.
  const lock = LOCKFILES.find(([f]) => facts.files.includes(f));
  const manager = lock?.[1] ?? 'npm';
  let install: string[];
  if (!lock) {
    install = ['npm', 'install', '--no-audit', '--no-fund'];
    say('app.install', 'no lockfile in the app dir: npm install (npm ci needs package-lock.json)');
    warnings.push('no lockfile in the app dir: every release resolves its dependencies anew; commit a package-lock.json and use npm ci');
  } else if (manager === 'npm') {
    install = [...DEFAULTS.app.install];
    say('app.install', `${lock[0]} present: npm ci`);
  } else {
    install = [manager, 'install', '--frozen-lockfile'];
    say('app.install', `${lock[0]} present: ${manager} with the lockfile as written`);
  }

  // Build: package.json's build script, if any.
  const build = facts.scripts.build !== undefined ? [manager, 'run', 'build'] : [];
  say('app.build', build.length ? 'package.json has a build script' : 'package.json has no build script: releases are installed, not built');

  // Start: exactly what PM2 runs now, with the script relative to the app dir when it lives there.
  const base = path.basename(app.script);
  const runner = RUNNERS[base];
  let script: string;
  if (runner) {
    script = runner;
    say('app.script', `PM2 runs ${base} (${app.script}): started by name, as the runbook does`);
  } else if (app.script.startsWith(app.cwd + path.sep)) {
    script = path.relative(app.cwd, app.script);
    say('app.script', "PM2's script, relative to the app dir: each release runs its own copy");
  } else {
    script = app.script;
    say('app.script', "PM2's script, outside the app dir");
    warnings.push(`app.script ${app.script} is outside the app dir: every release runs that same file, not a copy from its commit`);
  }
  const args = [...app.args];
  const scriptName = runner ? runScriptName(args) : undefined;
  const startCommand = scriptName ? facts.scripts[scriptName] : undefined;
  const next = startCommand !== undefined && /\bnext\s+start\b/.test(startCommand);
  say(
    'app.args',
    `PM2's args${scriptName ? `: package.json scripts.${scriptName}${startCommand === undefined ? ' (not found in package.json)' : next ? ' runs next start (each release is started with -H 127.0.0.1: behind the router only loopback is needed)' : ''}` : ''}`,
  );
  if (scriptName && startCommand === undefined)
    problems.push(`package.json in ${app.cwd} has no "${scriptName}" script, which PM2 runs (${base} ${args.join(' ')})`);

  // The port: the router takes the public one, each release gets a private one through the same variable.
  const port = app.port;
  const portEnv = port?.name ?? DEFAULTS.app.portEnv;
  const env: Record<string, string> = port ? { [port.name]: port.value } : {};
  if (!port)
    problems.push(
      `${app.name}'s PM2 env has no ${PORT_VARS.join(' or ')}: set app.portEnv to the variable the app reads its port from and app.env to its public port`,
    );
  else {
    if (args.includes(port.value))
      problems.push(`PM2's args hard-code the port ${port.value}: take it from ${port.name} (each release listens on a private port)`);
    if (startCommand !== undefined && hardCodesPort(startCommand, port.value))
      problems.push(
        `package.json scripts.${scriptName} hard-codes the port ${port.value}: read it from $${port.name} (e.g. next start -p \${${port.name}:-${port.value}}) or drop it (next start reads PORT); behind the router each release listens on a private port`,
      );
    if (!next && !(startCommand !== undefined && /(^|\s)(-H|--hostname|--host)(\s|=)/.test(startCommand)))
      warnings.push(
        `${scriptName ? `package.json scripts.${scriptName}` : app.script} is not a plain next start: pm2-release cannot bind each release to 127.0.0.1 itself; make the server listen on loopback only (doctor's release-host check shows where each release listens)`,
      );
  }
  say('app.env', port ? `${port.name} from ${app.name}'s PM2 env: the router listens on it; no other variable is copied` : 'no port variable found');
  say('app.portEnv', port ? `the variable ${app.name} reads its port from` : 'the default; check it');

  // Env files: the defaults plus any other .env.* the app keeps; a release gets only these and app.env.
  const present = Object.keys(facts.envFileNames).sort();
  const envFiles = [...DEFAULTS.app.envFiles, ...extraEnvFiles(facts.files)];
  say('app.envFiles', `copied from the app dir into each release when present; present now: ${present.length ? present.join(', ') : 'none'}`);
  const inFiles = new Set(Object.values(facts.envFileNames).flat());
  const uncovered = app.envNames.filter((n) => n !== port?.name && !AMBIENT.test(n) && !inFiles.has(n)).sort();
  if (uncovered.length)
    warnings.push(
      `${app.name}'s PM2 env sets ${uncovered.map((n) => (SECRET_NAME.test(n) ? `${n} (secret)` : n)).join(', ')}, in no env file: a release does not inherit the old PM2 env; move them into ${path.join(dir, '.env.production.local')} (names only shown)`,
    );

  // Prune: build caches, never the build. Next's default distDir is .next, where the build itself lives.
  const distDir = facts.nextDistDir;
  const prune = next && (distDir ?? '.next') === '.next' ? ['.next/cache', '.turbo'] : [...DEFAULTS.app.prune];
  if (distDir && distDir !== '.next' && distDir !== 'build') prune.push(`${distDir}/cache`);
  say(
    'app.prune',
    next ? `caches of next build (distDir ${distDir ?? '.next'}), removed after the build` : 'build caches, removed after the build (the default)',
  );

  // Strategy: the router; a cluster-mode app keeps working, one fork-mode process per release.
  say('app.strategy', 'router: zero failed requests on every switch after the first (documentation/router.md)');
  if (app.execMode === 'cluster_mode')
    warnings.push(
      `${app.name} runs in PM2 cluster mode (${app.instances} instance${app.instances === 1 ? '' : 's'}): the router runs one fork-mode process per release; set app.strategy "cluster" to keep cluster mode`,
    );

  const publicPort = port ? Number(port.value) : undefined;
  const releasePorts: [number, number] | undefined =
    publicPort === undefined ? undefined : publicPort + 10_099 < 32_768 ? [publicPort + 10_000, publicPort + 10_099] : [20_000, 20_099];
  if (releasePorts) say('router.releasePorts', `private loopback ports for releases: app port + 10000…+10099, below the ephemeral range`);

  // The router's address: with the front on this host, loopback is all it needs, and visitors cannot go around the front.
  const routerHost = facts.front ? '127.0.0.1' : undefined;
  if (facts.front)
    say(
      'router.host',
      `${facts.front.name} (pid ${facts.front.pid}) runs on this host and reaches the router on loopback: listening there only, visitors cannot go around ${facts.front.name} (proxy to http://127.0.0.1:<port>, not localhost, which may resolve to ::1)`,
    );
  else
    warnings.push(
      `no web front (apache2, httpd, nginx, caddy, haproxy) runs on this host: the router will listen on all interfaces, as next start does; if the front is on this host, set router.host to "127.0.0.1"`,
    );

  say('app.name', 'the PM2 app to take over');
  say('app.dir', `${app.name}'s cwd relative to the workspace`);
  const config: ConfigFile = {
    workspace: facts.workspace,
    releasesDir,
    keep: DEFAULTS.keep,
    app: { name: app.name, dir, envFiles, install, build, prune, script, args, env, portEnv, strategy: 'router' },
    ...(releasePorts || routerHost ? { router: { ...(routerHost ? { host: routerHost } : {}), ...(releasePorts ? { releasePorts } : {}) } } : {}),
  };
  return { config, comments, warnings, problems };
}

/**
 * JSON with one key per line and arrays on one line (a diff shows the key that changed), and, when comments
 * are given, a `// why` line above each key that has one (JSONC: for people; the file written is plain JSON).
 */
export function renderConfig(value: unknown, comments: Record<string, string> = {}, key = '', indent = ''): string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return JSON.stringify(value);
  const inner = indent + '  ';
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return '{}';
  const lines = entries.map(([k, v], i) => {
    const dotted = key ? `${key}.${k}` : k;
    const why = comments[dotted] ? `${inner}// ${comments[dotted]}\n` : '';
    return `${why}${inner}${JSON.stringify(k)}: ${renderConfig(v, comments, dotted, inner)}${i < entries.length - 1 ? ',' : ''}`;
  });
  return `{\n${lines.join('\n')}\n${indent}}`;
}

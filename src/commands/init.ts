/**
 * `pm2-release init`: reads the running PM2 app and its app dir, proposes the config that adopts it
 * (lifecycle/proposal.ts decides), runs doctor on it and says what the first deploy will do. Changes
 * nothing in PM2, ever (jlist only, and no daemon is started); writes the config only with `write`.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import writeFileAtomic from 'write-file-atomic';
import { CONFIG_FILE_NAME, DEFAULTS, expandHome, loadConfig, type ConfigFile } from '../config.js';
import { ConfigError, UsageError } from '../errors.js';
import { formatCommand } from '../exec.js';
import { workTreeRoot } from '../git.js';
import { Redactor, SECRET_NAME, silentLogger, type Logger } from '../log.js';
import { Pm2, type RawProcess } from '../pm2/client.js';
import { choosePort, runScriptName } from '../pm2/routed-switch.js';
import { diskUsage, MANIFEST_FILE, META_DIR, STATE_FILE } from '../release/store.js';
import { childEnv, createContext } from '../lifecycle/context.js';
import { checkAll, dumpChmod, type DoctorResult } from '../lifecycle/checks.js';
import { PORT_VARS, proposeConfig, renderConfig, type AppFacts, type InitFacts } from '../lifecycle/proposal.js';

export interface InitOptions {
  /** The PM2 app to take over (default: frontend-dev). */
  app?: string;
  /** Write the proposed config (mode 0600). */
  write?: boolean;
  /** Overwrite an existing config file. */
  force?: boolean;
  /** Where to write the config (default: <cwd>/pm2-release.config.json). */
  configPath?: string;
  /** The releasesDir to propose (default ~/executor/frontend-releases). */
  releasesDir?: string;
  cwd?: string;
  env?: Record<string, string | undefined>;
  logger?: Logger;
}

export interface InitResult {
  /** The proposal is complete and doctor found no FAIL. */
  ok: boolean;
  /** The config file was written (`--write`); init never changes PM2. */
  changed: boolean;
  app: {
    name: string;
    cwd: string;
    execMode: string;
    /** Names of the variables in the app's PM2 env (values never shown). */
    envNames: string[];
    secretNames: string[];
    pm2Version: string | null;
    pm2Home: string;
    /** Whether systemd brings PM2 back on boot, as doctor says. */
    systemd: string;
  };
  config: ConfigFile;
  comments: Record<string, string>;
  warnings: string[];
  problems: string[];
  configPath: string;
  written: boolean;
  doctor: DoctorResult;
  firstDeploy: {
    strategy: 'router';
    publicPort: number | null;
    releasePort: number | null;
    takeOver: string;
    diskNeededBytes: number;
    diskFreeBytes: number;
  };
  next: { command: string; reboot: string[]; executor: string };
}

/** The package root: ecosystem.config.cjs sits there, beside dist/ and src/. */
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function init(opts: InitOptions = {}): Promise<InitResult> {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const home = env.HOME ?? os.homedir();
  const logger = opts.logger ?? silentLogger();
  const name = opts.app ?? 'frontend-dev';
  const configPath = path.resolve(cwd, expandHome(opts.configPath ?? CONFIG_FILE_NAME, home));
  // Refuse before any work: the operator asked to write and the file is there.
  if (opts.write && !opts.force && fs.existsSync(configPath))
    throw new UsageError('CONFIG_EXISTS', `${configPath} exists: not overwriting it`, {
      hint: 'compare it with `pm2-release init` (no --write), then pass --force to replace it, or --config to write elsewhere',
    });

  const redactor = new Redactor();
  redactor.addSecretEnv(env);
  const pm2 = new Pm2({ env: childEnv(env), logger, redactor });
  const { raw, all } = await readApp(pm2, name);
  const pe = raw.pm2_env ?? {};
  const appEnv = stringEnv(pe.env);
  // PM2 keeps the app's variables in pm2_env.env and, for some start paths, at the top of pm2_env too.
  const varOf = (k: string): string | undefined => appEnv[k] ?? (typeof pe[k] === 'string' ? pe[k] : undefined);
  const portVar = PORT_VARS.find((k) => /^\d+$/.test(varOf(k) ?? ''));
  // Whatever the app's env holds, only the port may ever be printed: mask the rest in every log line.
  redactor.addEnv(appEnv, (k) => k === portVar);

  const cwdRaw = String(pe.pm_cwd ?? '');
  const appCwd = fs.existsSync(cwdRaw) ? fs.realpathSync(cwdRaw) : cwdRaw;
  if (appEnv.RELEASE_ID !== undefined || releaseAncestor(appCwd))
    throw new UsageError('ALREADY_RELEASED', `${name} already runs from a pm2-release release (${appCwd}): there is nothing to take over`, {
      hint: 'find its config (`PM2_RELEASE_CONFIG`, or pm2-release.config.json beside ecosystem.config.cjs) and run `pm2-release status`',
    });
  const workspace = fs.existsSync(appCwd) ? await workTreeRoot(appCwd, logger) : undefined;
  if (!workspace)
    throw new UsageError('APP_NOT_IN_GIT', `${name} runs from ${appCwd}, which is not inside a git work tree: pm2-release releases commits`, {
      hint: 'clone the app repository, start the app from its checkout (or set workspace and app.dir by hand), then run init again',
    });

  const port = portVar ? { name: portVar, value: varOf(portVar) ?? '' } : undefined;
  const app: AppFacts = {
    name,
    cwd: appCwd,
    script: String(pe.pm_exec_path ?? ''),
    args: Array.isArray(pe.args) ? pe.args.map(String) : typeof pe.args === 'string' ? [pe.args] : [],
    execMode: String(pe.exec_mode ?? 'fork_mode'),
    instances: Number(pe.instances ?? 1) || 1,
    port,
    envNames: Object.keys(appEnv).sort(),
  };
  const facts = await readAppDir(app, workspace, opts.releasesDir ? resolveDir(opts.releasesDir, cwd) : undefined);
  const proposal = proposeConfig(facts);
  const problems = [...proposal.problems];
  const warnings = [...proposal.warnings];

  // The proposal through the loader, as the first deploy will read it from configPath's directory.
  let loaded: ReturnType<typeof loadConfig> | undefined;
  try {
    loaded = loadConfig({ config: proposal.config, cwd: path.dirname(configPath), env, home });
    warnings.push(...loaded.warnings);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(...err.problems);
  }
  const checks: DoctorResult = loaded
    ? await checkAll(createContext({ config: proposal.config, cwd: path.dirname(configPath), env, logger }))
    : { ok: false, changed: false, checks: [{ name: 'config', status: 'fail', message: 'the proposed config is not valid', fix: 'see the problems above' }] };

  let written = false;
  if (opts.write && problems.length === 0) {
    await fsp.mkdir(path.dirname(configPath), { recursive: true });
    await writeFileAtomic(configPath, renderConfig(proposal.config) + '\n', { mode: 0o600 });
    // write-file-atomic keeps an existing file's mode: the config names the app's env, so owner only.
    await fsp.chmod(configPath, 0o600);
    written = true;
  }

  const cfg = loaded?.config;
  const publicPort = port ? Number(port.value) : null;
  const releasePort = cfg ? await choosePort(cfg.router.releasePorts, []).catch(() => null) : null;
  if (cfg && releasePort === null) problems.push(`no free port in router.releasePorts ${cfg.router.releasePorts.join('-')} for the first release`);
  const routerUp = all.some((p) => p.name === `${name}-router` && p.pm2_env?.status === 'online');
  const keep = cfg?.keep ?? 2;
  const releasesDir = cfg?.releasesDir ?? path.resolve(cwd, expandHome(proposal.config.releasesDir ?? DEFAULTS.releasesDir, home));
  const perRelease = await releaseSize(facts);
  const systemd = checks.checks.find((c) => c.name === 'systemd');
  const pm2Version = await pm2.version().catch(() => null);
  const ok = problems.length === 0 && checks.ok;
  const flags = [`--app ${formatCommand([name])}`, ...(opts.releasesDir ? [`--releases-dir ${formatCommand([opts.releasesDir])}`] : [])].join(' ');
  const withConfig = `pm2-release --config ${formatCommand([configPath])}`;
  return {
    ok,
    changed: written,
    app: {
      name,
      cwd: appCwd,
      execMode: app.execMode,
      envNames: app.envNames,
      secretNames: app.envNames.filter((n) => SECRET_NAME.test(n)),
      pm2Version,
      pm2Home: pm2.home,
      systemd: systemd ? (systemd.status === 'skip' ? systemd.message : `${systemd.status}: ${systemd.message}`) : 'not checked',
    },
    config: proposal.config,
    comments: proposal.comments,
    warnings,
    problems,
    configPath,
    written,
    doctor: checks,
    firstDeploy: {
      strategy: 'router',
      publicPort,
      releasePort,
      takeOver: routerUp
        ? `none: ${name}-router already holds :${publicPort}`
        : `one short gap on :${publicPort}, once: ${name} closing its port and ${name}-router binding it (documentation/router.md, "The take-over of a hand-started app"); every later switch drops no request`,
      diskNeededBytes: perRelease * (keep + 1),
      diskFreeBytes: await freeBytes(releasesDir),
    },
    next: {
      // Before --write there is no config file for `doctor` to read: init itself checks its proposal again.
      command: problems.length
        ? `fix the problems above, then: pm2-release init ${flags} --config ${formatCommand([configPath])}`
        : !checks.ok
          ? written
            ? `fix the FAIL lines, then: ${withConfig} doctor`
            : `fix the FAIL lines, then: pm2-release init ${flags} --config ${formatCommand([configPath])}`
          : !written
            ? `pm2-release init ${flags} --config ${formatCommand([configPath])} --write`
            : `${withConfig} deploy`,
      reboot: [
        `cd ${formatCommand([PACKAGE_ROOT])}`,
        `PM2_RELEASE_CONFIG=${formatCommand([configPath])} pm2 start ecosystem.config.cjs`,
        'pm2 save',
        // `pm2 save` copies an existing dump to dump.pm2.bak first: name the .bak only when there will be one.
        dumpChmod(pm2.dumpPath, fs.existsSync(pm2.dumpPath) || fs.existsSync(`${pm2.dumpPath}.bak`)),
      ],
      executor: executorCall(configPath),
    },
  };
}

/** The environment an executor hands to pm2-release: what a build and the app need, none of the bridge's own tokens. */
export const EXECUTOR_ENV_VARS = ['PATH', 'HOME', 'USER', 'LANG', 'PM2_HOME', 'NODE_EXTRA_CA_CERTS', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];

/**
 * The library call init prints for the executor bridge, with an explicit `env` (integration.md): the default,
 * process.env, would put every token the bridge holds into the app's PM2 env and ~/.pm2/dump.pm2.
 */
export function executorCall(configPath: string): string {
  return [
    'import { deploy } from "pm2-release";',
    `const env = Object.fromEntries(${JSON.stringify(EXECUTOR_ENV_VARS)}.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));`,
    `const result = await deploy({ configPath: ${JSON.stringify(configPath)}, env, trigger: "api" });`,
  ].join(' ');
}

/** The app's jlist entry, read without starting a daemon. */
async function readApp(pm2: Pm2, name: string): Promise<{ raw: RawProcess; all: RawProcess[] }> {
  // `pm2 jlist` would start a daemon outside systemd when none runs: look before asking.
  if (!pm2.daemonRunning())
    throw new UsageError('PM2_APP_NOT_FOUND', `no PM2 daemon runs for PM2_HOME ${pm2.home}: there is no ${name} to take over`, {
      hint: 'run init as the user whose PM2 runs the app (or set PM2_HOME); start the app the runbook way first if it is not running',
    });
  const all = await pm2.jlistRaw({ fresh: true });
  const found = all.find((p) => p.name === name);
  if (!found) {
    const names = [...new Set(all.map((p) => String(p.name ?? '?')))];
    throw new UsageError(
      'PM2_APP_NOT_FOUND',
      `no PM2 app named ${name} (PM2_HOME ${pm2.home}); PM2 runs: ${names.length ? names.join(', ') : 'no app at all'}`,
      { hint: 'pass --app NAME with one of those names' },
    );
  }
  return { raw: found, all };
}

function stringEnv(env: Record<string, unknown> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env ?? {})) if (typeof v === 'string') out[k] = v;
  return out;
}

/** True when `dir` sits inside a release dir (a manifest beside it) or a releases dir (active.json above it). */
function releaseAncestor(dir: string): boolean {
  for (let cur = dir, i = 0; i < 4 && path.dirname(cur) !== cur; i++, cur = path.dirname(cur)) {
    if (fs.existsSync(path.join(cur, META_DIR, MANIFEST_FILE)) || fs.existsSync(path.join(cur, STATE_FILE))) return true;
  }
  return false;
}

async function readAppDir(app: AppFacts, workspace: string, releasesDir: string | undefined): Promise<InitFacts> {
  const files = await fsp.readdir(app.cwd).catch(() => [] as string[]);
  const pkg = JSON.parse(await fsp.readFile(path.join(app.cwd, 'package.json'), 'utf8').catch(() => '{}')) as { scripts?: unknown };
  const scripts: Record<string, string> = {};
  if (pkg.scripts && typeof pkg.scripts === 'object')
    for (const [k, v] of Object.entries(pkg.scripts as Record<string, unknown>)) if (typeof v === 'string') scripts[k] = v;
  const envFileNames: Record<string, string[]> = {};
  for (const f of files.filter((x) => /^\.env(\..+)?$/.test(x))) envFileNames[f] = await envNamesIn(path.join(app.cwd, f));
  let nextDistDir: string | undefined;
  for (const f of files.filter((x) => /^next\.config\.(js|mjs|cjs|ts)$/.test(x))) {
    const text = await fsp.readFile(path.join(app.cwd, f), 'utf8').catch(() => '');
    nextDistDir ??= /distDir\s*:\s*['"`]([^'"`]+)['"`]/.exec(text)?.[1];
  }
  return { app, workspace, files, scripts, envFileNames, nextDistDir, releasesDir, front: await localFront() };
}

/** Process names of the web fronts an operator puts before a Node app. */
const FRONTS = new Set(['apache2', 'httpd', 'nginx', 'caddy', 'haproxy', 'traefik']);

/** The first web front running on this host (any user), by the process name in /proc; undefined off Linux. */
async function localFront(): Promise<{ name: string; pid: number } | undefined> {
  const pids = (await fsp.readdir('/proc').catch(() => [] as string[])).filter((p) => /^\d+$/.test(p)).sort((a, b) => Number(a) - Number(b));
  for (const pid of pids) {
    const comm = (await fsp.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
    if (FRONTS.has(comm)) return { name: comm, pid: Number(pid) };
  }
  return undefined;
}

/** The variable names an env file defines. Its values are never kept: they are the app's secrets. */
async function envNamesIn(file: string): Promise<string[]> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  const names: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(line);
    if (m) names.push(m[1]);
  }
  return names;
}

/** What one release adds on disk, estimated from the live app dir: its dependencies and its build output. */
async function releaseSize(facts: InitFacts): Promise<number> {
  const scriptName = runScriptName(facts.app.args);
  const next = /\bnext\s+start\b/.test((scriptName && facts.scripts[scriptName]) || '');
  const outputs = next ? [facts.nextDistDir ?? '.next'] : ['build', 'dist', '.next', 'out'];
  let total = 0;
  for (const d of ['node_modules', ...outputs]) if (facts.files.includes(d)) total += await diskUsage(path.join(facts.app.cwd, d));
  return total;
}

async function freeBytes(dir: string): Promise<number> {
  let cur = dir;
  while (!fs.existsSync(cur) && path.dirname(cur) !== cur) cur = path.dirname(cur);
  const st = await fsp.statfs(cur);
  return st.bavail * st.bsize;
}

/** `--releases-dir` as written: `~` kept (the config expands it), a relative path made absolute from the cwd. */
function resolveDir(p: string, cwd: string): string {
  return p === '~' || p.startsWith('~/') || path.isAbsolute(p) ? p : path.resolve(cwd, p);
}

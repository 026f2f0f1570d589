/**
 * Configuration: defaults < config file < environment variables < flags.
 * Returns data ({config, warnings, source}) or throws one ConfigError listing every problem.
 * Reads no global state: the caller passes cwd, env and home (the CLI reads them once, at the edge).
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.js';

export const CONFIG_FILE_NAME = 'pm2-release.config.json';

const PM2_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const argv = z.array(z.string().min(1)).min(1, 'must name a command');
const relativePath = z
  .string()
  .min(1)
  .refine((p) => !path.isAbsolute(p), 'must be a relative path')
  .refine((p) => !p.split(/[\\/]/).includes('..'), "must not contain '..'");

const healthcheckSchema = z.strictObject({
  /** `{port}` is replaced by the app's port (from `app.env[app.portEnv]`, or the verify port). */
  url: z.string().min(1).optional(),
  expectStatus: z.array(z.number().int().min(100).max(599)).min(1).optional(),
  timeoutMs: z.number().int().min(100).max(600_000).optional(),
  /** The app must stay online with no PM2 restart for this long after it first answers. */
  settleMs: z.number().int().min(0).max(120_000).optional(),
  /** More URLs that must answer (e.g. a protected API answering 401 proves the backend is alive). */
  checks: z.array(z.strictObject({ url: z.string().min(1), expectStatus: z.array(z.number().int().min(100).max(599)).min(1) })).optional(),
});

const verifySchema = z.strictObject({
  /** Start the new release on a free loopback port and health-check it before touching the live app. */
  enabled: z.boolean().optional(),
  settleMs: z.number().int().min(0).max(120_000).optional(),
});

const preflightSchema = z.strictObject({
  minFreeDiskMB: z.number().int().min(0).optional(),
  minFreeInodes: z.number().int().min(0).optional(),
  minFreeMemoryMB: z.number().int().min(0).optional(),
});

const appSchema = z.strictObject({
  name: z.string().regex(PM2_NAME, 'must be a PM2 app name ([A-Za-z0-9._-], at most 64)').optional(),
  dir: z.union([z.literal('.'), relativePath]).optional(),
  envFiles: z
    .array(
      z
        .string()
        .regex(/^[^/\\]+$/, 'must be a file name, not a path')
        .refine((f) => f !== '.' && f !== '..', 'must be a file name'),
    )
    .optional(),
  install: argv.optional(),
  build: z.array(z.string().min(1)).optional(),
  prune: z.array(relativePath).optional(),
  script: z.string().min(1).optional(),
  args: z.array(z.string()).optional(),
  env: z.record(z.string().regex(ENV_NAME, 'must be an environment variable name'), z.string()).optional(),
  portEnv: z.string().regex(ENV_NAME, 'must be an environment variable name').optional(),
  healthcheck: healthcheckSchema.optional(),
  verify: verifySchema.optional(),
  requiredEnv: z.array(z.string().regex(ENV_NAME, 'must be an environment variable name')).optional(),
  /** How long to wait for the old process to release the port after `pm2 delete`. */
  portReleaseTimeoutMs: z.number().int().min(0).max(300_000).optional(),
  /**
   * router: a stable front process on the app port, each release on a private port behind it (zero
   * downtime, any start command). restart: delete + start (the seed's way). cluster: zero-downtime for a
   * Node script run in PM2 cluster mode.
   */
  strategy: z.enum(['router', 'restart', 'cluster']).optional(),
  /** Cluster mode: processes per release. */
  instances: z.number().int().min(1).max(64).optional(),
  /** Reuse node_modules from a retained release whose lockfile, node, npm and platform match. */
  reuseDependencies: z.boolean().optional(),
  /**
   * How a reused node_modules is laid out: auto (reflink where the filesystem has it, else link), link (hard
   * links to one read-only copy, checked after every build), reflink, copy (a plain copy), install (never reuse).
   */
  dependencyMode: z.enum(['auto', 'link', 'reflink', 'copy', 'install']).optional(),
  /**
   * Directories (inside the app dir) of content-hashed build assets that are linked into each release being
   * started from the other retained releases, so pages of an older build still get their chunks after a switch.
   */
  staticAssets: z.array(relativePath).max(8).optional(),
  /** Heap cap for install and build (NODE_OPTIONS=--max-old-space-size), so a build OOMs before the VM does. */
  buildMaxOldSpaceMB: z.number().int().min(128).max(65_536).optional(),
  /** Run install and build with lower CPU and IO priority (nice/ionice) so the live app keeps its share. */
  buildLowPriority: z.boolean().optional(),
});

const soakSchema = z.strictObject({
  /** How long the previous release stays warm after a deploy's route change (0: no soak). */
  durationMs: z.number().int().min(0).max(3_600_000).optional(),
  /** Share of visitors the new release gets during the soak, in percent (100: all of them). */
  canaryPercent: z.number().gt(0).max(100).optional(),
  /** The new release is judged on its live traffic only once it answered this many requests in the window. */
  minRequests: z.number().int().min(1).max(1_000_000).optional(),
  /** 5xx answers above this share (0..1), and above twice the previous release's, revert the new release. */
  max5xxRate: z.number().min(0).max(1).optional(),
  /** p99 latency above this many times the previous release's, and above minP99Ms, reverts it. */
  p99Factor: z.number().min(1).max(1000).optional(),
  minP99Ms: z.number().int().min(1).max(600_000).optional(),
  /** How often the soak probes the new release's health checks on its private port. */
  healthIntervalMs: z.number().int().min(100).max(600_000).optional(),
});

const routerSchema = z.strictObject({
  /** Interface the router listens on (default: all, as `next start` does). */
  host: z.string().min(1).max(255).optional(),
  /** How long a request waits for a live release that does not accept connections before a 503. */
  holdMs: z.number().int().min(0).max(600_000).optional(),
  /** How long requests in flight on the previous release may take to finish after a switch. */
  drainTimeoutMs: z.number().int().min(0).max(3_600_000).optional(),
  /** Private loopback ports for releases, [first, last] (default: app port + 10000 … + 10099, below 32768). */
  releasePorts: z.tuple([z.number().int().min(1024).max(65535), z.number().int().min(1024).max(65535)]).optional(),
  /** Keep the previous release running, unrouted, after a switch: a rollback to it is a route change. */
  standby: z.boolean().optional(),
  /** Memory (MiB) that must stay available beyond one more copy of the release for the standby to be kept. */
  standbyReserveMB: z.number().int().min(0).max(1_048_576).optional(),
});

const buildSchema = z.strictObject({
  /** Carry the framework's build cache between builds (release/build-cache.ts). Off by default. */
  cache: z.boolean().optional(),
  /** Over this size (bytes, all cache paths together) the cache is dropped instead of kept. */
  cacheMaxBytes: z
    .number()
    .int()
    .min(0)
    .max(2 ** 45)
    .optional(),
  /** The cache's paths, relative to the app dir (Next.js: `<distDir>/cache`). */
  cachePaths: z.array(relativePath).max(8).optional(),
  /** The package whose installed version keys the cache: another version starts cold. */
  cacheFramework: z
    .string()
    .regex(/^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/, 'must be an npm package name')
    .optional(),
  /**
   * Watch install and build and stop them when their process tree holds more than the memory budget, before
   * the kernel's OOM killer acts inside the PM2 unit (release/memory-guard.ts). On by default.
   */
  memoryGuard: z.boolean().optional(),
  /** A fixed budget for install and build (MiB), instead of the one derived from the memory left. */
  memoryBudgetMB: z.number().int().min(64).max(1_048_576).optional(),
  /** Memory kept for the live apps when the budget is derived (MiB); default max(512, 15 % of the total), at most half. */
  memoryReserveMB: z.number().int().min(0).max(1_048_576).optional(),
  /**
   * Variables the build bakes into its output besides NEXT_PUBLIC_* (an artifact records their names and value
   * hashes; a host whose values differ refuses it).
   */
  publicEnv: z
    .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a variable name'))
    .max(200)
    .optional(),
});

const hookArgv = z.array(z.string().min(1)).min(1, 'must name a command');
const hooksSchema = z.strictObject({
  preDeploy: hookArgv.optional(),
  postBuild: hookArgv.optional(),
  postSwitch: hookArgv.optional(),
  postDeploy: hookArgv.optional(),
  onFailure: hookArgv.optional(),
  timeoutMs: z.number().int().min(1_000).max(3_600_000).optional(),
});

const serveSchema = z.strictObject({
  host: z.string().min(1).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  /** Only pushes to this branch deploy. */
  branch: z.string().min(1).optional(),
  /** File holding the webhook secret (else $PM2_RELEASE_WEBHOOK_SECRET). Never from argv. */
  secretFile: z.string().min(1).optional(),
});

const fileSchema = z.strictObject({
  $schema: z.string().optional(),
  workspace: z.string().min(1).optional(),
  releasesDir: z.string().min(1).optional(),
  keep: z.number().int().min(1).max(100).optional(),
  app: appSchema.optional(),
  preflight: preflightSchema.optional(),
  hooks: hooksSchema.optional(),
  serve: serveSchema.optional(),
  router: routerSchema.optional(),
  build: buildSchema.optional(),
  soak: soakSchema.optional(),
});

export type ConfigFile = z.infer<typeof fileSchema>;

export interface HealthcheckConfig {
  url: string;
  expectStatus: number[];
  timeoutMs: number;
  settleMs: number;
  checks: { url: string; expectStatus: number[] }[];
}

export type DependencyMode = 'auto' | 'link' | 'reflink' | 'copy' | 'install';

export interface AppConfig {
  name: string;
  dir: string;
  envFiles: string[];
  install: string[];
  build: string[];
  prune: string[];
  script: string;
  args: string[];
  env: Record<string, string>;
  portEnv: string;
  healthcheck: HealthcheckConfig;
  verify: { enabled: boolean; settleMs: number };
  requiredEnv: string[];
  portReleaseTimeoutMs: number;
  strategy: 'router' | 'restart' | 'cluster';
  instances: number;
  reuseDependencies: boolean;
  dependencyMode: DependencyMode;
  buildMaxOldSpaceMB?: number;
  buildLowPriority: boolean;
  staticAssets: string[];
}

export interface PreflightConfig {
  minFreeDiskMB: number;
  minFreeInodes: number;
  minFreeMemoryMB: number;
}

export type HookName = 'preDeploy' | 'postBuild' | 'postSwitch' | 'postDeploy' | 'onFailure';
export const HOOK_NAMES: HookName[] = ['preDeploy', 'postBuild', 'postSwitch', 'postDeploy', 'onFailure'];

export interface HooksConfig extends Partial<Record<HookName, string[]>> {
  timeoutMs: number;
}

export interface ServeConfig {
  host: string;
  port: number;
  branch?: string;
  secretFile?: string;
}

export interface RouterConfig {
  host?: string;
  holdMs: number;
  drainTimeoutMs: number;
  releasePorts: [number, number];
  standby: boolean;
  standbyReserveMB: number;
}

export interface BuildConfig {
  cache: boolean;
  cacheMaxBytes: number;
  cachePaths: string[];
  cacheFramework: string;
  memoryGuard: boolean;
  memoryBudgetMB?: number;
  memoryReserveMB?: number;
  publicEnv: string[];
}

export interface SoakConfig {
  durationMs: number;
  /** 0 < share <= 1. */
  canaryShare: number;
  minRequests: number;
  max5xxRate: number;
  p99Factor: number;
  minP99Ms: number;
  healthIntervalMs: number;
}

export interface Config {
  workspace: string;
  releasesDir: string;
  keep: number;
  app: AppConfig;
  preflight: PreflightConfig;
  hooks: HooksConfig;
  serve: ServeConfig;
  router: RouterConfig;
  build: BuildConfig;
  soak: SoakConfig;
}

export interface LoadedConfig {
  config: Config;
  warnings: string[];
  /** Where the config came from: a file path, or "defaults". */
  source: string;
}

export const DEFAULTS = {
  workspace: '~/executor/workspace',
  releasesDir: '~/executor/frontend-releases',
  keep: 2,
  app: {
    name: 'frontend-dev',
    dir: 'frontend',
    envFiles: ['.env', '.env.local', '.env.production', '.env.production.local'],
    // --prefer-offline: use the npm cache before the network; no audit/fund round trips on every deploy.
    install: ['npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund'],
    build: ['npm', 'run', 'build'],
    prune: ['.next', '.turbo', 'build/cache'],
    script: 'npm',
    args: ['run', 'start'],
    env: { FRONT_PORT: '3001' } as Record<string, string>,
    portEnv: 'FRONT_PORT',
    healthcheck: {
      url: 'http://127.0.0.1:{port}/',
      expectStatus: [200],
      timeoutMs: 60_000,
      settleMs: 1_500,
    },
    verify: { enabled: true, settleMs: 1_500 },
    portReleaseTimeoutMs: 15_000,
    // Zero failed requests on a switch (documentation/performance.md); "restart" is the seed's delete+start.
    strategy: 'router' as 'router' | 'restart' | 'cluster',
  },
  // A Next.js release with node_modules is ~400 MB and ~30k files: refuse to start one without room for it.
  preflight: { minFreeDiskMB: 1024, minFreeInodes: 50_000, minFreeMemoryMB: 256 },
  // Off by default: on the bench's Next.js app a warm cache did not make the rebuild faster (performance.md).
  build: { cache: false, cacheMaxBytes: 512 * 1024 * 1024, cachePaths: ['.next/cache'], cacheFramework: 'next', memoryGuard: true },
} as const;

export interface LoadConfigOptions {
  /** `--config FILE`. */
  configPath?: string;
  /** A config object given directly (library callers); validated like a file. */
  config?: unknown;
  cwd: string;
  env: Record<string, string | undefined>;
  home: string;
  /** Flag overrides, already parsed. */
  overrides?: ConfigOverrides;
}

/** Flags that override the config file. */
export interface ConfigOverrides {
  keep?: number;
  /** `--soak SECONDS`, in ms. */
  soakMs?: number;
  /** `--canary N%`, 0 < share <= 1. */
  canaryShare?: number;
}

export function loadConfig(opts: LoadConfigOptions): LoadedConfig {
  const warnings: string[] = [];
  let raw: unknown = {};
  let source = 'defaults';
  let baseDir = opts.cwd;

  if (opts.config !== undefined) {
    raw = opts.config;
    source = 'options';
  } else {
    const file = locateConfigFile(opts);
    if (file) {
      source = file;
      baseDir = path.dirname(file);
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        throw new ConfigError([`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], file);
      }
      try {
        raw = JSON.parse(text);
      } catch (err) {
        throw new ConfigError([`not valid JSON: ${(err as Error).message}`], file);
      }
    }
  }

  const parsed = fileSchema.safeParse(raw);
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(describeIssue(issue));
    // Report a bad environment override in the same error: one pass fixes everything.
    const k = opts.env.FRONTEND_RELEASES_KEEP;
    if (k !== undefined && k !== '' && !isKeep(parseStrictInt(k))) problems.push(keepEnvProblem(k));
    throw new ConfigError(problems, source);
  }
  const file = parsed.data;
  const app = file.app ?? {};
  const hc = app.healthcheck ?? {};

  const config: Config = {
    workspace: resolvePath(file.workspace ?? DEFAULTS.workspace, baseDir, opts.home),
    releasesDir: resolvePath(file.releasesDir ?? DEFAULTS.releasesDir, baseDir, opts.home),
    keep: file.keep ?? DEFAULTS.keep,
    app: {
      name: app.name ?? DEFAULTS.app.name,
      dir: app.dir ?? DEFAULTS.app.dir,
      envFiles: app.envFiles ?? [...DEFAULTS.app.envFiles],
      install: app.install ?? [...DEFAULTS.app.install],
      build: app.build ?? [...DEFAULTS.app.build],
      prune: app.prune ?? [...DEFAULTS.app.prune],
      script: app.script ?? DEFAULTS.app.script,
      args: app.args ?? [...DEFAULTS.app.args],
      env: app.env ?? { ...DEFAULTS.app.env },
      portEnv: app.portEnv ?? DEFAULTS.app.portEnv,
      healthcheck: {
        url: hc.url ?? DEFAULTS.app.healthcheck.url,
        expectStatus: hc.expectStatus ?? [...DEFAULTS.app.healthcheck.expectStatus],
        timeoutMs: hc.timeoutMs ?? DEFAULTS.app.healthcheck.timeoutMs,
        settleMs: hc.settleMs ?? DEFAULTS.app.healthcheck.settleMs,
        checks: hc.checks ?? [],
      },
      verify: {
        enabled: app.verify?.enabled ?? DEFAULTS.app.verify.enabled,
        settleMs: app.verify?.settleMs ?? DEFAULTS.app.verify.settleMs,
      },
      requiredEnv: app.requiredEnv ?? [],
      portReleaseTimeoutMs: app.portReleaseTimeoutMs ?? DEFAULTS.app.portReleaseTimeoutMs,
      strategy: app.strategy ?? DEFAULTS.app.strategy,
      instances: app.instances ?? 1,
      reuseDependencies: app.reuseDependencies ?? true,
      dependencyMode: app.dependencyMode ?? 'auto',
      // Next.js's hashed chunks (distDir "build" on the VM, ".next" by default): only the dirs that exist are used.
      staticAssets: app.staticAssets ?? ['build/static', '.next/static'],
      buildMaxOldSpaceMB: app.buildMaxOldSpaceMB,
      buildLowPriority: app.buildLowPriority ?? true,
    },
    hooks: { ...file.hooks, timeoutMs: file.hooks?.timeoutMs ?? 120_000 },
    router: {
      host: file.router?.host,
      holdMs: file.router?.holdMs ?? 15_000,
      drainTimeoutMs: file.router?.drainTimeoutMs ?? 30_000,
      releasePorts: file.router?.releasePorts ?? [0, 0],
      standby: file.router?.standby ?? true,
      // A VM of ~4 GiB runs a build next to the live release and the standby: half a GiB stays for it.
      standbyReserveMB: file.router?.standbyReserveMB ?? 512,
    },
    soak: {
      // A minute of live traffic with the previous release warm: long enough for a busy site's error rate to
      // show, short enough that an automatic deploy after every pull does not queue up.
      durationMs: file.soak?.durationMs ?? 60_000,
      canaryShare: (file.soak?.canaryPercent ?? 100) / 100,
      minRequests: file.soak?.minRequests ?? 50,
      max5xxRate: file.soak?.max5xxRate ?? 0.02,
      p99Factor: file.soak?.p99Factor ?? 3,
      minP99Ms: file.soak?.minP99Ms ?? 500,
      healthIntervalMs: file.soak?.healthIntervalMs ?? 2_000,
    },
    serve: {
      host: file.serve?.host ?? '127.0.0.1',
      port: file.serve?.port ?? 9321,
      branch: file.serve?.branch,
      secretFile: file.serve?.secretFile ? resolvePath(file.serve.secretFile, baseDir, opts.home) : undefined,
    },
    build: {
      cache: file.build?.cache ?? DEFAULTS.build.cache,
      cacheMaxBytes: file.build?.cacheMaxBytes ?? DEFAULTS.build.cacheMaxBytes,
      cachePaths: file.build?.cachePaths ?? [...DEFAULTS.build.cachePaths],
      cacheFramework: file.build?.cacheFramework ?? DEFAULTS.build.cacheFramework,
      memoryGuard: file.build?.memoryGuard ?? DEFAULTS.build.memoryGuard,
      memoryBudgetMB: file.build?.memoryBudgetMB,
      memoryReserveMB: file.build?.memoryReserveMB,
      publicEnv: file.build?.publicEnv ?? [],
    },
    preflight: {
      minFreeDiskMB: file.preflight?.minFreeDiskMB ?? DEFAULTS.preflight.minFreeDiskMB,
      minFreeInodes: file.preflight?.minFreeInodes ?? DEFAULTS.preflight.minFreeInodes,
      minFreeMemoryMB: file.preflight?.minFreeMemoryMB ?? DEFAULTS.preflight.minFreeMemoryMB,
    },
  };

  // Environment variables sit above the file, below flags.
  const envKeep = opts.env.FRONTEND_RELEASES_KEEP;
  if (envKeep !== undefined && envKeep !== '') {
    const n = parseStrictInt(envKeep);
    if (!isKeep(n)) problems.push(keepEnvProblem(envKeep));
    else config.keep = n;
  }
  if (opts.overrides?.keep !== undefined) {
    const n = opts.overrides.keep;
    if (!Number.isInteger(n) || n < 1 || n > 100) problems.push(`--keep: must be an integer from 1 to 100`);
    else config.keep = n;
  }

  if (opts.overrides?.soakMs !== undefined) {
    const n = opts.overrides.soakMs;
    if (!Number.isInteger(n) || n < 0 || n > 3_600_000) problems.push('--soak: must be 0 to 3600 seconds');
    else config.soak.durationMs = n;
  }
  if (opts.overrides?.canaryShare !== undefined) {
    const n = opts.overrides.canaryShare;
    if (!(n > 0 && n <= 1)) problems.push('--canary: must be a share above 0 % and up to 100 %');
    else config.soak.canaryShare = n;
  }
  if (config.soak.canaryShare < 1 && config.app.strategy !== 'router') problems.push('soak.canaryPercent: a canary share needs app.strategy "router"');

  // Cross-field rules.
  const port = config.app.env[config.app.portEnv];
  if (port === undefined) {
    if (config.app.healthcheck.url.includes('{port}'))
      problems.push(`app.env.${config.app.portEnv}: must be set (app.portEnv names it, and app.healthcheck.url uses {port})`);
  } else if (!isPort(port)) {
    problems.push(`app.env.${config.app.portEnv}: must be a TCP port number (1-65535)`);
  }
  const urls = [
    ['app.healthcheck.url', config.app.healthcheck.url],
    ...config.app.healthcheck.checks.map((c, i) => [`app.healthcheck.checks.${i}.url`, c.url]),
  ] as const;
  for (const [where, url] of urls) {
    try {
      const u = new URL(url.replaceAll('{port}', '1'));
      if (u.protocol !== 'http:' && u.protocol !== 'https:') problems.push(`${where}: must be an http(s) URL`);
    } catch {
      problems.push(`${where}: must be a URL`);
    }
    if (url.includes('{port}') && port === undefined && where !== 'app.healthcheck.url')
      problems.push(`${where}: uses {port} but app.env.${config.app.portEnv} is not set`);
  }
  // A health URL that names the app's public port on this host (the runbook's `curl -I http://127.0.0.1:3001`)
  // means "the app": it is aimed at each new release's own port, or behind the router it would probe the
  // router, i.e. the release that serves now, and a broken release would pass its gate.
  if (port !== undefined && isPort(port)) {
    const aim = (url: string) => aimHealthUrl(url, Number(port), config.router.host);
    const main = aim(config.app.healthcheck.url);
    if (main.rewritten) {
      warnings.push(
        `app.healthcheck.url: ${config.app.healthcheck.url} names the app's public port ${port}: each new release is probed on its own port (${main.url})`,
      );
      config.app.healthcheck.url = main.url;
    } else if (main.foreign && config.app.strategy === 'router')
      problems.push(
        `app.healthcheck.url: ${main.foreign}; behind the router the health gate must reach the new release itself: use "http://127.0.0.1:{port}/…" ({port} is the release's private port)`,
      );
    config.app.healthcheck.checks.forEach((c, i) => {
      const r = aim(c.url);
      if (r.rewritten) {
        warnings.push(`app.healthcheck.checks.${i}.url: ${c.url} names the app's public port ${port}: each new release is probed on its own port (${r.url})`);
        c.url = r.url;
      } else if (r.foreign && config.app.strategy === 'router' && r.publicPort)
        problems.push(`app.healthcheck.checks.${i}.url: ${r.foreign}; use "http://127.0.0.1:{port}/…" to check the new release on its private port`);
    });
  }
  if (config.app.envFiles.length !== new Set(config.app.envFiles).size) problems.push('app.envFiles: lists a file twice');
  if (config.workspace === config.releasesDir || isInside(config.releasesDir, config.workspace))
    problems.push('releasesDir: must not be the workspace or inside it (releases would be archived into releases)');
  if (config.app.strategy === 'cluster' && (config.app.script === 'npm' || config.app.script === 'yarn' || config.app.script === 'pnpm'))
    problems.push(
      `app.script: the cluster strategy runs a Node script in PM2 cluster mode, not ${config.app.script} (e.g. "node_modules/next/dist/bin/next" with args ["start"])`,
    );
  if (port !== undefined && config.app.args.includes(port) && config.app.verify.enabled)
    problems.push(
      `app.args: hard-codes the app port ${port}; take it from app.env.${config.app.portEnv} instead (next start reads PORT), or the verify run would join the live port`,
    );
  if (config.app.strategy === 'router') {
    if (port === undefined && !problems.some((p) => p.startsWith(`app.env.${config.app.portEnv}:`)))
      problems.push(`app.env.${config.app.portEnv}: must be set: the router listens on it`);
    const [first, last] = config.router.releasePorts;
    if (first === 0 && port !== undefined) {
      // Below Linux's ephemeral range (32768+): a port an outgoing connection happens to use cannot be bound.
      const base = Number(port) + 10_000;
      config.router.releasePorts = base + 99 < 32_768 ? [base, base + 99] : [20_000, 20_099];
    } else if (first > last) problems.push('router.releasePorts: [first, last] with first <= last');
    const [f, l] = config.router.releasePorts;
    if (port !== undefined && Number(port) >= f && Number(port) <= l) problems.push(`router.releasePorts: must not include the app port ${port}`);
    if (port !== undefined && config.app.args.includes(port))
      problems.push(`app.args: hard-codes the app port ${port}; take it from app.env.${config.app.portEnv}: each release listens on a private port`);
  }
  if (config.app.build.length === 0) warnings.push('app.build is empty: releases are not built, only installed');

  if (problems.length > 0) throw new ConfigError(problems, source);
  return { config, warnings, source };
}

function locateConfigFile(opts: LoadConfigOptions): string | undefined {
  if (opts.configPath) return path.resolve(opts.cwd, expandHome(opts.configPath, opts.home));
  const local = path.join(opts.cwd, CONFIG_FILE_NAME);
  if (fs.existsSync(local)) return local;
  const fromEnv = opts.env.PM2_RELEASE_CONFIG;
  if (fromEnv) return path.resolve(opts.cwd, expandHome(fromEnv, opts.home));
  return undefined;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const where = issue.path.length ? issue.path.join('.') : '(top level)';
  if (issue.code === 'unrecognized_keys')
    return `${where === '(top level)' ? '' : where + ': '}unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  return `${where}: ${issue.message}`;
}

export function expandHome(p: string, home: string): string {
  if (p === '~') return home;
  if (p.startsWith('~/')) return path.join(home, p.slice(2));
  return p;
}

function resolvePath(p: string, baseDir: string, home: string): string {
  return path.resolve(baseDir, expandHome(p, home));
}

function isKeep(n: number | undefined): n is number {
  return n !== undefined && n >= 1 && n <= 100;
}

function keepEnvProblem(value: string): string {
  return `FRONTEND_RELEASES_KEEP: must be an integer from 1 to 100 (got ${JSON.stringify(value.slice(0, 20))})`;
}

function parseStrictInt(s: string): number | undefined {
  return /^\d+$/.test(s.trim()) ? Number(s.trim()) : undefined;
}

export function isPort(s: string): boolean {
  const n = parseStrictInt(s);
  return n !== undefined && n >= 1 && n <= 65535;
}

/** True when `child` is strictly inside `parent` (both absolute, normalised). */
export function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && rel !== '..' && !rel.startsWith('..' + path.sep) && !path.isAbsolute(rel);
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '0.0.0.0', '[::]']);

/** True for a URL host that is this machine by name alone (loopback, the any-address). */
function isLocalHost(hostname: string, routerHost: string | undefined): boolean {
  const h = hostname.toLowerCase();
  return (
    LOOPBACK_HOSTS.has(h) || /^127\.\d+\.\d+\.\d+$/.test(h) || (routerHost !== undefined && h === routerHost.toLowerCase().replace(/^([^[].*:.*)$/, '[$1]'))
  );
}

/**
 * Where a health URL points, for the gate. Pure.
 * - `{port}` in it: already the release's own port.
 * - this host (loopback, the any-address, router.host) on the app's public port: rewritten to
 *   `http://127.0.0.1:{port}…` (`rewritten`); a release bound to loopback answers there.
 * - any other URL that the gate cannot tell is the new release (another host, no explicit port): `foreign`
 *   says why; `publicPort` when it names the public port on a host not known to be this one.
 */
export function aimHealthUrl(
  url: string,
  publicPort: number,
  routerHost?: string,
): { url: string; rewritten: boolean; foreign?: string; publicPort?: boolean } {
  if (url.includes('{port}')) return { url, rewritten: false };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url, rewritten: false };
  }
  const port = u.port === '' ? (u.protocol === 'https:' ? 443 : 80) : Number(u.port);
  if (port === publicPort && isLocalHost(u.hostname, routerHost) && u.protocol === 'http:') {
    const rest = url.slice(url.indexOf(u.host) + u.host.length);
    return { url: `http://127.0.0.1:{port}${rest === '' ? '/' : rest}`, rewritten: true };
  }
  if (port === publicPort)
    return { url, rewritten: false, foreign: `${url} names the app's public port on ${u.hostname}, which is not known to be this host`, publicPort: true };
  return {
    url,
    rewritten: false,
    foreign: isLocalHost(u.hostname, routerHost)
      ? `${url} is port ${port} of this host, not the app's port ${publicPort} (a front such as Apache reaches the release that serves now, not the new one)`
      : `${url} is another host (${u.hostname}), not the new release`,
  };
}

/** The app's port from its configured env. */
export function appPort(app: AppConfig): number | undefined {
  const v = app.env[app.portEnv];
  return v !== undefined && isPort(v) ? Number(v) : undefined;
}

/** Health URL with `{port}` substituted. */
export function healthUrl(app: AppConfig, port: number | undefined): string {
  return app.healthcheck.url.replaceAll('{port}', String(port ?? ''));
}

/**
 * Every HTTP check with `{port}` substituted. With `onlyPortChecks` (the verify run on a spare port),
 * checks of fixed URLs are left out: they would test the live services, not the release.
 */
export function healthChecks(app: AppConfig, port: number | undefined, onlyPortChecks = false): { url: string; expectStatus: number[] }[] {
  const all = [{ url: app.healthcheck.url, expectStatus: app.healthcheck.expectStatus }, ...app.healthcheck.checks];
  return all
    .filter((c) => !onlyPortChecks || c.url.includes('{port}'))
    .map((c) => ({ url: c.url.replaceAll('{port}', String(port ?? '')), expectStatus: c.expectStatus }));
}

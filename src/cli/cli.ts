/**
 * The CLI: argv → options → one API call → human text or exactly one JSON object on stdout.
 * Logs go to stderr. Never exits the process itself (bin.ts does); returns the exit code.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../config.js';
import { createProgress } from './progress.js';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ExitCode, ReleaseError, asReleaseError, firstLine } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import * as api from '../index.js';
import { failureChanged } from '../lifecycle/results.js';
import {
  formatActivate,
  formatBuild,
  formatPack,
  formatDeploy,
  formatDoctor,
  formatHistory,
  formatError,
  formatInit,
  formatList,
  formatPrune,
  formatStatus,
} from './format.js';

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  cwd: string;
  stderrIsTTY: boolean;
  signal?: AbortSignal;
  /** Tests pass a logger to capture logs; otherwise pino on stderr (and JSON in <releasesDir>/pm2-release.log). */
  logger?: Logger;
  columns?: number;
  /**
   * `deploy --no-wait-soak`: bin.ts hands the deploy to a detached child of itself (`handOff`), which calls
   * `soakStarted` with the result's text once the soak started; the caller gets that and exit 0, and the
   * child finishes the soak (its lock held, its logs in <releasesDir>/pm2-release.log).
   */
  handOff?: (argv: string[]) => Promise<number>;
  soakStarted?: (text: string) => void;
}

/** The JSON log file in the releases dir, when the config can be read (a config error is reported later). */
function logFileFor(g: GlobalOptions, io: Io): string | undefined {
  try {
    const { config } = loadConfig({ configPath: g.config, cwd: io.cwd, env: io.env, home: io.env.HOME ?? os.homedir() });
    if (!fs.existsSync(config.releasesDir)) return undefined;
    return path.join(config.releasesDir, LOG_FILE);
  } catch {
    return undefined;
  }
}

export const LOG_FILE = 'pm2-release.log';

export interface GlobalOptions {
  config?: string;
  json: boolean;
  verbose: boolean;
  quiet: boolean;
}

export type Invocation =
  | {
      command: 'deploy';
      ref?: string;
      waitMs?: number;
      verify: boolean;
      pull?: string | boolean;
      force: boolean;
      rebuild: boolean;
      soakMs?: number;
      canaryShare?: number;
      waitSoak: boolean;
      replaceRouter?: true;
      artifact?: ArtifactFlags;
    }
  | { command: 'build'; ref?: string; waitMs?: number; artifact?: ArtifactFlags }
  | {
      command: 'pack';
      ref?: string;
      release?: string;
      out?: string;
      withDependencies: boolean;
      compression?: 'gzip' | 'brotli';
      sign?: string;
      force: boolean;
      waitMs?: number;
    }
  | { command: 'activate'; id: string; waitMs?: number; replaceRouter?: true }
  | { command: 'rollback'; waitMs?: number; ifCurrent?: string; replaceRouter?: true }
  | { command: 'list' }
  | { command: 'status' }
  | { command: 'doctor' }
  | { command: 'init'; app?: string; write: boolean; force: boolean; releasesDir?: string }
  | { command: 'history'; limit?: number }
  | { command: 'serve' }
  | { command: 'prune'; keep?: number; dryRun: boolean; waitMs?: number };

/** deploy/build --artifact FILE [--allowed-signers FILE] [--allow-env-mismatch]. */
export interface ArtifactFlags {
  file: string;
  allowedSigners?: string;
  allowEnvMismatch: boolean;
}

export interface Parsed {
  global: GlobalOptions;
  invocation?: Invocation;
  /** Text commander printed for --help / --version (exit 0). */
  output?: string;
}

const DEFAULT_WAIT_S = 300;

function positiveInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return Number(value);
  };
}

function waitOption(): Option {
  return new Option('--wait [seconds]', `wait for another operation's lock (default ${DEFAULT_WAIT_S} s) instead of failing`).argParser(positiveInt('--wait'));
}

function waitMs(v: unknown): number | undefined {
  if (v === undefined || v === false) return undefined;
  return (v === true ? DEFAULT_WAIT_S : Number(v)) * 1000;
}

/** The option bags commander hands to actions (commander types them as any). */
interface CommandOpts {
  ref?: string;
  pull?: string | boolean;
  wait?: number | boolean;
  verify?: boolean;
  force?: boolean;
  rebuild?: boolean;
  limit?: number;
  keep?: number;
  dryRun?: boolean;
  app?: string;
  write?: boolean;
  releasesDir?: string;
  soak?: number;
  canary?: number;
  waitSoak?: boolean;
  ifCurrent?: string;
  replaceRouter?: boolean;
  artifact?: string;
  allowedSigners?: string;
  allowEnvMismatch?: boolean;
  out?: string;
  withDependencies?: boolean;
  compression?: 'gzip' | 'brotli';
  sign?: string;
}

/** The artifact flags of deploy and build; --allowed-signers and --allow-env-mismatch need --artifact. */
function artifactFlags(o: CommandOpts, ref: string | undefined): ArtifactFlags | undefined {
  if (o.artifact === undefined) {
    if (o.allowedSigners !== undefined || o.allowEnvMismatch)
      throw new InvalidArgumentError('--allowed-signers and --allow-env-mismatch only apply with --artifact');
    return undefined;
  }
  if (ref !== undefined && ref !== 'HEAD') throw new InvalidArgumentError('--artifact deploys the commit it was built from: drop --ref');
  return { file: o.artifact, ...(o.allowedSigners !== undefined ? { allowedSigners: o.allowedSigners } : {}), allowEnvMismatch: !!o.allowEnvMismatch };
}

function addArtifactOptions(cmd: Command): Command {
  return cmd
    .option('--artifact <file>', 'a release artifact (pm2-release pack) instead of the workspace: checked, unpacked, no build')
    .option('--allowed-signers <file>', 'with --artifact: an OpenSSH allowed_signers file; refuse the artifact unless one of its keys signed it')
    .option('--allow-env-mismatch', "with --artifact: go on although this host's build-time public values (NEXT_PUBLIC_*) differ from the artifact's", false);
}

/** "10%", "10" or "0.1" is not accepted: a share is given in percent, above 0 and up to 100. */
export function parsePercent(value: string): number {
  const m = /^(\d{1,3}(?:\.\d+)?)%?$/.exec(value.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!(n > 0 && n <= 100)) throw new InvalidArgumentError('--canary must be a percentage above 0 and up to 100 (e.g. 10%)');
  return n / 100;
}

function seconds(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) > 3600) throw new InvalidArgumentError(`${name} must be 0 to 3600 seconds`);
    return Number(value);
  };
}

/** `--ref` with `--pull`, and `--if-current`: a commit sha, checked before it reaches git. */
function commitSha(name: string) {
  return (value: string): string => {
    if (!/^[0-9a-fA-F]{7,40}$/.test(value)) throw new InvalidArgumentError(`${name} must be a commit sha (7 to 40 hex digits)`);
    return value.toLowerCase();
  };
}

/** Pure: argv (without node and script) → what to run. Throws CommanderError on bad usage. */
export function parseArgv(argv: string[]): Parsed {
  let invocation: Invocation | undefined;
  let output = '';
  const program = new Command('pm2-release')
    .description('Immutable releases for a Node.js app run by PM2: build aside, switch, health-check, roll back.')
    .version(VERSION, '-V, --version')
    .option('-c, --config <file>', 'JSON config file (else ./pm2-release.config.json, else $PM2_RELEASE_CONFIG, else defaults)')
    .option('--json', 'print exactly one JSON object on stdout', false)
    .option('-v, --verbose', 'debug logs and stack traces', false)
    .option('-q, --quiet', 'only warnings and errors on stderr', false)
    .exitOverride()
    .configureOutput({ writeOut: (s) => (output += s), writeErr: (s) => (output += s) })
    .showSuggestionAfterError(true)
    .addHelpText(
      'after',
      `
Examples:
  pm2-release deploy                  release the workspace HEAD and switch PM2 to it
  pm2-release deploy --ref v1.4.2     release a tag or sha
  pm2-release list                    releases, newest first
  pm2-release rollback                back to the release that was active before
  pm2-release deploy --pull main --ref 3f2a9c1 --json    a fleet host: exactly this commit of main
  pm2-release rollback --if-current 3f2a9c1 --json       a fleet host: roll back only where 3f2a9c1 is live
  pm2-release activate 20261121T204233Z-3f2a9c1
  pm2-release status --json
  pm2-release doctor
  pm2-release init --write            adopt the running PM2 app: propose, check and write a config
  pm2-release history --limit 10

Exit codes: 0 ok, 2 usage/config, 3 locked, 4 build failed, 5 switch/health failed (reverted),
6 git/pm2/filesystem failure, 7 refused (sha marked bad), 1 internal error, 130 cancelled.`,
    );

  addArtifactOptions(program.command('deploy'))
    .description('build a release of REF (default HEAD), switch PM2 to it, check health, save, prune old releases')
    .option('-r, --ref <ref>', 'git ref to release', 'HEAD')
    .option(
      '--pull [branch]',
      'first fetch origin and reset the workspace to origin/BRANCH (default: the checked-out branch); with --ref SHA, deploy that commit, refused unless the branch contains it',
    )
    .option('-f, --force', 'deploy a sha marked bad by a rollback; let --pull discard uncommitted changes', false)
    .option('--no-verify', 'skip starting the release on a spare port before the switch (the health gate still applies)')
    .option('--rebuild', 'build a fresh release even if a ready release of this sha is retained', false)
    .option('--soak <seconds>', 'keep the previous release warm this long and revert on live errors (router strategy; 0: no soak)', seconds('--soak'))
    .option('--canary <percent>', 'during the soak, send only this share of visitors to the new release (e.g. 10%)', parsePercent)
    .option('--no-wait-soak', 'return once the soak started; `status` and `history` give its verdict')
    .option('--replace-router', 'apply a router config change that costs one short gap (a fork-mode router, a new router.host); see the runbook', false)
    .addOption(waitOption())
    .addHelpText(
      'after',
      '\nExamples:\n  pm2-release deploy --artifact frontend-dev-20261121T204233Z-3f2a9c1.tar   # the same bits CI or staging built\n  pm2-release deploy\n  pm2-release deploy --canary 10% --soak 300\n  pm2-release deploy --ref main --json\n  pm2-release deploy --pull main      # cron / no executor: fetch, reset, deploy\n  pm2-release deploy --pull main --ref 3f2a9c1   # a fleet: exactly this commit of main\n  pm2-release deploy --wait=600       # queue behind a running deploy',
    )
    .action((o: CommandOpts) => {
      if (o.ref !== 'HEAD' && o.pull) o.ref = commitSha('--ref with --pull')(o.ref ?? '');
      const artifact = artifactFlags(o, o.ref);
      if (artifact && o.pull) throw new InvalidArgumentError('--artifact deploys the commit it was built from: drop --pull');
      invocation = {
        command: 'deploy',
        ...(artifact ? { artifact } : {}),
        ref: o.ref,
        waitMs: waitMs(o.wait),
        verify: o.verify !== false,
        pull: o.pull,
        force: !!o.force,
        rebuild: !!o.rebuild,
        soakMs: o.soak === undefined ? undefined : o.soak * 1000,
        canaryShare: o.canary,
        waitSoak: o.waitSoak !== false,
        ...(o.replaceRouter ? { replaceRouter: true as const } : {}),
      };
    });
  addArtifactOptions(program.command('build'))
    .description('build a release of REF without activating it (archive, env files, install, build, prune caches)')
    .option('-r, --ref <ref>', 'git ref to release', 'HEAD')
    .addOption(waitOption())
    .addHelpText(
      'after',
      '\nExamples:\n  pm2-release build --ref HEAD && pm2-release activate <id>\n  pm2-release build --artifact frontend-dev-20261121T204233Z-3f2a9c1.tar   # stage it; activate later',
    )
    .action((o: CommandOpts) => {
      const artifact = artifactFlags(o, o.ref);
      invocation = { command: 'build', ref: o.ref, waitMs: waitMs(o.wait), ...(artifact ? { artifact } : {}) };
    });
  program
    .command('pack')
    .description(
      'write a ready release (of REF, built first if needed, or by id) to one artifact file with its .sha256: build once, deploy the same bits elsewhere',
    )
    .argument('[id]', 'a ready release id, as shown by `pm2-release list` (default: the release of --ref)')
    .option('-r, --ref <ref>', 'git ref whose release to pack (default HEAD)')
    .option('-o, --out <file>', 'the artifact file (default ./<app>-<release id>.tar)')
    .option('--with-dependencies', 'include node_modules (for hosts without registry access)', false)
    .addOption(new Option('--compression <kind>', 'of the app inside (default brotli; gzip: one plain `tar -xzf` opens)').choices(['gzip', 'brotli']))
    .option('--sign <key>', 'sign it with this OpenSSH private key (ssh-keygen -Y sign): writes <file>.sig')
    .option('-f, --force', 'pack a sha marked bad by a rollback here', false)
    .addOption(waitOption())
    .addHelpText(
      'after',
      '\nExamples:\n  pm2-release pack --json                       # the release of HEAD\n  pm2-release pack 20261121T204233Z-3f2a9c1 --out /srv/artifacts/frontend.tar\n  pm2-release pack --sign ~/.ssh/release_key   # then: deploy --artifact F --allowed-signers allowed_signers',
    )
    .action((id: string | undefined, o: CommandOpts) => {
      if (id !== undefined && o.ref !== undefined) throw new InvalidArgumentError('pack takes a release id or --ref, not both');
      invocation = {
        command: 'pack',
        ...(o.ref !== undefined ? { ref: o.ref } : {}),
        ...(id !== undefined ? { release: id } : {}),
        ...(o.out !== undefined ? { out: o.out } : {}),
        withDependencies: !!o.withDependencies,
        ...(o.compression ? { compression: o.compression } : {}),
        ...(o.sign !== undefined ? { sign: o.sign } : {}),
        force: !!o.force,
        waitMs: waitMs(o.wait),
      };
    });
  program
    .command('activate')
    .description('switch PM2 to a retained ready release (no install, no build)')
    .argument('<id>', 'release id, as shown by `pm2-release list`')
    .option('--replace-router', 'apply a router config change that costs one short gap (a fork-mode router, a new router.host); see the runbook', false)
    .addOption(waitOption())
    .addHelpText('after', '\nExample:\n  pm2-release activate 20261121T204233Z-3f2a9c1')
    .action((id: string, o: CommandOpts) => {
      invocation = { command: 'activate', id, waitMs: waitMs(o.wait), ...(o.replaceRouter ? { replaceRouter: true as const } : {}) };
    });
  program
    .command('rollback')
    .description('activate the release that was active before the current one')
    .addOption(
      new Option('--if-current <sha>', 'only if the active release serves this commit; else do nothing (exit 0, changed false)').argParser(
        commitSha('--if-current'),
      ),
    )
    .option('--replace-router', 'apply a router config change that costs one short gap (a fork-mode router, a new router.host); see the runbook', false)
    .addOption(waitOption())
    .addHelpText(
      'after',
      '\nExamples:\n  pm2-release rollback --json\n  pm2-release rollback --if-current 3f2a9c1 --json   # a fleet rollback: a no-op where 3f2a9c1 is not live',
    )
    .action((o: CommandOpts) => {
      invocation = {
        command: 'rollback',
        waitMs: waitMs(o.wait),
        ...(o.ifCurrent ? { ifCurrent: o.ifCurrent } : {}),
        ...(o.replaceRouter ? { replaceRouter: true as const } : {}),
      };
    });
  program
    .command('list')
    .description('releases, newest first: id, sha, status, active, created, size')
    .addHelpText('after', '\nExample:\n  pm2-release list --json')
    .action(() => {
      invocation = { command: 'list' };
    });
  program
    .command('status')
    .description("the app's PM2 state, the active release, its health, and drift between PM2 and the record")
    .addHelpText('after', '\nExample:\n  pm2-release status')
    .action(() => {
      invocation = { command: 'status' };
    });
  program
    .command('history')
    .description('what ran when: deploys, activations, rollbacks, automatic reverts, prunes (newest first)')
    .option('-n, --limit <n>', 'show at most N entries', positiveInt('--limit'))
    .addHelpText('after', '\nExamples:\n  pm2-release history --limit 20\n  pm2-release history --json')
    .action((o: CommandOpts) => {
      invocation = { command: 'history', limit: o.limit };
    });
  program
    .command('serve')
    .description('run the GitHub push webhook listener (loopback by default; secret from $PM2_RELEASE_WEBHOOK_SECRET or serve.secretFile)')
    .addHelpText('after', '\nExample:\n  PM2_RELEASE_WEBHOOK_SECRET=… pm2-release serve   # usually run under PM2: see ecosystem.config.cjs')
    .action(() => {
      invocation = { command: 'serve' };
    });
  program
    .command('doctor')
    .description('pre-flight checks: disk, inodes, memory, node, pm2, workspace, releases dir, port, dump, systemd')
    .addHelpText('after', '\nExample:\n  pm2-release doctor --json')
    .action(() => {
      invocation = { command: 'doctor' };
    });
  program
    .command('init')
    .description(
      'propose a config that takes over a running PM2 app (reads pm2 jlist and the app dir; changes nothing in PM2), doctor it, say what the first deploy does',
    )
    .option('-a, --app <name>', 'the PM2 app to take over', 'frontend-dev')
    .option('-w, --write', 'write the config to --config (default ./pm2-release.config.json), mode 0600', false)
    .option('-f, --force', 'with --write: replace an existing config file', false)
    .option('--releases-dir <dir>', 'the releasesDir to propose (default ~/executor/frontend-releases)')
    .addHelpText(
      'after',
      '\nExamples:\n  pm2-release init                          # print the proposal, doctor and the first deploy; write nothing\n  pm2-release init --write --config ~/pm2-release/pm2-release.config.json\n  pm2-release init --app shop --json',
    )
    .action((o: CommandOpts) => {
      if (o.force && !o.write) throw new InvalidArgumentError('--force only applies with --write');
      invocation = { command: 'init', app: o.app, write: !!o.write, force: !!o.force, releasesDir: o.releasesDir };
    });
  program
    .command('prune')
    .description('delete old releases: keeps the active one, then the rollback target, then the newest, up to --keep; never one being built')
    .option('-k, --keep <n>', 'ready releases to keep, the active one included', positiveInt('--keep'))
    .option('-n, --dry-run', 'show what would be removed', false)
    .addOption(waitOption())
    .addHelpText('after', '\nExamples:\n  pm2-release prune --dry-run\n  pm2-release prune --keep 3')
    .action((o: CommandOpts) => {
      invocation = { command: 'prune', keep: o.keep, dryRun: !!o.dryRun, waitMs: waitMs(o.wait) };
    });

  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')) {
      return { global: globals(program), output };
    }
    if (err instanceof CommanderError) (err as CommanderError & { output?: string }).output = output;
    throw err;
  }
  if (!invocation) return { global: globals(program), output: program.helpInformation() };
  return { global: globals(program), invocation };
}

function globals(program: Command): GlobalOptions {
  const o = program.opts<{ config?: string; json?: boolean; verbose?: boolean; quiet?: boolean }>();
  return { config: o.config, json: !!o.json, verbose: !!o.verbose, quiet: !!o.quiet };
}

export const VERSION: string = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/** Maps any thrown value to the exit code the CLI returns. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return ExitCode.usage;
  return asReleaseError(err).exitCode;
}

export async function main(argv: string[], io: Io): Promise<number> {
  const wantsJson = argv.includes('--json');
  let parsed: Parsed;
  try {
    parsed = parseArgv(argv);
  } catch (err) {
    const msg = err instanceof CommanderError ? err.message.replace(/^error: /, '') : String(err);
    if (wantsJson) io.stdout(JSON.stringify({ ok: false, changed: false, error: { code: 'USAGE', phase: 'config', message: firstLine(msg) } }) + '\n');
    else io.stderr(`${firstLine(msg)}\n(see pm2-release --help)\n`);
    return ExitCode.usage;
  }
  if (!parsed.invocation) {
    io.stdout(parsed.output ?? '');
    return ExitCode.ok;
  }
  const { global: g, invocation: inv } = parsed;
  // Human mode shows phases through the progress renderer, so info logs would only repeat them.
  const level = g.verbose ? 'debug' : inv.command === 'serve' ? 'info' : g.quiet || !g.json ? 'warn' : 'info';
  // init's --config names the file to write, not one to read: no log file from it.
  // Human output is text on a terminal and off it (a cron mail, a CI log): a JSON line there reads as noise.
  // serve is a long-running listener whose stderr is a log stream: JSON unless on a terminal.
  const pretty = !g.json && (io.stderrIsTTY || inv.command !== 'serve');
  const logger = io.logger ?? createLogger({ level, pretty, colorize: io.stderrIsTTY, file: inv.command === 'init' ? undefined : logFileFor(g, io) });
  const progress = g.json ? undefined : createProgress({ write: io.stderr, tty: io.stderrIsTTY, quiet: g.quiet, columns: io.columns });
  const common = { configPath: g.config, cwd: io.cwd, env: io.env, logger, signal: io.signal, trigger: 'cli' as const, onEvent: progress };

  try {
    let text: string;
    let result: object;
    switch (inv.command) {
      case 'deploy': {
        // --no-wait-soak: this process answers when the soak starts; a detached child of it finishes the soak.
        if (!inv.waitSoak && io.handOff && !io.soakStarted) return await io.handOff(argv);
        const r = await api.deploy({
          ...common,
          // With --pull, a --ref other than HEAD is the sha to deploy from the pulled branch.
          ref: inv.pull && inv.ref === 'HEAD' ? undefined : inv.ref,
          pull: inv.pull,
          force: inv.force,
          rebuild: inv.rebuild,
          waitMs: inv.waitMs,
          verify: inv.verify ? undefined : false,
          soakMs: inv.soakMs,
          canaryShare: inv.canaryShare,
          replaceRouter: inv.replaceRouter,
          ...(inv.artifact
            ? { artifact: inv.artifact.file, allowedSigners: inv.artifact.allowedSigners, allowEnvMismatch: inv.artifact.allowEnvMismatch, ref: undefined }
            : {}),
          onSoakStarted: !inv.waitSoak && io.soakStarted ? (early) => io.soakStarted!(g.json ? JSON.stringify(early) + '\n' : formatDeploy(early)) : undefined,
        });
        [result, text] = [r, formatDeploy(r)];
        break;
      }
      case 'build': {
        const r = await api.build({
          ...common,
          ...(inv.artifact
            ? { artifact: inv.artifact.file, allowedSigners: inv.artifact.allowedSigners, allowEnvMismatch: inv.artifact.allowEnvMismatch }
            : { ref: inv.ref }),
          waitMs: inv.waitMs,
        });
        [result, text] = [r, formatBuild(r)];
        break;
      }
      case 'activate': {
        const r = await api.activate({ ...common, id: inv.id, waitMs: inv.waitMs, replaceRouter: inv.replaceRouter });
        [result, text] = [r, formatActivate(r)];
        break;
      }
      case 'rollback': {
        const r = await api.rollback({ ...common, waitMs: inv.waitMs, ifCurrent: inv.ifCurrent, replaceRouter: inv.replaceRouter });
        [result, text] = [r, 'skipped' in r ? `${r.reason}\n` : formatActivate(r)];
        break;
      }
      case 'list': {
        const r = await api.list(common);
        [result, text] = [r, formatList(r)];
        break;
      }
      case 'status': {
        const r = await api.status(common);
        [result, text] = [r, formatStatus(r)];
        break;
      }
      case 'history': {
        const r = await api.history({ ...common, limit: inv.limit });
        [result, text] = [r, formatHistory(r)];
        break;
      }
      case 'serve': {
        await api.serve({ ...common, trigger: 'webhook' });
        return ExitCode.ok;
      }
      case 'doctor': {
        const r = await api.doctor(common);
        if (g.json) io.stdout(JSON.stringify(r) + '\n');
        else io.stdout(formatDoctor(r));
        return r.ok ? ExitCode.ok : ExitCode.environment;
      }
      case 'init': {
        const r = await api.init({
          app: inv.app,
          write: inv.write,
          force: inv.force,
          releasesDir: inv.releasesDir,
          configPath: g.config,
          cwd: io.cwd,
          env: io.env,
          logger,
        });
        if (g.json) io.stdout(JSON.stringify(r) + '\n');
        else io.stdout(formatInit(r));
        // An incomplete proposal is a config matter (2); a complete one on a VM doctor fails is 6.
        return r.ok ? ExitCode.ok : r.problems.length ? ExitCode.usage : ExitCode.environment;
      }
      case 'pack': {
        const r = await api.pack({
          ...common,
          ref: inv.ref,
          release: inv.release,
          out: inv.out,
          withDependencies: inv.withDependencies,
          compression: inv.compression,
          sign: inv.sign,
          force: inv.force,
          waitMs: inv.waitMs,
        });
        [result, text] = [r, formatPack(r)];
        break;
      }
      case 'prune': {
        const r = await api.prune({ ...common, keep: inv.keep, dryRun: inv.dryRun, waitMs: inv.waitMs });
        [result, text] = [r, formatPrune(r)];
        break;
      }
    }
    if (g.json) io.stdout(JSON.stringify(result) + '\n');
    else io.stdout(text);
    return ExitCode.ok;
  } catch (err) {
    const e = asReleaseError(err);
    // In human mode the formatted block below is the message; a log line would repeat it.
    if (g.json || g.verbose) logger.error({ code: e.code, phase: e.phase, release: e.releaseId }, e.message);
    if (g.json) io.stdout(JSON.stringify({ ok: false, changed: failureChanged(e), error: e.toJSON() }) + '\n');
    else io.stderr(formatError(e, g.verbose));
    if (!(err instanceof ReleaseError) && g.verbose) logger.error({ err }, 'internal error');
    return e.exitCode;
  }
}

/** The CLI as a mapping: argv → invocation and global options, errors → exit codes. */
import { CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { exitCodeFor, main, parseArgv } from '../../src/cli/cli.js';
import { failureChanged } from '../../src/lifecycle/results.js';
import { BuildError, ConfigError, EnvironmentError, ExitCode, LockError, ReleaseError, SwitchError, UsageError } from '../../src/errors.js';

describe('parseArgv', () => {
  it.each([
    [['deploy'], { command: 'deploy', ref: 'HEAD', verify: true, force: false, rebuild: false, waitMs: undefined, pull: undefined }],
    [['deploy', '--ref', 'v1.2.3'], { command: 'deploy', ref: 'v1.2.3' }],
    [['deploy', '-r', 'main', '--no-verify'], { command: 'deploy', ref: 'main', verify: false }],
    [['deploy', '--wait'], { command: 'deploy', waitMs: 300_000 }],
    [['deploy', '--wait=45'], { command: 'deploy', waitMs: 45_000 }],
    [['deploy', '--pull'], { command: 'deploy', pull: true }],
    [['deploy', '--pull', 'main', '--force'], { command: 'deploy', pull: 'main', force: true }],
    [['deploy', '--rebuild'], { command: 'deploy', rebuild: true }],
    [['deploy', '--pull', 'main', '--ref', '3F2A9C1'], { command: 'deploy', pull: 'main', ref: '3f2a9c1' }],
    [
      ['deploy', '--ref', '3f2a9c1e5b7d9f00112233445566778899aabbcc', '--pull'],
      { command: 'deploy', pull: true, ref: '3f2a9c1e5b7d9f00112233445566778899aabbcc' },
    ],
    [['rollback', '--if-current', '3f2a9c1'], { command: 'rollback', ifCurrent: '3f2a9c1' }],
    [['rollback'], { command: 'rollback', waitMs: undefined }],
    [['build', '--ref', 'abc1234'], { command: 'build', ref: 'abc1234' }],
    [['activate', '20261121T204233Z-3f2a9c1'], { command: 'activate', id: '20261121T204233Z-3f2a9c1' }],
    [['rollback', '--wait', '10'], { command: 'rollback', waitMs: 10_000 }],
    [['list'], { command: 'list' }],
    [['status'], { command: 'status' }],
    [['doctor'], { command: 'doctor' }],
    [['history', '--limit', '5'], { command: 'history', limit: 5 }],
    [['prune', '--keep', '3', '--dry-run'], { command: 'prune', keep: 3, dryRun: true }],
    [['prune'], { command: 'prune', keep: undefined, dryRun: false }],
    [['serve'], { command: 'serve' }],
    [['init'], { command: 'init', app: 'frontend-dev', write: false, force: false, releasesDir: undefined }],
    [['init', '--app', 'shop', '--write', '--force'], { command: 'init', app: 'shop', write: true, force: true }],
    [['init', '-a', 'shop', '-w', '--releases-dir', '/srv/releases'], { command: 'init', app: 'shop', write: true, releasesDir: '/srv/releases' }],
  ])('%j → %j', (argv, expected) => {
    expect(parseArgv(argv).invocation).toMatchObject(expected);
  });

  it('global options before or after the command', () => {
    expect(parseArgv(['--json', '-c', '/etc/p.json', 'list']).global).toEqual({ config: '/etc/p.json', json: true, verbose: false, quiet: false });
    expect(parseArgv(['status', '--json', '--verbose']).global).toMatchObject({ json: true, verbose: true });
    expect(parseArgv(['-q', 'deploy']).global.quiet).toBe(true);
  });

  it('deploy takes the soak flags: --soak seconds, --canary percent, --no-wait-soak', () => {
    expect(parseArgv(['deploy', '--canary', '10%', '--soak', '300', '--no-wait-soak']).invocation).toMatchObject({
      command: 'deploy',
      canaryShare: 0.1,
      soakMs: 300_000,
      waitSoak: false,
    });
    expect(parseArgv(['deploy', '--canary', '2.5']).invocation).toMatchObject({ canaryShare: 0.025, waitSoak: true });
    expect(parseArgv(['deploy', '--soak', '0']).invocation).toMatchObject({ soakMs: 0 });
    expect(parseArgv(['deploy']).invocation).toMatchObject({ soakMs: undefined, canaryShare: undefined, waitSoak: true });
  });

  it('artifacts: pack [ID | --ref REF] with its flags; deploy/build --artifact, whose other flags need it', () => {
    expect(parseArgv(['pack']).invocation).toEqual({ command: 'pack', withDependencies: false, force: false, waitMs: undefined });
    expect(
      parseArgv(['pack', '20261121T204233Z-3f2a9c1', '--out', 'a.tar', '--with-dependencies', '--compression', 'brotli', '--sign', 'k']).invocation,
    ).toEqual({
      command: 'pack',
      release: '20261121T204233Z-3f2a9c1',
      out: 'a.tar',
      withDependencies: true,
      compression: 'brotli',
      sign: 'k',
      force: false,
      waitMs: undefined,
    });
    expect(parseArgv(['pack', '--ref', 'v1.2']).invocation).toMatchObject({ command: 'pack', ref: 'v1.2' });
    expect(() => parseArgv(['pack', '20261121T204233Z-3f2a9c1', '--ref', 'v1'])).toThrow(/a release id or --ref, not both/);
    expect(() => parseArgv(['pack', '--compression', 'zip'])).toThrow(/Allowed choices are gzip, brotli/);
    expect(parseArgv(['deploy', '--artifact', 'a.tar', '--allowed-signers', 's', '--allow-env-mismatch']).invocation).toMatchObject({
      command: 'deploy',
      artifact: { file: 'a.tar', allowedSigners: 's', allowEnvMismatch: true },
    });
    expect(parseArgv(['build', '--artifact', 'a.tar']).invocation).toMatchObject({ command: 'build', artifact: { file: 'a.tar', allowEnvMismatch: false } });
    expect(() => parseArgv(['deploy', '--allow-env-mismatch'])).toThrow(/only apply with --artifact/);
    expect(() => parseArgv(['deploy', '--artifact', 'a.tar', '--ref', 'v1'])).toThrow(/drop --ref/);
    expect(() => parseArgv(['deploy', '--artifact', 'a.tar', '--pull'])).toThrow(/drop --pull/);
    expect(parseArgv(['deploy']).invocation).not.toHaveProperty('artifact');
  });

  it("init's --config is the global one: the file to write", () => {
    const p = parseArgv(['init', '--write', '--config', '/home/ubuntu/pm2-release/pm2-release.config.json', '--json']);
    expect(p.global).toMatchObject({ config: '/home/ubuntu/pm2-release/pm2-release.config.json', json: true });
    expect(p.invocation).toMatchObject({ command: 'init', write: true });
  });

  it.each([
    [['bogus']],
    [['activate']],
    [['prune', '--keep', '0']],
    [['prune', '--keep', 'two']],
    [['history', '--limit', '-1']],
    [['deploy', '--wait=soon']],
    [['deploy', '--ref', 'main', '--pull']],
    [['deploy', '--ref', 'abc12', '--pull', 'main']],
    [['deploy', '--ref', '-x1234567', '--pull', 'main']],
    [['rollback', '--if-current', 'main']],
    [['rollback', '--if-current', '3f2a9c1z']],
    [['rollback', '--if-current']],
    [['list', '--nope']],
    [['init', '--force']],
    [['init', '--app']],
    [['deploy', '--canary', '0%']],
    [['deploy', '--canary', '120%']],
    [['deploy', '--canary', 'ten']],
    [['deploy', '--soak', '-5']],
    [['deploy', '--soak', '3601']],
  ])('%j is a usage error', (argv) => {
    expect(() => parseArgv(argv)).toThrow(CommanderError);
  });

  it('--help and --version produce text and no invocation', () => {
    const help = parseArgv(['--help']);
    expect(help.invocation).toBeUndefined();
    expect(help.output).toContain('Exit codes:');
    expect(parseArgv(['deploy', '--help']).output).toContain('Examples:');
    expect(parseArgv(['--version']).output).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('exit codes', () => {
  it.each([
    [new CommanderError(1, 'commander.unknownCommand', 'x'), ExitCode.usage],
    [new ConfigError(['keep: bad'], 'f.json'), ExitCode.usage],
    [new UsageError('RELEASE_ID_INVALID', 'bad id'), ExitCode.usage],
    [new LockError('locked by pid 1'), ExitCode.locked],
    [new BuildError('BUILD_FAILED', 'x', { phase: 'build' }), ExitCode.build],
    [new SwitchError('HEALTH_FAILED', 'x', { phase: 'health' }), ExitCode.switch],
    [new EnvironmentError('PM2_FAILED', 'x', { phase: 'switch' }), ExitCode.environment],
    [new ReleaseError('SHA_MARKED_BAD', ExitCode.refused, 'x', { phase: 'resolve' }), 7],
    [new Error('boom'), ExitCode.internal],
  ])('%s → %i', (err, code) => {
    expect(exitCodeFor(err)).toBe(code);
  });

  it('the distinct codes are distinct', () => {
    expect(new Set(Object.values(ExitCode)).size).toBe(Object.values(ExitCode).length);
  });

  it('a usage error with --json prints exactly one JSON object on stdout and returns 2', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(['--json', 'activate'], { stdout: (s) => out.push(s), stderr: (s) => err.push(s), env: {}, cwd: '/', stderrIsTTY: false });
    expect(code).toBe(2);
    expect(out).toHaveLength(1);
    expect(JSON.parse(out[0])).toMatchObject({ ok: false, changed: false, error: { code: 'USAGE', phase: 'config' } });
  });

  it('a config error with --json is one JSON object with code CONFIG_INVALID, exit 2', async () => {
    const out: string[] = [];
    const code = await main(['--json', '--config', '/nonexistent/pm2-release.json', 'list'], {
      stdout: (s) => out.push(s),
      stderr: () => undefined,
      env: {},
      cwd: '/',
      stderrIsTTY: false,
    });
    expect(code).toBe(2);
    expect(out).toHaveLength(1);
    expect(JSON.parse(out[0])).toMatchObject({ ok: false, changed: false, error: { code: 'CONFIG_INVALID' } });
  });
});

describe('changed on a failure', () => {
  it.each([
    [new ConfigError(['keep: bad'], 'f.json'), false],
    [new LockError('locked by pid 1'), false],
    [new UsageError('REF_NOT_IN_BRANCH', 'x', { phase: 'pull' }), false],
    [new BuildError('VERIFY_FAILED', 'x', { phase: 'verify' }), false],
    [new ReleaseError('SHA_MARKED_BAD', ExitCode.refused, 'x', { phase: 'resolve' }), false],
    // The previous release was put back (or, behind the router, never stopped serving).
    [new SwitchError('HEALTH_FAILED', 'x', { phase: 'health' }), false],
    [new SwitchError('ROUTE_FAILED', 'x', { phase: 'route' }), false],
    // Before the switch, an outside failure changed nothing; at or after it, something may have.
    [new EnvironmentError('PREFLIGHT_FAILED', 'x', { phase: 'preflight' }), false],
    [new EnvironmentError('PULL_FAILED', 'x', { phase: 'pull' }), false],
    [new EnvironmentError('PM2_FAILED', 'x', { phase: 'switch' }), true],
    [new EnvironmentError('PM2_DAEMON_GONE', 'x', { phase: 'health' }), true],
    [new ReleaseError('CANCELLED', ExitCode.cancelled, 'x', { phase: 'install' }), false],
    [new ReleaseError('CANCELLED', ExitCode.cancelled, 'x', { phase: 'switch' }), true],
    [new ReleaseError('INTERNAL', ExitCode.internal, 'x', { phase: 'internal' }), true],
  ])('%s in its phase → changed %s', (err, changed) => {
    expect(failureChanged(err)).toBe(changed);
  });

  it('rollback --if-current with a bad sha is a usage error before any config is read', async () => {
    const out: string[] = [];
    const code = await main(['--json', '--config', '/nonexistent/p.json', 'rollback', '--if-current', 'HEAD~1'], {
      stdout: (s) => out.push(s),
      stderr: () => undefined,
      env: {},
      cwd: '/',
      stderrIsTTY: false,
    });
    expect(code).toBe(2);
    expect(JSON.parse(out[0])).toMatchObject({ ok: false, changed: false, error: { code: 'USAGE', message: expect.stringContaining('--if-current') } });
  });
});

/**
 * doctor and the PM2 unit's OOMPolicy (issue 18), on a host where install and build cannot get a transient
 * systemd scope (this one runs no systemd). A fake `systemctl` first on PATH plays the unit: with
 * OOMPolicy=stop doctor warns in one line and prints the one-time fix; the printed fix, run as printed, writes
 * the drop-in and reloads; then doctor says ok. Where systemctl cannot answer, the check is skipped with why.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createSandbox, type Sandbox } from '../helpers/sandbox.js';

interface Check {
  name: string;
  status: string;
  message: string;
  fix: string | null;
}

const FAKE_SYSTEMCTL = `#!/bin/sh
# A fake systemctl: "show UNIT -p ..." answers from $FAKE_SYSTEMD ($FAKE_SYSTEMD/policy, or a drop-in written
# beside the unit file); with no policy file it answers as a host without systemd does. Every call is logged.
echo "$*" >> "$FAKE_SYSTEMD/calls.log"
case "$1" in
  show)
    [ -f "$FAKE_SYSTEMD/policy" ] || { echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2; exit 1; }
    frag="$FAKE_SYSTEMD/$2.service"
    policy=$(cat "$FAKE_SYSTEMD/policy")
    [ -f "$frag.d/oom-policy.conf" ] && policy=$(sed -n 's/^OOMPolicy=//p' "$frag.d/oom-policy.conf")
    printf 'LoadState=loaded\\nOOMPolicy=%s\\nFragmentPath=%s\\n' "$policy" "$frag"
    ;;
  daemon-reload) exit 0 ;;
  *) exit 1 ;;
esac
`;

describe.skipIf(process.platform !== 'linux')("doctor reads the PM2 unit's OOMPolicy", () => {
  let sb: Sandbox;
  let fake: string;
  let env: Record<string, string>;
  const unit = `pm2-${os.userInfo().username}`;

  beforeAll(async () => {
    sb = await createSandbox();
    fake = path.join(sb.root, 'systemd');
    fs.mkdirSync(path.join(fake, 'bin'), { recursive: true });
    fs.writeFileSync(path.join(fake, 'bin', 'systemctl'), FAKE_SYSTEMCTL, { mode: 0o755 });
    env = { FAKE_SYSTEMD: fake, PATH: `${path.join(fake, 'bin')}${path.delimiter}${process.env.PATH}` };
  });

  afterAll(async () => {
    await sb?.close();
  });

  const oomCheck = () => {
    const r = cli(sb, ['doctor', '--json'], env);
    return (JSON.parse(r.stdout) as { checks: Check[] }).checks.find((c) => c.name === 'oom-policy')!;
  };

  it('where systemctl cannot answer (no systemd): skipped, saying why and why no scope either', () => {
    expect(oomCheck()).toMatchObject({
      status: 'skip',
      message: expect.stringMatching(/^systemctl cannot answer .*no transient scope either: systemd is not running here \(no \/run\/systemd\/system\)$/),
    });
  });

  it('OOMPolicy=stop: warns in one line and prints the fix, which runs as printed; then ok', () => {
    fs.writeFileSync(path.join(fake, 'policy'), 'stop\n');
    const stop = oomCheck();
    expect(stop.status).toBe('warn');
    expect(stop.message).not.toContain('\n');
    expect(stop.message).toMatch(new RegExp(`^${unit} has OOMPolicy=stop: one kernel OOM kill inside it .* stop the whole unit and every app PM2 runs`));
    const dropIn = path.join(fake, `${unit}.service.d`, 'oom-policy.conf');
    const sudo = process.getuid?.() === 0 ? '' : 'sudo ';
    expect(stop.fix).toBe(
      `${sudo}mkdir -p ${path.dirname(dropIn)} && printf '[Service]\\nOOMPolicy=continue\\n' | ${sudo}tee ${dropIn} >/dev/null && ${sudo}systemctl daemon-reload`,
    );
    const human = cli(sb, ['doctor'], env).stdout;
    expect(human).toMatch(/^WARN\s+oom-policy\s+.*OOMPolicy=stop/m);
    expect(human).toContain(`fix: ${stop.fix}`);

    // The operator pastes the printed line into a shell.
    if (sudo) return; // needs root to run as printed here
    const run = spawnSync('sh', ['-c', stop.fix!], { env: { ...process.env, ...env }, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(fs.readFileSync(dropIn, 'utf8')).toBe('[Service]\nOOMPolicy=continue\n');
    expect(fs.readFileSync(path.join(fake, 'calls.log'), 'utf8')).toMatch(/^daemon-reload$/m);
    expect(oomCheck()).toMatchObject({ status: 'ok', message: `${unit} has OOMPolicy=continue: an OOM kill of one process does not stop the unit`, fix: null });
  });

  it('OOMPolicy=continue: ok', () => {
    fs.rmSync(path.join(fake, `${unit}.service.d`), { recursive: true, force: true });
    fs.writeFileSync(path.join(fake, 'policy'), 'continue\n');
    expect(oomCheck()).toMatchObject({ status: 'ok', fix: null });
    expect(cli(sb, ['doctor'], env).stdout).toMatch(/^OK\s+oom-policy\s+.*OOMPolicy=continue/m);
  });
});

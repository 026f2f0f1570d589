/**
 * The fleet playbooks (ansible/) against three hosts on this machine: network namespaces, each with its own
 * sshd, user, home, PM2 daemon and the same app port; the real ansible-playbook over SSH, the real
 * pm2-release installed on each host from `npm pack`. Scenarios run in order on the same hosts:
 * happy path, a canary that crashes at boot, a failure in the second batch then rollback.yml, an
 * unreachable host at the pre-check, then one in a later batch mid-rollout. Needs root, Ansible and sshd: skipped with a reason otherwise, but failed in CI
 * (PM2_RELEASE_FLEET_REQUIRED=1, set by .ci/run).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANSIBLE_DIR, APP_PORT, createFleet, fleetUnavailable, type Fleet, type FleetHost, type PlaybookRun } from '../helpers/fleet.js';
import { ROOT } from '../helpers/sandbox.js';

const unavailable = fleetUnavailable();
const required = process.env.PM2_RELEASE_FLEET_REQUIRED === '1';
if (unavailable && !required) process.stderr.write(`fleet.test.ts skipped: ${unavailable}\n`);

interface Status {
  ok: boolean;
  active: { id: string; sha: string } | null;
  health: { ok: boolean };
}
interface History {
  entries: { action: string; sha: string | null; result: string; from: string | null; to: string | null }[];
}
interface List {
  releases: { id: string; sha: string; status: string; source: 'git' | 'artifact' | null; durationsMs: Record<string, number> }[];
}

/** The result lines of one task of a run ("changed: [h1]", …), sorted. */
const taskResults = (r: PlaybookRun, task: string) => {
  const start = r.stdout.indexOf(`TASK [pm2_release : ${task}]`);
  if (start < 0) return [];
  const end = r.stdout.indexOf('\nTASK [', start + 1);
  return (r.stdout.slice(start, end < 0 ? undefined : end).match(/^(ok|changed|skipping|failed|fatal): \[[^\]]+\]/gm) ?? []).sort();
};

/** What ansible-playbook printed, for the assertion message of a failed run. */
const tail = (r: PlaybookRun) => `exit ${r.code} after ${r.ms} ms\n${(r.stdout + r.stderr).split('\n').slice(-60).join('\n')}`;

describe('the fleet guard', () => {
  it.runIf(required && unavailable)('CI requires the fleet test to run', () => {
    expect.fail(`PM2_RELEASE_FLEET_REQUIRED=1 but the fleet test cannot run: ${unavailable}`);
  });
});

describe.skipIf(!!unavailable)('fleet rollout on Ansible (3 namespace hosts: h1 canary, then h2, h3)', () => {
  let fleet: Fleet;
  let h1: FleetHost, h2: FleetHost, h3: FleetHost;
  let v1: string, v3: string;
  const serving = (h: FleetHost) => fleet.cli<Status>(h, 'status').json.active?.sha ?? null;
  const deploys = (h: FleetHost) =>
    fleet
      .cli<History>(h, 'history')
      .json.entries.map((e) => `${e.action} ${e.sha?.slice(0, 7)} ${e.result}`)
      .reverse();
  const releasesOf = (h: FleetHost, sha: string) => fleet.cli<List>(h, 'list').json.releases.filter((r) => r.sha === sha);

  beforeAll(async () => {
    fleet = await createFleet();
    [h1, h2, h3] = fleet.hosts;
  }, 120_000);

  afterAll(async () => {
    // PM2_RELEASE_FLEET_KEEP=1 leaves the hosts up to debug a playbook (then: fleet.close() by hand).
    if (process.env.PM2_RELEASE_FLEET_KEEP === '1') return void process.stderr.write(`fleet kept in ${fleet?.root}\n`);
    await fleet?.close();
  }, 120_000);

  it('rolls one commit out: every host installs pm2-release, serves the sha, and has the same history', async () => {
    v1 = fleet.commit('v1 again', { 'version.txt': '1.0.0\n' });
    // The docs' command reads ansible/ansible.cfg: `cd ansible && ansible-config dump` shows its settings in effect.
    const config = fleet.ansible(['ansible-config', 'dump', '--only-changed']);
    expect(config).toContain(`CONFIG_FILE() = ${path.join(ANSIBLE_DIR, 'ansible.cfg')}`);
    expect(config).toContain(`DEFAULT_FORKS(${path.join(ANSIBLE_DIR, 'ansible.cfg')}) = 20`);
    // pm2_release_npm_args: the fleet's is the documented string form; h3 has the list form.
    const r = await fleet.playbook(
      'rollout.yml',
      {},
      { h3: { pm2_release_npm_args: ['--offline', '--no-audit', '--no-fund', '--registry', 'http://127.0.0.1:9'] } },
    );
    expect(r.code, tail(r)).toBe(0);
    expect(taskResults(r, 'Install pm2-release with npm')).toEqual(['changed: [h1]', 'changed: [h2]', 'changed: [h3]']);
    // The offline tarball (npm run pack:offline), installed with --offline, an empty npm cache and no registry.
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(path.basename(fleet.tarball)).toBe(`pm2-release-${version}-offline.tgz`);
    for (const h of fleet.hosts) expect(fleet.exec(h, [fleet.bin(h), '--version']).stdout.trim(), h.name).toBe(version);
    for (const h of fleet.hosts) {
      expect(serving(h), h.name).toBe(v1);
      expect(fleet.cli<Status>(h, 'status').json.health.ok, h.name).toBe(true);
      expect(deploys(h), h.name).toEqual([`deploy ${v1.slice(0, 7)} ok`]);
    }
    expect(fleet.summary().map((s) => [s.host, s.result])).toEqual([
      ['h1', 'deployed (built)'],
      ['h2', 'deployed (built)'],
      ['h3', 'deployed (built)'],
    ]);
    expect(r.stdout).toMatch(/h1 {2}from none {2}to \d{8}T\d{6}Z-[0-9a-f]{7} {2}deployed \(built\)/);

    // (That a second run of the same sha changes nothing is the contract's: serve.test.ts checks `changed`
    // on a repeated `deploy --pull --ref`; rollback.yml is run twice below. A third rollout here would cost
    // a minute of the file's budget.)
  }, 240_000);

  it('a canary that crashes at boot reverts itself and the rollout stops: h2 and h3 are untouched', async () => {
    const crash = fleet.commit('crashes at boot', { CRASH_ON_BOOT: 'yes\n' });
    const before = { h2: deploys(h2), h3: deploys(h3) };
    const r = await fleet.playbook('rollout.yml');
    expect(r.code, tail(r)).not.toBe(0);
    expect(serving(h1)).toBe(v1);
    expect(deploys(h1).at(-1)).toBe(`deploy ${crash.slice(0, 7)} failed`);
    for (const h of [h2, h3]) {
      expect(serving(h), h.name).toBe(v1);
      expect(releasesOf(h, crash), h.name).toEqual([]);
    }
    expect({ h2: deploys(h2), h3: deploys(h3) }).toEqual(before);
    const summary = fleet.summary();
    expect(summary[0]).toMatchObject({ host: 'h1', to: summary[0].from, result: expect.stringMatching(/^FAILED \(exit 5: HEALTH_FAILED in health/) });
    expect(summary.slice(1).map((s) => s.result)).toEqual(['untouched', 'untouched']);
  }, 180_000);

  it('a failed HTTP check in the second batch stops the rollout; rollback.yml brings every changed host back, and again changes nothing', async () => {
    const v2 = fleet.commit('v2', { 'version.txt': '2.0.0\n', CRASH_ON_BOOT: null });
    // h3 (the second batch of the rest: serial [1, "25%", "100%"]) deploys, then fails the fleet's HTTP gate (a
    // URL its release answers 404): the role rolls it back. (pm2-release's own health gate failing a host is the
    // canary's case above: the same deploy.yml.)
    const missing = `http://127.0.0.1:${APP_PORT}/_next/static/missing.js`;
    const checks = [
      { url: `http://127.0.0.1:${APP_PORT}/`, status_code: [200] },
      { url: missing, status_code: [200] },
    ];
    const r = await fleet.playbook('rollout.yml', {}, { h3: { pm2_release_http_checks: checks } });
    expect(r.code, tail(r)).not.toBe(0);
    expect([serving(h1), serving(h2), serving(h3)]).toEqual([v2, v2, v1]);
    expect(fleet.summary().map((s) => s.result.replace(/ \(.*$/, ''))).toEqual(['deployed', 'deployed', 'FAILED']);
    // The summary names the URL and the status it got, not Ansible's "One or more items failed".
    expect(fleet.summary()[2]).toMatchObject({ to: fleet.summary()[2].from, result: `FAILED (gate: http check ${missing} got 404, expected [200])` });
    expect(deploys(h3).slice(-2)).toEqual([`deploy ${v2.slice(0, 7)} ok`, `rollback ${v1.slice(0, 7)} ok`]);

    const back = await fleet.playbook('rollback.yml', { pm2_release_sha: v2 });
    expect(back.code, tail(back)).toBe(0);
    expect([serving(h1), serving(h2), serving(h3)]).toEqual([v1, v1, v1]);
    const rows = fleet.summary();
    expect(rows.map((s) => s.result.replace(/:.*$/, ''))).toEqual(['rolled back', 'rolled back', 'skipped']);
    expect(rows[0].from).toMatch(new RegExp(`-${v2.slice(0, 7)}$`));
    expect(rows[0].to).toMatch(new RegExp(`-${v1.slice(0, 7)}$`));
    for (const h of [h1, h2]) expect(deploys(h).at(-1), h.name).toBe(`rollback ${v1.slice(0, 7)} ok`);

    const twice = await fleet.playbook('rollback.yml', { pm2_release_sha: v2 });
    expect(twice.code, tail(twice)).toBe(0);
    expect(fleet.summary().map((s) => s.result.replace(/:.*$/, ''))).toEqual(['skipped', 'skipped', 'skipped']);
    expect(twice.stdout).not.toMatch(/changed=[1-9]/);
  }, 240_000);

  it('one host unreachable: the pre-check stops the rollout before any change anywhere', async () => {
    v3 = fleet.commit('v3', { 'version.txt': '3.0.0\n' });
    const before = fleet.hosts.map((h) => deploys(h));
    await fleet.stopSshd(h2);
    try {
      const r = await fleet.playbook('rollout.yml');
      expect(r.code, tail(r)).not.toBe(0);
      // fleet.md's message, word for word: the pre-check reaches every host before it gathers anything.
      expect(r.stdout).toContain('"msg": "unreachable: h2; nothing was changed anywhere"');
      expect(r.stdout).not.toMatch(/TASK \[pm2_release : (Install pm2-release with npm|Deploy the pinned commit)\]/);
    } finally {
      await fleet.startSshd(h2);
    }
    expect(fleet.hosts.map((h) => serving(h))).toEqual([v1, v1, v1]);
    expect(fleet.hosts.map((h) => deploys(h))).toEqual(before);
    for (const h of fleet.hosts) expect(releasesOf(h, v3), h.name).toEqual([]);
  }, 120_000);

  it('a host of a later batch unreachable mid-rollout: the summary (printed and written) names who took the commit', async () => {
    const h3before = deploys(h3);
    // h3 is the second batch of the rest: its sshd stops once the rest's play has started (h1 has passed).
    let r: PlaybookRun;
    try {
      r = await fleet.playbook('rollout.yml', {}, {}, { onOutput: { when: /PLAY \[The rest, in batches\]/, run: () => fleet.stopSshd(h3) } });
    } finally {
      await fleet.startSshd(h3);
    }
    expect(r.hooked).toBe(true);
    expect(r.code, tail(r)).not.toBe(0);
    expect([serving(h1), serving(h2), serving(h3)]).toEqual([v3, v3, v1]);
    expect(deploys(h3)).toEqual(h3before);
    const rows = fleet.summary();
    expect(rows.map((s) => [s.host, s.result.replace(/ \(.*$/s, '')])).toEqual([
      ['h1', 'deployed'],
      ['h2', 'deployed'],
      ['h3', 'UNREACHABLE'],
    ]);
    expect(rows[2]).toMatchObject({
      to: rows[2].from,
      result: expect.stringMatching(/^UNREACHABLE \(before its deploy: .*port 22: Connection refused\)$/),
    });
    expect(r.stdout).toMatch(/h3 {2}from \S+ {2}to \S+ {2}UNREACHABLE \(before its deploy/);
  }, 180_000);

  it('artifact mode builds once for the whole fleet: h1 packs, every host deploys the same bits without a build', async () => {
    const v4 = fleet.commit('v4', { 'version.txt': '4.0.0\n' });
    const artifacts = path.join(fleet.root, 'artifacts');
    const r = await fleet.playbook('rollout.yml', { pm2_release_artifact_mode: true, pm2_release_artifact_dir: artifacts });
    expect(r.code, tail(r)).toBe(0);
    // Packed on the first canary (no build group), once; copied to every host.
    expect(taskResults(r, 'Build and pack the pinned commit')).toEqual(['changed: [h1]']);
    expect(fs.readdirSync(artifacts).sort()).toEqual([`pm2-release-${v4}.tar`, `pm2-release-${v4}.tar.sha256`]);
    for (const h of fleet.hosts) expect(serving(h), h.name).toBe(v4);
    // Exactly one build in the whole fleet: h1's packed release. Every live release came from the artifact.
    const releases = fleet.hosts.flatMap((h) => releasesOf(h, v4).map((x) => ({ host: h.name, ...x })));
    expect(releases.filter((x) => x.durationsMs.build !== undefined).map((x) => [x.host, x.source])).toEqual([['h1', 'git']]);
    for (const h of fleet.hosts) {
      const live = fleet.cli<Status>(h, 'status').json.active!;
      expect(releasesOf(h, v4).find((x) => x.id === live.id)?.source, h.name).toBe('artifact');
    }
    expect(fleet.summary().map((s) => [s.host, s.result])).toEqual([
      ['h1', 'deployed (unpacked)'],
      ['h2', 'deployed (unpacked)'],
      ['h3', 'deployed (unpacked)'],
    ]);
  }, 240_000);
});

import { describe, expect, it } from 'vitest';
import { findSameInputs, inputKey, unchangedReason, withCommit, type Candidate, type ReleaseInputs } from '../../src/release/inputs.js';
import { changedShared, shareable, type Observed, type SharedFile } from '../../src/release/shared-deps.js';
import { dependencyMethod } from '../../src/release/dependencies.js';
import { alsoServes } from '../../src/cli/format.js';

const BASE: ReleaseInputs = {
  tree: 'a'.repeat(40),
  envFiles: [
    { name: '.env', text: 'A=1\n' },
    { name: '.env.local', text: 'NEXT_PUBLIC_API=https://x\n' },
  ],
  install: ['npm', 'ci'],
  build: ['npm', 'run', 'build'],
  node: 'v20.20.2',
  npm: '11.19.1',
  platform: 'linux-x64',
  appDir: 'frontend',
  prune: ['.next'],
  buildMaxOldSpaceMB: 2048,
  nodeEnv: 'production',
};

describe('inputKey', () => {
  it('is a sha256 hex, stable, and independent of env file order', () => {
    expect(inputKey(BASE)).toMatch(/^[0-9a-f]{64}$/);
    expect(inputKey({ ...BASE })).toBe(inputKey(BASE));
    expect(inputKey({ ...BASE, envFiles: [...BASE.envFiles].reverse() })).toBe(inputKey(BASE));
  });

  it('changes with every input that shapes the build', () => {
    const k = inputKey(BASE);
    const variants: Partial<ReleaseInputs>[] = [
      { tree: 'b'.repeat(40) },
      {
        envFiles: [
          { name: '.env', text: 'A=1\n' },
          { name: '.env.local', text: 'NEXT_PUBLIC_API=https://y\n' },
        ],
      },
      { envFiles: [{ name: '.env', text: 'A=1\n' }] },
      { envFiles: [{ name: '.env.production', text: 'A=1\n' }, BASE.envFiles[1]] },
      { install: ['npm', 'ci', '--omit=dev'] },
      { build: ['npm', 'run', 'build:prod'] },
      { node: 'v22.0.0' },
      { npm: undefined },
      { platform: 'linux-arm64' },
      { appDir: 'web' },
      { prune: [] },
      { buildMaxOldSpaceMB: undefined },
      { nodeEnv: 'development' },
    ];
    const keys = variants.map((v) => inputKey({ ...BASE, ...v }));
    for (const other of keys) expect(other).not.toBe(k);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('does not let one field bleed into the next (no ambiguous concatenation)', () => {
    expect(inputKey({ ...BASE, install: ['npm', 'ci'], build: ['x'] })).not.toBe(inputKey({ ...BASE, install: ['npm'], build: ['ci', 'x'] }));
  });
});

describe('commits a release serves', () => {
  it('appends once, newest last, bounded', () => {
    expect(withCommit(['a'], 'b')).toEqual(['a', 'b']);
    expect(withCommit(['a', 'b'], 'a')).toEqual(['b', 'a']);
    expect(withCommit(undefined, 'a')).toEqual(['a']);
    expect(withCommit(['1', '2', '3'], '4', 3)).toEqual(['2', '3', '4']);
  });

  it('the reason names the app dir and the short sha it was built from', () => {
    expect(unchangedReason('frontend', '3f2a9c1d'.padEnd(40, '0'))).toBe('frontend tree unchanged since 3f2a9c1');
    expect(unchangedReason('apps/web', 'abcdef1234')).toBe('web tree unchanged since abcdef1');
    expect(unchangedReason('.', 'abcdef1234')).toBe('app tree unchanged since abcdef1');
  });

  it('list shows the other commits', () => {
    expect(alsoServes({ sha: 'a'.repeat(40), commits: ['a'.repeat(40)] })).toBe('');
    expect(alsoServes({ sha: 'a'.repeat(40), commits: ['a'.repeat(40), 'b'.repeat(40), 'c'.repeat(40)] })).toBe('also serves ccccccc, bbbbbbb');
    const many = ['a', 'b', 'c', 'd', 'e'].map((c) => c.repeat(40));
    expect(alsoServes({ sha: many[0], commits: many })).toBe('also serves eeeeeee, ddddddd, ccccccc (+1 older)');
  });
});

describe('findSameInputs', () => {
  const r = (id: string, sha: string, inputKey?: string, status = 'ready'): Candidate => ({ id, status, manifest: { sha, inputKey } });

  it('the active release with the same key, even from another commit', () => {
    const list = [r('r2', 'sha2', 'K2'), r('r1', 'sha1', 'K1')];
    expect(findSameInputs(list, 'r1', 'sha9', 'K1')).toEqual({ id: 'r1', by: 'inputs' });
    expect(findSameInputs(list, 'r1', 'sha1', 'K1')).toEqual({ id: 'r1', by: 'sha' });
  });

  it('the same sha with another key (an edited env file) does not match', () => {
    expect(findSameInputs([r('r1', 'sha1', 'K1')], 'r1', 'sha1', 'K1-env-edited')).toBeUndefined();
  });

  it('a retained release: the exact commit before another with the same inputs; failed ones never', () => {
    const list = [r('r3', 'sha3', 'K', 'failed'), r('r2', 'sha2', 'K'), r('r1', 'sha1', 'K')];
    expect(findSameInputs(list, 'r0', 'sha1', 'K')).toEqual({ id: 'r1', by: 'sha' });
    expect(findSameInputs(list, 'r0', 'sha9', 'K')).toEqual({ id: 'r2', by: 'inputs' });
    expect(findSameInputs(list, 'r0', 'sha9', 'other')).toBeUndefined();
  });

  it('a manifest from before input keys matches by sha only', () => {
    expect(findSameInputs([r('r1', 'sha1')], 'r1', 'sha1', 'K')).toEqual({ id: 'r1', by: 'sha' });
    expect(findSameInputs([r('r1', 'sha1')], 'r1', 'sha2', 'K')).toBeUndefined();
  });
});

describe('the shared-file check', () => {
  const f = (p: string, over: Partial<SharedFile> = {}): SharedFile => ({ path: p, ino: '11', size: '100', mtimeNs: '1000', ctimeNs: '2000', ...over });
  const o = (over: Partial<Observed> = {}): Observed => ({ ino: '11', size: '100', mtimeNs: '1000', ctimeNs: '2000', ...over });

  it('flags a change of size, mtime or ctime; a file nobody holds any more is not a change', () => {
    const recorded = [f('a.js'), f('b.js'), f('c.js'), f('d.js'), f('e.js')];
    const seen = new Map<string, Observed | undefined>([
      ['a.js', o()],
      ['b.js', o({ size: '101' })],
      ['c.js', o({ mtimeNs: '1001' })],
      // same size and a restored mtime (utimes after a write): ctime still moved
      ['d.js', o({ ctimeNs: '2001' })],
      ['e.js', undefined],
    ]);
    expect(changedShared(recorded, seen)).toEqual(['b.js', 'c.js', 'd.js']);
  });

  it('a file written after the install is never shared', () => {
    expect(shareable(1000, 1000)).toBe(true);
    expect(shareable(1001, 1000)).toBe(false);
  });
});

describe('dependencyMethod', () => {
  const base = { mode: 'auto' as const, reuse: true, reflink: false, sharingOff: false };
  it('auto: reflink where the filesystem has it, else hard links; install once sharing is off', () => {
    expect(dependencyMethod(base)).toBe('link');
    expect(dependencyMethod({ ...base, reflink: true })).toBe('reflink');
    expect(dependencyMethod({ ...base, sharingOff: true })).toBe('install');
    expect(dependencyMethod({ ...base, sharingOff: true, reflink: true })).toBe('reflink');
  });
  it('explicit modes, and reuse off (reuseDependencies: false, lifecycle scripts) installs', () => {
    expect(dependencyMethod({ ...base, mode: 'copy' })).toBe('copy');
    expect(dependencyMethod({ ...base, mode: 'reflink' })).toBe('copy');
    expect(dependencyMethod({ ...base, mode: 'link', reflink: true })).toBe('link');
    expect(dependencyMethod({ ...base, mode: 'install' })).toBe('install');
    expect(dependencyMethod({ ...base, reuse: false })).toBe('install');
  });
});

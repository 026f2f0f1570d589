import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  artifactFileName,
  EntryChecker,
  entryProblem,
  nodeMajor,
  parseChecksumLine,
  publicEnv,
  publicEnvHash,
  publicEnvMismatch,
} from '../../src/release/artifact.js';

const h = (name: string, value: string) => crypto.createHash('sha256').update(`${name}=${value}`).digest('hex');

describe('the build-time public variables an artifact records', () => {
  it('takes every NEXT_PUBLIC_* and the configured names, the process env first, then the env files in Next.js order', () => {
    const files: { name: string; vars: Record<string, string> }[] = [
      { name: '.env', vars: { NEXT_PUBLIC_A: 'from-env', NEXT_PUBLIC_B: 'b-env', SECRET: 's' } },
      { name: '.env.production', vars: { NEXT_PUBLIC_A: 'from-production' } },
      { name: '.env.local', vars: { NEXT_PUBLIC_A: 'from-local', API_URL: 'https://api' } },
    ];
    const out = publicEnv(files, { NEXT_PUBLIC_C: 'proc', PATH: '/bin' }, ['API_URL', 'MISSING']);
    expect(out).toEqual([
      { name: 'API_URL', hash: h('API_URL', 'https://api') },
      { name: 'NEXT_PUBLIC_A', hash: h('NEXT_PUBLIC_A', 'from-local') },
      { name: 'NEXT_PUBLIC_B', hash: h('NEXT_PUBLIC_B', 'b-env') },
      { name: 'NEXT_PUBLIC_C', hash: h('NEXT_PUBLIC_C', 'proc') },
    ]);
    expect(JSON.stringify(out)).not.toMatch(/from-local|https:\/\/api|proc"|SECRET/);
    // The process env wins over any file, as in Next.js.
    expect(publicEnv(files, { NEXT_PUBLIC_A: 'override' }, [])[0]).toEqual({ name: 'NEXT_PUBLIC_A', hash: h('NEXT_PUBLIC_A', 'override') });
    expect(publicEnvHash('X', 'y')).toBe(h('X', 'y'));
  });

  it('names each difference: another value, only there, only here', () => {
    const baked = [
      { name: 'NEXT_PUBLIC_A', hash: h('NEXT_PUBLIC_A', '1') },
      { name: 'NEXT_PUBLIC_B', hash: h('NEXT_PUBLIC_B', '1') },
      { name: 'NEXT_PUBLIC_GONE', hash: h('NEXT_PUBLIC_GONE', '1') },
    ];
    const here = [
      { name: 'NEXT_PUBLIC_A', hash: h('NEXT_PUBLIC_A', '1') },
      { name: 'NEXT_PUBLIC_B', hash: h('NEXT_PUBLIC_B', '2') },
      { name: 'NEXT_PUBLIC_NEW', hash: h('NEXT_PUBLIC_NEW', '1') },
    ];
    expect(publicEnvMismatch(baked, here)).toEqual([
      { name: 'NEXT_PUBLIC_B', why: 'a different value here' },
      { name: 'NEXT_PUBLIC_GONE', why: 'set when it was built, not set here' },
      { name: 'NEXT_PUBLIC_NEW', why: 'set here, not when it was built' },
    ]);
    expect(publicEnvMismatch(baked, baked)).toEqual([]);
  });
});

describe('what may be unpacked', () => {
  it('files, directories and links inside the app dir only', () => {
    expect(entryProblem('build/static/a.js', 'File')).toBeUndefined();
    expect(entryProblem('build/', 'Directory')).toBeUndefined();
    expect(entryProblem('node_modules/.bin/next', 'SymbolicLink', '../next/dist/bin/next')).toBeUndefined();
    expect(entryProblem('/etc/passwd', 'File')).toMatch(/absolute path/);
    expect(entryProblem('../x', 'File')).toMatch(/leaves the app dir/);
    expect(entryProblem('a/../../x', 'File')).toMatch(/leaves the app dir/);
    expect(entryProblem('dev', 'CharacterDevice')).toMatch(/a CharacterDevice/);
    expect(entryProblem('fifo', 'FIFO')).toMatch(/a FIFO/);
    expect(entryProblem('l', 'SymbolicLink', '/etc/shadow')).toMatch(/link to an absolute path/);
    expect(entryProblem('a/l', 'SymbolicLink', '../../etc')).toMatch(/link that leaves/);
    expect(entryProblem('a/h', 'Link', '../x')).toMatch(/link that leaves/);
  });
});

describe('entries against the ones before them', () => {
  it('refuses a path or a link target through an earlier symbolic link, env files at any depth, and pm2-release records', () => {
    const c = new EntryChecker(['.env', '.env.local']);
    expect(c.check('s', 'SymbolicLink', '.')).toBeUndefined();
    // Every string stays inside, but s is the app dir itself: s/.. is its parent.
    expect(c.check('e', 'SymbolicLink', 's/..')).toMatch(/a link through a link/);
    expect(c.check('s/file', 'File')).toMatch(/goes through a link/);
    expect(c.check('h', 'Link', 's/x')).toMatch(/a link through a link/);
    expect(c.check('.next/standalone/.env', 'File')).toMatch(/an env file/);
    expect(c.check('.env.local', 'File')).toMatch(/an env file/);
    expect(c.check('.pm2-release/build.log', 'SymbolicLink', '../x')).toMatch(/pm2-release's own records/);
    // npm's own layout passes: a file: dependency and the .bin links.
    const ok = new EntryChecker(['.env']);
    expect(ok.check('node_modules/greeting', 'SymbolicLink', '../lib/greeting')).toBeUndefined();
    expect(ok.check('node_modules/.bin/next', 'SymbolicLink', '../next/dist/bin/next')).toBeUndefined();
    expect(ok.check('node_modules/next/dist/bin/next', 'File')).toBeUndefined();
    expect(ok.check('./', 'Directory')).toBeUndefined();
  });
});

describe('names and checksum lines', () => {
  it('reads sha256sum lines (text and binary mode), refuses anything else', () => {
    const hex = 'a'.repeat(64);
    expect(parseChecksumLine(`${hex}  front.tar\n`)).toBe(hex);
    expect(parseChecksumLine(`${hex} *front.tar`)).toBe(hex);
    expect(parseChecksumLine(`${'a'.repeat(63)}  front.tar\n`)).toBeUndefined();
    expect(parseChecksumLine('')).toBeUndefined();
    expect(parseChecksumLine(`${hex}\n`)).toBeUndefined();
  });

  it('a file name from the app and the release id; the Node major from a version', () => {
    expect(artifactFileName('frontend-dev', '20261121T204233Z-3f2a9c1')).toBe('frontend-dev-20261121T204233Z-3f2a9c1.tar');
    expect(artifactFileName('a/b c', '20261121T204233Z-3f2a9c1')).toBe('a_b_c-20261121T204233Z-3f2a9c1.tar');
    expect(nodeMajor('v20.19.1')).toBe(20);
    expect(nodeMajor('22.1.0')).toBe(22);
  });
});

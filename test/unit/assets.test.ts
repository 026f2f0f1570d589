/** No version skew (release/assets.ts): the hashed assets of other releases linked in, bounded, never overwritten. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { linkRetainedAssets, ownAssets } from '../../src/release/assets.js';
import type { ReleaseRecord } from '../../src/release/store.js';

let root: string;
const rel = (id: string, files: Record<string, string>): ReleaseRecord => {
  const dir = path.join(root, id);
  const cwd = path.join(dir, 'frontend');
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(cwd, f)), { recursive: true });
    fs.writeFileSync(path.join(cwd, f), text);
  }
  fs.mkdirSync(cwd, { recursive: true });
  return { id, dir, cwd, status: 'ready' };
};
const DIRS = ['.next/static'];

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-assets-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('linkRetainedAssets', () => {
  it("links the other releases' own hashed files the target lacks, as hard links, and nothing outside the asset dirs", async () => {
    const a = rel('A', { '.next/static/chunks/a1.js': 'a1', '.next/static/chunks/shared.js': 'same', 'server.js': 'A server', '.next/BUILD_ID': 'A' });
    const b = rel('B', { '.next/static/chunks/b1.js': 'b1', '.next/static/chunks/shared.js': 'same' });
    const r = await linkRetainedAssets(b, [a], DIRS);
    expect(r).toEqual({ linked: 1, from: ['A'] });
    const linked = path.join(b.cwd, '.next/static/chunks/a1.js');
    expect(fs.readFileSync(linked, 'utf8')).toBe('a1');
    expect(fs.statSync(linked).ino).toBe(fs.statSync(path.join(a.cwd, '.next/static/chunks/a1.js')).ino);
    expect(fs.existsSync(path.join(b.cwd, 'server.js'))).toBe(false);
    expect(fs.existsSync(path.join(b.cwd, '.next/BUILD_ID'))).toBe(false);
    // Linking again is a no-op.
    expect((await linkRetainedAssets(b, [a], DIRS)).linked).toBe(0);
  });

  it('never overwrites a file the target has, and links only own files (the set stays bounded)', async () => {
    const a = rel('A', { '.next/static/x.js': 'from A' });
    const b = rel('B', { '.next/static/x.js': 'from B', '.next/static/b.js': 'b' });
    await linkRetainedAssets(b, [a], DIRS);
    expect(fs.readFileSync(path.join(b.cwd, '.next/static/x.js'), 'utf8')).toBe('from B');
    // B's own list was taken before anything was linked into it.
    expect((await ownAssets(b, DIRS)).sort()).toEqual(['.next/static/b.js', '.next/static/x.js']);
    // C gets B's own files and A's, but not A's files through B: A is not retained any more.
    const c = rel('C', { '.next/static/c.js': 'c' });
    await linkRetainedAssets(a, [b], DIRS); // A got b.js linked in (not its own)
    await linkRetainedAssets(c, [a], DIRS);
    expect(fs.existsSync(path.join(c.cwd, '.next/static/x.js'))).toBe(true);
    expect(fs.existsSync(path.join(c.cwd, '.next/static/b.js'))).toBe(false);
  });

  it('does nothing when the target has no asset dir, and ignores unsafe paths in an own-files list', async () => {
    const a = rel('A', { '.next/static/a.js': 'a' });
    const none = rel('N', { 'server.js': 'x' });
    expect(await linkRetainedAssets(none, [a], DIRS)).toEqual({ linked: 0, from: [] });
    fs.mkdirSync(path.join(a.dir, '.pm2-release'), { recursive: true });
    fs.writeFileSync(
      path.join(a.dir, '.pm2-release/assets.json'),
      JSON.stringify({ version: 1, files: ['../../../etc/passwd', '/etc/passwd', '.next/static/a.js'] }),
    );
    expect(await ownAssets(a, DIRS)).toEqual(['.next/static/a.js']);
    expect(await linkRetainedAssets(none, [a], ['../outside'])).toEqual({ linked: 0, from: [] });
  });

  it('deleting the release an asset came from leaves the linked copy', async () => {
    const a = rel('A', { '.next/static/a.js': 'a' });
    const b = rel('B', { '.next/static/b.js': 'b' });
    await linkRetainedAssets(b, [a], DIRS);
    fs.rmSync(a.dir, { recursive: true, force: true });
    expect(fs.readFileSync(path.join(b.cwd, '.next/static/a.js'), 'utf8')).toBe('a');
  });
});

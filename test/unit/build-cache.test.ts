import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BuildCache, entryName, frameworkVersion, type CacheKey } from '../../src/release/build-cache.js';

const key = (version = '15.5.28', paths = ['.next/cache']): CacheKey => ({ framework: 'next', version, node: 'v20.20.2', platform: 'linux-x64', paths });

describe('build cache', () => {
  let root: string;
  let releases: string;
  let app: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-cache-'));
    releases = path.join(root, 'releases');
    app = path.join(releases, '.build', 'frontend');
    fs.mkdirSync(app, { recursive: true });
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));
  const writeCache = (text: string) => {
    fs.mkdirSync(path.join(app, '.next/cache/webpack'), { recursive: true });
    fs.writeFileSync(path.join(app, '.next/cache/webpack/pack'), text);
  };

  it('names an entry by framework and version, and another key by another name', () => {
    expect(entryName(key())).toMatch(/^next-15\.5\.28-[0-9a-f]{12}$/);
    expect(entryName(key())).toBe(entryName(key()));
    expect(entryName(key('15.5.29'))).not.toBe(entryName(key()));
    expect(entryName({ ...key(), node: 'v22.0.0' })).not.toBe(entryName(key()));
    expect(entryName({ ...key(), framework: '@scope/../x' })).toMatch(/^_scope_\.\._x-15/);
  });

  it('reads the installed framework version, or none', async () => {
    expect(await frameworkVersion(app, 'next')).toBe('none');
    fs.mkdirSync(path.join(app, 'node_modules/next'), { recursive: true });
    fs.writeFileSync(path.join(app, 'node_modules/next/package.json'), JSON.stringify({ version: '15.5.28' }));
    expect(await frameworkVersion(app, 'next')).toBe('15.5.28');
  });

  it('moves the cache out after a build and back in before the next one: cold, then warm', async () => {
    const cache = new BuildCache(releases);
    expect(await cache.restore(app, key())).toMatchObject({ warm: false, dropped: [] });
    writeCache('pack 1');
    const saved = await cache.save(app, key(), 1024 * 1024);
    expect(saved.dropped).toBeUndefined();
    expect(saved.bytes).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(app, '.next/cache')), 'the release keeps no cache').toBe(false);
    expect(fs.readdirSync(cache.dir)).toEqual([entryName(key())]);
    expect(await cache.restore(app, key())).toMatchObject({ warm: true });
    expect(fs.readFileSync(path.join(app, '.next/cache/webpack/pack'), 'utf8')).toBe('pack 1');
  });

  it('drops the cache when the framework version changes', async () => {
    const cache = new BuildCache(releases);
    writeCache('old');
    await cache.save(app, key('15.5.27'), 1024 * 1024);
    const r = await cache.restore(app, key('15.5.28'));
    expect(r).toMatchObject({ warm: false, dropped: [entryName(key('15.5.27'))] });
    expect(fs.readdirSync(cache.dir)).toEqual([]);
    expect(fs.existsSync(path.join(app, '.next/cache'))).toBe(false);
  });

  it('over the bound nothing is kept, in the cache or in the release', async () => {
    const cache = new BuildCache(releases);
    writeCache('x'.repeat(64 * 1024));
    const r = await cache.save(app, key(), 4096);
    expect(r.dropped).toMatch(/over build.cacheMaxBytes \(4096\)/);
    expect(fs.existsSync(path.join(app, '.next/cache'))).toBe(false);
    expect(fs.existsSync(path.join(cache.dir, entryName(key())))).toBe(false);
  });

  it('never restores an entry without its key file (a save cut short)', async () => {
    const cache = new BuildCache(releases);
    writeCache('pack');
    await cache.save(app, key(), 1024 * 1024);
    fs.rmSync(path.join(cache.dir, entryName(key()), 'key.json'));
    expect(await cache.restore(app, key())).toMatchObject({ warm: false });
    expect(fs.existsSync(path.join(app, '.next/cache'))).toBe(false);
  });

  it('leaves a cache path the archive brought alone, and refuses paths outside the app dir', async () => {
    const cache = new BuildCache(releases);
    writeCache('cached');
    await cache.save(app, key(), 1024 * 1024);
    writeCache('committed');
    expect(await cache.restore(app, key())).toMatchObject({ warm: false });
    expect(fs.readFileSync(path.join(app, '.next/cache/webpack/pack'), 'utf8')).toBe('committed');
    fs.mkdirSync(path.join(root, 'outside'));
    const r = await cache.save(app, key('1', ['../../../outside']), 1024 * 1024);
    expect(r.dropped).toBe('the build left no cache');
    expect(fs.existsSync(path.join(root, 'outside'))).toBe(true);
  });
});

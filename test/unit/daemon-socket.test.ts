import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DaemonSocket, pm2PackageOf, SocketUnavailable } from '../../src/pm2/daemon-socket.js';
import { ROOT } from '../helpers/sandbox.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p2r-sock-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A directory that looks like a pm2 package of `version` with an executable bin/pm2. */
function fakePackage(name: string, pkg: Record<string, unknown>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg));
  fs.writeFileSync(path.join(dir, 'bin/pm2'), '#!/bin/sh\n', { mode: 0o755 });
  return path.join(dir, 'bin/pm2');
}

describe('the PM2 package a pm2 binary belongs to', () => {
  it('the bundled pm2 (7.x) and the 5.x one', () => {
    for (const dir of ['node_modules/pm2', 'node_modules/pm2-5']) {
      const version = (JSON.parse(fs.readFileSync(path.join(ROOT, dir, 'package.json'), 'utf8')) as { version: string }).version;
      expect(pm2PackageOf(path.join(ROOT, dir, 'bin/pm2'))).toEqual({ dir: path.join(ROOT, dir), version });
    }
  });

  it('through a symlink (npm -g puts bin/pm2 → ../lib/node_modules/pm2/bin/pm2 on PATH)', () => {
    const link = path.join(tmp, 'pm2-link');
    fs.symlinkSync(path.join(ROOT, 'node_modules/pm2/bin/pm2'), link);
    expect(pm2PackageOf(link)).toMatchObject({ dir: path.join(ROOT, 'node_modules/pm2') });
  });

  it('refused, with the reason: no such file, not a pm2 package, a pm2 outside 5.x–7.x', () => {
    expect(pm2PackageOf(path.join(tmp, 'nope'))).toEqual({ unavailable: `${path.join(tmp, 'nope')} does not exist` });
    expect(pm2PackageOf(fakePackage('other', { name: 'not-pm2', version: '7.0.0' }))).toMatchObject({
      unavailable: expect.stringContaining('is not inside a pm2 package'),
    });
    expect(pm2PackageOf(fakePackage('old', { name: 'pm2', version: '4.5.6' }))).toEqual({
      unavailable: 'pm2 4.5.6 (the socket client is used with pm2 5.x to 7.x)',
    });
    expect(pm2PackageOf(fakePackage('future', { name: 'pm2', version: '8.0.0' }))).toMatchObject({ unavailable: expect.stringContaining('pm2 8.0.0') });
  });
});

describe('opening the socket never starts a daemon', () => {
  it('no rpc.sock in PM2_HOME: SocketUnavailable, and still no daemon', async () => {
    const home = path.join(tmp, 'home');
    fs.mkdirSync(home);
    await expect(DaemonSocket.open(path.join(ROOT, 'node_modules/pm2/bin/pm2'), home)).rejects.toThrow(SocketUnavailable);
    expect(fs.existsSync(path.join(home, 'pm2.pid'))).toBe(false);
    expect(fs.existsSync(path.join(home, 'rpc.sock'))).toBe(false);
  });

  it('a socket file nobody listens on: SocketUnavailable within the connect deadline', async () => {
    const home = path.join(tmp, 'stale');
    fs.mkdirSync(home);
    // A stale socket: a server that bound it and closed without unlinking is the same to a client.
    fs.writeFileSync(path.join(home, 'rpc.sock'), '');
    await expect(DaemonSocket.open(path.join(ROOT, 'node_modules/pm2/bin/pm2'), home)).rejects.toThrow(SocketUnavailable);
  }, 10_000);
});

#!/usr/bin/env node
/**
 * pm2-release as one tarball with its production dependencies bundled, for hosts without registry access
 * (the fleet role's pm2_release_tarball, installed there with `npm install --offline`).
 *
 *   pm2-release-pack-offline [--out DIR]        # from the published package (npx --package=pm2-release@X …)
 *   npm run pack:offline -- [--out DIR]         # from a source checkout (dist/ built: npm run build)
 *
 * It packs the package this script belongs to, exactly as npm publishes it, into a temporary staging
 * directory, sets bundleDependencies there (never in the package's own package.json), installs the
 * production dependencies into the stage (`npm ci` against the checkout's package-lock.json when there is
 * one, else `npm install`: the npm cache first, then the registry) and packs the stage. Prints the tarball's
 * path on stdout; everything else goes to stderr. Exit 0, or 1 with a one-line cause.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const usage = 'usage: pm2-release-pack-offline [--out DIR]   (writes DIR/<name>-<version>-offline.tgz; DIR defaults to .)';

function parseArgs(argv) {
  let out = '.';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return { help: true };
    if (arg === '--out' && i + 1 < argv.length) out = argv[++i];
    else if (arg.startsWith('--out=')) out = arg.slice('--out='.length);
    else throw new Error(`unknown argument ${arg}: ${usage}`);
  }
  return { out: path.resolve(out) };
}

/** npm, argv only; its own output goes to stderr so that stdout stays the tarball's path. */
function npm(args, cwd) {
  try {
    return execFileSync('npm', args, {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, npm_config_update_notifier: 'false' },
    });
  } catch (err) {
    const detail = String(err.stderr ?? '')
      .trim()
      .split('\n')
      .filter((l) => !/^npm (notice|warn)/.test(l))
      .slice(-3)
      .join(' | ');
    throw new Error(`npm ${args[0]} failed in ${cwd} (exit ${err.status ?? '?'}): ${detail || err.message}`);
  }
}

/** `npm pack --json` of a directory into `dest`: the file name npm wrote. */
function pack(dir, dest) {
  const out = npm(['pack', dir, '--ignore-scripts', '--json', '--pack-destination', dest], dest);
  const [entry] = JSON.parse(out.slice(out.indexOf('[')));
  return path.join(dest, entry.filename);
}

export function packOffline({ out, packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..') }) {
  const manifest = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf8'));
  const bin = Object.values(typeof manifest.bin === 'string' ? { main: manifest.bin } : (manifest.bin ?? {}));
  for (const b of bin) if (!fs.existsSync(path.join(packageDir, b))) throw new Error(`${b} is missing in ${packageDir}: build it first (npm run build)`);
  fs.mkdirSync(out, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2-release-pack-'));
  try {
    // 1. The package as npm publishes it (its "files"), unpacked: never the tree itself, which stays as it is.
    const plain = pack(packageDir, tmp);
    const stage = path.join(tmp, 'package');
    execFileSync('tar', ['-xzf', plain, '-C', tmp]);
    fs.rmSync(plain);

    // 2. The stage's manifest bundles every production dependency; prepare (tsc) has nothing to build there.
    const stagedPath = path.join(stage, 'package.json');
    const staged = JSON.parse(fs.readFileSync(stagedPath, 'utf8'));
    staged.bundleDependencies = true;
    delete staged.scripts?.prepare;
    fs.writeFileSync(stagedPath, JSON.stringify(staged, null, 2) + '\n');

    // 3. The production dependencies: the checkout's lockfile (the tested set) when there is one.
    const common = ['--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'];
    const lock = path.join(packageDir, 'package-lock.json');
    if (fs.existsSync(lock)) {
      fs.copyFileSync(lock, path.join(stage, 'package-lock.json'));
      process.stderr.write(`pack-offline: npm ci --omit=dev (${path.relative(process.cwd(), lock) || lock})\n`);
      npm(['ci', ...common], stage);
    } else {
      process.stderr.write('pack-offline: npm install --omit=dev (no lockfile: the npm cache, then the registry)\n');
      npm(['install', '--no-package-lock', ...common], stage);
    }

    // 4. Pack the stage: npm puts the bundled node_modules into the tarball.
    const bundled = pack(stage, tmp);
    const target = path.join(out, `${staged.name.replace(/^@/, '').replace('/', '-')}-${staged.version}-offline.tgz`);
    fs.copyFileSync(bundled, target);
    return target;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const args = parseArgs(process.argv.slice(2));
    if (args.help) {
      process.stdout.write(usage + '\n');
    } else {
      process.stdout.write(packOffline(args) + '\n');
    }
  } catch (err) {
    process.stderr.write(`pack-offline: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}

// The benchmarked app: a real Next.js 15 app (app router, one dynamic page showing its version and
// RELEASE_ID). Its lockfile comes from one `npm install` in a cached template dir; that is the bench's
// only registry access (every later install runs from the private npm cache, offline-preferred).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { log, run } from './lib.mjs';

export const CACHE_DIR = path.join(os.tmpdir(), 'pm2-release-bench-cache');
export const NPM_CACHE = path.join(CACHE_DIR, 'npm');

export const PACKAGE_JSON = {
  name: 'frontend',
  version: '1.0.0',
  private: true,
  scripts: {
    build: 'next build',
    // npm runs scripts with sh: FRONT_PORT (as the VM runbook sets it) is the port.
    start: 'next start --port ${FRONT_PORT:-3001}',
  },
  // next pinned to the newest 15.x whose @next/swc-* binaries for every platform are all published in
  // the registry this runs against: without them npm writes a lockfile that `npm ci` rejects as out of sync.
  dependencies: { next: '15.5.28', react: '19', 'react-dom': '19' },
};

const LAYOUT = `export const metadata = { title: 'pm2-release bench frontend' };

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
`;

export function pageSource(version) {
  return `// Rendered per request: shows the build's version and the release PM2 runs it from.
export const dynamic = 'force-dynamic';

const VERSION = ${JSON.stringify(version)};

export default function Page() {
  return (
    <main>
      <h1>{\`version=\${VERSION}\`}</h1>
      <p>{\`release=\${process.env.RELEASE_ID ?? 'none'}\`}</p>
    </main>
  );
}
`;
}

/** Makes the production server exit while it loads its config: a release that crashes at boot. */
export const CRASH_CONFIG = `// Bench fixture: this release crashes at boot (next start exits while loading its config).
module.exports = (phase) => {
  if (phase === 'phase-production-server') {
    console.error('bench: crash-at-boot release, exiting');
    process.exit(1);
  }
  return {};
};
`;

/**
 * The cached template: package.json + package-lock.json produced by one `npm install`. Returns its dir.
 * Keyed by package.json, so a change of versions makes a new template.
 */
export async function ensureTemplate(env) {
  const text = JSON.stringify(PACKAGE_JSON, null, 2) + '\n';
  const key = crypto.createHash('sha256').update(text).update(process.version).digest('hex').slice(0, 12);
  const dir = path.join(CACHE_DIR, `template-${key}`);
  if (fs.existsSync(path.join(dir, 'package-lock.json'))) {
    log(`template: cached ${dir}`);
    return dir;
  }
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(CACHE_DIR, 'tmp-'));
  try {
    fs.writeFileSync(path.join(tmp, 'package.json'), text);
    log('template: npm install (the only registry access; cached for later runs)');
    await run(['npm', 'install', '--no-audit', '--no-fund'], { cwd: tmp, env: { ...env, npm_config_prefer_offline: 'false' }, timeoutMs: 600_000 });
    fs.rmSync(path.join(tmp, 'node_modules'), { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

/** Writes the app into appDir (package.json, lockfile, app/, untracked .env.local). */
export function writeApp(templateDir, appDir, version) {
  fs.mkdirSync(path.join(appDir, 'app'), { recursive: true });
  fs.copyFileSync(path.join(templateDir, 'package.json'), path.join(appDir, 'package.json'));
  fs.copyFileSync(path.join(templateDir, 'package-lock.json'), path.join(appDir, 'package-lock.json'));
  fs.writeFileSync(path.join(appDir, 'app/layout.js'), LAYOUT);
  fs.writeFileSync(path.join(appDir, 'app/page.js'), pageSource(version));
  // An env file in the live workspace (not committed): both flows copy it into the new directory.
  fs.writeFileSync(path.join(appDir, '.env.local'), 'BENCH_GREETING=hello\n', { mode: 0o600 });
}

/** Versions of the packages the lockfile pins. */
export function lockedVersions(templateDir) {
  const lock = JSON.parse(fs.readFileSync(path.join(templateDir, 'package-lock.json'), 'utf8'));
  const v = (n) => lock.packages?.[`node_modules/${n}`]?.version;
  return { next: v('next'), react: v('react'), reactDom: v('react-dom') };
}

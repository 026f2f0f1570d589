#!/usr/bin/env node
// The CLI as one file: every `pm2-release` call is a new Node process, and loading ~100 ES modules one by one
// (resolve, read, link) was most of its start-up (0.37 → 0.22 CPU-s for `--version` on a 2-core VM). The
// library (dist/index.js) stays as tsc wrote it; only dist/cli/bin.js is replaced by its bundle, in place, so
// every path the code computes from its own location (package.json, dist/router/main.js, the package root)
// still resolves from dist/<dir>/. pm2 stays outside: pm2-release loads the pm2 package of the binary on PATH.
import { build } from 'esbuild';
import fs from 'node:fs';

const out = 'dist/cli/bin.js';
await build({
  entryPoints: [out],
  outfile: out,
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['pm2'],
  // CommonJS dependencies bundled into an ES module still call require() and read __filename (write-file-atomic
  // hashes it into its temp names; pino's worker paths would use __dirname, but pm2-release runs no transport).
  banner: {
    js: [
      "import { createRequire as __p2rRequire } from 'node:module';",
      "import { fileURLToPath as __p2rPath } from 'node:url';",
      'const require = __p2rRequire(import.meta.url);',
      'const __filename = __p2rPath(import.meta.url);',
      "const __dirname = __p2rPath(new URL('.', import.meta.url));",
    ].join(' '),
  },
  sourcemap: 'linked',
  logLevel: 'warning',
});
for (const f of [out, 'dist/bin.js']) fs.chmodSync(f, 0o755);

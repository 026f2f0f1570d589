/**
 * Documented defaults equal the code's: configuration.md's "Full example for the VM" (every key at its
 * default, plus three named non-defaults) loads to the same config as `{}`, every Default cell of its key
 * tables equals that value, and its validation example quotes the loader's own words.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { ROOT } from '../helpers/sandbox.js';

const HOME = '/home/ubuntu';
const doc = fs.readFileSync(path.join(ROOT, 'documentation', 'configuration.md'), 'utf8');
const load = (config: unknown) => loadConfig({ config, cwd: path.join(HOME, 'pm2-release'), env: {}, home: HOME }).config;

/** The JSON block under a heading. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a JSON example, walked by key below
type Json = Record<string, any>;

function exampleUnder(heading: string): Json {
  const at = doc.indexOf(heading);
  expect(at, heading).toBeGreaterThan(-1);
  const block = /```json\n([\s\S]*?)\n```/.exec(doc.slice(at));
  return JSON.parse(block![1]) as Json;
}

/** Dotted key → value, leaves only (arrays are leaves). */
function leaves(o: Record<string, unknown>, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [kk, vv] of leaves(v as Record<string, unknown>, key)) out.set(kk, vv);
    else out.set(key, v);
  }
  return out;
}

describe('configuration.md matches DEFAULTS', () => {
  const full = exampleUnder('## Full example for the VM');
  // The three non-defaults the text names.
  const defaultsOnly = structuredClone(full);
  delete defaultsOnly.app.buildMaxOldSpaceMB;
  delete defaultsOnly.hooks.onFailure;
  delete defaultsOnly.serve;

  it('the full example, without its three named non-defaults, loads to exactly the config of {}', () => {
    expect(load(defaultsOnly)).toEqual(load({}));
  });

  it('every Default cell of the key tables equals the full example (so the code)', () => {
    const values = leaves(full);
    let section = '';
    let compared = 0;
    for (const line of doc.split('\n')) {
      const h = /^### `([a-z]+)`/.exec(line);
      if (h) section = h[1];
      if (line.startsWith('## ') && !line.startsWith('## Keys')) section = '';
      const row = /^\| `([A-Za-z$][\w.$]*)` \| [^|]+ \| `([^`]+)`[^|]*\|/.exec(line);
      if (!row) continue;
      const key = row[1].includes('.') || !section || section === 'app' ? row[1] : `${section}.${row[1]}`;
      if (!values.has(key)) continue;
      let documented: unknown;
      try {
        documented = JSON.parse(row[2]);
      } catch {
        documented = row[2].startsWith('~/') ? path.join(HOME, row[2].slice(2)) : row[2];
      }
      expect(documented, `configuration.md's default for ${key}`).toEqual(values.get(key));
      compared++;
    }
    // The tables cover the file: a parse that matched nothing would pass vacuously.
    expect(compared).toBeGreaterThan(40);
  });

  it('the validation example quotes what the loader says of a wrong strategy', () => {
    let message = '';
    try {
      loadConfig({ config: { app: { strategy: 'blue-green' } }, cwd: HOME, env: {}, home: HOME });
    } catch (err) {
      message = (err as ConfigError).problems.join('; ');
    }
    expect(message).toMatch(/^app\.strategy: /);
    expect(doc).toContain(message);
  });
});

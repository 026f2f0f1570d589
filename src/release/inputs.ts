/**
 * Content-addressed releases, the pure part: what goes into a release (the input key) and which retained
 * release already is the build of a commit. Two commits whose inputs hash the same build the same release,
 * so deploy reuses the one it has instead of building it again.
 *
 * The key covers everything that shapes the built output: the app dir's git tree (not the commit: a commit
 * that only touches another part of the repository leaves the tree id as it was), the env files' names and
 * contents (Next.js inlines NEXT_PUBLIC_* at build time, so an env edit must build), the install and build
 * argv, Node/npm versions and platform, and the config that changes what the build does.
 */
import crypto from 'node:crypto';
import path from 'node:path';

export interface ReleaseInputs {
  /** `git rev-parse <sha>:<app.dir>`: the app dir's tree id at the commit. */
  tree: string;
  envFiles: readonly { name: string; text: string }[];
  install: readonly string[];
  build: readonly string[];
  node: string;
  npm?: string;
  platform: string;
  appDir: string;
  prune: readonly string[];
  buildMaxOldSpaceMB?: number;
  /** NODE_ENV from app.env (the build runs with it). */
  nodeEnv?: string;
}

export const INPUT_KEY_VERSION = 1;

/** sha256 over a canonical JSON of the inputs: field order and env file order fixed, so only content counts. */
export function inputKey(i: ReleaseInputs): string {
  const canonical = [
    INPUT_KEY_VERSION,
    i.tree,
    [...i.envFiles].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((f) => [f.name, f.text]),
    i.install,
    i.build,
    i.node,
    i.npm ?? null,
    i.platform,
    i.appDir,
    i.prune,
    i.buildMaxOldSpaceMB ?? null,
    i.nodeEnv ?? null,
  ];
  return crypto.createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

/** How many commits a manifest remembers serving: enough for `list`, bounded so a busy branch cannot grow it. */
export const COMMITS_KEPT = 20;

/** The commits a release serves after `sha` was found to need nothing new: newest last, each once, bounded. */
export function withCommit(commits: readonly string[] | undefined, sha: string, max = COMMITS_KEPT): string[] {
  const out = (commits ?? []).filter((c) => c !== sha);
  out.push(sha);
  return out.slice(-max);
}

/** "frontend tree unchanged since 3f2a9c1": the app dir's name and the commit the release was built from. */
export function unchangedReason(appDir: string, builtFrom: string): string {
  const name = appDir === '.' || appDir === '' ? 'app' : path.basename(appDir);
  return `${name} tree unchanged since ${builtFrom.slice(0, 7)}`;
}

export interface Candidate {
  id: string;
  status: string;
  manifest?: { sha: string; inputKey?: string };
}

export type SameInputs = { id: string; by: 'sha' | 'inputs' };

/**
 * The retained ready release that already is the build of this commit's inputs, preferring the active one.
 * A release with an input key matches by key only (the same sha with an edited env file must build); one
 * from before input keys (no key in its manifest) matches by sha, as instant redeploy always did.
 * `releases` is newest first.
 */
export function findSameInputs(releases: readonly Candidate[], activeId: string | null, sha: string, key: string): SameInputs | undefined {
  const match = (r: Candidate): SameInputs | undefined => {
    if (r.status !== 'ready' || !r.manifest) return undefined;
    if (r.manifest.inputKey !== undefined) return r.manifest.inputKey === key ? { id: r.id, by: r.manifest.sha === sha ? 'sha' : 'inputs' } : undefined;
    return r.manifest.sha === sha ? { id: r.id, by: 'sha' } : undefined;
  };
  const active = releases.find((r) => r.id === activeId);
  const onActive = active ? match(active) : undefined;
  if (onActive) return onActive;
  // Among the others, the exact commit first (what an operator asked for), then the newest with the same inputs.
  const bySha = releases.map(match).find((m) => m?.by === 'sha');
  return bySha ?? releases.map(match).find((m) => m !== undefined);
}

/**
 * Pure release logic: ids, ordering, and which releases retention removes. No IO here.
 */

/** `20261121T204233Z-3f2a9c1`: a sortable UTC timestamp, then the short sha. */
export const RELEASE_ID_PATTERN = /^(\d{8}T\d{6}Z)-([0-9a-f]{7,40})$/;
export const SHORT_SHA_LENGTH = 7;

export function makeReleaseId(at: Date, sha: string): string {
  if (!/^[0-9a-f]{40}$/.test(sha)) throw new Error(`not a full sha: ${sha}`);
  return `${makeStamp(at)}-${sha.slice(0, SHORT_SHA_LENGTH)}`;
}

function makeStamp(at: Date): string {
  return at
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
}

export function isReleaseId(id: string): boolean {
  return parseReleaseId(id) !== undefined;
}

export function parseReleaseId(id: string): { createdAt: Date; shortSha: string } | undefined {
  if (typeof id !== 'string') return undefined;
  const m = RELEASE_ID_PATTERN.exec(id);
  if (!m) return undefined;
  const s = m[1];
  const iso = `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`;
  const createdAt = new Date(iso);
  // Date rolls impossible dates forward (Feb 31 → Mar 3): accept only ids that format back to themselves.
  if (Number.isNaN(createdAt.getTime()) || makeStamp(createdAt) !== s) return undefined;
  return { createdAt, shortSha: m[2] };
}

/** Newest first. Ids sort by their timestamp because the timestamp is fixed-width and leads. */
export function newestFirst<T extends { id: string }>(releases: readonly T[]): T[] {
  return [...releases].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

export type RetentionStatus = 'ready' | 'failed' | 'building' | 'incomplete';

export interface RetentionCandidate {
  id: string;
  status: RetentionStatus;
}

export interface RetentionInput {
  releases: readonly RetentionCandidate[];
  /** How many ready releases to keep, the active one included. */
  keep: number;
  /** The release PM2 serves now (never removed). */
  active?: string;
  /** The rollback target (kept before other older releases, when it is ready). */
  previous?: string;
  /** Releases an operation is working on right now (never removed). */
  inProgress?: readonly string[];
}

export interface RetentionPlan {
  keep: string[];
  remove: { id: string; reason: string }[];
}

/**
 * Which releases go. Rules, in order:
 * - the active release and releases in progress stay, whatever their status;
 * - ready releases: the active one, then the rollback target, then the newest, until `keep` are kept;
 * - failed releases never count toward `keep`; only the newest failed one stays, for its build log;
 * - incomplete releases (no manifest, or a build whose process is gone) always go.
 */
export function planRetention(input: RetentionInput): RetentionPlan {
  if (!Number.isInteger(input.keep) || input.keep < 1) throw new Error('keep must be an integer >= 1');
  const ordered = newestFirst(input.releases);
  const keep = new Set<string>();
  const reasons = new Map<string, string>();
  const inProgress = new Set(input.inProgress ?? []);

  if (input.active && ordered.some((r) => r.id === input.active)) keep.add(input.active);
  // 'building' means its builder is alive (a dead builder's release is 'incomplete'): never remove it.
  for (const r of ordered) if (inProgress.has(r.id) || r.status === 'building') keep.add(r.id);

  const ready = ordered.filter((r) => r.status === 'ready');
  let kept = ready.filter((r) => keep.has(r.id)).length;
  const prev = ready.find((r) => r.id === input.previous);
  if (prev && !keep.has(prev.id) && kept < input.keep) {
    keep.add(prev.id);
    kept++;
  }
  for (const r of ready) {
    if (keep.has(r.id)) continue;
    if (kept < input.keep) {
      keep.add(r.id);
      kept++;
    } else reasons.set(r.id, `not among the ${input.keep} kept (active, rollback target, newest)`);
  }

  const failed = ordered.filter((r) => r.status === 'failed' && !keep.has(r.id));
  failed.forEach((r, i) => {
    if (i === 0) keep.add(r.id);
    else reasons.set(r.id, 'failed build (only the newest failed one is kept)');
  });

  for (const r of ordered) {
    if (keep.has(r.id)) continue;
    if (r.status === 'incomplete') reasons.set(r.id, 'incomplete (interrupted or abandoned build)');
  }

  return {
    keep: ordered.filter((r) => keep.has(r.id)).map((r) => r.id),
    remove: ordered.filter((r) => !keep.has(r.id)).map((r) => ({ id: r.id, reason: reasons.get(r.id) ?? 'not kept' })),
  };
}

/**
 * The release to roll back to: the most recently activated release before the current one that still
 * exists and is ready.
 */
export function rollbackTarget(activations: readonly string[], active: string | undefined, isReady: (id: string) => boolean): string | undefined {
  for (let i = activations.length - 1; i >= 0; i--) {
    const id = activations[i];
    if (id !== active && isReady(id)) return id;
  }
  return undefined;
}

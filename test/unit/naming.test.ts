import { describe, expect, it, vi } from 'vitest';
import {
  isReleaseId,
  makeReleaseId,
  newestFirst,
  parseReleaseId,
  planRetention,
  rollbackTarget,
  type RetentionCandidate,
  type RetentionStatus,
} from '../../src/release/naming.js';

const SHA = '3f2a9c1' + 'b'.repeat(33); // 40 hex
const AT = new Date(Date.UTC(2026, 10, 21, 20, 42, 33, 789)); // 2026-11-21T20:42:33.789Z
const ID = '20261121T204233Z-3f2a9c1';

/** A release id for day `day` of January 2026 (larger day = newer). */
function rid(day: number, hour = 12): string {
  const sha = (day.toString(16).padStart(2, '0') + 'a'.repeat(38)).slice(0, 40);
  return makeReleaseId(new Date(Date.UTC(2026, 0, day, hour, 0, 0)), sha);
}
function rel(day: number, status: RetentionStatus): RetentionCandidate {
  return { id: rid(day), status };
}
function removedIds(plan: { remove: { id: string }[] }): string[] {
  return plan.remove.map((r) => r.id);
}

describe('makeReleaseId', () => {
  it('formats a UTC timestamp and the 7-char short sha', () => {
    expect(makeReleaseId(AT, SHA)).toBe(ID);
  });

  it('uses UTC, zero-pads every field, and truncates (not rounds) milliseconds', () => {
    expect(makeReleaseId(new Date(Date.UTC(2027, 0, 2, 3, 4, 5, 999)), SHA)).toBe('20270102T030405Z-3f2a9c1');
    expect(makeReleaseId(new Date(Date.UTC(2027, 0, 2, 3, 4, 5, 0)), SHA)).toBe('20270102T030405Z-3f2a9c1');
  });

  it('produces ids that match the documented shape', () => {
    expect(makeReleaseId(AT, SHA)).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{7}$/);
  });

  it.each([
    ['a short sha', '3f2a9c1'],
    ['39 hex chars', SHA.slice(0, 39)],
    ['41 hex chars', SHA + 'a'],
    ['uppercase hex', SHA.toUpperCase()],
    ['non-hex chars', 'g'.repeat(40)],
    ['a trailing newline', SHA + '\n'],
    ['leading whitespace', ' ' + SHA.slice(1)],
    ['the empty string', ''],
    ['a path', '../' + SHA.slice(3)],
  ])('rejects %s', (_label, sha) => {
    expect(() => makeReleaseId(AT, sha)).toThrow(/not a full sha/);
  });
});

describe('isReleaseId', () => {
  it('accepts ids made by makeReleaseId', () => {
    expect(isReleaseId(ID)).toBe(true);
    expect(isReleaseId(rid(3))).toBe(true);
  });

  it.each([
    ['empty', ''],
    ['dot', '.'],
    ['dot-dot', '..'],
    ['parent traversal prefix', `../${ID}`],
    ['parent traversal suffix', `${ID}/..`],
    ['a slash inside', '20261121T204233Z-3f2a9c1/x'],
    ['a path with slash', `releases/${ID}`],
    ['an absolute path', `/${ID}`],
    ['a backslash', `..\\${ID}`],
    ['uppercase hex', '20261121T204233Z-3F2A9C1'],
    ['missing Z', '20261121T204233-3f2a9c1'],
    ['lowercase z', '20261121T204233z-3f2a9c1'],
    ['lowercase t', '20261121t204233Z-3f2a9c1'],
    ['missing T', '20261121204233Z-3f2a9c1'],
    ['ISO punctuation', '2026-11-21T20:42:33Z-3f2a9c1'],
    ['6-hex sha', '20261121T204233Z-3f2a9c'],
    ['41-hex sha', '20261121T204233Z-' + 'a'.repeat(41)],
    ['underscore separator', '20261121T204233Z_3f2a9c1'],
    ['trailing newline', `${ID}\n`],
    ['leading space', ` ${ID}`],
    ['trailing space', `${ID} `],
    ['non-hex sha', '20261121T204233Z-3f2a9cg'],
    ['short date', '2026112T204233Z-3f2a9c1'],
  ])('rejects %s', (_label, id) => {
    expect(isReleaseId(id)).toBe(false);
  });

  // KNOWN BUG (see report): the pattern checks digits only, so impossible timestamps pass
  // isReleaseId while parseReleaseId rejects them. Flip to `it` once fixed.
  it('rejects ids whose timestamp is not a real date (month 13)', () => {
    expect(isReleaseId('20261341T000000Z-3f2a9c1')).toBe(false);
  });
});

describe('parseReleaseId', () => {
  it('round-trips makeReleaseId (to the second)', () => {
    const parsed = parseReleaseId(makeReleaseId(AT, SHA));
    expect(parsed).toBeDefined();
    expect(parsed!.shortSha).toBe('3f2a9c1');
    expect(parsed!.createdAt.toISOString()).toBe('2026-11-21T20:42:33.000Z');
  });

  it('round-trips through makeReleaseId again', () => {
    const at = new Date(Date.UTC(2031, 5, 30, 23, 59, 59));
    const id = makeReleaseId(at, SHA);
    const parsed = parseReleaseId(id)!;
    expect(parsed.createdAt.getTime()).toBe(at.getTime());
    expect(makeReleaseId(parsed.createdAt, SHA)).toBe(id);
  });

  it.each(['..', '/20261121T204233Z-3f2a9c1', '20261121T204233Z-3F2A9C1', '20261121T204233-3f2a9c1', 'nope', ''])(
    'returns undefined for malformed id %j',
    (id) => {
      expect(parseReleaseId(id)).toBeUndefined();
    },
  );

  it.each([
    ['month 13', '20261341T000000Z-3f2a9c1'],
    ['minute 60', '20260101T236000Z-3f2a9c1'],
    ['second 60', '20260101T235960Z-3f2a9c1'],
  ])('returns undefined for an impossible timestamp (%s)', (_label, id) => {
    expect(parseReleaseId(id)).toBeUndefined();
  });

  // KNOWN BUG (see report): JS Date rolls Feb 31 over to Mar 3 instead of rejecting it.
  it('returns undefined for Feb 31 instead of rolling over to March', () => {
    expect(parseReleaseId('20260231T000000Z-3f2a9c1')).toBeUndefined();
  });
});

describe('newestFirst', () => {
  it('orders by timestamp, newest first, regardless of input order', () => {
    const ids = [rid(5), rid(1), rid(9), rid(3), rid(7)];
    expect(newestFirst(ids.map((id) => ({ id }))).map((r) => r.id)).toEqual([rid(9), rid(7), rid(5), rid(3), rid(1)]);
  });

  it('orders by the timestamp, not the sha', () => {
    const older = '20260101T000000Z-fffffff';
    const newer = '20260102T000000Z-0000000';
    expect(newestFirst([{ id: older }, { id: newer }]).map((r) => r.id)).toEqual([newer, older]);
  });

  it('orders across a year boundary and within the same day by time', () => {
    const a = '20251231T235959Z-aaaaaaa';
    const b = '20260101T000000Z-aaaaaaa';
    const c = '20260101T000001Z-aaaaaaa';
    expect(newestFirst([{ id: b }, { id: a }, { id: c }]).map((r) => r.id)).toEqual([c, b, a]);
  });

  it('returns a new array, keeps extra fields, and does not mutate its input', () => {
    const input = [
      { id: rid(1), tag: 'one' },
      { id: rid(2), tag: 'two' },
    ];
    const snapshot = input.map((r) => r.id);
    const out = newestFirst(input);
    expect(out).not.toBe(input);
    expect(input.map((r) => r.id)).toEqual(snapshot);
    expect(out).toEqual([
      { id: rid(2), tag: 'two' },
      { id: rid(1), tag: 'one' },
    ]);
  });
});

describe('planRetention', () => {
  it('keep=2 removes the oldest ready release', () => {
    const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready')], keep: 2 });
    expect(plan.keep).toEqual([rid(3), rid(2)]);
    expect(removedIds(plan)).toEqual([rid(1)]);
    expect(plan.remove[0].reason).toMatch(/not among the 2 kept/);
  });

  it('is independent of input order and returns ids newest first', () => {
    const a = planRetention({ releases: [rel(2, 'ready'), rel(4, 'ready'), rel(1, 'ready'), rel(3, 'ready')], keep: 2 });
    const b = planRetention({ releases: [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready')], keep: 2 });
    expect(a).toEqual(b);
    expect(a.keep).toEqual([rid(4), rid(3)]);
    expect(removedIds(a)).toEqual([rid(2), rid(1)]);
  });

  it('keeps everything ready when there are fewer than keep', () => {
    const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, 'ready')], keep: 5 });
    expect(plan.keep).toEqual([rid(2), rid(1)]);
    expect(plan.remove).toEqual([]);
  });

  it('handles an empty list', () => {
    expect(planRetention({ releases: [], keep: 2, active: rid(1), previous: rid(2) })).toEqual({ keep: [], remove: [] });
  });

  it('never removes the active release even when it is the oldest, and counts it toward keep', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 2, active: rid(1) });
    expect(plan.keep).toEqual([rid(4), rid(1)]);
    expect(removedIds(plan)).toEqual([rid(3), rid(2)]);
  });

  it('keep=1 keeps only the active release', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready')];
    const plan = planRetention({ releases, keep: 1, active: rid(2), previous: rid(1) });
    expect(plan.keep).toEqual([rid(2)]);
    expect(removedIds(plan)).toEqual([rid(3), rid(1)]);
  });

  it('keeps the active release whatever its status', () => {
    for (const status of ['failed', 'building', 'incomplete'] as const) {
      const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, status)], keep: 1, active: rid(2) });
      expect(plan.keep, status).toContain(rid(2));
    }
  });

  it('ignores an active id that is not among the releases', () => {
    const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready')], keep: 2, active: rid(9) });
    expect(plan.keep).toEqual([rid(3), rid(2)]);
    expect(removedIds(plan)).toEqual([rid(1)]);
  });

  it('prefers the rollback target over newer non-active releases', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 2, active: rid(4), previous: rid(1) });
    expect(plan.keep).toEqual([rid(4), rid(1)]);
    expect(removedIds(plan)).toEqual([rid(3), rid(2)]);
  });

  it('keeps an old active and an old rollback target, removing the newer ones', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 2, active: rid(1), previous: rid(2) });
    expect(plan.keep).toEqual([rid(2), rid(1)]);
    expect(removedIds(plan)).toEqual([rid(4), rid(3)]);
  });

  it('fills remaining slots with the newest after active and rollback target', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready'), rel(5, 'ready')];
    const plan = planRetention({ releases, keep: 3, active: rid(3), previous: rid(1) });
    expect(plan.keep).toEqual([rid(5), rid(3), rid(1)]);
    expect(removedIds(plan)).toEqual([rid(4), rid(2)]);
  });

  it('keeps the rollback target even without an active release', () => {
    const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready')], keep: 2, previous: rid(1) });
    expect(plan.keep).toEqual([rid(3), rid(1)]);
    expect(removedIds(plan)).toEqual([rid(2)]);
  });

  it('gives no preference to a rollback target that is not ready', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'incomplete'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 2, active: rid(4), previous: rid(3) });
    expect(plan.keep).toEqual([rid(4), rid(2)]);
    expect(removedIds(plan)).toEqual([rid(3), rid(1)]);
  });

  it('ignores a rollback target that does not exist', () => {
    const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready')], keep: 2, active: rid(3), previous: rid(9) });
    expect(plan.keep).toEqual([rid(3), rid(2)]);
    expect(removedIds(plan)).toEqual([rid(1)]);
  });

  it('does not let failed releases count toward keep', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'failed'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 2, active: rid(4) });
    // Two ready kept (4 and 2), plus the newest failed (3); only ready 1 goes.
    expect(plan.keep).toEqual([rid(4), rid(3), rid(2)]);
    expect(removedIds(plan)).toEqual([rid(1)]);
  });

  it('keeps only the newest failed release', () => {
    const releases = [rel(1, 'failed'), rel(2, 'ready'), rel(3, 'failed'), rel(4, 'failed'), rel(5, 'ready')];
    const plan = planRetention({ releases, keep: 2, active: rid(5) });
    expect(plan.keep).toEqual([rid(5), rid(4), rid(2)]);
    expect(removedIds(plan)).toEqual([rid(3), rid(1)]);
    for (const r of plan.remove) expect(r.reason).toMatch(/failed/);
  });

  it('keeps the newest failed release even when it is older than every ready one', () => {
    const releases = [rel(1, 'failed'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 2 });
    expect(plan.keep).toEqual([rid(4), rid(3), rid(1)]);
    expect(removedIds(plan)).toEqual([rid(2)]);
  });

  it('never removes releases in progress, whatever their status or age', () => {
    const releases = [rel(1, 'incomplete'), rel(2, 'building'), rel(3, 'failed'), rel(4, 'failed'), rel(5, 'ready'), rel(6, 'ready'), rel(7, 'ready')];
    const plan = planRetention({ releases, keep: 1, active: rid(7), inProgress: [rid(1), rid(2), rid(3)] });
    for (const id of [rid(1), rid(2), rid(3), rid(7)]) expect(plan.keep).toContain(id);
    expect(removedIds(plan)).not.toContain(rid(1));
    expect(removedIds(plan)).not.toContain(rid(2));
    expect(removedIds(plan)).not.toContain(rid(3));
    expect(removedIds(plan)).toEqual(expect.arrayContaining([rid(5), rid(6)]));
  });

  it('keeps an old ready release that is in progress, beyond keep', () => {
    const releases = [rel(1, 'ready'), rel(2, 'ready'), rel(3, 'ready'), rel(4, 'ready')];
    const plan = planRetention({ releases, keep: 1, active: rid(4), inProgress: [rid(1)] });
    expect(plan.keep).toContain(rid(1));
    expect(plan.keep).toContain(rid(4));
    expect(removedIds(plan)).toEqual(expect.arrayContaining([rid(3), rid(2)]));
  });

  it('never removes a building release (its builder is alive; a dead one is "incomplete")', () => {
    const plan = planRetention({ releases: [rel(1, 'ready'), rel(2, 'building')], keep: 1 });
    expect(plan.keep).toEqual([rid(2), rid(1)]);
    expect(plan.remove).toEqual([]);
  });

  it('always removes incomplete releases, even the newest and even with room to spare', () => {
    const releases = [rel(1, 'incomplete'), rel(2, 'ready'), rel(3, 'incomplete')];
    const plan = planRetention({ releases, keep: 10, active: rid(2) });
    expect(plan.keep).toEqual([rid(2)]);
    expect(removedIds(plan)).toEqual([rid(3), rid(1)]);
    for (const r of plan.remove) expect(r.reason).toMatch(/incomplete/);
  });

  it('partitions every release into exactly one of keep or remove', () => {
    const statuses: RetentionStatus[] = ['ready', 'failed', 'building', 'incomplete', 'ready', 'failed', 'ready', 'incomplete', 'ready', 'building'];
    const releases = statuses.map((s, i) => rel(i + 1, s));
    const plan = planRetention({ releases, keep: 2, active: rid(5), previous: rid(1), inProgress: [rid(10)] });
    const all = [...plan.keep, ...removedIds(plan)];
    expect(all).toHaveLength(releases.length);
    expect(new Set(all)).toEqual(new Set(releases.map((r) => r.id)));
    expect(plan.keep).toEqual([rid(10), rid(6), rid(5), rid(3), rid(1)]);
    for (const r of plan.remove) expect(r.reason.length).toBeGreaterThan(0);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('throws for keep=%s', (keep) => {
    expect(() => planRetention({ releases: [rel(1, 'ready')], keep })).toThrow(/keep/);
  });

  it('throws for keep < 1 even with no releases', () => {
    expect(() => planRetention({ releases: [], keep: 0 })).toThrow();
  });
});

describe('rollbackTarget', () => {
  const A = rid(1);
  const B = rid(2);
  const C = rid(3);
  const D = rid(4);
  const all = () => true;

  it('returns the activation before the active one', () => {
    expect(rollbackTarget([A, B, C], C, all)).toBe(B);
  });

  it('returns the most recent activation, not the oldest', () => {
    expect(rollbackTarget([A, B, C], D, all)).toBe(C);
  });

  it('with no active release, returns the last ready activation', () => {
    expect(rollbackTarget([A, B, C], undefined, all)).toBe(C);
  });

  it('skips releases that are not ready', () => {
    const ready = new Set([A]);
    expect(rollbackTarget([A, B, C], C, (id) => ready.has(id))).toBe(A);
  });

  it('skips the active release wherever it appears in history', () => {
    expect(rollbackTarget([B, A, A], A, all)).toBe(B);
    expect(rollbackTarget([A, B, A, C, A], A, all)).toBe(C);
  });

  it('can return an id that appears earlier than a re-activation of the active one', () => {
    expect(rollbackTarget([A, B, A], A, all)).toBe(B);
  });

  it('returns undefined when nothing but the active one is ready', () => {
    expect(rollbackTarget([A, B, C], C, (id) => id === C)).toBeUndefined();
    expect(rollbackTarget([C], C, all)).toBeUndefined();
  });

  it('returns undefined for an empty history', () => {
    expect(rollbackTarget([], A, all)).toBeUndefined();
    expect(rollbackTarget([], undefined, all)).toBeUndefined();
  });

  it('walks backwards and stops at the first ready release', () => {
    const isReady = vi.fn((id: string) => id === B);
    expect(rollbackTarget([A, B, C, D], D, isReady)).toBe(B);
    expect(isReady.mock.calls.map((c) => c[0])).toEqual([C, B]);
  });
});

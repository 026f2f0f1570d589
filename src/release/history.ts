/**
 * The audit trail: one JSON line per deploy, build, activate, rollback, automatic revert and prune, in
 * `<releasesDir>/history.jsonl`. It lives beside the releases (retention never touches it) and is bounded:
 * past MAX_BYTES the oldest lines are dropped in one atomic rewrite.
 * Plus the marks of bad shas: releases an operator rolled back from, or the health gate reverted.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { StepMemory } from './memory-budget.js';

export const HISTORY_FILE = 'history.jsonl';
export const BAD_SHAS_FILE = 'bad-shas.json';
const MAX_BYTES = 1024 * 1024;
const KEEP_LINES_AFTER_TRIM = 2000;

export type HistoryAction = 'deploy' | 'build' | 'activate' | 'rollback' | 'revert' | 'prune' | 'pack';

export interface HistoryEntry {
  time: string;
  action: HistoryAction;
  trigger: string;
  user: string;
  host: string;
  from: string | null;
  to: string | null;
  sha: string | null;
  result: 'ok' | 'failed';
  error: { code: string; phase: string } | null;
  durationsMs: Record<string, number>;
  /** Free detail: removed release ids for prune, the reason for a revert. */
  detail?: string;
  /** What the operation's install and build used against their memory budget. */
  memory?: Partial<Record<'install' | 'build', StepMemory>>;
  /** A deploy's soak: the verdict and the numbers it was based on. */
  soak?: SoakVerdict;
}

export interface SoakVerdict {
  state: string;
  reason: string | null;
  share: number;
  startedAt: string;
  endedAt: string | null;
  judged: boolean;
  candidate: { requests: number; errors5xx: number; rate5xx: number; p99Ms: number | null } | null;
  baseline: { requests: number; errors5xx: number; rate5xx: number; p99Ms: number | null } | null;
  revertMs: number | null;
}

/** The part of a soak's record that goes into the history line. */
export function soakVerdict(r: SoakVerdict): SoakVerdict {
  const { state, reason, share, startedAt, endedAt, judged, candidate, baseline, revertMs } = r;
  return { state, reason, share, startedAt, endedAt, judged, candidate, baseline, revertMs };
}

export function whoAmI(): { user: string; host: string } {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    /* no passwd entry (containers) */
  }
  return { user, host: os.hostname() };
}

export async function appendHistory(releasesDir: string, entry: HistoryEntry): Promise<void> {
  await fsp.mkdir(releasesDir, { recursive: true });
  const file = path.join(releasesDir, HISTORY_FILE);
  // One write with O_APPEND: lines from concurrent readers never interleave mid-line.
  await fsp.appendFile(file, JSON.stringify(entry) + '\n', { mode: 0o644 });
  const st = await fsp.stat(file);
  if (st.size > MAX_BYTES) {
    const lines = (await fsp.readFile(file, 'utf8')).split('\n').filter(Boolean);
    await writeFileAtomic(file, lines.slice(-KEEP_LINES_AFTER_TRIM).join('\n') + '\n');
  }
}

export async function readHistory(releasesDir: string, limit?: number): Promise<HistoryEntry[]> {
  const text = await fsp.readFile(path.join(releasesDir, HISTORY_FILE), 'utf8').catch(() => '');
  const entries: HistoryEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      entries.push(JSON.parse(line) as HistoryEntry);
    } catch {
      /* a torn last line from a crash: skip it */
    }
  }
  entries.reverse(); // newest first
  return limit ? entries.slice(0, limit) : entries;
}

export interface BadMark {
  sha: string;
  release: string;
  reason: string;
  markedAt: string;
  by: string;
}

export async function readBadShas(releasesDir: string): Promise<Record<string, BadMark>> {
  try {
    const data: unknown = JSON.parse(await fsp.readFile(path.join(releasesDir, BAD_SHAS_FILE), 'utf8'));
    return data && typeof data === 'object' ? (data as Record<string, BadMark>) : {};
  } catch {
    return {};
  }
}

async function writeBadShas(releasesDir: string, marks: Record<string, BadMark>): Promise<void> {
  // Bounded: the newest 200 marks are plenty (an old bad sha never comes back as "new" anyway).
  const kept = Object.values(marks)
    .sort((a, b) => (a.markedAt < b.markedAt ? 1 : -1))
    .slice(0, 200);
  await writeFileAtomic(path.join(releasesDir, BAD_SHAS_FILE), JSON.stringify(Object.fromEntries(kept.map((m) => [m.sha, m])), null, 2) + '\n');
}

export async function markBad(releasesDir: string, mark: BadMark): Promise<void> {
  const marks = await readBadShas(releasesDir);
  marks[mark.sha] = mark;
  await writeBadShas(releasesDir, marks);
}

export async function clearBad(releasesDir: string, sha: string): Promise<boolean> {
  const marks = await readBadShas(releasesDir);
  if (!marks[sha]) return false;
  delete marks[sha];
  await writeBadShas(releasesDir, marks);
  return true;
}

/** The bad-sha policy: a commit an operator rolled back from (or the health gate reverted) is not shipped again without --force. */
import { ExitCode, ReleaseError } from '../errors.js';
import { readBadShas } from '../release/history.js';
import type { Context } from './context.js';

/** Throws SHA_MARKED_BAD (exit 7) for a marked sha unless forced. `what`: "deploying" or "packing". */
export async function refuseBadSha(ctx: Context, sha: string, force: boolean, what: 'deploying' | 'packing' = 'deploying'): Promise<void> {
  const mark = (await readBadShas(ctx.config.releasesDir))[sha];
  if (!mark || force) return;
  throw new ReleaseError(
    'SHA_MARKED_BAD',
    ExitCode.refused,
    `${sha.slice(0, 7)} was marked bad ${mark.markedAt.replace('T', ' ').slice(0, 19)} UTC (${mark.reason}): not ${what} it again`,
    {
      phase: 'resolve',
      hint: `push a fix (a newer commit ${what === 'packing' ? 'packs' : 'deploys'} normally), or pass --force to ${what === 'packing' ? 'pack' : 'deploy'} this sha anyway`,
    },
  );
}

/**
 * Artifact provenance with OpenSSH (issue 20): no crypto code of our own. `ssh-keygen -Y sign` signs the
 * artifact's .sha256 line (which names the artifact's digest; verifyArtifact() checks the digest against the
 * file), `-Y find-principals` and `-Y verify` check it against an allowed_signers file. The namespace keeps a
 * signature made for anything else (a git commit, a file) from passing.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { firstLine } from '../errors.js';
import { run } from '../exec.js';
import type { Logger } from '../log.js';
import { SIGNATURE_NAMESPACE } from './artifact.js';

export class SignatureProblem extends Error {}

/** Signs the .sha256 file `sums` with the private key `key`: returns the signature file ssh-keygen wrote (`<sums>.sig`). */
export async function signSums(sums: string, key: string, logger: Logger): Promise<string> {
  // ssh-keygen writes <file>.sig beside the file it signs and will not overwrite one.
  const made = `${sums}.sig`;
  await fsp.rm(made, { force: true });
  try {
    await run(['ssh-keygen', '-q', '-Y', 'sign', '-f', key, '-n', SIGNATURE_NAMESPACE, sums], { cwd: path.dirname(sums), logger });
  } catch (err) {
    await fsp.rm(made, { force: true });
    throw new SignatureProblem(`ssh-keygen -Y sign with ${key} failed: ${firstLine((err as Error).message)}`);
  }
  return made;
}

/**
 * The principal of `allowedSigners` whose key made `<artifact>.sig` over `sums` (the .sha256 line as the
 * checksum check read it, not read again), or a SignatureProblem: no signature, or one no allowed key made.
 */
export async function verifySignature(artifact: string, sums: string, allowedSigners: string, logger: Logger): Promise<string> {
  const sig = `${artifact}.sig`;
  if (!(await fsp.stat(sig).catch(() => undefined))?.isFile())
    throw new SignatureProblem(`${path.basename(artifact)} is not signed (no ${path.basename(sig)} beside it)`);
  if (!(await fsp.stat(allowedSigners).catch(() => undefined))?.isFile())
    throw new SignatureProblem(`the allowed signers file ${allowedSigners} does not exist`);
  const cwd = path.dirname(artifact);
  let principal: string;
  try {
    const found = await run(['ssh-keygen', '-Y', 'find-principals', '-s', sig, '-f', allowedSigners], { cwd, logger });
    principal = found.stdout.trim().split('\n')[0] ?? '';
  } catch {
    throw new SignatureProblem(`the signature of ${path.basename(artifact)} was made by no key in ${allowedSigners}`);
  }
  if (!principal) throw new SignatureProblem(`the signature of ${path.basename(artifact)} was made by no key in ${allowedSigners}`);
  try {
    await run(['ssh-keygen', '-Y', 'verify', '-f', allowedSigners, '-I', principal, '-n', SIGNATURE_NAMESPACE, '-s', sig], { cwd, logger, input: sums });
  } catch {
    throw new SignatureProblem(
      `the signature of ${path.basename(artifact)} does not verify for ${principal} (namespace ${SIGNATURE_NAMESPACE}): altered, or signed for something else`,
    );
  }
  return principal;
}

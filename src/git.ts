/** Everything that talks to git: resolve a ref, stream `git archive` into a release directory. */
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { CommandFailure, run, spawnStream } from './exec.js';
import { BuildError, EnvironmentError, UsageError } from './errors.js';
import type { Logger } from './log.js';

/** Refs come from the CLI and webhooks: refuse anything git could read as an option or a pathspec trick. */
const REF_PATTERN = /^(?!-)(?!.*\.\.)(?!.*[\s~^:?*[\\]@\{)[\x21-\x7e]{1,200}$/;

export function validateRef(ref: string): void {
  if (ref === 'HEAD' || /^[0-9a-f]{7,40}$/.test(ref)) return;
  if (!REF_PATTERN.test(ref) || ref.endsWith('.lock') || ref.endsWith('/') || ref.endsWith('.'))
    throw new UsageError('REF_INVALID', `invalid git ref ${JSON.stringify(ref)}`, {
      phase: 'resolve',
      hint: 'pass a branch, tag or commit sha',
    });
}

export async function ensureRepository(workspace: string, logger: Logger): Promise<void> {
  if (!fs.existsSync(workspace))
    throw new UsageError('WORKSPACE_MISSING', `workspace ${workspace} does not exist`, {
      phase: 'resolve',
      hint: 'set "workspace" in the config to the git checkout that holds the app',
    });
  try {
    const { stdout } = await run(['git', 'rev-parse', '--is-inside-work-tree'], { cwd: workspace, logger });
    if (stdout.trim() !== 'true') throw new Error('not a work tree');
  } catch {
    throw new UsageError('WORKSPACE_NOT_GIT', `workspace ${workspace} is not a git work tree`, {
      phase: 'resolve',
      hint: 'point "workspace" at a git clone of the app',
    });
  }
}

export async function resolveRef(workspace: string, ref: string, logger: Logger): Promise<string> {
  validateRef(ref);
  try {
    const { stdout } = await run(['git', 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`], { cwd: workspace, logger });
    const sha = stdout.trim();
    if (!/^[0-9a-f]{40}$/.test(sha)) throw new Error(`unexpected rev-parse output`);
    return sha;
  } catch (err) {
    if (!(err instanceof CommandFailure)) throw err;
    const shallow = await isShallow(workspace, logger);
    throw new UsageError('REF_NOT_FOUND', `ref ${JSON.stringify(ref)} does not resolve to a commit in ${workspace}`, {
      phase: 'resolve',
      hint: shallow
        ? 'the workspace is a shallow clone: fetch the commit (git fetch --unshallow) or pass a ref it has'
        : 'check the ref with `git log`; fetch it first if it only exists on the remote',
    });
  }
}

async function isShallow(workspace: string, logger: Logger): Promise<boolean> {
  try {
    const { stdout } = await run(['git', 'rev-parse', '--is-shallow-repository'], { cwd: workspace, logger });
    return stdout.trim() === 'true';
  } catch {
    return false;
  }
}

/** Uncommitted changes are only worth a warning: releases come from commits, not from the work tree. */
export async function isDirty(workspace: string, logger: Logger): Promise<boolean> {
  try {
    const { stdout } = await run(['git', 'status', '--porcelain', '--untracked-files=no'], { cwd: workspace, logger });
    return stdout.trim() !== '';
  } catch {
    return false;
  }
}

export async function commitSubject(workspace: string, sha: string, logger: Logger): Promise<string | undefined> {
  try {
    const { stdout } = await run(['git', 'log', '-1', '--format=%s', sha], { cwd: workspace, logger });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** `git archive <sha>` streamed straight into tar extraction at `dest` (no temporary tarball). */
export async function archive(workspace: string, sha: string, dest: string, logger: Logger, signal?: AbortSignal): Promise<void> {
  const { child } = await spawnStream(['git', 'archive', '--format=tar', sha], { cwd: workspace, logger, signal });
  if (!child.stdout) throw new Error('git archive: no stdout');
  let extractError: unknown;
  try {
    await pipeline(child.stdout, tar.x({ cwd: dest, strict: true, preserveOwner: false }), { signal });
  } catch (err) {
    extractError = err;
    child.kill();
  }
  const result = await child;
  if (result.failed || extractError) {
    const stderr = typeof result.stderr === 'string' ? result.stderr.trim().split('\n').slice(-5).join(' | ') : '';
    const reason = signal?.aborted ? 'cancelled' : stderr || (extractError instanceof Error ? extractError.message : `git archive exited ${result.exitCode}`);
    const Err = extractError && !result.failed ? EnvironmentError : BuildError;
    throw new Err('ARCHIVE_FAILED', `archive of ${sha.slice(0, 12)} failed: ${reason}`, {
      phase: 'archive',
      hint: 'check disk space in the releases dir and that the commit exists in the workspace',
      cause: extractError,
    });
  }
}

/**
 * The app dir's tree id at `sha` (`git rev-parse <sha>:<dir>`): equal for two commits exactly when nothing
 * under the app dir differs, whatever else the commits change.
 */
export async function appTree(workspace: string, sha: string, dir: string, logger: Logger): Promise<string> {
  const spec = dir === '.' ? `${sha}^{tree}` : `${sha}:${dir}`;
  const { stdout } = await run(['git', 'rev-parse', '--verify', '--quiet', spec], { cwd: workspace, logger });
  const tree = stdout.trim();
  if (!/^[0-9a-f]{40,64}$/.test(tree)) throw new Error(`unexpected rev-parse output for ${spec}`);
  return tree;
}

/** True when `file` (a path inside the repository) exists in commit `sha`. */
export async function commitHas(workspace: string, sha: string, file: string, logger: Logger): Promise<boolean> {
  try {
    await run(['git', 'cat-file', '-e', `${sha}:${file}`], { cwd: workspace, logger });
    return true;
  } catch {
    return false;
  }
}

/**
 * `deploy --pull BRANCH`: fetch the branch from origin and reset the workspace to it, as the auto-deploy
 * runbooks do (`git fetch origin && git checkout BRANCH && git reset --hard origin/BRANCH`). A work tree with
 * uncommitted changes to tracked files is refused unless `force`: reset would throw them away.
 */
export async function pullBranch(
  workspace: string,
  branch: string,
  force: boolean,
  logger: Logger,
  signal?: AbortSignal,
  /** `deploy --ref <sha> --pull <branch>`: refuse (before the reset) unless origin/<branch> contains this commit. */
  contains?: string,
): Promise<string> {
  validateRef(branch);
  if (contains !== undefined) validateSha(contains);
  if (branch === 'HEAD' || /^[0-9a-f]{7,40}$/.test(branch)) throw new UsageError('REF_INVALID', `--pull needs a branch name, not ${branch}`, { phase: 'pull' });
  if (!force && (await isDirty(workspace, logger)))
    throw new UsageError('WORKSPACE_DIRTY', `the workspace ${workspace} has uncommitted changes: --pull would discard them`, {
      phase: 'pull',
      hint: 'commit or stash them (`git -C <workspace> status`), or pass --force to discard them',
    });
  try {
    await run(['git', 'fetch', '--quiet', 'origin', `+refs/heads/${branch}:refs/remotes/origin/${branch}`], {
      cwd: workspace,
      logger,
      signal,
      timeoutMs: 300_000,
    });
    if (contains !== undefined) await ensureInBranch(workspace, contains, branch, logger);
    await run(['git', 'checkout', '--quiet', '--force', '-B', branch, `refs/remotes/origin/${branch}`], { cwd: workspace, logger, signal });
    const { stdout } = await run(['git', 'rev-parse', 'HEAD'], { cwd: workspace, logger });
    return stdout.trim();
  } catch (err) {
    if (err instanceof CommandFailure)
      throw new EnvironmentError('PULL_FAILED', `git pull of ${branch} failed: ${err.reason}${err.tail ? ` (${err.tail.split('\n').pop()})` : ''}`, {
        phase: 'pull',
        hint: `check the remote and the branch: git -C ${workspace} fetch origin ${branch}`,
      });
    throw err;
  }
}

/** A commit sha as the CLI takes one for `--ref` with `--pull` and `--if-current`: 7 to 40 hex digits. */
export const SHA_PATTERN = /^[0-9a-f]{7,40}$/;

export function validateSha(sha: string): void {
  if (!SHA_PATTERN.test(sha))
    throw new UsageError('REF_INVALID', `${JSON.stringify(sha)} is not a commit sha (7 to 40 hex digits)`, {
      phase: 'pull',
      hint: 'with --pull, --ref takes the exact commit to deploy: `git rev-parse origin/<branch>`',
    });
}

/**
 * The fleet's guarantee that every host deploys a commit of the branch (not one a force-push dropped, nor a
 * stray local commit): `git merge-base --is-ancestor <sha> origin/<branch>` after the fetch.
 */
async function ensureInBranch(workspace: string, sha: string, branch: string, logger: Logger): Promise<void> {
  const notIn = () =>
    new UsageError('REF_NOT_IN_BRANCH', `${sha.slice(0, 12)} is not a commit of origin/${branch}: not deploying it`, {
      phase: 'pull',
      hint: `deploy a sha that \`git log origin/${branch}\` lists (a force-push may have dropped it), or name the branch it is on`,
    });
  try {
    await run(['git', 'rev-parse', '--verify', '--quiet', `${sha}^{commit}`], { cwd: workspace, logger });
  } catch (err) {
    if (err instanceof CommandFailure) throw notIn();
    throw err;
  }
  try {
    await run(['git', 'merge-base', '--is-ancestor', sha, `refs/remotes/origin/${branch}`], { cwd: workspace, logger });
  } catch (err) {
    // Exit 1 is git's "no"; anything else is a git failure, reported as the pull's.
    if (err instanceof CommandFailure && err.exitCode === 1) throw notIn();
    throw err;
  }
}

/** The branch the workspace has checked out (undefined when detached). */
export async function currentBranch(workspace: string, logger: Logger): Promise<string | undefined> {
  try {
    const { stdout } = await run(['git', 'symbolic-ref', '--quiet', '--short', 'HEAD'], { cwd: workspace, logger });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The top-level of the git work tree that holds `dir` (real path), or undefined when `dir` is in none. */
export async function workTreeRoot(dir: string, logger: Logger): Promise<string | undefined> {
  try {
    const { stdout } = await run(['git', 'rev-parse', '--show-toplevel'], { cwd: dir, logger });
    const top = stdout.trim();
    return top ? fs.realpathSync(top) : undefined;
  } catch {
    return undefined;
  }
}

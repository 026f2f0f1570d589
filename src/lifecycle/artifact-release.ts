/**
 * A release from an artifact (issue 20): checked completely before the releases dir is touched, then unpacked
 * into a new `<UTC timestamp>-<sha>` release that takes this host's env files and dependencies as a built one
 * does. No git, no build.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { ExitCode, ReleaseError, UsageError } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { ArtifactProblem, extractApp, hostLibc, nodeMajor, publicEnvMismatch, verifyArtifact, type VerifiedArtifact } from '../release/artifact.js';
import { SignatureProblem, verifySignature } from '../release/signing.js';
import { buildEnv, copyEnvFiles, readEnvFiles, requireEnv, toolVersions, type EnvFile } from '../release/builder.js';
import { existsSync, MANIFEST_VERSION, type Manifest, type ReleaseRecord } from '../release/store.js';
import { allocateId, bakedPublicEnv, installDependencies, makeRelease } from './build-release.js';
import { phase, warn, type Context } from './context.js';
import type { HeldLock } from '../lock.js';

export interface ArtifactOptions {
  /** The artifact file (`<file>.sha256` beside it). */
  artifact: string;
  /** An OpenSSH allowed_signers file: the artifact must carry a signature (`<file>.sig`) by one of its keys. */
  allowedSigners?: string;
  /** Deploy even when this host's build-time public values differ from those the artifact baked in. */
  allowEnvMismatch?: boolean;
  /** Relative paths are relative to this (the caller's cwd; default process.cwd()). */
  cwd?: string;
}

export interface CheckedArtifact {
  verified: VerifiedArtifact;
  envFiles: EnvFile[];
  /** This host's env files, hashed: the same artifact with other env files is another release. */
  envKey: string;
  versions: { node: string; npm?: string };
}

const HINT = 'copy the artifact again with its .sha256 (and .sig), or pack it again: pm2-release pack';

/**
 * Everything that can be known before a release directory exists: the file's checksum, its two members, the
 * manifest's schema and format, the signature when signers are given, that it is this app's, that this host's
 * Node, platform and C library can run it, and that this host's env files give the build-time public values
 * the artifact baked in. Writes nothing.
 */
export async function checkArtifact(ctx: Context, opts: ArtifactOptions): Promise<CheckedArtifact> {
  const { config } = ctx;
  return phase(ctx, 'artifact', async () => {
    if (opts.artifact.includes('\0') || opts.artifact.trim() === '')
      throw new UsageError('ARTIFACT_INVALID', 'the artifact path is empty or malformed', { phase: 'artifact' });
    const file = path.resolve(opts.cwd ?? process.cwd(), opts.artifact);
    const versionsP = toolVersions(ctx, existsSync(config.workspace) ? config.workspace : os.tmpdir());
    versionsP.catch(() => undefined);
    let verified: VerifiedArtifact;
    try {
      verified = await verifyArtifact(file, { envNames: config.app.envFiles });
    } catch (err) {
      if (err instanceof ArtifactProblem) throw new UsageError(err.code, err.message, { phase: 'artifact', hint: HINT });
      throw err;
    }
    if (opts.allowedSigners) {
      try {
        verified.signedBy = await verifySignature(file, verified.sumsText, path.resolve(opts.cwd ?? process.cwd(), opts.allowedSigners), ctx.logger);
      } catch (err) {
        if (err instanceof SignatureProblem)
          throw new ReleaseError('ARTIFACT_SIGNATURE', ExitCode.refused, err.message, {
            phase: 'artifact',
            hint: 'pack it with --sign KEY on the build host, whose public key is in the allowed signers file',
          });
        throw err;
      }
    }
    const m = verified.manifest;
    if (m.app.dir !== config.app.dir || m.app.name !== config.app.name)
      throw new UsageError(
        'ARTIFACT_FOREIGN',
        `the artifact is of app ${m.app.name} (dir ${m.app.dir}); this config deploys ${config.app.name} (dir ${config.app.dir})`,
        {
          phase: 'artifact',
          hint: 'deploy it with the config of the app it was packed from',
        },
      );
    const versions = await versionsP;
    const here = { nodeMajor: nodeMajor(versions.node), platform: process.platform, arch: process.arch, libc: hostLibc() };
    const deps = m.dependencies;
    const differ = [
      deps.nodeMajor !== here.nodeMajor ? `Node ${deps.nodeMajor} there, ${here.nodeMajor} here` : undefined,
      deps.platform !== here.platform || deps.arch !== here.arch ? `${deps.platform}-${deps.arch} there, ${here.platform}-${here.arch} here` : undefined,
      deps.libc !== here.libc ? `${deps.libc} there, ${here.libc} here` : undefined,
    ].filter(Boolean);
    if (differ.length > 0)
      throw new UsageError('ARTIFACT_INCOMPATIBLE', `the artifact was built for another runtime: ${differ.join('; ')}`, {
        phase: 'artifact',
        hint: 'pack it on a host with the same Node major, platform and C library as this one',
      });
    const liveAppDir = path.join(config.workspace, config.app.dir);
    const envFiles = existsSync(liveAppDir) ? await readEnvFiles(ctx, liveAppDir) : [];
    if (!existsSync(liveAppDir)) warn(ctx, `the live app dir ${liveAppDir} does not exist: no env files will be copied`);
    requireEnv(ctx, envFiles, `the env files in ${liveAppDir}`);
    const mismatch = publicEnvMismatch(m.publicEnv, bakedPublicEnv(ctx, envFiles));
    if (mismatch.length > 0) {
      // Names only: the values are what the hashes hide.
      const what = mismatch.map((x) => `${x.name} (${x.why})`).join(', ');
      if (!opts.allowEnvMismatch)
        throw new UsageError('ARTIFACT_ENV_MISMATCH', `the artifact baked build-time public values this host would not: ${what}`, {
          phase: 'artifact',
          hint: `make ${mismatch.map((x) => x.name).join(', ')} the same in this host's env files as on the build host, or pass --allow-env-mismatch`,
        });
      warn(ctx, `deploying with build-time public values that differ from this host's (--allow-env-mismatch): ${what}`);
    }
    return { verified, envFiles, versions, envKey: envFilesKey(envFiles) };
  });
}

/** sha256 over the env files' names and contents (never logged: it only says whether they changed). */
export function envFilesKey(files: EnvFile[]): string {
  const h = crypto.createHash('sha256');
  for (const f of [...files].sort((a, b) => a.name.localeCompare(b.name))) h.update(`${f.name}\0${f.text}\0`);
  return h.digest('hex');
}

/**
 * A ready release already unpacked from this very artifact (its sha256) with the env files this host has now,
 * newest first. Env files edited since (a rotated secret) make a new release, as a git deploy's input key does.
 */
export function sameArtifact(releases: ReleaseRecord[], checked: Pick<CheckedArtifact, 'verified' | 'envKey'>): ReleaseRecord | undefined {
  return releases.find(
    (r) => r.status === 'ready' && r.manifest?.artifact?.sha256 === checked.verified.sha256 && r.manifest.artifact.envKey === checked.envKey,
  );
}

/**
 * The release this artifact became before serves again; a signature checked now (the same bits, signed since)
 * is recorded on it.
 */
export async function noteSigner(ctx: Context, same: ReleaseRecord, checked: CheckedArtifact): Promise<ReleaseRecord> {
  const signer = checked.verified.signedBy;
  const m = same.manifest;
  if (!signer || !m?.artifact || m.artifact.signedBy === signer) return same;
  await ctx.store.writeManifest({ ...m, artifact: { ...m.artifact, signedBy: signer } });
  return (await ctx.store.get(same.id)) ?? same;
}

/** Unpacks a checked artifact into a new release: unpack → env → install (or reuse). Never touches PM2. */
export async function releaseFromArtifact(ctx: Context, checked: CheckedArtifact, lock?: HeldLock, preallocated?: string): Promise<ReleaseRecord> {
  const { config, store } = ctx;
  const { verified, envFiles, versions } = checked;
  const m = verified.manifest;
  const id = preallocated ?? (await allocateId(ctx, m.sha));
  await lock?.setRelease(id);
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    id,
    sha: m.sha,
    ref: `artifact:${path.basename(verified.file)}`,
    ...(m.subject !== undefined ? { subject: m.subject } : {}),
    status: 'building',
    appDir: config.app.dir,
    createdAt: ctx.now().toISOString(),
    durationsMs: {},
    builder: { pid: process.pid, host: os.hostname() },
    node: versions.node,
    npm: versions.npm,
    envFiles: [],
    ...(m.inputKey ? { inputKey: m.inputKey } : {}),
    commits: [m.sha],
    source: 'artifact',
    artifact: {
      sha256: verified.sha256,
      file: path.basename(verified.file),
      packedOn: m.packedOn,
      release: m.release,
      packedAt: m.createdAt,
      envKey: checked.envKey,
      ...(verified.signedBy ? { signedBy: verified.signedBy } : {}),
    },
    publicEnv: m.publicEnv,
  };
  return makeRelease(ctx, manifest, async ({ cwd, logFile, track }) => {
    await phase(ctx, 'unpack', async () => {
      await store.create(manifest);
      try {
        await extractApp(verified, cwd, ctx.signal);
      } catch (err) {
        if (err instanceof ArtifactProblem) throw new UsageError(err.code, err.message, { phase: 'unpack', hint: HINT });
        throw err;
      }
      failpoint(ctx.env, 'unpack');
    });
    manifest.envFiles = await phase(ctx, 'env', async () => {
      const copied = await copyEnvFiles(envFiles, cwd);
      failpoint(ctx.env, 'env');
      return copied;
    });
    await installDependencies(ctx, { id, sha: m.sha, cwd, logFile, track, manifest, versions, nodeEnv: buildEnv(ctx, id, m.sha).NODE_ENV });
  });
}

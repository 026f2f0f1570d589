/**
 * pack: lock → clean up → pre-flight → the ready release to pack (by id, or the one whose inputs match the ref,
 * else built now with the usual guards) → one artifact file, its .sha256 and, with a key, its .sig
 * (release/artifact.ts, release/signing.ts). The live release is not touched. One line in the history.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isInside } from '../config.js';
import { ExitCode, ReleaseError, UsageError } from '../errors.js';
import {
  ARTIFACT_FORMAT,
  ARTIFACT_KIND,
  ArtifactProblem,
  artifactFileName,
  hostLibc,
  nodeMajor,
  writeArtifact,
  type ArtifactManifest,
  type Compression,
} from '../release/artifact.js';
import { findSameInputs, withCommit } from '../release/inputs.js';
import { SignatureProblem, signSums } from '../release/signing.js';
import type { ReleaseRecord } from '../release/store.js';
import { allocateId, bakedPublicEnv, buildRelease, resolveRelease } from '../lifecycle/build-release.js';
import { preflight } from '../lifecycle/checks.js';
import { createContext, phase, warn, type CommonOptions, type Context } from '../lifecycle/context.js';
import { audited } from '../lifecycle/audit.js';
import { cleanupInterrupted } from '../lifecycle/retain.js';
import { releaseInfo, type PackResult } from '../lifecycle/results.js';
import { withLock } from '../lifecycle/with-lock.js';
import { refuseBadSha } from '../lifecycle/bad-sha.js';

/**
 * Chosen by measurement on the bench's Next.js app (documentation/performance.md, "Artifacts"): brotli at
 * quality 5 made the artifact 0.69× gzip's size in the same pack time (142 vs 132 ms) and unpacked as fast.
 * `--compression gzip` makes one `tar -xzf` can open without brotli installed.
 */
export const DEFAULT_COMPRESSION: Compression = 'brotli';

export interface PackOptions extends CommonOptions {
  /** The git ref to pack (default HEAD): its ready release, built first when there is none. */
  ref?: string;
  /** A ready release to pack, by id (instead of a ref). */
  release?: string;
  /** The artifact file (default `<app>-<release id>.tar` in the current directory). */
  out?: string;
  /** Put node_modules in (for hosts without registry access). */
  withDependencies?: boolean;
  compression?: Compression;
  /** An OpenSSH private key: writes `<out>.sig` (ssh-keygen -Y sign). */
  sign?: string;
  /** Pack a commit marked bad here (rolled back from, or reverted by the health gate). */
  force?: boolean;
  waitMs?: number;
}

export async function pack(opts: PackOptions = {}): Promise<PackResult> {
  const ctx = createContext(opts);
  let to: string | null = null;
  let sha: string | null = null;
  if (opts.ref !== undefined && opts.release !== undefined)
    throw new UsageError('PACK_TARGET', 'pack takes a ref or a release id, not both', { phase: 'config' });
  const compression = opts.compression ?? DEFAULT_COMPRESSION;
  if (compression !== 'gzip' && compression !== 'brotli')
    throw new UsageError('PACK_COMPRESSION', `unknown compression ${JSON.stringify(compression)}: gzip or brotli`, { phase: 'config' });
  const run = () =>
    withLock(ctx, 'pack', opts.waitMs, async (lock): Promise<PackResult> => {
      await cleanupInterrupted(ctx);
      let built = false;
      let release: ReleaseRecord;
      /** The commit asked for: a ready release with the same inputs may have been built from an earlier one. */
      let commit: string | undefined;
      if (opts.release !== undefined) {
        release = await ctx.store.resolveId(opts.release);
        if (release.status !== 'ready' || !release.manifest)
          throw new UsageError('RELEASE_NOT_READY', `${release.id} is ${release.status}: only a ready release can be packed`, { phase: 'pack' });
      } else {
        await preflight(ctx);
        const resolved = await resolveRelease(ctx, opts.ref ?? 'HEAD');
        const ready = (await ctx.store.list()).filter((r) => r.status === 'ready');
        const hit = findSameInputs(ready, null, resolved.sha, resolved.inputKey);
        const found = hit ? ready.find((r) => r.id === hit.id) : undefined;
        commit = resolved.sha;
        if (found?.manifest) {
          release = found;
          // It serves this commit too: list, status and the artifact say so.
          if (!(found.manifest.commits ?? [found.manifest.sha]).includes(resolved.sha))
            await ctx.store.writeManifest({ ...found.manifest, commits: withCommit(found.manifest.commits ?? [found.manifest.sha], resolved.sha) });
        } else {
          const id = await allocateId(ctx, resolved.sha);
          to = id;
          release = await buildRelease(ctx, opts.ref ?? 'HEAD', resolved, lock, id);
          built = true;
        }
      }
      to = release.id;
      const m = release.manifest!;
      sha = commit ?? m.sha;
      // A commit rolled back from here is not shipped to other hosts either.
      await refuseBadSha(ctx, sha, !!opts.force, 'packing');
      if (m.source === 'artifact') warn(ctx, `${release.id} was itself unpacked from ${m.artifact?.file ?? 'an artifact'}: packing it again`);
      const out = path.resolve(opts.cwd ?? process.cwd(), opts.out ?? artifactFileName(ctx.config.app.name, release.id));
      const outDir = path.dirname(out);
      if (!(await fsp.stat(outDir).catch(() => undefined))?.isDirectory())
        throw new UsageError('PACK_OUT', `the directory of ${out} does not exist`, {
          phase: 'pack',
          hint: 'create it, or pass --out with an existing directory',
        });
      if (isInside(out, path.resolve(ctx.config.releasesDir)))
        throw new UsageError('PACK_OUT', `${out} is inside the releases dir ${ctx.config.releasesDir}`, {
          phase: 'pack',
          hint: 'write artifacts elsewhere (retention owns the releases dir)',
        });
      const manifest = await artifactManifest(ctx, release, !!opts.withDependencies, sha);
      const written = await phase(ctx, 'pack', async () => {
        const key = opts.sign ? path.resolve(opts.cwd ?? process.cwd(), opts.sign) : undefined;
        try {
          const r = await writeArtifact({
            appCwd: release.cwd,
            exclude: [...new Set([...ctx.config.app.envFiles, ...m.envFiles.map((f) => path.basename(f))])],
            withDependencies: !!opts.withDependencies,
            compression,
            manifest,
            out,
            // The release's build time: packing it again writes the same bytes (the same sha256).
            mtime: new Date(m.finishedAt ?? m.createdAt),
            ...(key ? { sign: (sums: string) => signSums(sums, key, ctx.logger) } : {}),
          });
          return { ...r, sig: r.signature };
        } catch (err) {
          if (err instanceof SignatureProblem)
            throw new ReleaseError('ARTIFACT_SIGNATURE', ExitCode.environment, err.message, {
              phase: 'pack',
              hint: 'check the key: ssh-keygen -y -f KEY prints its public half',
            });
          if (err instanceof ArtifactProblem) throw new UsageError('PACK_OUT', err.message, { phase: 'pack' });
          throw err;
        }
      });
      const state = await ctx.store.readState();
      ctx.logger.info(`packed ${release.id} into ${out} (${written.bytes} bytes, sha256 ${written.sha256.slice(0, 12)}…)`);
      return {
        ok: true as const,
        changed: true as const,
        action: 'pack' as const,
        built,
        release: releaseInfo((await ctx.store.get(release.id)) ?? release, state?.active ?? null, ctx.store.buildLog(release.id)),
        artifact: {
          file: out,
          sha256File: `${out}.sha256`,
          signature: written.sig ?? null,
          sha256: written.sha256,
          bytes: written.bytes,
          compression,
          withDependencies: !!opts.withDependencies,
          files: written.manifest.content.files,
          appBytes: written.manifest.content.bytes,
          publicEnv: written.manifest.publicEnv.map((e) => e.name),
        },
        durationsMs: { ...ctx.durations },
        warnings: ctx.warnings,
      };
    });
  return audited(
    ctx,
    'pack',
    () => ({ from: null, to, sha }),
    run,
    (r) => ({ to: r.release.id, sha: sha ?? r.release.sha, detail: `${path.basename(r.artifact.file)} sha256 ${r.artifact.sha256.slice(0, 12)}` }),
  );
}

/** The artifact's manifest from a ready release's own record. */
async function artifactManifest(ctx: Context, release: ReleaseRecord, withDependencies: boolean, sha: string): Promise<Omit<ArtifactManifest, 'content'>> {
  const m = release.manifest!;
  const { config } = ctx;
  let baked = m.publicEnv;
  if (!baked) {
    // Built before releases recorded it: from the env files copied into it and the environment now.
    warn(ctx, `${release.id} predates the record of its build-time public variables: taken from its env files and this environment`);
    const files = [];
    for (const name of m.envFiles) {
      const text = await fsp.readFile(path.join(release.cwd, name), 'utf8').catch(() => undefined);
      if (text !== undefined) files.push({ name, text });
    }
    baked = bakedPublicEnv(ctx, files);
  }
  if (withDependencies && !fs.existsSync(path.join(release.cwd, 'node_modules')))
    throw new UsageError('PACK_NO_DEPENDENCIES', `${release.id} has no node_modules to pack`, { phase: 'pack' });
  return {
    kind: ARTIFACT_KIND,
    format: ARTIFACT_FORMAT,
    // When the release was built (not when it was packed): packing it again gives the same bytes.
    createdAt: m.finishedAt ?? m.createdAt,
    packedOn: os.hostname(),
    app: { name: config.app.name, dir: config.app.dir },
    release: release.id,
    sha,
    ...(m.subject !== undefined ? { subject: m.subject } : {}),
    ...(m.inputKey ? { inputKey: m.inputKey } : {}),
    dependencies: {
      ...(m.lockfileHash ? { lockfileHash: m.lockfileHash } : {}),
      install: config.app.install,
      node: m.node,
      nodeMajor: nodeMajor(m.node),
      ...(m.npm ? { npm: m.npm } : {}),
      platform: process.platform,
      arch: process.arch,
      libc: hostLibc(),
      included: withDependencies,
    },
    build: {
      command: config.app.build,
      ...(m.durationsMs.build !== undefined ? { durationMs: Math.round(m.durationsMs.build) } : {}),
      ...(m.memory?.build ? { peakBytes: m.memory.build.peakBytes } : {}),
    },
    publicEnv: baked,
  };
}

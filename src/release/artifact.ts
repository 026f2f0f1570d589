/**
 * Release artifacts (issue 20): one file that carries a built release to another host, so every host deploys
 * the same bits and only one builds them.
 *
 * The file is an uncompressed tar of exactly two members, like a .deb's control and data:
 *   artifact.json       the manifest (ArtifactManifest): what was built, from what, for which Node/platform,
 *                       and the names and value hashes of the build-time public variables it baked in
 *   app.tar.gz | .br    the built app dir (no env files, no node_modules unless packed with them)
 * Beside it, `<file>.sha256` (sha256sum's format: `sha256sum -c` checks it) and, when signed, `<file>.sig`: an
 * OpenSSH signature (`ssh-keygen -Y sign`, namespace "pm2-release-artifact") of the .sha256 line.
 *
 * Reading never trusts the file: verifyArtifact() hashes it, checks the two members, the manifest's schema, and
 * lists the inner archive (every path relative and inside, no device or fifo, no link leaving it) before
 * anything is written; extractApp() then unpacks the inner archive with node-tar's strict extraction.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import * as tar from 'tar';
import { z } from 'zod';

export const ARTIFACT_KIND = 'pm2-release-artifact';
export const ARTIFACT_FORMAT = 1;
export const MANIFEST_MEMBER = 'artifact.json';
/** A release's own records (store.ts META_DIR): never packed, never unpacked. */
const META_NAME = '.pm2-release';
/** The namespace of its OpenSSH signatures: a signature made for anything else does not verify. */
export const SIGNATURE_NAMESPACE = 'pm2-release-artifact';
export type Compression = 'gzip' | 'brotli';
/** Brotli's quality for packing: 5 is where its size/time curve flattens for JS bundles (11, its default, is ~20x slower). */
const BROTLI_QUALITY = 5;
const INNER: Record<Compression, string> = { gzip: 'app.tar.gz', brotli: 'app.tar.br' };
/** Variables a Next.js build inlines into its output; `build.publicEnv` names more. */
export const PUBLIC_ENV_PREFIX = 'NEXT_PUBLIC_';

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const manifestSchema = z.strictObject({
  kind: z.literal(ARTIFACT_KIND),
  format: z.number().int().min(1),
  createdAt: z.string().min(1).max(64),
  packedOn: z.string().min(1).max(255),
  app: z.strictObject({ name: z.string().min(1).max(200), dir: z.string().min(1).max(500) }),
  release: z.string().regex(/^\d{8}T\d{6}Z-[0-9a-f]{7,40}$/),
  sha: z.string().regex(/^[0-9a-f]{40}$/),
  subject: z.string().max(2000).optional(),
  inputKey: z.string().max(200).optional(),
  dependencies: z.strictObject({
    /** The lockfile's sha256 (none: the app has no package-lock.json). */
    lockfileHash: sha256Hex.optional(),
    install: z.array(z.string()).max(64),
    node: z.string().max(40),
    nodeMajor: z.number().int().min(1),
    npm: z.string().max(40).optional(),
    platform: z.string().max(40),
    arch: z.string().max(40),
    libc: z.enum(['glibc', 'musl', 'none']),
    /** node_modules is in the archive (pack --with-dependencies). */
    included: z.boolean(),
  }),
  build: z.strictObject({
    command: z.array(z.string()).max(64),
    durationMs: z.number().int().min(0).optional(),
    peakBytes: z.number().int().min(0).nullable().optional(),
  }),
  /** Build-time public variables: name and sha256 of `name=value`, never the value. */
  publicEnv: z.array(z.strictObject({ name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), hash: sha256Hex })).max(1000),
  content: z.strictObject({
    member: z.enum([INNER.gzip, INNER.brotli]),
    compression: z.enum(['gzip', 'brotli']),
    /** sha256 of the inner archive as stored. */
    sha256: sha256Hex,
    files: z.number().int().min(0),
    bytes: z.number().int().min(0),
  }),
});
export type ArtifactManifest = z.infer<typeof manifestSchema>;

/** A file that is not a sound artifact: the caller turns it into ARTIFACT_INVALID (or the code given). */
export class ArtifactProblem extends Error {
  constructor(
    message: string,
    readonly code: 'ARTIFACT_INVALID' | 'ARTIFACT_CHECKSUM' = 'ARTIFACT_INVALID',
  ) {
    super(message);
  }
}

/** This host's C library, as Node reports it: a native module built against one does not load on the other. */
export function hostLibc(): 'glibc' | 'musl' | 'none' {
  if (process.platform !== 'linux') return 'none';
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

export function nodeMajor(version: string): number {
  return Number(/^v?(\d+)/.exec(version)?.[1] ?? NaN);
}

/** sha256 of `name=value`: equal values give equal hashes, and the value is not in the artifact. */
export function publicEnvHash(name: string, value: string): string {
  return crypto.createHash('sha256').update(`${name}=${value}`).digest('hex');
}

/**
 * The build-time public variables a build sees: every NEXT_PUBLIC_* and each of `extra` that has a value, from
 * the process env (which wins, as in Next.js) or the env files in Next.js's order (.env.production.local,
 * .env.local, .env.production, .env; others after). `files` maps a file name to its parsed variables.
 */
export function publicEnv(
  files: { name: string; vars: Record<string, string> }[],
  env: Record<string, string | undefined>,
  extra: string[],
): { name: string; hash: string }[] {
  const order = ['.env.production.local', '.env.local', '.env.production', '.env'];
  const rank = (n: string) => (order.includes(n) ? order.indexOf(n) : order.length);
  const sorted = [...files].sort((a, b) => rank(a.name) - rank(b.name));
  const pick = (name: string) => env[name] ?? sorted.find((f) => f.vars[name] !== undefined)?.vars[name];
  const names = new Set<string>(extra);
  for (const k of Object.keys(env)) if (k.startsWith(PUBLIC_ENV_PREFIX)) names.add(k);
  for (const f of files) for (const k of Object.keys(f.vars)) if (k.startsWith(PUBLIC_ENV_PREFIX)) names.add(k);
  const out: { name: string; hash: string }[] = [];
  for (const name of [...names].sort()) {
    const v = pick(name);
    if (v !== undefined) out.push({ name, hash: publicEnvHash(name, v) });
  }
  return out;
}

/** The names whose values differ between what the artifact baked and what this host would bake. */
export function publicEnvMismatch(baked: { name: string; hash: string }[], here: { name: string; hash: string }[]): { name: string; why: string }[] {
  const mine = new Map(here.map((e) => [e.name, e.hash]));
  const theirs = new Map(baked.map((e) => [e.name, e.hash]));
  const out: { name: string; why: string }[] = [];
  for (const [name, hash] of theirs) {
    if (!mine.has(name)) out.push({ name, why: 'set when it was built, not set here' });
    else if (mine.get(name) !== hash) out.push({ name, why: 'a different value here' });
  }
  for (const name of mine.keys()) if (!theirs.has(name)) out.push({ name, why: 'set here, not when it was built' });
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** The default file name: `<app>-<release id>.tar` (the release id holds the UTC time and the sha). */
export function artifactFileName(app: string, releaseId: string): string {
  return `${app.replace(/[^A-Za-z0-9._-]/g, '_')}-${releaseId}.tar`;
}

/** `<hex>  <name>\n`: the line `sha256sum` writes and `sha256sum -c` reads. */
export function checksumLine(hex: string, file: string): string {
  return `${hex}  ${path.basename(file)}\n`;
}

export function parseChecksumLine(text: string): string | undefined {
  return /^([0-9a-f]{64})[ \t]+\*?\S[^\n]*\n?$/.exec(text.trim() + '\n')?.[1];
}

async function hashFile(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  await pipeline(fs.createReadStream(file), h);
  return h.digest('hex');
}

export interface PackInput {
  /** The release's app dir. */
  appCwd: string;
  /** File names that never go in, at any depth (the env files: they hold secrets; a Next.js standalone build copies them). */
  exclude: string[];
  withDependencies: boolean;
  compression: Compression;
  /** The manifest without `content` (filled here). */
  manifest: Omit<ArtifactManifest, 'content'>;
  out: string;
  /** Every entry's mtime in the outer archive (the release's build time): packing a release again gives the same bytes. */
  mtime: Date;
  /** Signs the .sha256 (still under its temporary name) and returns the signature file: renamed with the rest. */
  sign?: (sumsFile: string) => Promise<string>;
}

/**
 * Writes the artifact and its .sha256 next to it, each through a temporary name and a rename: a pack that is
 * killed leaves no file that looks complete. Returns the manifest and the artifact's sha256.
 */
export async function writeArtifact(input: PackInput): Promise<{ manifest: ArtifactManifest; sha256: string; bytes: number; signature?: string }> {
  if ((await fsp.stat(input.out).catch(() => undefined))?.isDirectory()) throw new ArtifactProblem(`${input.out} is a directory: name the artifact file`);
  const stage = await fsp.mkdtemp(path.join(path.dirname(input.out), '.pack-'));
  const tmp = (suffix: string) => `${input.out}${suffix}.partial-${process.pid}`;
  try {
    const member = INNER[input.compression];
    const names = new Set(input.exclude);
    const top = (await fsp.readdir(input.appCwd)).filter((n) => !names.has(n) && n !== META_NAME && (input.withDependencies || n !== 'node_modules')).sort();
    let files = 0;
    let bytes = 0;
    const innerFile = path.join(stage, member);
    const keep = (p: string, st: fs.Stats | tar.ReadEntry) => {
      if (names.has(path.posix.basename(p.replace(/\/+$/, '')))) return false;
      if ('isFile' in st && st.isFile()) {
        files++;
        bytes += st.size;
      }
      return true;
    };
    const common = { cwd: input.appCwd, file: innerFile, portable: true, filter: keep };
    if (input.compression === 'gzip') await tar.c({ ...common, gzip: { level: 6 } }, top);
    // node-tar passes the options on to zlib's BrotliCompress; its types only name gzip's.
    else await tar.c({ ...common, brotli: { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY } } as unknown as { level?: number } }, top);
    const manifest: ArtifactManifest = {
      ...input.manifest,
      content: { member, compression: input.compression, sha256: await hashFile(innerFile), files, bytes },
    };
    await fsp.writeFile(path.join(stage, MANIFEST_MEMBER), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o644 });
    await tar.c({ cwd: stage, file: tmp(''), portable: true, mtime: input.mtime }, [MANIFEST_MEMBER, member]);
    const sha256 = await hashFile(tmp(''));
    const size = (await fsp.stat(tmp(''))).size;
    await fsp.writeFile(tmp('.sha256'), checksumLine(sha256, input.out));
    // Signed before anything is renamed: a signing failure leaves no artifact that looks complete.
    const sig = input.sign ? await input.sign(tmp('.sha256')) : undefined;
    await fsp.rm(`${input.out}.sig`, { force: true });
    await fsp.rename(tmp(''), input.out);
    await fsp.rename(tmp('.sha256'), `${input.out}.sha256`);
    if (sig) await fsp.rename(sig, `${input.out}.sig`);
    return { manifest, sha256, bytes: size, ...(sig ? { signature: `${input.out}.sig` } : {}) };
  } finally {
    await fsp.rm(stage, { recursive: true, force: true });
    // What a failure after the signature left: the temporary artifact, .sha256 and the .sig ssh-keygen wrote beside it.
    for (const f of [tmp(''), tmp('.sha256'), `${tmp('.sha256')}.sig`]) await fsp.rm(f, { force: true });
  }
}

export interface VerifiedArtifact {
  file: string;
  /** sha256 of the whole file: the artifact's identity (content-addressed). */
  sha256: string;
  manifest: ArtifactManifest;
  /** The .sha256 line as read once: the signature is checked over exactly this text. */
  sumsText: string;
  /** The signer's principal, when a signature was checked. */
  signedBy?: string;
}

/** A read of the file that hashes what it reads: what is parsed is what was hashed. */
function tappedRead(file: string): { stream: fs.ReadStream; digest: () => string } {
  const h = crypto.createHash('sha256');
  const stream = fs.createReadStream(file);
  stream.on('data', (c) => h.update(c));
  return { stream, digest: () => h.digest('hex') };
}

/**
 * Reads the artifact once: its sha256 against `<file>.sha256`, the two members in order, the manifest's schema
 * and format, the inner archive's sha256 against the manifest and each of its entries. Writes nothing.
 * Throws ArtifactProblem with a one-line cause.
 */
export async function verifyArtifact(file: string, opts: { envNames?: string[] } = {}): Promise<VerifiedArtifact> {
  const st = await fsp.lstat(file).catch(() => undefined);
  if (!st) throw new ArtifactProblem(`${file} does not exist`);
  if (!st.isFile()) throw new ArtifactProblem(`${file} is not a regular file`);
  const sumText = await fsp.readFile(`${file}.sha256`, 'utf8').catch(() => undefined);
  if (sumText === undefined) throw new ArtifactProblem(`${file}.sha256 is missing: pack writes it beside the artifact; copy both`);
  const expected = parseChecksumLine(sumText);
  if (!expected) throw new ArtifactProblem(`${file}.sha256 is not a sha256sum line`);

  const members: { path: string; type: string; size: number }[] = [];
  let manifestText = '';
  const inner = crypto.createHash('sha256');
  const innerEntries: string[] = [];
  const checker = new EntryChecker(opts.envNames ?? []);
  let innerProblem: string | undefined;
  let innerDone: Promise<void> | undefined;

  const parser = new tar.Parser({
    strict: true,
    onReadEntry: (entry) => {
      members.push({ path: entry.path, type: entry.type, size: entry.size });
      if (entry.path === MANIFEST_MEMBER && members.length === 1 && entry.type === 'File' && entry.size <= 1024 * 1024) {
        entry.on('data', (c: Buffer) => (manifestText += c.toString('utf8')));
        return;
      }
      if ((entry.path === INNER.gzip || entry.path === INNER.brotli) && members.length === 2 && entry.type === 'File') {
        const list = new tar.Parser({
          strict: true,
          onReadEntry: (e) => {
            const why = checker.check(e.path, e.type, e.linkpath);
            if (why && !innerProblem) innerProblem = why;
            innerEntries.push(e.path);
            e.resume();
          },
        });
        list.on('warn', (_code: string, message: string) => (innerProblem ??= `inner archive: ${message}`));
        entry.on('data', (c: Buffer) => inner.update(c));
        innerDone = pipeline(entry, decompressor(entry.path), list).catch((err: Error) => {
          innerProblem ??= `inner archive: ${err.message}`;
        });
        return;
      }
      entry.resume();
    },
  });
  let parseProblem: string | undefined;
  parser.on('warn', (_code: string, message: string) => (parseProblem ??= message));
  // The checksum first: a truncated or altered file is told as such, before its contents are looked at.
  const actual = await hashFile(file);
  if (actual !== expected)
    throw new ArtifactProblem(
      `sha256 of ${path.basename(file)} is ${actual.slice(0, 12)}…, its .sha256 says ${expected.slice(0, 12)}…: truncated or altered`,
      'ARTIFACT_CHECKSUM',
    );
  const read = tappedRead(file);
  try {
    await pipeline(read.stream, parser);
  } catch (err) {
    parseProblem ??= (err as Error).message;
  }
  // Changed since the checksum was taken: what was parsed is not what was hashed.
  if (!parseProblem && read.digest() !== expected) throw new ArtifactProblem(`${path.basename(file)} changed while it was checked`, 'ARTIFACT_CHECKSUM');
  await innerDone;
  if (parseProblem) throw new ArtifactProblem(`${path.basename(file)} is not a readable tar: ${parseProblem}`);
  if (members.length !== 2 || members[0].path !== MANIFEST_MEMBER || !Object.values(INNER).includes(members[1].path))
    throw new ArtifactProblem(
      `${path.basename(file)} is not a pm2-release artifact: expected ${MANIFEST_MEMBER} and app.tar.gz (or .br), found ${
        members
          .map((m) => m.path)
          .slice(0, 4)
          .join(', ') || 'nothing'
      }`,
    );
  let json: unknown;
  try {
    json = JSON.parse(manifestText);
  } catch {
    throw new ArtifactProblem(`${MANIFEST_MEMBER} is not JSON`);
  }
  const kind = (json as { kind?: unknown; format?: unknown } | null)?.kind;
  const format = (json as { format?: unknown } | null)?.format;
  if (kind !== ARTIFACT_KIND) throw new ArtifactProblem(`${path.basename(file)} is not a pm2-release artifact (kind ${JSON.stringify(kind ?? null)})`);
  if (typeof format === 'number' && format > ARTIFACT_FORMAT)
    throw new ArtifactProblem(`artifact format ${format} is newer than this pm2-release reads (${ARTIFACT_FORMAT}): upgrade pm2-release here`);
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new ArtifactProblem(`${MANIFEST_MEMBER}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const manifest = parsed.data;
  if (manifest.content.member !== members[1].path)
    throw new ArtifactProblem(`${MANIFEST_MEMBER} names ${manifest.content.member}, the file holds ${members[1].path}`);
  if (inner.digest('hex') !== manifest.content.sha256) throw new ArtifactProblem(`${manifest.content.member} does not match the sha256 its manifest records`);
  if (innerProblem) throw new ArtifactProblem(innerProblem);
  if (innerEntries.length === 0) throw new ArtifactProblem(`${manifest.content.member} is empty`);
  return { file, sha256: actual, manifest, sumsText: sumText };
}

/** The inner archive's decompression, by its member name (node-tar only sniffs gzip; zlib says what failed). */
function decompressor(member: string): zlib.Gunzip | zlib.BrotliDecompress {
  return member === INNER.brotli ? zlib.createBrotliDecompress() : zlib.createGunzip();
}

/**
 * The entries of one inner archive, in order: each checked alone (entryProblem), then against the links
 * before it. A path or a link target that goes through an earlier symbolic link is refused (`s -> .`, then
 * `e -> s/..` would leave the app dir on disk while every string looks inside), and so are env files (the
 * host supplies its own) and pm2-release's own records.
 */
export class EntryChecker {
  private readonly links = new Set<string>();
  constructor(private readonly envNames: string[]) {}

  check(p: string, type: string, linkpath?: string): string | undefined {
    const alone = entryProblem(p, type, linkpath);
    if (alone) return alone;
    const norm = path.posix.normalize(p.replace(/\/+$/, '')).replace(/^\.\//, '');
    if (norm === '.' || norm === '') return undefined;
    const parts = norm.split('/');
    if (parts[0] === META_NAME) return `entry ${p}: pm2-release's own records`;
    if (type !== 'Directory' && this.envNames.includes(parts[parts.length - 1])) return `entry ${p}: an env file (each host supplies its own)`;
    if (this.walk(parts.slice(0, -1)) !== 'inside') return `entry ${p}: goes through a link`;
    if (type === 'SymbolicLink' || type === 'Link') {
      // Walked component by component, not normalized first: `s/..` through the link s is not `.`.
      const base = type === 'Link' ? [] : parts.slice(0, -1);
      const walked = this.walk([...base, ...(linkpath ?? '').split('/')]);
      if (walked === 'through') return `entry ${p}: a link through a link`;
      if (walked === 'outside') return `entry ${p}: a link that leaves the app dir`;
    }
    if (type === 'SymbolicLink') this.links.add(norm);
    return undefined;
  }

  /** Follows path parts from the app dir: leaves it, passes an earlier symbolic link, or stays inside. */
  private walk(parts: string[]): 'inside' | 'outside' | 'through' {
    const at: string[] = [];
    for (const part of parts) {
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (at.length === 0) return 'outside';
        at.pop();
        continue;
      }
      at.push(part);
      if (this.links.has(at.join('/'))) return 'through';
    }
    return 'inside';
  }
}

/** Why one entry of the inner archive may not be unpacked, or undefined. */
export function entryProblem(p: string, type: string, linkpath?: string): string | undefined {
  const norm = p.replace(/\/+$/, '');
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) return `entry ${p}: an absolute path`;
  if (norm.split('/').includes('..')) return `entry ${p}: leaves the app dir`;
  if (norm === '' || norm === '.') return undefined;
  if (!['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link'].includes(type))
    return `entry ${p}: a ${type} (only files, directories and links)`;
  if (type === 'SymbolicLink' || type === 'Link') {
    const target = linkpath ?? '';
    if (target.startsWith('/')) return `entry ${p}: a link to an absolute path`;
    const resolved = path.posix.normalize(type === 'Link' ? target : path.posix.join(path.posix.dirname(norm), target));
    if (resolved === '..' || resolved.startsWith('../')) return `entry ${p}: a link that leaves the app dir`;
  }
  return undefined;
}

/**
 * Unpacks the (verified) artifact's app into `dest`: the inner member streamed from the file into node-tar's
 * strict extraction (no owner kept, no absolute paths, nothing through a link).
 */
export async function extractApp(v: VerifiedArtifact, dest: string, signal?: AbortSignal): Promise<void> {
  await fsp.mkdir(dest, { recursive: true });
  let done: Promise<void> | undefined;
  const parser = new tar.Parser({
    strict: true,
    onReadEntry: (entry) => {
      if (entry.path !== v.manifest.content.member) {
        entry.resume();
        return;
      }
      const x = tar.x({ cwd: dest, strict: true, preserveOwner: false, noMtime: false });
      done = pipeline(entry, decompressor(entry.path), x, { signal });
      // Settled below; a cancel rejects both pipelines at once.
      done.catch(() => undefined);
    },
  });
  const read = tappedRead(v.file);
  try {
    await pipeline(read.stream, parser, { signal });
    if (!done) throw new ArtifactProblem(`${v.manifest.content.member} vanished from ${v.file} since it was verified`);
    await done;
  } catch (err) {
    if (signal?.aborted || err instanceof ArtifactProblem) throw err;
    throw new ArtifactProblem(`${path.basename(v.file)} could not be unpacked: ${(err as Error).message.split('\n')[0]}`);
  }
  // What was unpacked is what was verified: the bytes read now are hashed as they are read.
  if (read.digest() !== v.sha256) throw new ArtifactProblem(`${v.file} changed between its check and its unpacking`, 'ARTIFACT_CHECKSUM');
}

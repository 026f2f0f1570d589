// Rendered per request: shows the build's version and the release PM2 runs it from.
// The bench rewrites this file for each commit (bench/next.mjs pageSource).
export const dynamic = 'force-dynamic';

const VERSION = 'v1';

export default function Page() {
  return (
    <main>
      <h1>{`version=${VERSION}`}</h1>
      <p>{`release=${process.env.RELEASE_ID ?? 'none'}`}</p>
    </main>
  );
}

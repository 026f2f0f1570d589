// A static page (prerendered at build time).
export default function About() {
  return (
    <main>
      <h1>about</h1>
      <p>A small but real Next.js 15 app for the pm2-release benchmark.</p>
    </main>
  );
}

import Nav from './nav';

export const metadata = { title: 'pm2-release bench: Next.js app' };

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>
        <Nav />
        {children}
      </body>
    </html>
  );
}

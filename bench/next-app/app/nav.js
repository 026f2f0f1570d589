'use client';
// A client component: client-side navigation between the pages (next/link prefetches their chunks) and a
// bit of state, so the build emits several content-hashed chunks under .next/static/chunks/.
import Link from 'next/link';
import { usePathname } from 'next/navigation';
import { useState } from 'react';

export default function Nav() {
  const pathname = usePathname();
  const [clicks, setClicks] = useState(0);
  return (
    <nav>
      <Link href="/">home</Link> | <Link href="/about">about</Link> | <Link href="/env">env</Link>
      <button type="button" onClick={() => setClicks((n) => n + 1)}>{`clicks=${clicks}`}</button>
      <span>{` at ${pathname}`}</span>
    </nav>
  );
}

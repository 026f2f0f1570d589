// NEXT_PUBLIC_* is inlined at build time: the value of the env file the build saw, whatever runs it later.
export default function Env() {
  return (
    <main>
      <h1>env</h1>
      <p>{`greeting=${process.env.NEXT_PUBLIC_BENCH_GREETING ?? 'unset'}`}</p>
    </main>
  );
}

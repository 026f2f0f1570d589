/**
 * Small pure renderings of quantities, shared by the CLI's output and the library's messages (doctor's
 * checks, the soak's verdict, the disk-full error): below both, so neither imports the other for them.
 */
/** A share of requests (0.0123) with one decimal: "1.2 %". */
export function ratePercent(rate: number): string {
  return `${(rate * 100).toFixed(1)} %`;
}

export function bytes(n: number | null): string {
  if (n === null) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

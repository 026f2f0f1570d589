export function alive(pid: number): boolean;
export function daemonsOf(pm2Home: string): number[];
export function stopDaemon(opts: { pm2Bin: string; pm2Home: string; env?: Record<string, string | undefined>; log?: (line: string) => void }): void;

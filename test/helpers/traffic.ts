/**
 * Steady traffic for switch tests: keep-alive clients (each its own agent, one socket) plus a poller on a
 * fresh connection per request, all on loopback, until stopped. Counts answers, failures and which
 * releases answered. Bounded: it stops by itself after `maxMs`.
 */
import http from 'node:http';

export interface TrafficResult {
  ok: number;
  failures: string[];
  releases: Map<string, number>;
  /** Longest time between two successful answers (any client), in ms: for reports, not assertions. */
  maxGapMs: number;
}

export interface Traffic {
  stop(): Promise<TrafficResult>;
  /** Counts so far. */
  snapshot(): TrafficResult;
}

function get(port: number, path: string, agent: http.Agent | false): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}

export function startTraffic(port: number, opts: { clients?: number; paths?: string[]; maxMs?: number; pauseMs?: number } = {}): Traffic {
  const result: TrafficResult = { ok: 0, failures: [], releases: new Map(), maxGapMs: 0 };
  let lastOk: number | undefined;
  let running = true;
  const until = Date.now() + (opts.maxMs ?? 300_000);
  const paths = opts.paths ?? ['/'];
  const agents = Array.from({ length: opts.clients ?? 4 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const loop = async (agent: http.Agent | false, n: number) => {
    for (let i = n; running && Date.now() < until; i++) {
      const path = paths[i % paths.length];
      try {
        const r = await get(port, path, agent);
        if (r.status >= 200 && r.status < 400) {
          result.ok++;
          const t = performance.now();
          if (lastOk !== undefined) result.maxGapMs = Math.max(result.maxGapMs, t - lastOk);
          lastOk = t;
          const m = /\(release ([^)]+)\)/.exec(r.body);
          if (m) result.releases.set(m[1], (result.releases.get(m[1]) ?? 0) + 1);
        } else result.failures.push(`${path}: ${r.status}`);
      } catch (err) {
        result.failures.push(`${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      if (opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
    }
  };
  const loops = [...agents.map((a, i) => loop(a, i)), loop(false, 0)];
  const snapshot = (): TrafficResult => ({
    ok: result.ok,
    failures: [...result.failures],
    releases: new Map(result.releases),
    maxGapMs: Math.round(result.maxGapMs),
  });
  return {
    snapshot,
    async stop() {
      running = false;
      await Promise.all(loops);
      for (const a of agents) a.destroy();
      return snapshot();
    },
  };
}

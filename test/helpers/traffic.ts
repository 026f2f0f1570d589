/**
 * Steady traffic for switch tests: scripts/traffic.mjs (shared with the bench, which counts the same way) on
 * 127.0.0.1:`port`: keep-alive clients (each its own agent, one socket) plus a poller on a fresh connection
 * per request, until stopped. A 2xx or 3xx is ok; anything else is a failure `"<path>: <status|code>"`
 * (drops, refused connections and timeouts included); `releases` counts which release answered. Bounded: it
 * stops by itself after `maxMs` (default 5 min).
 */
import { startTraffic as start, type Traffic, type TrafficOptions, type TrafficResult } from '../../scripts/traffic.mjs';

export type { Traffic, TrafficResult };

/** A request may wait 20 s (a release that answers slowly behind the router's hold is slow, not failed). */
const TEST_TIMEOUT_MS = 20_000;

export function startTraffic(port: number, opts: Omit<TrafficOptions, 'url' | 'port'> = {}): Traffic {
  return start({ timeoutMs: TEST_TIMEOUT_MS, ...opts, port });
}

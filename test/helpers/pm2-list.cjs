// `pm2 jlist` for the tests without the pm2 CLI: one RPC (getMonitorData) on the daemon's socket with the
// bundled PM2's own axon modules, printed as JSON. A Node start and two small modules instead of the CLI's
// whole PM2 (~5× less CPU per call, and the suite calls it hundreds of times). Exit 3 when no daemon
// answers: the caller falls back to the CLI (which, unlike this, starts one).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const home = process.argv[2];
const sock = path.join(home, 'rpc.sock');
if (!fs.existsSync(sock)) process.exit(3);
const pm2Dir = path.dirname(require.resolve('pm2/package.json'));
const axon = require(path.join(pm2Dir, 'modules/pm2-axon'));
const rpc = require(path.join(pm2Dir, 'modules/pm2-axon-rpc'));
const req = axon.socket('req');
const client = new rpc.Client(req);
const give = (code) => {
  try {
    req.close();
  } catch {
    /* closing */
  }
  process.exit(code);
};
setTimeout(() => give(3), 10_000).unref();
req.on('close', () => give(3));
req.on('error', () => give(3));
req.once('connect', () =>
  client.call('getMonitorData', {}, (err, list) => {
    if (err) return give(3);
    process.stdout.write(JSON.stringify(list), () => give(0));
  }),
);
req.connect(sock);
req.set('retry timeout', 0);

#!/usr/bin/env node
// The entry's former path, dist/bin.js, forwarding to the entry (cli/bin.ts). Kept because things outside
// this repository still point at it: PM2 dumps of pm2-release-webhook (`pm2 resurrect` after an upgrade),
// the operators' wrapper scripts of the runbook, executor bridges that spawn it. Without this file, an
// upgrade that did not remove the old dist/ would quietly run the stale dist/bin.js; one that did, nothing.
import './cli/bin.js';

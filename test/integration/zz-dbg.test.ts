import { it } from 'vitest';
import { list } from '../../src/index.js';
import { cli, createSandbox, get } from '../helpers/sandbox.js';
it('dbg', async () => {
  const sb = await createSandbox({ keep: 3 });
  try {
    let r = cli(sb, ['deploy', '--json']); console.log(r.code);
    let t = Date.now(); cli(sb, ['list', '--json']); console.log('cli list', Date.now() - t);
    t = Date.now(); cli(sb, ['status', '--json']); console.log('cli status', Date.now() - t);
    t = Date.now(); sb.jlist(); console.log('jlist', Date.now() - t);
    t = Date.now(); await list({ configPath: sb.configPath, env: sb.env }); console.log('api list', Date.now() - t);
    sb.commit('v2', { 'version.txt': 'v2\n' });
    console.log(JSON.stringify(await get(`http://127.0.0.1:${sb.port}/`)));
    t = Date.now(); r = cli(sb, ['deploy', '--json']); console.log('deploy', Date.now() - t, JSON.parse(r.stdout).durationsMs);
    console.log(JSON.stringify(await get(`http://127.0.0.1:${sb.port}/`)));
  } finally { await sb.close(); }
}, 120000);

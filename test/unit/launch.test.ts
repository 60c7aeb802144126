import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, ROOT, SERVER_NODE_FLAGS } from '../helpers/mirror-process.ts';

test('the server runs with the same node flags however it is started (shebang, npm start, tests)', () => {
  const shebang = readFileSync(BIN, 'utf8').split('\n')[0] ?? '';
  assert.equal(shebang, `#!/usr/bin/env -S node ${SERVER_NODE_FLAGS.join(' ')}`);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
  assert.match(pkg.scripts.start, new RegExp(`node ${SERVER_NODE_FLAGS.join(' ')} bin/regmirror\\.js serve$`));
});

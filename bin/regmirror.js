#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4: V8's young generation at most 2 x 4 MiB instead of 2 x 16 MiB. The
// server's per-request garbage dies young, so smaller semi-spaces cost no throughput and keep
// about 22 MiB less resident under load (issue 7). `npm start` passes the same flag.
// Runs the compiled build (dist/, made by `npm ci` through `prepare`, or `npm run build`). A
// checkout with sources only runs them through tsx when it is installed (a development install);
// a production install (`npm ci --omit=dev`) always has dist/.
import { existsSync } from 'node:fs';

const built = new URL('../dist/cli/main.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write('regmirror: no build in dist/: run `npm run build` (or `npm ci`, which builds)\n');
    process.exit(1);
  }
  register();
  await import('../src/cli/main.ts');
}

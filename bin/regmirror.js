#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4: V8's young generation at most 2 x 4 MiB instead of 2 x 16 MiB. The
// server's per-request garbage dies young, so smaller semi-spaces cost no throughput and keep
// about 22 MiB less resident under load (issue 7). `npm start` passes the same flag.
// Runs the compiled build (dist/, made by `npm run build`, which `npm ci` runs as `prepare`).
// Without a build (a checkout where only sources exist), runs the TypeScript sources through tsx.
import { existsSync } from 'node:fs';

const built = new URL('../dist/cli/main.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}

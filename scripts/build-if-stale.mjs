#!/usr/bin/env node
// Builds dist/ with tsc (tsconfig.build.json) only when it is missing or older than a source file,
// so `npm start` starts at once on a current build, and `npm ci` (prepare) builds a fresh clone.
// TypeScript is a production dependency for this one step: `npm ci --omit=dev` on a clone must
// still be able to build; nothing is compiled when the server starts. The build here emits without
// type checking (--noCheck: a production install has no @types packages); `npm run build` and
// `npm test` check types.
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const marker = join(root, 'dist', 'cli', 'main.js');

/** The newest modification time under `dir` (files ending in `ext`). */
function newest(dir, ext) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p, ext));
    else if (e.name.endsWith(ext)) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

const src = join(root, 'src');
if (!existsSync(src)) process.exit(0); // an installed package: dist/ is all there is
const inputs = Math.max(newest(src, '.ts'), statSync(join(root, 'tsconfig.json')).mtimeMs, statSync(join(root, 'tsconfig.build.json')).mtimeMs);
if (existsSync(marker) && newest(join(root, 'dist'), '.js') >= inputs) process.exit(0);
let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  process.stderr.write('regmirror: dist/ is missing or older than src/, and TypeScript is not installed: run `npm ci` (it installs typescript and builds)\n');
  process.exit(1);
}
// tsconfig.build.json without `types` (a production install has no @types/node to name).
const config = join(root, 'node_modules', '.regmirror-tsconfig.build.json');
writeFileSync(config, JSON.stringify({ extends: join(root, 'tsconfig.build.json'), compilerOptions: { types: [] } }));
process.stderr.write('regmirror: building dist/ (tsc -p tsconfig.build.json --noCheck)\n');
execFileSync(process.execPath, [tsc, '-p', config, '--noCheck'], { stdio: 'inherit', cwd: root });

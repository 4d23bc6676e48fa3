#!/usr/bin/env node
// Bundle sizes, min+gzip (docs/client.md, "Size"): each entry bundled on its own with everything it
// imports (React and TanStack Query left out: peers), minified by esbuild, gzipped at level 9.
// The updates client alone must stay within its budget (10 KB): the build fails otherwise.
import { gzipSync } from 'node:zlib';

import { build } from 'esbuild';

const BUDGET = { 'src/updates.ts': 10 * 1024 };
const ENTRIES = ['src/updates.ts', 'src/rest.ts', 'src/index.ts', 'src/react.ts'];

let over = false;
const rows = [];
for (const entry of ENTRIES) {
  const result = await build({
    entryPoints: [entry], bundle: true, minify: true, format: 'esm', target: 'es2022', write: false,
    external: ['react', 'react/jsx-runtime', '@tanstack/react-query'], logLevel: 'silent',
  });
  const code = result.outputFiles[0].contents;
  const gzip = gzipSync(code, { level: 9 }).length;
  rows.push({ entry, min: code.length, gzip });
  if (BUDGET[entry] && gzip > BUDGET[entry]) over = true;
}
for (const { entry, min, gzip } of rows) {
  const budget = BUDGET[entry] ? ` (budget ${(BUDGET[entry] / 1024).toFixed(1)} KB)` : '';
  console.log(`size ${entry.padEnd(16)} ${(min / 1024).toFixed(1).padStart(6)} KB min  ${(gzip / 1024).toFixed(1).padStart(5)} KB min+gzip${budget}`);
}
if (over) {
  console.error('The updates client is over its size budget.');
  process.exit(1);
}

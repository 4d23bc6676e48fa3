#!/usr/bin/env node
// The example app's bundle (example/dist/app.js): React, TanStack Query and the kit, from the
// package's own sources by its published names (@records/client, @records/client/react).
import { build } from 'esbuild';

await build({
  entryPoints: ['example/src/main.tsx'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  jsx: 'automatic',
  outfile: 'example/dist/app.js',
  alias: { '@records/client/react': './src/react.ts', '@records/client': './src/index.ts' },
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
});
console.log('wrote example/dist/app.js');

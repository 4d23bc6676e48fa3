import { defineConfig, type Options } from 'tsup';

// The package's build (dist/: ESM + declarations, one entry per subpath, shared code split out so
// nothing is bundled twice), and the console's bundle: the updates and REST clients in one
// self-contained ES module under the Django app's static files (docs/client.md, "The console's bundle").
// KIT_BUNDLE_ONLY=1 builds only the console's bundle, into KIT_BUNDLE_DIR when set (the check that
// the committed bundle is what the sources build: tests/clients/test_js_kit.py).
const bundleOnly = process.env.KIT_BUNDLE_ONLY === '1';
const bundleDir = process.env.KIT_BUNDLE_DIR || '../../realtime/static/realtime/kit';

const configs: Options[] = [
  {
    entry: { index: 'src/index.ts', updates: 'src/updates.ts', rest: 'src/rest.ts', react: 'src/react.ts' },
    format: ['esm'],
    dts: true,
    splitting: true,
    treeshake: true,
    clean: true,
    sourcemap: false,
    target: 'es2022',
    external: ['react', '@tanstack/react-query'],
    outDir: 'dist',
  },
  {
    entry: { 'records-client': 'src/index.ts' },
    format: ['esm'],
    dts: false,
    splitting: false,
    treeshake: true,
    minify: true,
    clean: false,
    sourcemap: false,
    target: 'es2022',
    outDir: bundleDir,
    noExternal: ['openapi-fetch'], // self-contained: the browser loads it as it is
    banner: { js: '/* @records/client: built from clients/js (npm run build); do not edit. docs/client.md */' },
  },
];

export default defineConfig(bundleOnly ? configs.slice(1) : configs);

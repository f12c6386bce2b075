// Bundles tsc's output (dist/src) into dist/bundle with esbuild: the CLI, the vCPU thread and
// the box's KVM holder, each in the folder it has in dist/src, and chunks one folder deep, so
// that src/util/entry-points.ts finds them (see there). koffi stays outside: it loads a native
// library from its own package folder.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const out = 'dist/bundle';
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: ['cli/main.js', 'vmm/vcpu-worker.js', 'box/kvm-holder.js'].map(
    (entry) => `dist/src/${entry}`,
  ),
  outbase: 'dist/src',
  outdir: out,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['koffi'],
  // CommonJS dependencies call require(), which an ES module does not have.
  banner: {
    js: [
      "import { createRequire as createRequireForBundle } from 'node:module';",
      'const require = createRequireForBundle(import.meta.url);',
    ].join('\n'),
  },
  logLevel: 'warning',
});

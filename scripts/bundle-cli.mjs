/**
 * Bundles the compiled `ttg` command (dist/engine/cli.js) in place, so that a worker starts
 * by reading a few files instead of resolving, reading and compiling about 150 modules
 * (ioredis alone is 60). Run by `npm run build` after tsc.
 *
 * Measured on the 2-core machine, one worker, a one-chunk Redis sweep, spawn → exit, medians of
 * 12 interleaved pairs at load 3.3: 287 ms unbundled, 221 ms bundled; CPU 270 → 200 ms
 * (docs/bench/queue-path-log.md).
 *
 * What stays as it is:
 * - every other file of dist/ (tests and the bench import them; the pool thread loads
 *   dist/engine/thread.js);
 * - the output keeps the depth of dist/engine/ (cli.js and its chunks sit there), and each
 *   module's `import.meta.url` is rewritten to the URL of its own compiled file, so paths
 *   made from it (the Lua scripts, the kernel's .wasm, the web page, package.json, the pool's
 *   thread.js) point where they did;
 * - packages that load files next to their own (piscina starts its worker file by path,
 *   assemblyscript its compiler, prom-client) are left in node_modules; so is the bench
 *   (`ttg bench`), which loads BullMQ, a dev dependency.
 */
import { build } from 'esbuild';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const outdir = path.join(dist, 'engine');

/** Each compiled module's import.meta.url, as the URL of the file it came from. */
const ownUrl = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      const source = await fs.readFile(args.path, 'utf8');
      if (!args.path.startsWith(dist + path.sep) || !source.includes('import.meta.url')) return undefined;
      const rel = path.relative(outdir, args.path).split(path.sep).join('/');
      return { contents: source.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`), loader: 'js' };
    });
  },
};

/** `ttg bench` imports ../bench/run.js: left as a file of dist/ (it needs BullMQ, a dev dependency). */
const benchOutside = {
  name: 'bench-outside',
  setup(b) {
    b.onResolve({ filter: /\/bench\/run\.js$/ }, (args) => ({ path: args.path, external: true }));
  },
};

// A second run over its own output would bundle the bundle: start from tsc's output, and drop old chunks.
const entry = path.join(outdir, 'cli.js');
if ((await fs.readFile(entry, 'utf8')).includes('__ttgRequire')) {
  throw new Error(`${entry} is already bundled: run tsc -p tsconfig.json first (npm run build:ts does both)`);
}
for (const name of await fs.readdir(outdir)) if (/^cli-[A-Z0-9]+\.js(\.map)?$/.test(name)) await fs.rm(path.join(outdir, name));

await build({
  entryPoints: [entry],
  outdir,
  allowOverwrite: true,
  bundle: true,
  splitting: true,
  chunkNames: 'cli-[hash]',
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['piscina', 'assemblyscript', 'assemblyscript/*', 'prom-client'],
  // ioredis and amqplib are CommonJS and require node's modules; an ES bundle has no `require`.
  banner: { js: "import { createRequire as __ttgRequire } from 'node:module'; const require = __ttgRequire(import.meta.url);" },
  plugins: [ownUrl, benchOutside],
  sourcemap: true,
  logLevel: 'warning',
});

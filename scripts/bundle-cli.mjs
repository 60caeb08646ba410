/**
 * Bundles the compiled `ttg` command (dist/engine/cli.js) in place, so that a worker starts
 * by reading a few files instead of resolving, reading and compiling about 150 modules
 * (ioredis alone is 60). Run by `npm run build` after tsc.
 *
 * Measured on the 2-core machine, one worker, a one-chunk Redis sweep, spawn → exit, medians of
 * 12 interleaved pairs at load 3.3: 287 ms unbundled, 221 ms bundled; CPU 270 → 200 ms
 * (docs/bench/queue-path-log.md).
 *
 * The broker clients (ioredis, amqplib) are not in the chunks: each is a CommonJS script of its own
 * (dist/engine/vendor-<name>.cjs) that dist/engine/vendor.js runs from V8's code cache, which this script
 * makes for V8's flags as a worker and as a short command set them (see below). Spawn → first chunk of
 * one worker, 12–16 interleaved runs: Redis 89 → 83 ms, RabbitMQ 120.5 → 112 ms; in the queue bench
 * ~15–20 ms (docs/bench/queue-path-log.md, entry 26). One bundle of everything, run from one cache, gained
 * ~10 ms more but made a worker's memory grow with the length of its sweep (entry 26).
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
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';

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
for (const name of await fs.readdir(outdir)) {
  if (/^(cli-[A-Z0-9]+\.js(\.map)?|vendor-[a-z]+\.cjs|vendor-[a-z]+-[0-9a-f]+-\d+\.cache(\.\d+)?)$/.test(name)) await fs.rm(path.join(outdir, name));
}

/**
 * The two broker clients, ioredis and amqplib (~700 kB of JavaScript between them), are each bundled into a
 * CommonJS script of their own, dist/engine/vendor-<name>.cjs, which dist/engine/vendor.js (written below)
 * runs through vm.Script with V8's code cache: V8 then skips parsing them at every start (Node 20 gives a
 * code cache to vm.Script only, not to ES modules). What the bundle imports of them, `Redis` and `connect`,
 * is what its shims hand on. tsc's own files (which the tests import) still import the packages.
 */
const VENDORS = { ioredis: ['Redis'], amqplib: ['connect'] };
for (const name of Object.keys(VENDORS)) {
  await build({
    stdin: { contents: `module.exports = require(${JSON.stringify(name)});`, resolveDir: root, loader: 'js' },
    outfile: path.join(outdir, `vendor-${name}.cjs`),
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning',
  });
}
const vendorHashes = Object.fromEntries(await Promise.all(Object.keys(VENDORS).map(async (name) =>
  [name, createHash('sha256').update(await fs.readFile(path.join(outdir, `vendor-${name}.cjs`))).digest('hex').slice(0, 16)])));

await fs.writeFile(path.join(outdir, 'vendor.js'), `// Written by scripts/bundle-cli.mjs: runs the vendor scripts (ioredis, amqplib) from V8's code cache.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';

/** Each vendor script's hash: a cache names the script it was made from, so an older one is never taken. */
const HASHES = ${JSON.stringify(vendorHashes)};
const HERE = path.dirname(fileURLToPath(import.meta.url));

/**
 * The code cache of a vendor script for this node binary and V8's flags as they are now (V8 takes a cache
 * only from the script, node and flags that made it; v8.cachedDataVersionTag() says which: a worker bounds
 * its heap before it connects, so its scripts have caches of their own).
 */
export function vendorCacheFile(name, dir = HERE) {
  return path.join(dir, \`vendor-\${name}-\${HASHES[name]}-\${v8.cachedDataVersionTag()}.cache\`);
}

/**
 * Runs dist/engine/vendor-<name>.cjs (in \`dir\`) and returns its exports. From the code cache when there is one;
 * when there is none (or V8 rejects it), makes it right after the script ran, if the directory can be written:
 * whole (a rename) or not at all. TTG_DEBUG_CODE_CACHE=1 says on stderr which it was.
 */
export function loadVendor(name, dir = HERE) {
  const file = path.join(dir, \`vendor-\${name}.cjs\`);
  const cacheFile = vendorCacheFile(name, dir);
  let cachedData;
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {}
  const wrapped = \`(function (exports, require, module, __filename, __dirname) {\${fs.readFileSync(file, 'utf8')}\\n})\`;
  const script = new vm.Script(wrapped, { filename: file, cachedData });
  const taken = cachedData !== undefined && !script.cachedDataRejected;
  if (process.env.TTG_DEBUG_CODE_CACHE) process.stderr.write(\`ttg \${name} code cache: \${taken ? 'taken' : cachedData ? 'rejected' : 'missing'}\\n\`);
  const module = { exports: {}, filename: file, id: file };
  script.runInThisContext().call(module.exports, module.exports, createRequire(file), module, file, dir);
  if (!taken) {
    const part = \`\${cacheFile}.\${process.pid}\`;
    try {
      fs.accessSync(dir, fs.constants.W_OK);
      fs.writeFileSync(part, script.createCachedData());
      fs.renameSync(part, cacheFile);
    } catch {
      fs.rmSync(part, { force: true });
    }
  }
  return module.exports;
}
`);

/** In the bundle, \`ioredis\` and \`amqplib\` are shims over vendor.js (left a file of its own). */
const vendored = {
  name: 'vendored',
  setup(b) {
    b.onResolve({ filter: /^(ioredis|amqplib)$/ }, (args) => ({ path: args.path, namespace: 'ttg-vendor' }));
    b.onResolve({ filter: /^\.\/vendor\.js$/, namespace: 'ttg-vendor' }, (args) => ({ path: args.path, external: true }));
    b.onLoad({ filter: /.*/, namespace: 'ttg-vendor' }, (args) => ({
      contents: `import { loadVendor } from './vendor.js';\nconst m = loadVendor(${JSON.stringify(args.path)});\n` +
        VENDORS[args.path].map((n) => `export const ${n} = m.${n};\n`).join(''),
      loader: 'js',
    }));
  },
};

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
  plugins: [ownUrl, benchOutside, vendored],
  sourcemap: true,
  logLevel: 'warning',
});

// The vendor scripts' code caches, for V8's flags as a short command (ttg aggregate, ttg monitor) and as a worker
// (engine/heap.ts, set as it sets them: flags given on node's command line hash differently) load them: an image
// whose dist/ its user cannot write still starts from them.
for (const flags of [[], ['--semi-space-growth-factor=1', '--heap-growing-percent=20']]) {
  const made = spawnSync(process.execPath, ['--input-type=module', '-e', `
    const v8 = (await import('node:v8')).default;
    for (const flag of ${JSON.stringify(flags)}) v8.setFlagsFromString(flag);
    const { loadVendor } = await import(${JSON.stringify(pathToFileURL(path.join(outdir, 'vendor.js')).href)});
    for (const name of ${JSON.stringify(Object.keys(VENDORS))}) loadVendor(name);`], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`the vendor scripts do not load: ${made.stderr}`);
}

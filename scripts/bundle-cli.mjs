/**
 * Bundles the compiled `ttg` command (tsc's dist/engine/cli.js) into one CommonJS file,
 * dist/engine/cli.cjs, and puts in place of dist/engine/cli.js a small launcher that runs the
 * bundle from V8's code cache. Run by `npm run build` after tsc.
 *
 * Why a bundle: a worker starts by reading two files instead of resolving, reading and
 * compiling about 150 modules (ioredis alone is 60). Measured on the 2-core machine, one
 * worker, a one-chunk Redis sweep, spawn → exit, medians of 12 interleaved pairs at load 3.3:
 * 287 ms unbundled, 221 ms bundled; CPU 270 → 200 ms (docs/bench/queue-path-log.md).
 *
 * Why CommonJS and a code cache: what was left of the start was mostly V8 parsing the
 * bundle's ~1 MB of JavaScript, on every start. Node 20 caches compiled code only for a script
 * run through `vm.Script` (ES modules have no such option without an experimental flag), so
 * the bundle is a CommonJS script, and the launcher hands V8 the code cache made from it:
 * V8 then skips parsing what the cache holds. Spawn → first chunk of a one-chunk sweep,
 * 12 interleaved runs each: Redis 99 → 78 ms, RabbitMQ 138 → 120 ms, ~20 ms less CPU
 * (docs/bench/queue-path-log.md, entry 26).
 *
 * The code cache (dist/engine/cli-<hash of the bundle>.cache) is made here, by running
 * `ttg --version` once; V8 takes it only from the same node binary and flags that made it.
 * When it rejects it (another node) or it is missing, the launcher makes a new one as the
 * command exits, if it can write there; a worker cannot (it changes V8's heap flags, and a
 * cache made after that would never be taken), so a short command (`ttg --version`) makes it.
 * The bundle's hash in the name keeps a cache of an older bundle from ever being taken.
 *
 * What stays as it is:
 * - every other file of dist/ (tests and the bench import them; the pool thread loads
 *   dist/engine/thread.js);
 * - the bundle sits in dist/engine/, and each module's `import.meta.url` is rewritten to the
 *   URL of its own compiled file, so paths made from it (the Lua scripts, the kernel's .wasm,
 *   the web page, package.json, the pool's thread.js) point where they did;
 * - the whole bundle runs in strict mode, as the ES modules it was made from did;
 * - packages that load files next to their own (piscina starts its worker file by path,
 *   assemblyscript its compiler, prom-client) are left in node_modules; so is the bench
 *   (`ttg bench`), which loads BullMQ, a dev dependency.
 */
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const outdir = path.join(dist, 'engine');
const entry = path.join(outdir, 'cli.js');
const bundle = path.join(outdir, 'cli.cjs');
/** In the launcher: a second run over it would bundle the launcher. */
const LAUNCHER_MARK = 'ttg launcher (scripts/bundle-cli.mjs)';

/** Each compiled module's import.meta.url, as the URL of the file it came from. */
const ownUrl = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      const source = await fs.readFile(args.path, 'utf8');
      if (!args.path.startsWith(dist + path.sep)) return undefined;
      const rel = path.relative(outdir, args.path).split(path.sep).join('/');
      const ownUrl = `new URL(${JSON.stringify(rel)}, __ttgBundleUrl).href`;
      const contents = source
        // cli.js's `#!` line: the bundle runs inside a function, where it is a syntax error (the launcher has one).
        .replace(/^#!.*/, '')
        .replaceAll('import.meta.url', ownUrl)
        // The dynamic imports that stay imports (packages, node's modules, a user's kernel, the bench) are made by the
        // launcher: in Node 20 a script compiled from a code cache cannot import() ("A dynamic import callback was not
        // specified"). The bench's path is made absolute, from this module's own URL.
        .replace(/(?<![\w$.])import\((['"])(\.\.?\/(?:[^'"]*\/)?bench\/run\.js)\1\)/g, (_, q, spec) => `__ttgImport(new URL(${JSON.stringify(spec)}, ${ownUrl}).href)`)
        .replace(/(?<![\w$.])import\((?!\s*['"]\.\.?\/)/g, '__ttgImport(');
      return { contents, loader: 'js' };
    });
  },
};

if ((await fs.readFile(entry, 'utf8')).includes(LAUNCHER_MARK)) {
  throw new Error(`${entry} is already the launcher: run tsc -p tsconfig.json first (npm run build:ts does both)`);
}
// Chunks of the earlier ES-module bundle, and code caches of earlier bundles.
for (const name of await fs.readdir(outdir)) {
  if (/^cli-[A-Za-z0-9]+\.(js|js\.map|cache)$/.test(name)) await fs.rm(path.join(outdir, name));
}

await build({
  entryPoints: [entry],
  outfile: bundle,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external: ['piscina', 'assemblyscript', 'assemblyscript/*', 'prom-client'],
  // The launcher runs the bundle with __filename set to the bundle's own path.
  banner: { js: "'use strict';\nconst __ttgBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [ownUrl],
  sourcemap: true,
  logLevel: 'warning',
});

const hash = createHash('sha256').update(await fs.readFile(bundle)).digest('hex').slice(0, 16);
const launcher = `#!/usr/bin/env node
// ${LAUNCHER_MARK}: runs the \`ttg\` bundle, cli.cjs, from V8's code cache
// (cli-${hash}.cache, made for this very bundle). The bundle's source is in the repository's engine/cli.ts.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';

const dir = path.dirname(fileURLToPath(import.meta.url));
const file = path.join(dir, 'cli.cjs');
const cacheFile = path.join(dir, 'cli-${hash}.cache');
let cachedData;
try {
  cachedData = fs.readFileSync(cacheFile);
} catch {}
const script = new vm.Script(\`(function (exports, require, module, __filename, __dirname, __ttgImport) {\${fs.readFileSync(file, 'utf8')}\\n})\`, {
  filename: file, cachedData, importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
});
if (cachedData === undefined || script.cachedDataRejected) {
  // Made as the command exits (it then holds the code that ran), unless V8's flags changed meanwhile (a worker
  // bounds its heap): V8 would reject such a cache on every start. Written whole or not at all.
  const tag = v8.cachedDataVersionTag();
  process.once('exit', () => {
    if (v8.cachedDataVersionTag() !== tag) return;
    const part = \`\${cacheFile}.\${process.pid}\`;
    try {
      fs.accessSync(dir, fs.constants.W_OK); // a read-only install: not worth making
      fs.writeFileSync(part, script.createCachedData());
      fs.renameSync(part, cacheFile);
    } catch {
      fs.rmSync(part, { force: true });
    }
  });
}
const module = { exports: {}, filename: file, id: file };
// import() of the bundle, made here (see scripts/bundle-cli.mjs): packages resolve from this directory, as from the bundle's.
const importHere = (specifier) => import(specifier);
script.runInThisContext().call(module.exports, module.exports, createRequire(file), module, file, dir, importHere);
`;
await fs.writeFile(entry, launcher);
await fs.chmod(entry, 0o755);
await fs.rm(`${entry}.map`, { force: true }); // tsc's, of the file the launcher replaced

// The code cache, made by a short command.
const made = spawnSync(process.execPath, [entry, '--version'], { encoding: 'utf8' });
if (made.status !== 0) throw new Error(`the bundled ttg does not run: ${made.stderr || made.stdout}`);
await fs.access(path.join(outdir, `cli-${hash}.cache`)).catch(() => {
  process.stderr.write(`bundle-cli: no code cache was made in ${outdir} (the bundle runs without it, ~20 ms slower to start)\n`);
});

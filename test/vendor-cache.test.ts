/**
 * The broker clients' code caches (scripts/bundle-cli.mjs): the bundled `ttg` runs ioredis and amqplib
 * from CommonJS scripts of their own (dist/engine/vendor-<name>.cjs) through vm.Script with V8's code
 * cache, so that a worker does not parse ~700 kB of JavaScript at every start. Checked here: the build
 * leaves caches that V8 takes in a real worker of each backend; a missing cache is made as the script
 * is loaded, and V8 takes it (checked with vm.Script itself); a cache V8 rejects is never used, and is
 * replaced by a good one.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import vm from 'node:vm';
import { CLI, golden, randomPrefix, requireRabbit, requireRedis, testEnv } from './helpers.js';

const ENGINE = path.dirname(CLI);
const VENDOR = path.join(ENGINE, 'vendor.js');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-vendor-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface VendorModule {
  loadVendor(name: string, dir?: string): Record<string, unknown>;
  vendorCacheFile(name: string, dir?: string): string;
}

/** A sweep of 10,000 params by one worker, saying on stderr whether each vendor script came from its cache. */
function sweepOf10k(backend: 'redis' | 'rabbitmq') {
  const prefix = randomPrefix('vendor');
  const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: backend, QUEUE_PREFIX: prefix, TOTAL_PARAMS: 10_000, CHUNK_SIZE: 1000, WORKER_ID: 0, LOG_LEVEL: 'warn', TTG_DEBUG_CODE_CACHE: '1' });
  const worker = spawnSync(process.execPath, [CLI, 'worker'], { env, encoding: 'utf8' });
  const aggregate = spawnSync(process.execPath, [CLI, 'aggregate', '--json'], { env, encoding: 'utf8' });
  spawnSync(process.execPath, [CLI, 'reset', '--yes'], { env, encoding: 'utf8' });
  return { worker, report: JSON.parse(aggregate.stdout.trim().split('\n').at(-1)!) as { grand_sum: number } };
}

for (const [backend, vendor] of [['redis', 'ioredis'], ['rabbitmq', 'amqplib']] as const) {
  test(`a ${backend} worker runs ${vendor} from the code cache the build made`, async () => {
    await (backend === 'redis' ? requireRedis() : requireRabbit());
    const { worker, report } = sweepOf10k(backend);
    assert.equal(worker.status, 0, worker.stderr);
    assert.match(worker.stderr, new RegExp(`ttg ${vendor} code cache: taken`), worker.stderr);
    assert.equal(report.grand_sum, golden().placeholder.find((r) => r.start === 0 && r.end === 10_000)!.sum);
  });
}

test('a missing cache is made as the script loads, and V8 takes it; a rejected one is never used, and replaced', async () => {
  const dir = mkdtempSync(path.join(tmp, 'dir-'));
  for (const name of ['ioredis', 'amqplib']) copyFileSync(path.join(ENGINE, `vendor-${name}.cjs`), path.join(dir, `vendor-${name}.cjs`));
  const { loadVendor, vendorCacheFile } = (await import(pathToFileURL(VENDOR).href)) as VendorModule;

  const ioredis = loadVendor('ioredis', dir);
  assert.equal(typeof ioredis['Redis'], 'function', 'the script hands on ioredis\'s exports');
  assert.equal(typeof loadVendor('amqplib', dir)['connect'], 'function', 'and amqplib\'s');
  const cacheFile = vendorCacheFile('ioredis', dir);
  assert.ok(existsSync(cacheFile), `${cacheFile} made`);
  // V8 itself, given the cache for the script as the loader wraps it: taken.
  const wrapped = (name: string) => `(function (exports, require, module, __filename, __dirname) {${readFileSync(path.join(dir, `vendor-${name}.cjs`), 'utf8')}\n})`;
  const script = new vm.Script(wrapped('ioredis'), { filename: path.join(dir, 'vendor-ioredis.cjs'), cachedData: readFileSync(cacheFile) });
  assert.equal(script.cachedDataRejected, false);

  // ioredis's cache file holding amqplib's cache: V8 rejects it, the loader says so, runs the script, and writes a good one.
  writeFileSync(cacheFile, readFileSync(vendorCacheFile('amqplib', dir)));
  const load = (name: string) => spawnSync(process.execPath, ['--input-type=module', '-e',
    `const { loadVendor } = await import(${JSON.stringify(pathToFileURL(VENDOR).href)}); ` +
    `console.log(typeof loadVendor(${JSON.stringify(name)}, ${JSON.stringify(dir)}).Redis);`],
  { encoding: 'utf8', env: { PATH: process.env['PATH'], TTG_DEBUG_CODE_CACHE: '1' } });
  const rejected = load('ioredis');
  assert.equal(rejected.status, 0, rejected.stderr);
  assert.match(rejected.stderr, /ttg ioredis code cache: rejected/);
  assert.equal(rejected.stdout.trim(), 'function');
  assert.match(load('ioredis').stderr, /ttg ioredis code cache: taken/);
});

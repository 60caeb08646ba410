/**
 * The `ttg` launcher (dist/engine/cli.js, written by scripts/bundle-cli.mjs): it runs the
 * CommonJS bundle dist/engine/cli.cjs from V8's code cache. Checked here: the build leaves a
 * cache that V8 takes; a missing one is made by a short command as it exits, and never by a
 * worker (whose heap flags would make V8 reject it on every start); another node's flags get
 * a file of their own; and a script compiled from the cache can still import() (in Node 20 it
 * cannot by itself: the launcher makes those imports).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, ROOT } from './helpers.js';

const ENGINE = path.dirname(CLI);
const bundleHash = createHash('sha256').update(readFileSync(path.join(ENGINE, 'cli.cjs'))).digest('hex').slice(0, 16);
const caches = (dir: string) => readdirSync(dir).filter((name) => name.endsWith('.cache'));

/** Runs a ttg launcher; `cache` is what it said of the code cache (TTG_DEBUG_CODE_CACHE). */
function run(cli: string, args: string[], opts: { nodeFlags?: string[]; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [...(opts.nodeFlags ?? []), cli, ...args], {
    encoding: 'utf8', cwd: ROOT,
    env: { PATH: process.env['PATH'], HOME: process.env['HOME'], TTG_DEBUG_CODE_CACHE: '1', ...opts.env },
  });
  const cache = /ttg code cache: (\w+)/.exec(r.stderr)?.[1];
  return { ...r, cache };
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-launcher-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The launcher and bundle laid out as in dist/, with what a one-chunk static worker reads, and no cache. */
function copyWithoutCache(): string {
  const root = mkdtempSync(path.join(tmp, 'copy-'));
  mkdirSync(path.join(root, 'dist/engine'), { recursive: true });
  mkdirSync(path.join(root, 'build'));
  for (const name of ['cli.js', 'cli.cjs']) copyFileSync(path.join(ENGINE, name), path.join(root, 'dist/engine', name));
  copyFileSync(path.join(ROOT, 'package.json'), path.join(root, 'package.json'));
  copyFileSync(path.join(ROOT, 'build/kernel.wasm'), path.join(root, 'build/kernel.wasm'));
  return path.join(root, 'dist/engine/cli.js');
}

test('the build leaves a code cache of this very bundle, and V8 takes it', () => {
  assert.ok(caches(ENGINE).some((name) => name.startsWith(`cli-${bundleHash}-`)),
    `a cache named after the bundle's sha-256 (${bundleHash}) in ${ENGINE}: ${caches(ENGINE).join(', ') || 'none'}`);
  const r = run(CLI, ['--version']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.cache, 'taken');
  assert.match(r.stdout, /^ttg \d+\.\d+\.\d+/);
});

test('a missing cache is made by a short command, not by a worker; other node flags get a file of their own', () => {
  const cli = copyWithoutCache();
  const dir = path.dirname(cli);
  // A worker bounds its heap (V8 flags): a cache it made would be rejected at every start, so it makes none.
  const worker = run(cli, ['worker'], { env: { USE_QUEUE: 'false', TOTAL_PARAMS: '1000', CHUNK_SIZE: '1000', WORKER_ID: '0', TOTAL_WORKERS: '1', METRICS_PORT: '0', LOG_LEVEL: 'warn' } });
  assert.equal(worker.status, 0, worker.stderr);
  assert.equal(worker.cache, 'missing');
  assert.equal(JSON.parse(worker.stdout.trim().split('\n').at(-1)!).params_processed, 1000);
  assert.deepEqual(caches(dir), [], 'the worker made no cache');

  const first = run(cli, ['--version']);
  assert.equal(first.cache, 'missing');
  assert.equal(caches(dir).length, 1, 'the short command made the cache as it exited');
  assert.equal(run(cli, ['--version']).cache, 'taken');
  assert.equal(run(cli, ['worker'], { env: { USE_QUEUE: 'false', TOTAL_PARAMS: '1000', CHUNK_SIZE: '1000', WORKER_ID: '0', TOTAL_WORKERS: '1', METRICS_PORT: '0' } }).cache, 'taken');

  // Other V8 flags: V8 would reject the cache, so they have their own, and the first one stays as it was.
  const other = run(cli, ['--version'], { nodeFlags: ['--stack-size=2000'] });
  assert.equal(other.cache, 'missing');
  assert.equal(caches(dir).length, 2);
  assert.equal(run(cli, ['--version'], { nodeFlags: ['--stack-size=2000'] }).cache, 'taken');
  assert.equal(run(cli, ['--version']).cache, 'taken');
});

test('a command compiled from the cache still imports modules (a user\'s JS kernel, the AssemblyScript compiler)', () => {
  const r = run(CLI, ['kernel', 'check', 'examples/collatz.ts', '--twin', 'examples/collatz.js', '--total', '1000'],
    { env: { XDG_CACHE_HOME: path.join(tmp, 'kernels') } });
  assert.equal(r.cache, 'taken');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /agree bit for bit/);
});

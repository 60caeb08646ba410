/**
 * engine/jit.ts: a worker holds V8's optimising compiler back for its first half second, and lets
 * it go on its timer or before the pool starts threads. Whether a function was optimised is read
 * from V8 itself (%GetOptimizationStatus, in a child run with --allow-natives-syntax:
 * test/fixtures/jit-status.mjs), against a control run with no deferral.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { deferOptimisingCompiler, optimisingCompilerDeferred, restoreOptimisingCompiler } from '../engine/jit.js';
import { KernelPool } from '../engine/pool.js';
import { golden, lastJsonLine, ROOT, runTtg, testEnv } from './helpers.js';

const FIXTURE = path.join(ROOT, 'test/fixtures/jit-status.mjs');
const status = (...args: string[]) =>
  JSON.parse(execFileSync(process.execPath, ['--allow-natives-syntax', FIXTURE, ...args], { encoding: 'utf8', timeout: 60_000 }).trim());

test('a hot function is not TurboFanned while the compiler is deferred, and is once it is restored', () => {
  assert.deepEqual(status('control'), { control: true }, 'without deferral the same loop is TurboFanned (else the check below proves nothing)');
  assert.deepEqual(status('deferred'), { whileDeferred: false, stillDeferred: true, afterRestore: true, deferredAfter: false });
});

test("the deferral's timer lets the compiler go, and does not hold the process open", () => {
  assert.deepEqual(status('timer', '50'), { afterTimer: true });
  // A ten-minute deferral: the child exits as soon as its work is done (execFileSync's timeout is one minute).
  assert.deepEqual(status('unref'), { deferred: true });
});

test('a pool restores the compiler before it starts threads with itself, and only then', async () => {
  deferOptimisingCompiler(10 * 60 * 1000);
  const inline = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm', rangeSize: 1000 });
  let threaded: KernelPool | null = null;
  let midSweep: KernelPool | null = null;
  try {
    assert.equal(inline.started, false, 'placeholder chunks of 1,000 run inline');
    await inline.runRange(0, 1000, 1000);
    assert.equal(optimisingCompilerDeferred(), true, 'a pool that runs inline leaves the deferral alone');
    threaded = new KernelPool({ threads: 1, kernel: 'mandelbrot', impl: 'wasm', rangeSize: 20_000 });
    assert.equal(threaded.started, true);
    assert.equal(optimisingCompilerDeferred(), false, 'threads started with the pool start with node\'s own flags');
    deferOptimisingCompiler(10 * 60 * 1000);
    // Chunks cheap enough to compute while a thread starts start it at the first range, mid-sweep: the compiler stays held back.
    midSweep = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm', rangeSize: 10_000 });
    assert.equal(midSweep.started, false);
    await midSweep.runRange(0, 10_000, 10_000);
    assert.equal(midSweep.started, true);
    assert.equal(optimisingCompilerDeferred(), true);
  } finally {
    restoreOptimisingCompiler();
    await inline.close();
    await threaded?.close();
    await midSweep?.close();
  }
});

test('ttg worker holds the compiler back with the WASM kernel, not with the JS one, and both sums are exact', async () => {
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100000)!;
  const HELD = /optimising compiler held back/;
  for (const impl of ['wasm', 'js']) {
    const r = await runTtg(['worker'], testEnv({
      USE_QUEUE: 'false', TOTAL_PARAMS: 100000, TOTAL_WORKERS: 1, WORKER_ID: 0, CHUNK_SIZE: 1000, KERNEL_IMPL: impl, LOG_LEVEL: 'debug',
    }));
    assert.equal(r.code, 0, r.stderr);
    // The JS kernel's small chunks run on the worker's main thread: unoptimised for half a second, a short sweep took 25-40% longer.
    if (impl === 'wasm') assert.match(r.stderr, HELD);
    else assert.doesNotMatch(r.stderr, HELD);
    const a = lastJsonLine(r.stdout)['aggregates'] as { count: number; sum: number; min: number; max: number };
    assert.deepEqual({ count: a.count, sum: a.sum, min: a.min, max: a.max }, { count: ref.count, sum: ref.sum, min: ref.min, max: ref.max }, impl);
  }
});

/**
 * A user kernel in the thread pool: each thread loads the module (or the JS
 * twin) once, chunks split over threads merge to the single-runner figures,
 * and a kernel that traps or returns NaN rejects that range with the
 * parameter named while the pool, and every thread, keeps working.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { roundPartials } from '../kernel/exact-sum.js';
import type { UserKernelSpec } from '../kernel/types.js';
import { buildUserKernel } from '../kernel/user-build.js';
import { UserWasmKernel } from '../kernel/user-wasm.js';
import { KernelPool } from '../engine/pool.js';
import { ROOT } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-user-pool-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let collatz: UserKernelSpec;
let faulty: UserKernelSpec;

before(async () => {
  const built = await buildUserKernel(path.join(ROOT, 'examples', 'collatz.ts'), path.join(tmp, 'collatz.wasm'));
  collatz = { name: 'collatz', wasmPath: built.wasmPath, sha256: built.sha256, jsPath: path.join(ROOT, 'examples', 'collatz.js') };
  // Traps at 25000 (integer division by zero) and gives NaN at 70000; fine elsewhere.
  const source = path.join(tmp, 'faulty.ts');
  writeFileSync(source, 'export function value(p: i64, total: i64): f64 {\n  if (p == 70000) return NaN;\n  return <f64>(<i64>1000000 / (p - 25000));\n}\n');
  writeFileSync(path.join(tmp, 'faulty.js'), 'export function value(p, total) {\n  if (p === 70000) return NaN;\n  if (p === 25000) throw new RangeError("Division by zero");\n  return Math.trunc(1000000 / (p - 25000));\n}\n');
  const f = await buildUserKernel(source);
  faulty = { name: 'faulty', wasmPath: f.wasmPath, sha256: f.sha256, jsPath: path.join(tmp, 'faulty.js') };
});

test('a user kernel over several threads gives the single runner\'s statistics, WASM and JS alike', async () => {
  const reference = UserWasmKernel.fromFile(collatz.wasmPath).sweep(0, 300_000, 1_000_000);
  for (const impl of ['wasm', 'js'] as const) {
    const pool = new KernelPool({ threads: 2, kernel: collatz, impl });
    try {
      for (const [start, end] of [[0, 100_000], [100_000, 300_000]] as const) {
        const { stats } = await pool.runRange(start, end, 1_000_000);
        assert.equal(stats.count, end - start);
      }
      const { stats } = await pool.runRange(0, 300_000, 1_000_000);
      assert.deepEqual(
        [stats.count, stats.min, stats.argmin, stats.max, stats.argmax, roundPartials(stats.partials)],
        [reference.count, reference.min, reference.argmin, reference.max, reference.argmax, roundPartials(reference.partials)],
        impl,
      );
    } finally {
      await pool.close();
    }
  }
});

test('a trap or a NaN rejects the range naming the parameter, and the pool goes on', async () => {
  for (const impl of ['wasm', 'js'] as const) {
    const pool = new KernelPool({ threads: 2, kernel: faulty, impl });
    try {
      await assert.rejects(pool.runRange(20_000, 30_000, 100_000), impl === 'wasm'
        ? /kernel faulty trapped at parameter 25000: WebAssembly trap: .*divi.*zero/i
        : /kernel faulty \(js\) threw at parameter 25000: RangeError: Division by zero/);
      await assert.rejects(pool.runRange(60_000, 80_000, 100_000), /kernel faulty returned NaN at parameter 70000/);
      // Every thread still answers: more slices than threads, all over the good part of the range.
      const outcomes = await Promise.all([0, 1, 2, 3].map((i) => pool.runRange(30_000 + i * 1000, 31_000 + i * 1000, 100_000)));
      for (const { stats } of outcomes) assert.equal(stats.count, 1000);
      const { stats } = await pool.runRange(26_000, 26_004, 100_000);
      assert.deepEqual([stats.min, stats.max, stats.argmin], [997, 1000, 26_003]); // 10^6 / 1003 .. 10^6 / 1000, truncated
    } finally {
      await pool.close();
    }
  }
});

test('a thread refuses a module file whose sha-256 is not the sweep\'s, and one without a twin for js', async () => {
  const pool = new KernelPool({ threads: 1, kernel: { ...collatz, sha256: '0'.repeat(64) }, impl: 'wasm' });
  try {
    await assert.rejects(pool.runRange(0, 10, 10), new RegExp(`collatz\\.wasm changed while the worker ran \\(sha-256 ${collatz.sha256}, the sweep's is 0{64}\\)`));
  } finally {
    await pool.close();
  }
  const noTwin = new KernelPool({ threads: 1, kernel: { ...collatz, jsPath: null }, impl: 'js' });
  try {
    await assert.rejects(noTwin.runRange(0, 10, 10), /KERNEL_IMPL=js needs the kernel's JS twin \(KERNEL_JS\)/);
  } finally {
    await noTwin.close();
  }
});

/**
 * The kernels: both implementations against the golden statistics, and the
 * WASM kernels against the plain TS ones value by value (bit for bit), on
 * seeded random ranges and on the edges where the SIMD, block and grid
 * bookkeeping could slip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exactSum, roundPartials } from '../kernel/exact-sum.js';
import {
  createKernelRunner,
  JsKernelRunner,
  KERNEL_NAMES,
  mandelbrotValue,
  placeholderValue,
  WasmKernelRunner,
  type KernelName,
  type KernelRunner,
  type SliceStats,
} from '../kernel/index.js';
import { golden, random } from './helpers.js';

const wasm = new WasmKernelRunner();
const js = new JsKernelRunner();
const RUNNERS: KernelRunner[] = [wasm, js];


/** Asserts WASM and JS give the same values bit for bit over [start, end), naming the first difference. */
function assertSameValues(kernel: KernelName, start: number, end: number, total: number): void {
  const a = wasm.values(kernel, start, end, total);
  const b = js.values(kernel, start, end, total);
  assert.equal(a.length, end - start);
  assert.equal(b.length, end - start);
  if (Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)) === 0) return;
  const i = a.findIndex((v, k) => !Object.is(v, b[k]));
  assert.fail(`${kernel} p=${start + i} (range [${start}, ${end})): wasm ${a[i]} js ${b[i]}`);
}

/** Same count, min, max, argmin, argmax and rounded sum, and those are the statistics of the values themselves. */
function assertSameStats(kernel: KernelName, start: number, end: number, total: number): void {
  const label = `${kernel} [${start}, ${end}) of ${total}`;
  const a = wasm.sweep(kernel, start, end, total);
  const b = js.sweep(kernel, start, end, total);
  const values = Array.from(js.values(kernel, start, end, total));
  for (const s of [a, b]) {
    assert.equal(s.count, end - start, label);
    assert.ok(Object.is(s.min, values.length ? Math.min(...values) : Infinity), label);
    assert.ok(Object.is(s.max, values.length ? Math.max(...values) : -Infinity), label);
    assert.ok(Object.is(roundPartials(s.partials), exactSum(values)), label);
    // The smallest parameter where the extreme is reached: the first index of it in the values.
    assert.equal(s.argmin, values.length ? start + values.indexOf(s.min) : -1, `${label} argmin`);
    assert.equal(s.argmax, values.length ? start + values.indexOf(s.max) : -1, `${label} argmax`);
  }
  assert.ok(Object.is(roundPartials(a.partials), roundPartials(b.partials)), label);
}

function checkGolden(runner: KernelRunner, kernel: KernelName, maxLength = Infinity): void {
  for (const g of golden()[kernel]) {
    if (g.end - g.start > maxLength) continue;
    const label = `${runner.impl} ${kernel} [${g.start}, ${g.end})`;
    const total = Math.max(g.end, 1_000_000);
    const s: SliceStats = runner.sweep(kernel, g.start, g.end, total);
    assert.equal(s.count, g.count, label);
    assert.equal(roundPartials(s.partials), g.sum, label);
    assert.equal(s.min, g.min, label);
    assert.equal(s.max, g.max, label);
  }
}

test('placeholder matches the golden statistics (wasm and js)', () => {
  for (const runner of RUNNERS) checkGolden(runner, 'placeholder');
  // docs/design.md's own figures over TOTAL_PARAMS=10000.
  for (const runner of RUNNERS) {
    const s = runner.sweep('placeholder', 0, 10_000, 10_000);
    assert.equal(roundPartials(s.partials), 5000355);
    assert.equal(roundPartials(s.partials) / s.count, 500.0355);
    // Worked out by hand: 0.41 needs 7p+13 ≡ 0 (mod 1000) and p ≡ 41 (mod 100), first at p = 141;
    // 999.98 needs 7p+13 ≡ 999 and p ≡ 98, first at p = 998.
    assert.deepEqual([s.argmin, s.argmax], [141, 998], runner.impl);
  }
  // Over [142, 10000) the first 0.41 is one period (1000) later.
  assert.equal(wasm.sweep('placeholder', 142, 10_000, 10_000).argmin, 1141);
});

test('mandelbrot matches the golden statistics (wasm)', () => {
  checkGolden(wasm, 'mandelbrot');
});

test('mandelbrot matches the golden statistics (js)', () => {
  // The whole 10^6 grid takes about half a second in plain JS.
  checkGolden(js, 'mandelbrot');
});

test('the single-value kernels follow docs/design.md', () => {
  assert.equal(placeholderValue(0), 13);
  assert.equal(placeholderValue(1), 20 + 0.1);
  assert.equal(placeholderValue(10), 83 + 10 / 100);
  assert.equal(placeholderValue(99), (99 * 7 + 13) % 1000 + 99 / 100);
  assert.equal(mandelbrotValue(0), 1); // c = -2 - 1.5i escapes at once
  assert.equal(mandelbrotValue(500 * 1000 + 500), 1000); // c = -0.5 + 0i is inside
  assert.equal(mandelbrotValue(1_000_000 + 7), mandelbrotValue(7)); // y wraps at W
});

const TOTAL = 2 ** 48;

/** Edges: the sweep's ends, rows, the grid wrap, SIMD tails, blocks, large p. */
function edgeRanges(): Array<[number, number, number]> {
  const ranges: Array<[number, number, number]> = [
    [0, 1, 1],
    [0, 5, 10],
    [999_999, 1_000_000, 1_000_000], // the last parameter of a sweep
    [TOTAL - 1, TOTAL, TOTAL],
    [TOTAL - 4099, TOTAL, TOTAL],
    [995, 1007, 1_000_000], // a row end inside a group of four
    [1998, 2003, 1_000_000],
    [999_990, 1_000_013, TOTAL], // y wraps from 999 to 0
    [2 ** 32 - 3, 2 ** 32 + 6, TOTAL], // beyond u32
    [2 ** 40 + 123_456, 2 ** 40 + 123_471, TOTAL],
    [123, 123 + 2 * 4096 + 3, 1_000_000], // crosses WASM blocks, ends in a tail
    [500_000, 500_000 + 4096, 1_000_000], // exactly one block, points inside the set
  ];
  // Slice lengths 1..5 (the SIMD tails), where lanes escape at very different counts.
  for (const at of [0, 1, 2, 3, 500_250, 350_620, 617_300, 2 ** 33 + 500_495, TOTAL - 5]) {
    for (let length = 1; length <= 5; length++) {
      if (at + length <= TOTAL) ranges.push([at, at + length, TOTAL]);
    }
  }
  return ranges;
}

test('WASM and JS values are bit-identical on the edges', () => {
  for (const kernel of KERNEL_NAMES) {
    for (const [start, end, total] of edgeRanges()) assertSameValues(kernel, start, end, total);
  }
});

test('WASM and JS values are bit-identical on seeded random ranges', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rand = random(seed);
    // Half the ranges within the first grid (dense mandelbrot work), half anywhere below 2^48.
    const limit = seed % 2 ? 1_000_000 : TOTAL;
    const length = 1 + Math.floor(rand() * 3000);
    const start = Math.floor(rand() * (limit - length));
    for (const kernel of KERNEL_NAMES) assertSameValues(kernel, start, start + length, TOTAL);
  }
});

test('WASM and JS give the same statistics', () => {
  for (const kernel of KERNEL_NAMES) {
    for (const [start, end, total] of edgeRanges()) assertSameStats(kernel, start, end, total);
    for (let seed = 100; seed < 110; seed++) {
      const rand = random(seed);
      const length = Math.floor(rand() * 5000);
      const start = Math.floor(rand() * (TOTAL - length));
      assertSameStats(kernel, start, start + length, TOTAL);
    }
    assertSameStats(kernel, 0, 0, 10);
  }
});

test('an empty slice has count 0, min +Infinity, max -Infinity, argmin and argmax -1 and no partials', () => {
  for (const runner of RUNNERS) {
    for (const kernel of KERNEL_NAMES) {
      assert.deepEqual(runner.sweep(kernel, 42, 42, 100), { count: 0, min: Infinity, max: -Infinity, argmin: -1, argmax: -1, partials: [] });
      assert.equal(runner.values(kernel, 42, 42, 100).length, 0);
    }
  }
});

test('a runner reused for many slices keeps no state between them', () => {
  const whole = wasm.sweep('placeholder', 0, 10_000, 10_000);
  wasm.sweep('mandelbrot', 0, 777, 10_000);
  assert.deepEqual(wasm.sweep('placeholder', 0, 10_000, 10_000), whole);
});

test('both runners reject bad slices with the same message', () => {
  const bad: Array<[string, number, number, number, RegExp]> = [
    ['nope', 0, 1, 1, /unknown kernel "nope"/],
    ['placeholder', 5, 4, 10, /start <= end <= total/],
    ['placeholder', 0, 11, 10, /start <= end <= total/],
    ['placeholder', -1, 4, 10, /start must be an integer/],
    ['mandelbrot', 0.5, 4, 10, /start must be an integer/],
    ['mandelbrot', 0, 4, 2 ** 51, /total must be an integer in 0..2\^50/],
    ['mandelbrot', 0, NaN, 10, /end must be an integer/],
  ];
  for (const runner of RUNNERS) {
    for (const [kernel, start, end, total, message] of bad) {
      assert.throws(() => runner.sweep(kernel as KernelName, start, end, total), message);
      assert.throws(() => runner.values(kernel as KernelName, start, end, total), message);
    }
  }
});

test('createKernelRunner builds either implementation; a missing build says how to make it', () => {
  assert.equal(createKernelRunner('wasm').impl, 'wasm');
  assert.equal(createKernelRunner('js').impl, 'js');
  assert.throws(() => createKernelRunner('cuda' as never), /unknown kernel implementation "cuda"/);
  assert.throws(
    () => createKernelRunner('wasm', { wasmPath: '/nonexistent/kernel.wasm' }),
    /\/nonexistent\/kernel\.wasm.*npm run build/,
  );
});

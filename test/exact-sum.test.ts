/**
 * The exact sum (kernel/exact-sum.ts, and the WASM kernels' superaccumulator)
 * against an independent reference: exact rational arithmetic with BigInt.
 * Every finite double is an integer multiple of 2^-1074, so a list of doubles
 * sums exactly as BigInts in units of 2^-1074; rounding that integer to the
 * nearest double (ties to even) is the correctly rounded sum math.fsum gives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addExact, exactSum, mergePartials, roundPartials } from '../kernel/exact-sum.js';
import { WasmKernelRunner } from '../kernel/wasm.js';
import { random } from './helpers.js';

// ------------------------------------------------------------ the reference

const view = new DataView(new ArrayBuffer(8));
const MANTISSA_MASK = (1n << 52n) - 1n;

function bitsOf(x: number): bigint {
  view.setFloat64(0, x);
  return view.getBigUint64(0);
}

function fromBits(bits: bigint): number {
  view.setBigUint64(0, bits);
  return view.getFloat64(0);
}

/** x as an exact integer number of units 2^-1074 (x finite). */
function toUnits(x: number): bigint {
  const bits = bitsOf(x);
  const biased = (bits >> 52n) & 0x7ffn;
  const fraction = bits & MANTISSA_MASK;
  // Subnormals: fraction·2^-1074. Normals: (2^52 + fraction)·2^(biased-1075).
  const units = biased === 0n ? fraction : (fraction | (1n << 52n)) << (biased - 1n);
  return bits >> 63n ? -units : units;
}

/** units·2^-1074 rounded to the nearest double, ties to even. */
function fromUnits(units: bigint): number {
  const negative = units < 0n;
  const magnitude = negative ? -units : units;
  const length = magnitude.toString(2).length;
  let bits: bigint;
  if (length <= 53) {
    // Exact: below 2^52 these are the subnormal bits, from 2^52 the exponent field is 1.
    bits = magnitude;
  } else {
    const shift = BigInt(length - 53);
    let q = magnitude >> shift;
    const rest = magnitude - (q << shift);
    const half = 1n << (shift - 1n);
    if (rest > half || (rest === half && (q & 1n) === 1n)) q += 1n;
    // q in [2^52, 2^53] times 2^(shift-1074): biased exponent shift+1, and
    // (shift << 52) + q lets a rounding carry to 2^53 step the exponent.
    bits = (shift << 52n) + q;
    if (bits >= 0x7ffn << 52n) bits = 0x7ffn << 52n; // overflow: Infinity
  }
  return fromBits(negative ? bits | (1n << 63n) : bits);
}

function referenceSum(values: readonly number[]): number {
  let units = 0n;
  for (const v of values) units += toUnits(v);
  return fromUnits(units);
}

function naiveSum(values: readonly number[]): number {
  let s = 0;
  for (const v of values) s += v;
  return s;
}

/** The partials of `values` built by kernel/exact-sum.ts, one value at a time. */
function partialsOf(values: readonly number[]): number[] {
  const partials: number[] = [];
  for (const v of values) addExact(partials, v);
  return partials;
}

/** Shewchuk's invariant: increasing magnitude, bit ranges disjoint (a zero only on top). */
function assertNonOverlapping(partials: readonly number[], label: string): void {
  let previousHighBit = -1;
  for (let i = 0; i < partials.length; i++) {
    const units = toUnits(partials[i]!);
    if (units === 0n) {
      assert.equal(i, partials.length - 1, `${label}: zero partial below the top in ${partials}`);
      continue;
    }
    const magnitude = units < 0n ? -units : units;
    const lowBit = magnitude.toString(2).length - magnitude.toString(2).lastIndexOf('1') - 1;
    const highBit = magnitude.toString(2).length - 1;
    assert.ok(lowBit > previousHighBit, `${label}: partials overlap: ${partials}`);
    previousHighBit = highBit;
  }
}

// ------------------------------------------------------------ seeded data


/** Values of mixed magnitudes and signs, with cancellations, subnormals and huge values. */
function mixedValues(rand: () => number, n: number): number[] {
  const values: number[] = [];
  for (let i = 0; i < n; i++) {
    const kind = rand();
    let v: number;
    if (kind < 0.6) v = (rand() + 0.5) * 2 ** Math.floor(rand() * 120 - 60);
    else if (kind < 0.7) v = rand() * 2 ** Math.floor(rand() * 2000 - 1000);
    else if (kind < 0.75) v = Math.floor(rand() * 2 ** 20) * Number.MIN_VALUE; // subnormal
    else if (kind < 0.8) v = (rand() + 1) * 2 ** 1010;
    else if (kind < 0.9 && values.length > 0) v = -values[Math.floor(rand() * values.length)]!; // cancels one
    else v = Math.round(rand() * 1000) / 10;
    values.push(rand() < 0.5 ? -v : v);
  }
  return values;
}

function shuffled<T>(rand: () => number, items: readonly T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

// ------------------------------------------------------------ cases

const DRIFTING: Array<[string, number[]]> = [
  ['cancellation hides 1', [1e16, 1, -1e16]],
  ['cancellation hides two 1s', [1, 1e100, 1, -1e100]],
  ['0.1 ten times', Array(10).fill(0.1)],
  ['tie rounds to even (down)', [1, 2 ** -53]],
  ['just above the tie rounds up', [1, 2 ** -53, 2 ** -105]],
  ['just below the tie rounds down', [1, 2 ** -53, -(2 ** -105)]],
  ['tie rounds to even (up)', [1 + 2 ** -52, 2 ** -53]],
  ['negative tie', [-1, -(2 ** -53), -(2 ** -105)]],
  ['many small below a large', [2 ** 53, ...Array(100).fill(0.5)]],
  ['subnormals', [Number.MIN_VALUE, Number.MIN_VALUE, 2 ** -1022, -(2 ** -1023)]],
  ['huge', [Number.MAX_VALUE, -Number.MAX_VALUE, 1, 2 ** 1000, 2 ** 1000]],
  ['everything cancels', [0.1, 0.2, 0.3, -0.1, -0.2, -0.3]],
  ['empty', []],
];

test('the reference rounds like IEEE addition where that is exact to check', () => {
  const rand = random(1);
  for (let i = 0; i < 2000; i++) {
    const [a, b] = mixedValues(rand, 2);
    // The sum of two doubles, rounded once, is what + computes.
    assert.ok(Object.is(referenceSum([a!, b!]), a! + b!) || (a! + b! === 0 && referenceSum([a!, b!]) === 0));
  }
  assert.equal(fromUnits(toUnits(Number.MAX_VALUE) * 2n), Infinity);
  assert.equal(fromUnits(toUnits(-Number.MAX_VALUE) * 2n), -Infinity);
});

test('exactSum is correctly rounded where naive summation drifts', () => {
  for (const [label, values] of DRIFTING) {
    const expected = referenceSum(values);
    assert.equal(exactSum(values), expected, label);
    assertNonOverlapping(partialsOf(values), label);
  }
  // The cases do drift when summed naively.
  assert.notEqual(naiveSum([1e16, 1, -1e16]), 1);
  assert.notEqual(naiveSum(Array(10).fill(0.1)), 1);
  assert.equal(exactSum([1e16, 1, -1e16]), 1);
  assert.equal(exactSum([1, 1e100, 1, -1e100]), 2);
  assert.equal(exactSum(Array(10).fill(0.1)), 1);
  assert.equal(exactSum([1, 2 ** -53]), 1);
  assert.equal(exactSum([1, 2 ** -53, 2 ** -105]), 1 + 2 ** -52);
});

test('exactSum matches the reference on random values of mixed magnitudes and signs', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const rand = random(seed);
    const values = mixedValues(rand, 1 + Math.floor(rand() * 200));
    const partials = partialsOf(values);
    assert.equal(roundPartials(partials), referenceSum(values), `seed ${seed}`);
    assertNonOverlapping(partials, `seed ${seed}`);
  }
});

test('merging the partials of parts gives the same sum bit for bit, in any order', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const rand = random(1000 + seed);
    const values = mixedValues(rand, 2 + Math.floor(rand() * 150));
    const expected = referenceSum(values);
    const cuts = new Set<number>();
    const parts = Math.min(1 + Math.floor(rand() * 6), values.length + 1);
    while (cuts.size < parts) cuts.add(Math.floor(rand() * (values.length + 1)));
    const bounds = [0, ...[...cuts].sort((a, b) => a - b), values.length];
    const pieces = bounds.slice(1).map((end, i) => partialsOf(values.slice(bounds[i], end)));
    for (let order = 0; order < 3; order++) {
      const merged: number[] = [];
      for (const piece of shuffled(rand, pieces)) mergePartials(merged, piece);
      assert.ok(Object.is(roundPartials(merged), expected), `seed ${seed} order ${order}`);
      assertNonOverlapping(merged, `seed ${seed} merged`);
    }
  }
});

test('the WASM superaccumulator gives the reference sum and valid partials', () => {
  const wasm = new WasmKernelRunner();
  const cases: Array<[string, number[]]> = [...DRIFTING];
  for (let seed = 1; seed <= 300; seed++) {
    const rand = random(5000 + seed);
    cases.push([`seed ${5000 + seed}`, mixedValues(rand, 1 + Math.floor(rand() * 300))]);
  }
  // Longer than a WASM block (4096) and a carry span (512), with cancellations throughout.
  cases.push(['long', mixedValues(random(77), 9000)]);
  for (const [label, values] of cases) {
    const stats = wasm.statsOf(values);
    const expected = referenceSum(values);
    const sum = roundPartials(stats.partials);
    // The one difference from math.fsum allowed: an all-cancelling sum is +0, never -0.
    assert.ok(Object.is(sum, expected) || (sum === 0 && expected === 0), `${label}: ${sum} != ${expected}`);
    assertNonOverlapping(stats.partials, label);
    assert.equal(stats.count, values.length, label);
    assert.equal(stats.argmin, values.indexOf(Math.min(...values)), `${label}: argmin`);
    assert.equal(stats.argmax, values.indexOf(Math.max(...values)), `${label}: argmax`);
    // And it merges with JS partials like any other list.
    const merged = partialsOf(values);
    mergePartials(merged, stats.partials.map((p) => -p));
    assert.equal(roundPartials(merged), 0, `${label}: JS minus WASM`);
  }
});

test('the WASM exact sum refuses non-finite values', () => {
  const wasm = new WasmKernelRunner();
  assert.throws(() => wasm.statsOf([1, Infinity]), /finite/);
  assert.throws(() => wasm.statsOf([NaN]), /finite/);
  // The instance stays usable.
  assert.equal(roundPartials(wasm.statsOf([1e16, 1, -1e16]).partials), 1);
});

test('WASM argmin and argmax are the first parameter of the extreme, across blocks', () => {
  const wasm = new WasmKernelRunner();
  // 10,000 values (three WASM blocks of 4096) with the extremes repeated in later blocks.
  const values = Array.from({ length: 10_000 }, (_, i) => (i % 7) + 1);
  for (const at of [9000, 5000, 4100]) values[at] = -5;
  for (const at of [8191, 4096, 9999]) values[at] = 50;
  const s = wasm.statsOf(values);
  assert.deepEqual([s.min, s.argmin, s.max, s.argmax], [-5, 4100, 50, 4096]);
  // A block that only ties the extreme keeps the earlier parameter.
  const ties = Array.from({ length: 9000 }, () => 3);
  const t = wasm.statsOf(ties);
  assert.deepEqual([t.argmin, t.argmax], [0, 0]);
});

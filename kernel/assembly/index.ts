/**
 * The sweep kernels, compiled by `asc` to build/kernel.wasm (see docs/design.md,
 * "Kernels" and "Statistics and exact sums").
 *
 * Flat exports on plain numeric types, no bindings, no allocation: the
 * loader (kernel/wasm.ts) calls one `sweep*` per slice and reads the
 * statistics back through the getters. Parameters arrive as f64 (exact for
 * every integer below 2^53, and JS numbers cross the boundary without the
 * BigInt conversion an i64 argument would need) and are used as i64 inside,
 * so sweeps beyond 2^32 parameters work.
 *
 * A slice is evaluated in blocks: `fill*` writes up to BLOCK values into a
 * static buffer, `accumulate` folds them into the statistics. The values
 * export for differential tests is the same `fill*`, so what the tests
 * compare is exactly what the sweep sums.
 *
 * The exact sum is kept in a fixed-point superaccumulator and handed out as
 * Shewchuk partials (the kind kernel/exact-sum.ts builds), whose correctly
 * rounded value is the JS implementation's bit for bit; see kernel/assembly/stats.ts,
 * which user kernels share.
 */

import {
  accumulate,
  blockLength,
  clampBlock,
  finishStats,
  resetStats,
  values,
} from './stats';

// The statistics and the block buffer's exports, shared with user kernels (kernel/assembly/stats.ts).
export {
  addValues,
  blockSize,
  finishStats,
  partial,
  partialCount,
  resetStats,
  statArgMax,
  statArgMin,
  statCount,
  statMax,
  statMin,
  statNonFinite,
  valuesPointer,
} from './stats';

/** Mandelbrot grid width and height. */
const W: i32 = 1000;
/** Mandelbrot iteration limit. */
const MAX_ITER: i32 = 1000;

// ---------------------------------------------------------------- placeholder

/**
 * v(p) = ((p*7 + 13) mod 1000) + f(p mod 100), f(m) = m/10 if m < 10 else m/100.
 * Both residues are stepped instead of divided per value: p*7+13 grows by 7
 * and p mod 100 by 1 for each next p. The fraction is still an IEEE division
 * per value, as the definition says; choosing the divisor with a select keeps
 * the loop free of branches.
 */
// @ts-ignore: decorator
@inline
function fillPlaceholderAt(p: i64, n: i32): void {
  let a = <i32>((p * 7 + 13) % 1000);
  let m = <i32>(p % 100);
  for (let i = 0; i < n; i++) {
    const fraction = <f64>m / select<f64>(10.0, 100.0, m < 10);
    store<f64>(values + (<usize>i << 3), <f64>a + fraction);
    a += 7;
    a = select<i32>(a - 1000, a, a >= 1000);
    m += 1;
    m = select<i32>(0, m, m == 100);
  }
}

/** Writes the values of parameters [start, start + n) (n <= BLOCK) to the block buffer. */
export function fillPlaceholder(start: f64, n: i32, total: f64): usize {
  fillPlaceholderAt(<i64>start, clampBlock(n));
  return values;
}

/** Statistics of the placeholder kernel over [start, end); read them with the getters. */
export function sweepPlaceholder(start: f64, end: f64, total: f64): void {
  resetStats();
  let p = <i64>start;
  const stop = <i64>end;
  while (p < stop) {
    const n = blockLength(p, stop);
    fillPlaceholderAt(p, n);
    // A non-finite value (never, from these kernels) stops the slice; statNonFinite says where.
    if (!accumulate(n, <f64>p)) return;
    p += n;
  }
  finishStats();
}

// ---------------------------------------------------------------- mandelbrot

/** cx = -2.0 + (3.0*x)/W, in that operation order (bit-identical to the JS kernel). */
// @ts-ignore: decorator
@inline
function realPart(x: i32): f64 {
  return -2.0 + (3.0 * <f64>x) / <f64>W;
}

/** cy = -1.5 + (3.0*y)/W. */
// @ts-ignore: decorator
@inline
function imaginaryPart(y: i32): f64 {
  return -1.5 + (3.0 * <f64>y) / <f64>W;
}

/**
 * cx of every column and cy of every row, computed once at instantiation
 * with the formulas above, so each entry is the very f64 the formula gives.
 * Loading the coordinates does more than save two divisions per point:
 * when they were computed inline, TurboFan scheduled the divisions inside
 * the iteration loop of escapeCount4 (after peeling its first iteration),
 * which made the whole kernel about 1.6 times slower; a load stays where it
 * is written.
 */
const realParts: usize = memory.data(W * 8, 16);
const imaginaryParts: usize = memory.data(W * 8, 16);
for (let i = 0; i < W; i++) {
  store<f64>(realParts + (<usize>i << 3), realPart(i));
  store<f64>(imaginaryParts + (<usize>i << 3), imaginaryPart(i));
}

/** The escape count of one point, exactly as docs/design.md writes it (the scalar reference and tail). */
// @ts-ignore: decorator
@inline
function escapeCount(cx: f64, cy: f64): f64 {
  let zx = 0.0;
  let zy = 0.0;
  let n = 0;
  while (n < MAX_ITER && zx * zx + zy * zy <= 4.0) {
    const t = zx * zx - zy * zy + cx;
    zy = 2.0 * zx * zy + cy;
    zx = t;
    n++;
  }
  return <f64>n;
}

/**
 * Escape counts of four points, as two f64x2 vectors iterated side by side:
 * two independent dependency chains, so one vector's multiplies run while
 * the other's previous step is still in flight.
 *
 * Every lane runs the scalar loop's operations in the scalar order, on f64
 * lanes with IEEE rounding and no fused multiply-add (WASM SIMD has none
 * outside relaxed-simd), so each live lane's z is bit-identical to the
 * scalar z. A lane is frozen by a sticky mask: `live` is cleared for good
 * the first time its |z|^2 exceeds 4, and its count (an i64 lane, which
 * subtracting the all-ones mask, -1, increments) stops there, exactly where
 * the scalar loop stops. The frozen lane's z keeps being computed and is
 * thrown away: it may come back inside the circle or turn into inf/NaN,
 * neither of which reaches the count any more, and freezing z itself would
 * cost four bitselects per step (measured: a fifth slower). The loop
 * ends when no lane of either vector is live, or after MAX_ITER steps,
 * which is the scalar `n < 1000` bound for every lane.
 */
// @ts-ignore: decorator
@inline
function escapeCount4(at: usize, cxA: v128, cyA: v128, cxB: v128, cyB: v128): void {
  const four = f64x2.splat(4.0);
  let zxA = f64x2.splat(0.0);
  let zyA = f64x2.splat(0.0);
  let zxB = f64x2.splat(0.0);
  let zyB = f64x2.splat(0.0);
  let nA = i64x2.splat(0);
  let nB = i64x2.splat(0);
  let liveA = i64x2.splat(-1);
  let liveB = i64x2.splat(-1);
  for (let i = 0; i < MAX_ITER; i++) {
    const xxA = f64x2.mul(zxA, zxA);
    const yyA = f64x2.mul(zyA, zyA);
    const xxB = f64x2.mul(zxB, zxB);
    const yyB = f64x2.mul(zyB, zyB);
    liveA = v128.and(liveA, f64x2.le(f64x2.add(xxA, yyA), four));
    liveB = v128.and(liveB, f64x2.le(f64x2.add(xxB, yyB), four));
    if (!v128.any_true(v128.or(liveA, liveB))) break;
    // zy = 2.0*zx*zy + cy, with 2.0*zx computed as zx+zx: the same exact value.
    zyA = f64x2.add(f64x2.mul(f64x2.add(zxA, zxA), zyA), cyA);
    zyB = f64x2.add(f64x2.mul(f64x2.add(zxB, zxB), zyB), cyB);
    // zx = t = zx*zx - zy*zy + cx, from the squares of the old z.
    zxA = f64x2.add(f64x2.sub(xxA, yyA), cxA);
    zxB = f64x2.add(f64x2.sub(xxB, yyB), cxB);
    nA = i64x2.sub(nA, liveA);
    nB = i64x2.sub(nB, liveB);
  }
  // `at` is inside the block buffer with four slots left (the caller's loop bound).
  store<f64>(at, <f64>i64x2.extract_lane(nA, 0));
  store<f64>(at, <f64>i64x2.extract_lane(nA, 1), 8);
  store<f64>(at, <f64>i64x2.extract_lane(nB, 0), 16);
  store<f64>(at, <f64>i64x2.extract_lane(nB, 1), 24);
}

/** Loads [table[a], table[b]] as one vector (a, b < W, so inside the table). */
// @ts-ignore: decorator
@inline
function loadPair(table: usize, a: i32, b: i32): v128 {
  return v128.load64_lane(table + (<usize>b << 3), v128.load64_splat(table + (<usize>a << 3)), 1);
}

/**
 * Writes the escape counts of [p, p + n) to the block buffer: groups of four
 * through the SIMD path, the last n mod 4 through the scalar one. The grid
 * cell (p mod W^2) is stepped instead of divided per value; a group may
 * straddle a row end or the wrap at W^2, each lane has its own coordinates.
 */
function fillMandelbrotAt(p: i64, n: i32): void {
  let cell = <i32>(p % <i64>(W * W));
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const x0 = cell % W, y0 = cell / W;
    cell = nextCell(cell);
    const x1 = cell % W, y1 = cell / W;
    cell = nextCell(cell);
    const x2 = cell % W, y2 = cell / W;
    cell = nextCell(cell);
    const x3 = cell % W, y3 = cell / W;
    cell = nextCell(cell);
    escapeCount4(
      values + (<usize>i << 3),
      loadPair(realParts, x0, x1),
      loadPair(imaginaryParts, y0, y1),
      loadPair(realParts, x2, x3),
      loadPair(imaginaryParts, y2, y3),
    );
  }
  for (; i < n; i++) {
    const cx = load<f64>(realParts + (<usize>(cell % W) << 3));
    const cy = load<f64>(imaginaryParts + (<usize>(cell / W) << 3));
    store<f64>(values + (<usize>i << 3), escapeCount(cx, cy));
    cell = nextCell(cell);
  }
}

// @ts-ignore: decorator
@inline
function nextCell(cell: i32): i32 {
  cell++;
  return select<i32>(0, cell, cell == W * W);
}

/** Writes the values of parameters [start, start + n) (n <= BLOCK) to the block buffer. */
export function fillMandelbrot(start: f64, n: i32, total: f64): usize {
  fillMandelbrotAt(<i64>start, clampBlock(n));
  return values;
}

/** Statistics of the mandelbrot kernel over [start, end); read them with the getters. */
export function sweepMandelbrot(start: f64, end: f64, total: f64): void {
  resetStats();
  let p = <i64>start;
  const stop = <i64>end;
  while (p < stop) {
    const n = blockLength(p, stop);
    fillMandelbrotAt(p, n);
    // A non-finite value (never, from these kernels) stops the slice; statNonFinite says where.
    if (!accumulate(n, <f64>p)) return;
    p += n;
  }
  finishStats();
}

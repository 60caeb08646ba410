/**
 * The sweep kernels, compiled by `asc` to build/kernel.wasm (see DESIGN.md,
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
 * rounded value is the JS implementation's bit for bit; see "statistics".
 */

/** Mandelbrot grid width and height. */
const W: i32 = 1000;
/** Mandelbrot iteration limit. */
const MAX_ITER: i32 = 1000;
/** Values per block; a multiple of 4 so only a slice's last block has a SIMD tail. */
const BLOCK: i32 = 4096;
/**
 * Room for the partials handed out. Consecutive partials of a finite sum are
 * more than 2^52 apart, so the 2098-bit range of f64 holds at most about 41.
 */
const PARTIALS_CAPACITY: i32 = 64;
/**
 * Superaccumulator chunks (see "statistics" below): a value touches chunks
 * 0..64; chunk 65, the top, only takes carries and holds the sign.
 */
const CHUNKS: i32 = 66;
/**
 * Values added between two carry passes. A value adds less than 2^53 to a
 * chunk that holds less than 2^33 after a carry pass, so 512 of them stay
 * below 2^62: no i64 chunk can overflow.
 */
const CARRY_SPAN: i32 = 512;

const values: usize = memory.data(BLOCK * 8, 16);
const partials: usize = memory.data(PARTIALS_CAPACITY * 8, 16);
const chunks: usize = memory.data(CHUNKS * 8, 16);

let statCountValue: f64 = 0;
let statMinValue: f64 = Infinity;
let statMaxValue: f64 = -Infinity;
/** The smallest parameter at which the minimum (maximum) is reached; -1 for an empty slice. */
let statArgMinValue: f64 = -1;
let statArgMaxValue: f64 = -1;
let statPartials: i32 = 0;

// ---------------------------------------------------------------- statistics
//
// The exact sum is a fixed-point superaccumulator, turned into Shewchuk
// partials once per slice. Shewchuk's algorithm per value (kernel/exact-sum.ts)
// walks the whole list of partials for every value, a compare, a swap and a
// two-sum each, one dependent on the other; written branch-free here it still
// capped the placeholder at about 50 million values/s, nearly all of it in
// the sum. The superaccumulator costs a few integer operations and two
// read-modify-writes per value, whatever the values (about 400 million/s).
//
// Every finite f64 is an integer multiple of 2^-1074: x = ±M·2^(pos-1074)
// with M < 2^53 and pos = e - 1 for a biased exponent e >= 1 (M has its
// implicit bit), pos = 0 for subnormals. Chunk k is an i64 of weight
// 2^(32k-1074). A value adds the low 32 bits of M << (pos mod 32) to chunk
// pos/32 and the remaining high bits, M >> (32 - pos mod 32) < 2^53, to the
// next chunk, negated when x is negative: all integer arithmetic, so exact.
// A carry pass every CARRY_SPAN values brings every chunk below the top back
// to [0, 2^32), moving the excess (arithmetic shift: floor) up.
//
// At the end of a slice each non-zero chunk is an integer below 2^32 times a
// power of two, so an exact f64; adding those, smallest first, with
// Shewchuk's step gives the slice's partials: a valid non-overlapping list
// like the JS one, whose correctly rounded value (roundPartials) is the same
// as the JS implementation's, since both are the exact sum rounded once. The
// lists themselves may differ (Shewchuk's lists depend on the order of the
// additions); only the rounded sum is a contract.
//
// Limits: the top chunk (weight 2^1006) holds a sum of up to about 2^40
// values of any finite magnitude; a sum whose magnitude reaches 2^1024 gives
// non-finite partials, as in kernel/exact-sum.ts (math.fsum raises
// OverflowError there). Kernel values are below 1001.

/** Starts an empty slice: count 0, min +Infinity, max -Infinity, no partials. */
export function resetStats(): void {
  statCountValue = 0;
  statMinValue = Infinity;
  statMaxValue = -Infinity;
  statArgMinValue = -1;
  statArgMaxValue = -1;
  statPartials = 0;
  memory.fill(chunks, 0, <usize>CHUNKS << 3);
}

export function statCount(): f64 {
  return statCountValue;
}

export function statMin(): f64 {
  return statMinValue;
}

export function statMax(): f64 {
  return statMaxValue;
}

export function statArgMin(): f64 {
  return statArgMinValue;
}

export function statArgMax(): f64 {
  return statArgMaxValue;
}

/** How many partials finishStats (or a sweep) left; read them with partial(i). */
export function partialCount(): i32 {
  return statPartials;
}

/** Partial `i`, 0 <= i < partialCount(), smallest magnitude first. */
export function partial(i: i32): f64 {
  if (<u32>i >= <u32>statPartials) return NaN;
  return load<f64>(partials + (<usize>i << 3));
}

/** Adds `x` (finite) exactly into the chunks. */
// @ts-ignore: decorator
@inline
function addToChunks(x: f64): void {
  const bits = reinterpret<i64>(x);
  const biased = <i32>(bits >>> 52) & 0x7ff;
  // Infinity and NaN have no place in a fixed-point sum; the kernels never
  // produce them, and this always-untaken branch guards the test export.
  if (biased == 0x7ff) unreachable();
  const normal = biased != 0;
  const mantissa = (bits & 0xf_ffff_ffff_ffff) | select<i64>(<i64>1 << 52, 0, normal);
  const pos = select<i32>(biased - 1, 0, normal);
  const shift = <i64>(pos & 31);
  const sign = bits >> 63; // 0 or -1: (v ^ sign) - sign negates when x < 0
  const low = (((mantissa << shift) & 0xffff_ffff) ^ sign) - sign;
  const high = ((mantissa >>> (32 - shift)) ^ sign) - sign;
  // pos <= 2045, so the chunk index pos/32 + 1 <= 64 < CHUNKS.
  const at = chunks + (<usize>(pos >>> 5) << 3);
  store<i64>(at, load<i64>(at) + low);
  store<i64>(at, load<i64>(at, 8) + high, 8);
}

/** Brings chunks 0..CHUNKS-2 into [0, 2^32), moving the excess up; the top keeps the sign. */
function carryChunks(): void {
  let carry: i64 = 0;
  for (let k = 0; k < CHUNKS - 1; k++) {
    const at = chunks + (<usize>k << 3);
    const c = load<i64>(at) + carry;
    carry = c >> 32;
    store<i64>(at, c & 0xffff_ffff);
  }
  const top = chunks + (<usize>(CHUNKS - 1) << 3);
  store<i64>(top, load<i64>(top) + carry);
}

/** 2^e as an f64 (+Infinity above 1023), for -1074 <= e. */
// @ts-ignore: decorator
@inline
function powerOfTwo(e: i32): f64 {
  if (e > 1023) return Infinity;
  if (e >= -1022) return reinterpret<f64>(<i64>(e + 1023) << 52);
  return reinterpret<f64>(<i64>1 << (e + 1074)); // subnormal
}

/**
 * Adds `x` to the `n` partials in linear memory and returns their new number:
 * kernel/exact-sum.ts addExact step for step, so the list is one the JS
 * code would build from the same additions.
 */
function addPartial(n: i32, x: f64): i32 {
  let kept = 0;
  for (let j = 0; j < n; j++) {
    let y = load<f64>(partials + (<usize>j << 3));
    if (abs(x) < abs(y)) {
      const t = x;
      x = y;
      y = t;
    }
    const hi = x + y;
    const lo = y - (hi - x);
    // kept <= j: never writes over a partial not read yet.
    if (lo != 0) {
      store<f64>(partials + (<usize>kept << 3), lo);
      kept++;
    }
    x = hi;
  }
  store<f64>(partials + (<usize>kept << 3), x);
  return kept + 1;
}

/** Turns the chunks into the slice's partials (partialCount, partial). */
export function finishStats(): void {
  carryChunks();
  // A negative sum is held in two's complement: a -1 in the top chunk over
  // full lower chunks. Negating every chunk and carrying again gives the
  // magnitude in the same form as a positive sum (all chunks >= 0); the
  // partials take the sign back.
  const top = chunks + (<usize>(CHUNKS - 1) << 3);
  const negative = load<i64>(top) < 0;
  if (negative) {
    for (let k = 0; k < CHUNKS; k++) {
      const at = chunks + (<usize>k << 3);
      store<i64>(at, -load<i64>(at));
    }
    carryChunks();
  }
  const sign: f64 = negative ? -1.0 : 1.0;
  let n = 0;
  for (let k = 0; k < CHUNKS - 1; k++) {
    const c = load<i64>(chunks + (<usize>k << 3));
    // c < 2^32 converts exactly, and c·2^(32k-1074) has no bit below 2^-1074: exact.
    if (c != 0) n = addPartial(n, sign * <f64>c * powerOfTwo(32 * k - 1074));
  }
  // The top chunk may exceed 2^32 (by carries only): add it as two 32-bit
  // halves; the upper one, of weight 2^1038, is non-zero only for a sum
  // beyond the f64 range, and becomes an infinite partial.
  const last = load<i64>(top);
  const lastLow = last & 0xffff_ffff;
  const lastHigh = last >> 32;
  if (lastLow != 0) n = addPartial(n, sign * <f64>lastLow * powerOfTwo(32 * (CHUNKS - 1) - 1074));
  if (lastHigh != 0) n = addPartial(n, sign * <f64>lastHigh * powerOfTwo(32 * CHUNKS - 1074));
  statPartials = n;
}

/** The index of the first of the first `n` block values equal to `x` (there is one). */
function firstIndexOf(x: f64, n: i32): i32 {
  for (let i = 0; i < n; i++) {
    if (load<f64>(values + (<usize>i << 3)) == x) return i;
  }
  return n;
}

/**
 * Folds the first `n` values of the block buffer, those of parameters
 * base, base+1, ..., into count, min, max, argmin, argmax and the chunks;
 * finishStats makes the partials.
 *
 * The loop keeps the block's own min and max with selects only; where one
 * of them beats the slice's so far, a second pass finds the first parameter
 * that has it. Blocks come in increasing order and only a strictly better
 * value replaces, so the argument is the smallest parameter reaching the
 * extreme, as in the JS runner. The second pass runs only when the extreme
 * improves, which after the first blocks is rare.
 */
// @ts-ignore: decorator
@inline
function accumulate(n: i32, base: f64): void {
  let lowest: f64 = Infinity;
  let highest: f64 = -Infinity;
  for (let run = 0; run < n; run += CARRY_SPAN) {
    const runEnd = min(n, run + CARRY_SPAN);
    for (let i = run; i < runEnd; i++) {
      const v = load<f64>(values + (<usize>i << 3));
      // Same comparisons as the JS runner (not f64.min, which differs on -0).
      lowest = select<f64>(v, lowest, v < lowest);
      highest = select<f64>(v, highest, v > highest);
      addToChunks(v);
    }
    carryChunks();
  }
  if (lowest < statMinValue) {
    statMinValue = lowest;
    statArgMinValue = base + <f64>firstIndexOf(lowest, n);
  }
  if (highest > statMaxValue) {
    statMaxValue = highest;
    statArgMaxValue = base + <f64>firstIndexOf(highest, n);
  }
  statCountValue += <f64>n;
}

/**
 * Adds the first `n` (<= BLOCK) values of the block buffer (finite; it traps
 * on others), taken as those of parameters base, base+1, ..., to the
 * statistics; call finishStats before reading partials. Lets tests run
 * arbitrary values through the WASM statistics.
 */
export function addValues(n: i32, base: f64): void {
  accumulate(clampBlock(n), base);
}

/** The block buffer: BLOCK f64 values, written by fill* and read by accumulate. */
export function valuesPointer(): usize {
  return values;
}

export function blockSize(): i32 {
  return BLOCK;
}

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
    accumulate(n, <f64>p);
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

/** The escape count of one point, exactly as DESIGN.md writes it (the scalar reference and tail). */
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
    accumulate(n, <f64>p);
    p += n;
  }
  finishStats();
}

// ---------------------------------------------------------------- helpers

// @ts-ignore: decorator
@inline
function blockLength(p: i64, stop: i64): i32 {
  const left = stop - p;
  return left < <i64>BLOCK ? <i32>left : BLOCK;
}

// @ts-ignore: decorator
@inline
function clampBlock(n: i32): i32 {
  return n < 0 ? 0 : n > BLOCK ? BLOCK : n;
}

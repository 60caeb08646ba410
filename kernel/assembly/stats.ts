/**
 * The engine's block loop support and exact statistics, shared by every
 * WASM kernel: the built-in ones (kernel/assembly/index.ts) and each user
 * kernel, whose generated wrapper (kernel/user-build.ts) imports this file
 * next to the user's `value` function. A kernel writes up to BLOCK values
 * into the block buffer (`values`), hands them to `accumulate`, and calls
 * `finishStats` at the end of its slice; JS reads the results back through
 * the exported getters (kernel/wasm.ts, kernel/user-wasm.ts).
 *
 * Everything here is plain numeric code on static memory (memory.data): no
 * allocation, so it works with any runtime a kernel is compiled with.
 *
 * A value that is not finite (NaN, ±Infinity) has no place in an exact sum:
 * `accumulate` reports the first such parameter (statNonFinite) and the
 * caller stops the slice, so the JS side can fail the chunk naming it.
 */

/** Values per block; a multiple of 4 so only a slice's last block has a SIMD tail. */
export const BLOCK: i32 = 4096;
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

/** The block buffer: BLOCK f64 values, written by a kernel's fill and read by accumulate. */
export const values: usize = memory.data(BLOCK * 8, 16);
const partials: usize = memory.data(PARTIALS_CAPACITY * 8, 16);
const chunks: usize = memory.data(CHUNKS * 8, 16);

let statCountValue: f64 = 0;
let statMinValue: f64 = Infinity;
let statMaxValue: f64 = -Infinity;
/** The smallest parameter at which the minimum (maximum) is reached; -1 for an empty slice. */
let statArgMinValue: f64 = -1;
let statArgMaxValue: f64 = -1;
let statPartials: i32 = 0;
/** The first parameter whose value was NaN or ±Infinity in the current slice; -1 when none. */
let statNonFiniteValue: f64 = -1;


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
// OverflowError there). The built-in kernels' values are below 1001.

/** Starts an empty slice: count 0, min +Infinity, max -Infinity, no partials. */
export function resetStats(): void {
  statCountValue = 0;
  statMinValue = Infinity;
  statMaxValue = -Infinity;
  statArgMinValue = -1;
  statArgMaxValue = -1;
  statPartials = 0;
  statNonFiniteValue = -1;
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

/**
 * The first parameter of the slice whose value was NaN or ±Infinity, or -1.
 * When it is set the slice stopped there: the other statistics are partial.
 */
export function statNonFinite(): f64 {
  return statNonFiniteValue;
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

/** The exponent bits of an f64: all set for NaN and ±Infinity only. */
const EXPONENT_MASK: i64 = 0x7ff0_0000_0000_0000;

/**
 * Adds the f64 whose bits are `bits` exactly into the chunks. A non-finite
 * value (exponent 0x7ff) lands in chunks 63 and 64, inside the buffer, and
 * makes the sum meaningless; accumulate flags it and the slice is abandoned.
 */
// @ts-ignore: decorator
@inline
function addToChunks(bits: i64): void {
  const biased = <i32>(bits >>> 52) & 0x7ff;
  const normal = biased != 0;
  const mantissa = (bits & 0xf_ffff_ffff_ffff) | select<i64>(<i64>1 << 52, 0, normal);
  const pos = select<i32>(biased - 1, 0, normal);
  const shift = <i64>(pos & 31);
  const sign = bits >> 63; // 0 or -1: (v ^ sign) - sign negates when x < 0
  const low = (((mantissa << shift) & 0xffff_ffff) ^ sign) - sign;
  const high = ((mantissa >>> (32 - shift)) ^ sign) - sign;
  // pos <= 2046, so the chunk index pos/32 + 1 <= 64 < CHUNKS.
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

/** The index of the first of the first `n` block values that is NaN or ±Infinity (there is one). */
function firstNonFinite(n: i32): i32 {
  for (let i = 0; i < n; i++) {
    if ((load<i64>(values + (<usize>i << 3)) & EXPONENT_MASK) == EXPONENT_MASK) return i;
  }
  return n;
}

/**
 * Folds the first `n` values of the block buffer, those of parameters
 * base, base+1, ..., into count, min, max, argmin, argmax and the chunks;
 * finishStats makes the partials. Returns false, after setting
 * statNonFinite to the first parameter whose value is NaN or ±Infinity,
 * when the block has one: the caller stops the slice there.
 *
 * The loop keeps the block's own min and max with selects only; where one
 * of them beats the slice's so far, a second pass finds the first parameter
 * that has it. Blocks come in increasing order and only a strictly better
 * value replaces, so the argument is the smallest parameter reaching the
 * extreme, as in the JS runner. The second pass runs only when the extreme
 * improves, which after the first blocks is rare. Non-finite values are
 * noticed the same way, branch-free: an OR of "exponent all ones" over the
 * block, looked at once at its end.
 */
// @ts-ignore: decorator
@inline
export function accumulate(n: i32, base: f64): bool {
  let lowest: f64 = Infinity;
  let highest: f64 = -Infinity;
  let nonFinite = false;
  for (let run = 0; run < n; run += CARRY_SPAN) {
    const runEnd = min(n, run + CARRY_SPAN);
    for (let i = run; i < runEnd; i++) {
      const bits = load<i64>(values + (<usize>i << 3));
      const v = reinterpret<f64>(bits);
      // Same comparisons as the JS runner (not f64.min, which differs on -0).
      lowest = select<f64>(v, lowest, v < lowest);
      highest = select<f64>(v, highest, v > highest);
      nonFinite |= (bits & EXPONENT_MASK) == EXPONENT_MASK;
      addToChunks(bits);
    }
    carryChunks();
  }
  if (nonFinite) {
    statNonFiniteValue = base + <f64>firstNonFinite(n);
    return false;
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
  return true;
}

/**
 * Adds the first `n` (<= BLOCK) values of the block buffer, taken as those
 * of parameters base, base+1, ..., to the statistics; call finishStats
 * before reading partials. Lets tests run arbitrary values through the WASM
 * statistics (a non-finite one sets statNonFinite, as in a sweep).
 */
export function addValues(n: i32, base: f64): void {
  accumulate(clampBlock(n), base);
}

/** The block buffer's address, for JS to read or write BLOCK f64 values there. */
export function valuesPointer(): usize {
  return values;
}

export function blockSize(): i32 {
  return BLOCK;
}
// ---------------------------------------------------------------- helpers

/** How many of the parameters [p, stop) the next block takes: at most BLOCK. */
// @ts-ignore: decorator
@inline
export function blockLength(p: i64, stop: i64): i32 {
  const left = stop - p;
  return left < <i64>BLOCK ? <i32>left : BLOCK;
}

/** `n` clamped to 0..BLOCK, for exports that take a count from JS. */
// @ts-ignore: decorator
@inline
export function clampBlock(n: i32): i32 {
  return n < 0 ? 0 : n > BLOCK ? BLOCK : n;
}

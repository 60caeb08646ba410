/**
 * Exact summation of f64 values with Shewchuk's non-overlapping partials,
 * the algorithm behind Python's math.fsum.
 *
 * A list of partials represents a sum exactly: the partials are
 * non-overlapping f64s in increasing order of magnitude, and their
 * mathematical sum is the exact sum of every value added so far. Merging two
 * sums is adding the partials of one into the other, so the grand sum of a
 * sweep does not depend on how it was split, in which order chunks finished,
 * or how many threads computed them. The WASM kernels hand out the same kind
 * of list (kernel/assembly/index.ts builds it from a fixed-point
 * superaccumulator), and its rounded value is the same bit for bit.
 */

/** Adds `x` to `partials` in place. `x` must be finite. */
export function addExact(partials: number[], x: number): void {
  let kept = 0;
  for (let j = 0; j < partials.length; j++) {
    let y = partials[j]!;
    if (Math.abs(x) < Math.abs(y)) {
      const t = x;
      x = y;
      y = t;
    }
    const hi = x + y;
    const lo = y - (hi - x);
    if (lo !== 0) partials[kept++] = lo;
    x = hi;
  }
  partials.length = kept;
  partials.push(x);
}

/** Adds every partial of `from` into `into` (exact merge of two sums). */
export function mergePartials(into: number[], from: readonly number[]): void {
  for (const x of from) addExact(into, x);
}

/**
 * The correctly rounded (round-half-even) value of the exact sum the
 * partials represent: the final step of math.fsum, including its correction
 * for a sum that lies exactly half-way between two doubles.
 */
export function roundPartials(partials: readonly number[]): number {
  let n = partials.length;
  if (n === 0) return 0;
  let hi = partials[--n]!;
  let lo = 0;
  while (n > 0) {
    const x = hi;
    const y = partials[--n]!;
    hi = x + y;
    const yr = hi - x;
    lo = y - yr;
    if (lo !== 0) break;
  }
  if (n > 0 && ((lo < 0 && partials[n - 1]! < 0) || (lo > 0 && partials[n - 1]! > 0))) {
    const y = lo * 2;
    const x = hi + y;
    const yr = x - hi;
    if (y === yr) hi = x;
  }
  return hi;
}

/** Exact, correctly rounded sum of `values` (what math.fsum returns). */
export function exactSum(values: Iterable<number>): number {
  const partials: number[] = [];
  for (const v of values) addExact(partials, v);
  return roundPartials(partials);
}

/**
 * Collatz total stopping times: the number of steps n -> n/2 (n even),
 * n -> 3n + 1 (n odd) that take n = p + 1 to 1. Integer-heavy: u64
 * arithmetic, a data-dependent loop, no floating point until the result.
 *
 * Over p < 10^6 the longest is 524 steps, at n = 837799 (p = 837798).
 */

/** 3n + 1 stays below 2^64 while n is at most this. */
const LIMIT: u64 = 0x5555_5555_5555_5554;

export function value(p: i64, total: i64): f64 {
  let n = <u64>p + 1;
  let steps = 0;
  while (n != 1) {
    if (n & 1) {
      // A trajectory beyond 2^64 would wrap silently: fail the chunk instead.
      assert(n <= LIMIT, 'collatz: 3n + 1 overflows u64');
      n = 3 * n + 1;
    } else {
      n >>= 1;
    }
    steps++;
  }
  return <f64>steps;
}

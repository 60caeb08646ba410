/**
 * Monte Carlo estimate of π: parameter p draws a point (u, v) uniform in the
 * unit square and scores 4 when it falls in the quarter disc u² + v² <= 1,
 * 0 otherwise; the sweep's average is the estimate.
 *
 * The point comes from Philox2x32-10 (Salmon et al., "Parallel random
 * numbers: as easy as 1, 2, 3", SC 2011), a counter-based generator: the
 * counter is p itself (low and high 32 bits), so the value of p is the same
 * whichever worker, thread or chunk computes it, and a sweep's result does
 * not depend on how it was split. No Math.random: a kernel must be pure.
 */

const PHILOX_M: u64 = 0xd256d193;
const PHILOX_W: u32 = 0x9e3779b9;
const KEY: u32 = 0x5eed1234;

export function value(p: i64, total: i64): f64 {
  let c0 = <u32>p;
  let c1 = <u32>(p >>> 32);
  let key = KEY;
  for (let round = 0; round < 10; round++) {
    const product = PHILOX_M * <u64>c0;
    c0 = <u32>(product >>> 32) ^ key ^ c1;
    c1 = <u32>product;
    key += PHILOX_W;
  }
  // (k + 0.5) / 2^32: exact in f64, strictly inside (0, 1).
  const u = (<f64>c0 + 0.5) * 2.3283064365386963e-10;
  const v = (<f64>c1 + 0.5) * 2.3283064365386963e-10;
  return u * u + v * v <= 1.0 ? 4.0 : 0.0;
}

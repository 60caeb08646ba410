/**
 * The wrapper `ttg kernel build` compiles around a user kernel (see
 * kernel/user-build.ts): the engine's block loop and exact statistics
 * (kernel/assembly/stats.ts, the very code the built-in kernels use) around
 * the user's `value(p: i64, total: i64): f64`.
 *
 * The builder serves this file as the entry, with the import of
 * './user-value' below pointed at the user's file. Only this file's exports
 * are the module's exports, so the user's `value` is an ordinary function
 * with exactly one call site (fillAt's loop), and Binaryen inlines a
 * function of one caller whatever its size: the per-parameter call
 * disappears, as it does in the built-in kernels. fillAt itself is called
 * from two places (sweep and fill) and keeps its loop, so it stays a
 * function: the call per block of 4096 values costs nothing measurable.
 *
 * Parameters cross the boundary as f64 (exact below 2^53) and are i64
 * inside, as for the built-in kernels.
 */
import { value } from './user-value';
import { accumulate, blockLength, clampBlock, finishStats, resetStats, values } from './stats';

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

/**
 * The interface version of a user kernel module: the loader refuses a
 * module without it (not built by `ttg kernel build`) or with another one.
 */
export function ttgUserKernelAbi(): i32 {
  return 1;
}

/** Writes value(p, total) for p in [p, p + n) (n <= BLOCK) to the block buffer. */
function fillAt(p: i64, n: i32, total: i64): void {
  for (let i = 0; i < n; i++) {
    store<f64>(values + (<usize>i << 3), value(p + <i64>i, total));
  }
}

/** Writes the values of parameters [start, start + n) (n <= BLOCK) to the block buffer; returns its address. */
export function fill(start: f64, n: i32, total: f64): usize {
  fillAt(<i64>start, clampBlock(n), <i64>total);
  return values;
}

/**
 * Statistics of the kernel over [start, end); read them with the getters.
 * A NaN or ±Infinity stops the slice at its block: statNonFinite() names the
 * first parameter that gave one, and the JS side fails the chunk.
 */
export function sweep(start: f64, end: f64, total: f64): void {
  resetStats();
  let p = <i64>start;
  const stop = <i64>end;
  const t = <i64>total;
  while (p < stop) {
    const n = blockLength(p, stop);
    fillAt(p, n, t);
    if (!accumulate(n, <f64>p)) return;
    p += n;
  }
  finishStats();
}

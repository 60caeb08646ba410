/** The interface every kernel implementation (WASM or plain JS) gives. */

export const KERNEL_NAMES = ['placeholder', 'mandelbrot'] as const;
export type KernelName = (typeof KERNEL_NAMES)[number];

export const KERNEL_IMPLS = ['wasm', 'js'] as const;
export type KernelImpl = (typeof KERNEL_IMPLS)[number];

/**
 * Statistics of the values of one slice of parameters.
 * `partials` is the exact sum as non-overlapping f64s (kernel/exact-sum.ts);
 * `argmin` (`argmax`) is the smallest parameter at which `min` (`max`) is reached.
 * An empty slice has count 0, min +Infinity, max -Infinity, argmin and argmax -1, partials [].
 */
export interface SliceStats {
  count: number;
  min: number;
  max: number;
  argmin: number;
  argmax: number;
  partials: number[];
}

export interface KernelRunner {
  readonly impl: KernelImpl;
  /** Evaluates `kernel` over parameters [start, end) of a sweep of `total`, in one call. */
  sweep(kernel: KernelName, start: number, end: number, total: number): SliceStats;
  /** The values themselves, for differential tests (not the hot path). */
  values(kernel: KernelName, start: number, end: number, total: number): Float64Array;
}

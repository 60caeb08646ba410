/** The interface every kernel implementation (WASM or plain JS) gives. */

export const KERNEL_NAMES = ['placeholder', 'mandelbrot'] as const;
export type KernelName = (typeof KERNEL_NAMES)[number];

/**
 * A user kernel (docs/design.md, "User kernels") as every pool thread loads it:
 * the module built by `ttg kernel build`, the sha-256 the sweep records
 * (a thread refuses a file that no longer has it), and the JS twin.
 */
export interface UserKernelSpec {
  /** The kernel's name: its file's base name. */
  name: string;
  wasmPath: string;
  sha256: string;
  /** The plain JS twin (KERNEL_JS), needed for KERNEL_IMPL=js; null when none was given. */
  jsPath: string | null;
}

/** What a pool runs: a built-in kernel by name, or a user kernel. */
export type KernelChoice = KernelName | UserKernelSpec;

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

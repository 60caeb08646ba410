/** Argument checks shared by both kernel runners, so both reject the same slices with the same words. */
import { KERNEL_NAMES, type KernelName } from './types.js';

/**
 * The largest sweep the kernels compute exactly: the placeholder's p*7+13
 * must stay below 2^53 for the JS kernel, whose numbers are f64 (the WASM
 * kernel uses i64 and would go further). Sweeps are configured up to 2^48.
 */
export const MAX_KERNEL_PARAMS = 2 ** 50;

/** Throws unless `kernel` is known and 0 <= start <= end <= total <= MAX_KERNEL_PARAMS are integers. */
export function checkSlice(kernel: KernelName, start: number, end: number, total: number): void {
  if (!(KERNEL_NAMES as readonly string[]).includes(kernel)) {
    throw new TypeError(`unknown kernel ${JSON.stringify(kernel)}; expected one of ${KERNEL_NAMES.join(', ')}`);
  }
  checkRange(start, end, total);
}

/**
 * Throws unless 0 <= start <= end <= total <= MAX_KERNEL_PARAMS are integers (every kernel, user kernels too).
 * Called for every slice: it allocates nothing, even before V8 optimises it (engine/jit.ts); the loop over
 * [name, value] pairs it replaced made ~1.9 kB of garbage a chunk in a worker's first half second.
 */
export function checkRange(start: number, end: number, total: number): void {
  checkParam('start', start);
  checkParam('end', end);
  checkParam('total', total);
  if (start > end || end > total) {
    throw new RangeError(`slice must satisfy start <= end <= total, got [${start}, ${end}) of ${total}`);
  }
}

function checkParam(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_KERNEL_PARAMS) {
    throw new RangeError(`slice ${name} must be an integer in 0..2^50, got ${value}`);
  }
}

/**
 * The kernels in plain TypeScript: the second, straightforward
 * implementation that the WASM kernels are tested against and benchmarked
 * with. Each value is computed from `p` directly as docs/design.md writes it (no
 * stepping of residues, no SIMD), and the sum is Shewchuk's partials from
 * kernel/exact-sum.ts, one value at a time.
 */
import { addExact } from './exact-sum.js';
import { checkSlice } from './slice.js';
import type { KernelImpl, KernelName, KernelRunner, SliceStats } from './types.js';

/** Mandelbrot grid width and height. */
const W = 1000;
/** Mandelbrot iteration limit. */
const MAX_ITER = 1000;

/**
 * The placeholder kernel: ((p*7 + 13) mod 1000) + f(p mod 100), with
 * f(m) = m/10 for m < 10, else m/100. Exact for p below 2^50 (p*7+13 stays
 * below 2^53).
 */
export function placeholderValue(p: number): number {
  const m = p % 100;
  return ((p * 7 + 13) % 1000) + (m < 10 ? m / 10 : m / 100);
}

/** The mandelbrot kernel: the escape count (1..1000) of grid point p. */
export function mandelbrotValue(p: number): number {
  const x = p % W;
  const y = Math.floor(p / W) % W;
  const cx = -2.0 + (3.0 * x) / W;
  const cy = -1.5 + (3.0 * y) / W;
  let zx = 0;
  let zy = 0;
  let n = 0;
  // JS has no fused multiply-add: every product below is rounded on its own.
  while (n < MAX_ITER && zx * zx + zy * zy <= 4.0) {
    const t = zx * zx - zy * zy + cx;
    zy = 2.0 * zx * zy + cy;
    zx = t;
    n++;
  }
  return n;
}

const KERNELS: Record<KernelName, (p: number) => number> = {
  placeholder: placeholderValue,
  mandelbrot: mandelbrotValue,
};

/** The statistics of one kernel over [start, end): min, max and Shewchuk partials, value by value. */
function sweepPlaceholder(start: number, end: number): SliceStats {
  const partials: number[] = [];
  let min = Infinity;
  let max = -Infinity;
  let argmin = -1;
  let argmax = -1;
  for (let p = start; p < end; p++) {
    const v = placeholderValue(p);
    if (v < min) {
      min = v;
      argmin = p;
    }
    if (v > max) {
      max = v;
      argmax = p;
    }
    addExact(partials, v);
  }
  return { count: end - start, min, max, argmin, argmax, partials };
}

/**
 * The same loop as sweepPlaceholder, written out again rather than shared
 * through a function argument: with one call site for both kernels V8 would
 * see two targets there and stop inlining the kernel (measured: the
 * placeholder ran 30% slower).
 */
function sweepMandelbrot(start: number, end: number): SliceStats {
  const partials: number[] = [];
  let min = Infinity;
  let max = -Infinity;
  let argmin = -1;
  let argmax = -1;
  for (let p = start; p < end; p++) {
    const v = mandelbrotValue(p);
    if (v < min) {
      min = v;
      argmin = p;
    }
    if (v > max) {
      max = v;
      argmax = p;
    }
    addExact(partials, v);
  }
  return { count: end - start, min, max, argmin, argmax, partials };
}

const SWEEPS: Record<KernelName, (start: number, end: number) => SliceStats> = {
  placeholder: sweepPlaceholder,
  mandelbrot: sweepMandelbrot,
};

/** Runs the kernels in the calling thread's JS engine. */
export class JsKernelRunner implements KernelRunner {
  readonly impl: KernelImpl = 'js';

  sweep(kernel: KernelName, start: number, end: number, total: number): SliceStats {
    checkSlice(kernel, start, end, total);
    return SWEEPS[kernel](start, end);
  }

  values(kernel: KernelName, start: number, end: number, total: number): Float64Array {
    checkSlice(kernel, start, end, total);
    const value = KERNELS[kernel];
    const out = new Float64Array(end - start);
    for (let i = 0; i < out.length; i++) out[i] = value(start + i);
    return out;
  }
}

/**
 * Loads build/kernel.wasm (compiled from kernel/assembly/index.ts) and gives
 * it the KernelRunner interface. One instance compiles and instantiates the
 * module once, synchronously, so a pool thread pays for it once at start-up,
 * never per slice.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkSlice } from './slice.js';
import type { KernelImpl, KernelName, KernelRunner, SliceStats } from './types.js';

/** build/kernel.wasm of the package: this file runs as dist/kernel/wasm.js, two levels below the root. */
export const DEFAULT_WASM_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../build/kernel.wasm');

/**
 * The statistics exports every WASM kernel module has, built-in or user
 * (kernel/assembly/stats.ts): f64 arguments carry the parameters, i32 the counts.
 */
export interface StatsExports {
  memory: WebAssembly.Memory;
  resetStats(): void;
  addValues(n: number, base: number): void;
  finishStats(): void;
  statCount(): number;
  statMin(): number;
  statMax(): number;
  statArgMin(): number;
  statArgMax(): number;
  /** The first parameter of the last slice whose value was NaN or ±Infinity, or -1. */
  statNonFinite(): number;
  partialCount(): number;
  partial(i: number): number;
  valuesPointer(): number;
  blockSize(): number;
}

/** The statistics of the last slice a module swept (or of the values added since resetStats, after finishStats). */
export function readStats(e: StatsExports): SliceStats {
  const partials: number[] = new Array(e.partialCount());
  for (let i = 0; i < partials.length; i++) partials[i] = e.partial(i);
  return { count: e.statCount(), min: e.statMin(), max: e.statMax(), argmin: e.statArgMin(), argmax: e.statArgMax(), partials };
}

/** The flat exports of kernel/assembly/index.ts. */
interface KernelExports extends StatsExports {
  sweepPlaceholder(start: number, end: number, total: number): void;
  fillPlaceholder(start: number, n: number, total: number): number;
  sweepMandelbrot(start: number, end: number, total: number): void;
  fillMandelbrot(start: number, n: number, total: number): number;
}

type Sweep = (start: number, end: number, total: number) => void;
type Fill = (start: number, n: number, total: number) => number;

export interface WasmKernelOptions {
  /** Where the compiled kernels are; defaults to the package's build/kernel.wasm. */
  wasmPath?: string;
}

function loadKernelModule(file: string): WebAssembly.Module {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    // readFileSync returns a Buffer of its own (never a shared) ArrayBuffer.
    bytes = readFileSync(file) as Uint8Array<ArrayBuffer>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`WASM kernels not found at ${file}; run \`npm run build\` (or \`npm run build:wasm\`) first`, {
        cause: err,
      });
    }
    throw err;
  }
  return new WebAssembly.Module(bytes);
}

/** Runs the AssemblyScript kernels (WASM SIMD mandelbrot, superaccumulator sums). */
export class WasmKernelRunner implements KernelRunner {
  readonly impl: KernelImpl = 'wasm';
  readonly #exports: KernelExports;
  readonly #sweeps: Record<KernelName, Sweep>;
  readonly #fills: Record<KernelName, Fill>;
  readonly #blockSize: number;

  constructor(options: WasmKernelOptions = {}) {
    const module = loadKernelModule(options.wasmPath ?? DEFAULT_WASM_PATH);
    // The release build imports nothing (stub runtime, noAssert); `abort` is
    // there in case a debug build is loaded instead.
    const imports = {
      env: {
        abort(): never {
          throw new Error('WASM kernel aborted');
        },
      },
    };
    this.#exports = new WebAssembly.Instance(module, imports).exports as unknown as KernelExports;
    const e = this.#exports;
    this.#sweeps = { placeholder: e.sweepPlaceholder, mandelbrot: e.sweepMandelbrot };
    this.#fills = { placeholder: e.fillPlaceholder, mandelbrot: e.fillMandelbrot };
    this.#blockSize = e.blockSize();
  }

  sweep(kernel: KernelName, start: number, end: number, total: number): SliceStats {
    checkSlice(kernel, start, end, total);
    this.#sweeps[kernel](start, end, total);
    const nonFinite = this.#exports.statNonFinite();
    // The built-in kernels' values are finite by construction; a broken build would show here.
    if (nonFinite >= 0) throw new RangeError(`kernel ${kernel} gave a value that is not finite at parameter ${nonFinite}`);
    return readStats(this.#exports);
  }

  values(kernel: KernelName, start: number, end: number, total: number): Float64Array {
    checkSlice(kernel, start, end, total);
    const fill = this.#fills[kernel];
    const out = new Float64Array(end - start);
    for (let at = 0; at < out.length; at += this.#blockSize) {
      const n = Math.min(this.#blockSize, out.length - at);
      const pointer = fill(start + at, n, total);
      // A fresh view each time: a grown memory detaches the old buffer.
      out.set(new Float64Array(this.#exports.memory.buffer, pointer, n), at);
    }
    return out;
  }

  /**
   * The statistics of arbitrary finite values, through the same exact sum
   * the WASM sweeps use (for tests of that sum).
   */
  statsOf(values: ArrayLike<number>): SliceStats {
    const e = this.#exports;
    e.resetStats();
    for (let at = 0; at < values.length; at += this.#blockSize) {
      const n = Math.min(this.#blockSize, values.length - at);
      const block = new Float64Array(e.memory.buffer, e.valuesPointer(), n);
      for (let i = 0; i < n; i++) {
        const v = values[at + i]!;
        if (!Number.isFinite(v)) throw new RangeError(`values must be finite, got ${v} at index ${at + i}`);
        block[i] = v;
      }
      e.addValues(n, at);
    }
    e.finishStats();
    return readStats(e);
  }
}

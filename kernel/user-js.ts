/**
 * Runs a user kernel's plain JS twin: an ES module exporting
 * `value(p, total)` on numbers (docs/design.md, "User kernels"), with the same
 * statistics and the same errors as the WASM module (kernel/user-wasm.ts):
 * min, max and their first parameters by the same comparisons, the exact sum
 * as Shewchuk partials (kernel/exact-sum.ts), whose rounded value is the
 * WASM superaccumulator's bit for bit.
 */
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { addExact } from './exact-sum.js';
import { describeValue, KernelLoadError, KernelTrapError, KernelValueError } from './errors.js';
import { checkRange } from './slice.js';
import type { KernelImpl, SliceStats } from './types.js';
import { userKernelName } from './user-build.js';
import type { UserKernelRunner } from './user-wasm.js';

type ValueFunction = (p: number, total: number) => unknown;

export class UserJsKernel implements UserKernelRunner {
  readonly impl: KernelImpl = 'js';
  readonly name: string;
  readonly #value: ValueFunction;

  /** Imports the twin at `file` (once per thread: keep the instance). */
  static async fromFile(file: string, name = userKernelName(file)): Promise<UserJsKernel> {
    let module: Record<string, unknown>;
    try {
      module = await import(pathToFileURL(path.resolve(file)).href);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ERR_MODULE_NOT_FOUND' ? 'not found' : `${(err as Error).name}: ${(err as Error).message}`;
      throw new KernelLoadError(`cannot load the kernel twin ${file}: ${why}`, { cause: err });
    }
    const value = module['value'];
    if (typeof value !== 'function') {
      throw new KernelLoadError(`${file} must export a function value(p, total) (an ES module: export function value(p, total) { ... })`);
    }
    return new UserJsKernel(value as ValueFunction, name);
  }

  constructor(value: ValueFunction, name: string) {
    this.#value = value;
    this.name = name;
  }

  #call(p: number, total: number): number {
    let v: unknown;
    try {
      v = this.#value(p, total);
    } catch (err) {
      const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw new KernelTrapError(`kernel ${this.name} (js) threw at parameter ${p}: ${what}`, p, { cause: err });
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new KernelValueError(`kernel ${this.name} returned ${describeValue(v)} at parameter ${p}`, p);
    }
    return v;
  }

  sweep(start: number, end: number, total: number): SliceStats {
    checkRange(start, end, total);
    const partials: number[] = [];
    let min = Infinity;
    let max = -Infinity;
    let argmin = -1;
    let argmax = -1;
    for (let p = start; p < end; p++) {
      const v = this.#call(p, total);
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

  values(start: number, end: number, total: number): Float64Array {
    checkRange(start, end, total);
    const out = new Float64Array(end - start);
    for (let i = 0; i < out.length; i++) out[i] = this.#call(start + i, total);
    return out;
  }
}

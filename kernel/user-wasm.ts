/**
 * Runs a user kernel module built by `ttg kernel build` (kernel/user-build.ts):
 * one `sweep` call per slice, the statistics read back through the same
 * getters as the built-in kernels (kernel/wasm.ts).
 *
 * What a user kernel can do wrong is turned into an error naming the
 * parameter, never a broken thread:
 * - a value that is NaN or ±Infinity: the module stops the slice and says
 *   where (statNonFinite); the message gives the parameter and the value.
 * - a trap (unreachable, out-of-bounds memory, integer division by zero,
 *   stack overflow) or an abort (a failed assert, an index out of range):
 *   the instance may be left half-way through anything, so it is thrown
 *   away and a fresh one made from the compiled module (cheap: no
 *   recompilation). The parameter is found on fresh instances: block by
 *   block, then by bisecting the block's prefix (a prefix traps iff it
 *   holds the first trapping parameter, the kernel being pure).
 */
import { readFileSync } from 'node:fs';
import { describeValue, KernelLoadError, KernelTrapError, KernelValueError } from './errors.js';
import { checkRange } from './slice.js';
import type { KernelImpl, SliceStats } from './types.js';
import { sha256, userKernelName } from './user-build.js';
import { readStats, type StatsExports } from './wasm.js';

/** What runs a user kernel, WASM module or JS twin. */
export interface UserKernelRunner {
  readonly impl: KernelImpl;
  /** The kernel's name (the file's base name). */
  readonly name: string;
  /** Statistics over [start, end) of a sweep of `total`; throws KernelTrapError or KernelValueError naming the parameter. */
  sweep(start: number, end: number, total: number): SliceStats;
  /** The values themselves (differential checks); the same errors. */
  values(start: number, end: number, total: number): Float64Array;
}

/** The interface version kernel/assembly/user-kernel.ts declares. */
const ABI = 1;

interface UserKernelExports extends StatsExports {
  ttgUserKernelAbi(): number;
  sweep(start: number, end: number, total: number): void;
  fill(start: number, n: number, total: number): number;
}

/** An abort() of the kernel (assert, bounds check, explicit abort), as a JS error carrying its text. */
class KernelAbort extends Error {}

/** An AssemblyScript string in `memory` at `pointer` (UTF-16, byte length in the header word before it). */
function readAsString(memory: WebAssembly.Memory, pointer: number): string | null {
  if (!pointer || pointer < 4 || pointer > memory.buffer.byteLength) return null;
  const byteLength = new DataView(memory.buffer).getUint32(pointer - 4, true);
  if (pointer + byteLength > memory.buffer.byteLength) return null;
  return Buffer.from(memory.buffer, pointer, byteLength).toString('utf16le');
}

/** What happened, in words a kernel author can act on. */
function trapReason(err: unknown): string {
  if (err instanceof KernelAbort) return err.message;
  if (err instanceof WebAssembly.RuntimeError) {
    const m = err.message;
    if (/unreachable/.test(m)) return 'WebAssembly trap: unreachable executed (an unreachable() or a failed check in the kernel)';
    return `WebAssembly trap: ${m}`;
  }
  if (err instanceof RangeError && /call stack/.test(err.message)) return `stack overflow (${err.message}): unbounded recursion?`;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

export class UserWasmKernel implements UserKernelRunner {
  readonly impl: KernelImpl = 'wasm';
  readonly name: string;
  /** The sha-256 of the module's bytes: what a sweep's settings record. */
  readonly sha256: string;
  readonly #module: WebAssembly.Module;
  /** Where the module came from, for messages. */
  readonly #origin: string;
  #exports!: UserKernelExports;
  readonly #blockSize: number;

  /** Loads the module at `file` (a user kernel built by `ttg kernel build`). */
  static fromFile(file: string, name = userKernelName(file)): UserWasmKernel {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = readFileSync(file) as Uint8Array<ArrayBuffer>;
    } catch (err) {
      throw new KernelLoadError(`cannot read the kernel module ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
    return new UserWasmKernel(bytes, name, file);
  }

  constructor(bytes: Uint8Array<ArrayBuffer>, name: string, origin = name) {
    this.name = name;
    this.#origin = origin;
    this.sha256 = sha256(bytes);
    try {
      this.#module = new WebAssembly.Module(bytes);
    } catch (err) {
      throw new KernelLoadError(`${origin} is not a WebAssembly module: ${(err as Error).message}`, { cause: err });
    }
    const exported = new Set(WebAssembly.Module.exports(this.#module).map((e) => e.name));
    if (!exported.has('ttgUserKernelAbi') || !exported.has('sweep') || !exported.has('fill')) {
      throw new KernelLoadError(`${origin} is not a ttg user kernel module: build it from its .ts with \`ttg kernel build\``);
    }
    this.#instantiate();
    const abi = this.#exports.ttgUserKernelAbi();
    if (abi !== ABI) {
      throw new KernelLoadError(`${origin} was built for user kernel interface ${abi}, this ttg runs ${ABI}: rebuild it with \`ttg kernel build\``);
    }
    this.#blockSize = this.#exports.blockSize();
  }

  /** A fresh instance of the compiled module (at start, and after a trap). */
  #instantiate(): void {
    let memory: WebAssembly.Memory | undefined;
    const env = {
      abort: (message: number, file: number, line: number, column: number): never => {
        const text = memory ? readAsString(memory, message) : null;
        const where = memory ? readAsString(memory, file) : null;
        throw new KernelAbort(`abort: ${text ?? '(no message)'}${where ? ` in ${where}:${line}:${column}` : ''}`);
      },
      trace: (message: number, n: number, ...args: number[]) => {
        const text = memory ? readAsString(memory, message) : null;
        process.stderr.write(`kernel ${this.name} trace: ${text ?? ''}${n > 0 ? ' ' + args.slice(0, n).join(', ') : ''}\n`);
      },
    };
    // Only what the module imports is given (checked at build; a foreign module fails here, clearly).
    let instance: WebAssembly.Instance;
    try {
      instance = new WebAssembly.Instance(this.#module, { env });
    } catch (err) {
      throw new KernelLoadError(`${this.#origin} cannot be instantiated: ${(err as Error).message}`, { cause: err });
    }
    this.#exports = instance.exports as unknown as UserKernelExports;
    memory = this.#exports.memory;
  }

  sweep(start: number, end: number, total: number): SliceStats {
    checkRange(start, end, total);
    try {
      this.#exports.sweep(start, end, total);
    } catch (err) {
      this.#instantiate();
      throw this.#locateTrap(start, end, total, err);
    }
    const nonFinite = this.#exports.statNonFinite();
    if (nonFinite >= 0) {
      const v = this.#valueAt(nonFinite, total);
      throw new KernelValueError(`kernel ${this.name} returned ${describeValue(v)} at parameter ${nonFinite}`, nonFinite);
    }
    return readStats(this.#exports);
  }

  values(start: number, end: number, total: number): Float64Array {
    checkRange(start, end, total);
    const out = new Float64Array(end - start);
    for (let at = 0; at < out.length; at += this.#blockSize) {
      const n = Math.min(this.#blockSize, out.length - at);
      let pointer: number;
      try {
        pointer = this.#exports.fill(start + at, n, total);
      } catch (err) {
        this.#instantiate();
        throw this.#locateTrap(start + at, start + at + n, total, err);
      }
      // A fresh view each time: a grown memory detaches the old buffer.
      out.set(new Float64Array(this.#exports.memory.buffer, pointer, n), at);
    }
    // As the sweep (and the twin) would: a non-finite value is an error naming its parameter.
    const bad = out.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new KernelValueError(`kernel ${this.name} returned ${describeValue(out[bad])} at parameter ${start + bad}`, start + bad);
    return out;
  }

  #valueAt(p: number, total: number): number {
    const pointer = this.#exports.fill(p, 1, total);
    return new Float64Array(this.#exports.memory.buffer, pointer, 1)[0]!;
  }

  /** The error of fill(start, n) on the current instance, or null; a trapped instance is replaced. */
  #trapOf(start: number, n: number, total: number): unknown {
    try {
      this.#exports.fill(start, n, total);
      return null;
    } catch (err) {
      this.#instantiate();
      return err ?? new Error('unknown');
    }
  }

  /** The first parameter of [start, end) at which the kernel traps, found on fresh instances. */
  #locateTrap(start: number, end: number, total: number, first: unknown): KernelTrapError {
    for (let block = start; block < end; block += this.#blockSize) {
      const n = Math.min(this.#blockSize, end - block);
      const blockError = this.#trapOf(block, n, total);
      if (blockError === null) continue;
      // The prefix [block, block + hi) traps and [block, block + lo) does not.
      let lo = 0;
      let hi = n;
      let error = blockError;
      while (hi - lo > 1) {
        const mid = (lo + hi) >>> 1;
        const e = this.#trapOf(block, mid, total);
        if (e === null) lo = mid;
        else {
          hi = mid;
          error = e;
        }
      }
      const p = block + hi - 1;
      return new KernelTrapError(`kernel ${this.name} trapped at parameter ${p}: ${trapReason(error)}`, p, { cause: error });
    }
    return new KernelTrapError(
      `kernel ${this.name} trapped in [${start}, ${end}) (${trapReason(first)}) but not when run again on a fresh instance: ` +
        'does it keep state between calls? A kernel must be a pure function of p and total',
      null,
      { cause: first },
    );
  }
}

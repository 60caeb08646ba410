/**
 * Errors of user kernels, the same from the WASM module and from its JS
 * twin, so a chunk fails with the same words whichever ran it. Each has a
 * stable `name` and a message that names the kernel, the parameter and what
 * happened; a pool thread passes the message on to the chunk's failure
 * reason (retry, then dead-letter).
 */

/** The kernel stopped at a parameter: a WASM trap, an abort (assert, index out of range), or an exception of the twin. */
export class KernelTrapError extends Error {
  constructor(
    message: string,
    /** The first parameter at which it happens, or null when it could not be pinned down. */
    readonly parameter: number | null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KernelTrapError';
  }
}

/** The kernel returned NaN or ±Infinity (or, from a twin, something that is not a number): no exact sum can hold it. */
export class KernelValueError extends Error {
  constructor(
    message: string,
    readonly parameter: number,
  ) {
    super(message);
    this.name = 'KernelValueError';
  }
}

/** `ttg kernel build` failed: compile errors (with the user's file and line) or a module that is not a pure kernel. */
export class KernelBuildError extends Error {
  constructor(
    message: string,
    /** One formatted diagnostic per entry: `file:line:column - error TSnnnn: text` and the source line. */
    readonly diagnostics: readonly string[] = [],
  ) {
    super(message);
    this.name = 'KernelBuildError';
  }
}

/** A user kernel module or twin that cannot be loaded: missing, not built by ttg, wrong interface. */
export class KernelLoadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KernelLoadError';
  }
}

/** How a value is named in messages: NaN, Infinity, -Infinity, or what a twin gave instead of a number. */
export function describeValue(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (v === undefined) return 'undefined';
  return `${typeof v} ${String(v)}`;
}

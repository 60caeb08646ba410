/**
 * What a pool thread sends back for a batch of slices (engine/thread.ts),
 * packed so that it crosses to the main thread as one copied buffer rather
 * than as an object per slice: cloning hundreds of small objects cost more
 * than computing their slices. Kept apart from thread.ts so that the main
 * thread unpacks without loading the kernels.
 */
import type { SliceStats } from '../kernel/types.js';

/** A slice's statistics and the thread time it took (seconds). */
export interface SliceOutcome extends SliceStats {
  seconds: number;
}

/**
 * Per slice, in order: `[failed, count, min, max, argmin, argmax, seconds, n,
 * partial_1 … partial_n]`; `failed` is 1 (the rest 0, n = 0) for a slice whose
 * kernel failed, its message in `errors[i]`. One kernel error fails that slice
 * only, not its batch neighbours.
 */
export interface BatchOutcome {
  packed: Float64Array;
  errors: Record<number, string>;
}

const HEAD = 8;

/** Packs a batch's outcomes slice by slice, straight into the buffer (no object per slice). */
export class BatchPacker {
  #packed: Float64Array;
  #at = 0;
  #slice = 0;
  readonly #errors: Record<number, string> = {};

  /** Room for `slices` slices of up to 4 partials; it grows when they have more. */
  constructor(slices: number) {
    this.#packed = new Float64Array(Math.max(1, slices) * (HEAD + 4));
  }

  add(stats: SliceStats, seconds: number): void {
    const n = stats.partials.length;
    const at = this.#room(HEAD + n);
    const p = this.#packed;
    p[at] = 0;
    p[at + 1] = stats.count;
    p[at + 2] = stats.min;
    p[at + 3] = stats.max;
    p[at + 4] = stats.argmin;
    p[at + 5] = stats.argmax;
    p[at + 6] = seconds;
    p[at + 7] = n;
    for (let j = 0; j < n; j++) p[at + HEAD + j] = stats.partials[j]!;
    this.#slice++;
  }

  failed(message: string): void {
    const at = this.#room(HEAD);
    this.#packed.fill(0, at, at + HEAD);
    this.#packed[at] = 1;
    this.#errors[this.#slice++] = message;
  }

  /** The packed outcomes (a copy cut to size when there is room left: a view would carry its whole buffer to the main thread). */
  finish(): BatchOutcome {
    const packed = this.#at === this.#packed.length ? this.#packed : this.#packed.slice(0, this.#at);
    return { packed, errors: this.#errors };
  }

  /** Where the next `length` values go, growing the buffer if they do not fit. */
  #room(length: number): number {
    const at = this.#at;
    if (at + length > this.#packed.length) {
      const bigger = new Float64Array(Math.max(2 * this.#packed.length, at + length));
      bigger.set(this.#packed.subarray(0, at));
      this.#packed = bigger;
    }
    this.#at = at + length;
    return at;
  }
}

/** Unpacks `slices` outcomes: per slice, its statistics and time, or why it failed. */
export function unpackBatch(outcome: BatchOutcome, slices: number): Array<SliceOutcome | { error: string }> {
  const out: Array<SliceOutcome | { error: string }> = new Array(slices);
  const p = outcome.packed;
  let at = 0;
  for (let i = 0; i < slices; i++) {
    const n = p[at + 7]!;
    if (p[at] !== 0) {
      out[i] = { error: outcome.errors[i] ?? 'the slice failed' };
    } else {
      const partials: number[] = new Array(n);
      for (let j = 0; j < n; j++) partials[j] = p[at + HEAD + j]!;
      out[i] = { count: p[at + 1]!, min: p[at + 2]!, max: p[at + 3]!, argmin: p[at + 4]!, argmax: p[at + 5]!, seconds: p[at + 6]!, partials };
    }
    at += HEAD + n;
  }
  return out;
}

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

export function packBatch(rows: ReadonlyArray<SliceOutcome | { error: string }>): BatchOutcome {
  let length = 0;
  for (const r of rows) length += HEAD + ('error' in r ? 0 : r.partials.length);
  const packed = new Float64Array(length);
  const errors: Record<number, string> = {};
  let at = 0;
  rows.forEach((r, i) => {
    if ('error' in r) {
      packed[at] = 1;
      errors[i] = r.error;
      at += HEAD;
      return;
    }
    packed[at + 1] = r.count;
    packed[at + 2] = r.min;
    packed[at + 3] = r.max;
    packed[at + 4] = r.argmin;
    packed[at + 5] = r.argmax;
    packed[at + 6] = r.seconds;
    packed[at + 7] = r.partials.length;
    packed.set(r.partials, at + HEAD);
    at += HEAD + r.partials.length;
  });
  return { packed, errors };
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

/** Chunk statistics: slicing a chunk over threads and merging the slices' stats exactly. */
import { mergePartials, roundPartials } from '../kernel/exact-sum.js';
import type { SliceStats } from '../kernel/types.js';
import type { ChunkStats } from '../core/sweep.js';

export interface Slice {
  start: number;
  end: number;
}

/**
 * Splits [start, end) into at most `parts` contiguous slices of near-equal
 * size (sizes differ by at most one), none empty.
 */
export function sliceRange(start: number, end: number, parts: number): Slice[] {
  const length = end - start;
  if (length <= 0) return [];
  const n = Math.max(1, Math.min(parts, length));
  const base = Math.floor(length / n);
  const extra = length % n;
  const slices: Slice[] = [];
  let at = start;
  for (let i = 0; i < n; i++) {
    const size = base + (i < extra ? 1 : 0);
    slices.push({ start: at, end: at + size });
    at += size;
  }
  return slices;
}

export function emptySlice(): SliceStats {
  return { count: 0, min: Infinity, max: -Infinity, argmin: -1, argmax: -1, partials: [] };
}

/**
 * Merges slice statistics exactly (order does not change the result): where
 * two slices reach the same extreme, the smaller parameter is its argument.
 */
export function mergeSlices(slices: readonly SliceStats[]): SliceStats {
  const merged = emptySlice();
  for (const s of slices) {
    if (s.count === 0) continue;
    merged.count += s.count;
    if (s.min < merged.min || (s.min === merged.min && s.argmin < merged.argmin)) {
      merged.min = s.min;
      merged.argmin = s.argmin;
    }
    if (s.max > merged.max || (s.max === merged.max && s.argmax < merged.argmax)) {
      merged.max = s.max;
      merged.argmax = s.argmax;
    }
    mergePartials(merged.partials, s.partials);
  }
  return merged;
}

/** The wire form of a chunk's statistics: correctly rounded sum and average, with the partials. */
export function toChunkStats(s: SliceStats): ChunkStats {
  const sum = roundPartials(s.partials);
  return {
    count: s.count,
    sum,
    min: s.min,
    max: s.max,
    argmin: s.argmin,
    argmax: s.argmax,
    avg: s.count > 0 ? sum / s.count : 0,
    partials: s.partials.slice(),
  };
}

/** Merges chunk results exactly into one ChunkStats (the aggregator's grand total). */
export function mergeChunkStats(chunks: readonly ChunkStats[]): ChunkStats {
  return toChunkStats(mergeSlices(chunks));
}

/**
 * The differential test of a user kernel (`ttg kernel check`): the WASM
 * module against its JS twin, value for value and bit for bit, on the edges
 * of the sweep and of the WASM blocks and on seeded random ranges, then the
 * statistics of a whole range through both. The built-in kernels have the
 * same test in test/kernel.test.ts.
 */
import { roundPartials } from './exact-sum.js';
import type { SliceStats } from './types.js';
import type { UserKernelRunner } from './user-wasm.js';

/** Values per WASM block (kernel/assembly/stats.ts BLOCK): the edges the block loop could slip on. */
const BLOCK = 4096;

export interface CheckOptions {
  /** The sweep's TOTAL_PARAMS: parameters are drawn from [0, total). */
  total: number;
  /** Seed of the random ranges, so a failing check can be replayed. */
  seed: number;
  /** How many random ranges (default 40), each up to 3000 parameters. */
  ranges?: number;
  /** Length of the range whose statistics are compared (default 100000, at most total). */
  statsRange?: number;
}

export type CheckOutcome =
  | { ok: true; values: number; ranges: number; stats: SliceStats; statsRange: [number, number] }
  | { ok: false; message: string; parameter: number | null };

/** mulberry32: small, seeded, the same sequence everywhere (the tests replay cases with it too). */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The ranges checked: the sweep's ends, block edges, and seeded random ranges, all inside [0, total). */
export function checkRanges(total: number, seed: number, count = 40): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  const add = (start: number, end: number) => {
    const s = Math.max(0, Math.min(start, total));
    const e = Math.max(s, Math.min(end, total));
    if (e > s) ranges.push([s, e]);
  };
  add(0, 2 * BLOCK + 3); // the first parameters, across two block edges, ending in a partial block
  add(total - 2 * BLOCK - 3, total); // the last ones
  add(total - 1, total);
  for (const at of [2 ** 31, 2 ** 32, 2 ** 40]) add(at - 5, at + 5); // where 32-bit arithmetic would wrap
  const rand = random(seed);
  for (let i = 0; i < count; i++) {
    const length = 1 + Math.floor(rand() * 3000);
    const start = Math.floor(rand() * Math.max(1, total - length));
    add(start, start + length);
  }
  return ranges;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs `f` on both runners; an error of either ends the check with its message. */
function both<T>(wasm: UserKernelRunner, js: UserKernelRunner, f: (r: UserKernelRunner) => T): { a: T; b: T } | { error: string; parameter: number | null } {
  const out: T[] = [];
  for (const r of [wasm, js]) {
    try {
      out.push(f(r));
    } catch (err) {
      const parameter = (err as { parameter?: unknown }).parameter;
      return { error: `${r.impl}: ${describe(err)}`, parameter: typeof parameter === 'number' ? parameter : null };
    }
  }
  return { a: out[0]!, b: out[1]! };
}

/** Compares `wasm` with `js`; the first difference (or error) ends it. */
export function checkKernel(wasm: UserKernelRunner, js: UserKernelRunner, opts: CheckOptions): CheckOutcome {
  const ranges = checkRanges(opts.total, opts.seed, opts.ranges);
  let compared = 0;
  for (const [start, end] of ranges) {
    const r = both(wasm, js, (k) => k.values(start, end, opts.total));
    if ('error' in r) return { ok: false, message: r.error, parameter: r.parameter };
    for (let i = 0; i < r.a.length; i++) {
      if (!Object.is(r.a[i], r.b[i])) {
        const p = start + i;
        return { ok: false, message: `mismatch at p=${p}: wasm ${r.a[i]} js ${r.b[i]}`, parameter: p };
      }
    }
    compared += r.a.length;
  }
  const statsRange: [number, number] = [0, Math.min(opts.total, opts.statsRange ?? 100_000)];
  const s = both(wasm, js, (k) => k.sweep(statsRange[0], statsRange[1], opts.total));
  if ('error' in s) return { ok: false, message: s.error, parameter: s.parameter };
  for (const field of ['count', 'min', 'max', 'argmin', 'argmax'] as const) {
    if (!Object.is(s.a[field], s.b[field])) {
      return { ok: false, message: `statistics of [${statsRange[0]}, ${statsRange[1]}) differ: ${field} wasm ${s.a[field]} js ${s.b[field]}`, parameter: null };
    }
  }
  const sa = roundPartials(s.a.partials);
  const sb = roundPartials(s.b.partials);
  if (!Object.is(sa, sb)) {
    return { ok: false, message: `statistics of [${statsRange[0]}, ${statsRange[1]}) differ: sum wasm ${sa} js ${sb}`, parameter: null };
  }
  return { ok: true, values: compared, ranges: ranges.length, stats: s.a, statsRange };
}

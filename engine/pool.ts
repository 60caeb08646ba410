/**
 * The thread pool: a Piscina pool of THREADS threads, each holding one
 * instance of the kernel (engine/thread.ts). A chunk is split into at most
 * one slice per thread; the slices' statistics are merged exactly here, on
 * the main thread, which never runs the kernel and so stays free for the
 * queue. Several chunks may be in the pool at once (PREFETCH): their slices
 * queue up, and whichever thread is free takes the next, which balances
 * kernels whose cost varies across the range (mandelbrot).
 */
import { Piscina } from 'piscina';
import type { KernelChoice, KernelImpl, SliceStats } from '../kernel/types.js';
import type { SliceOutcome, SliceTask } from './thread.js';
import { mergeSlices, sliceRange } from './stats.js';

export interface KernelPoolOptions {
  threads: number;
  /** A built-in kernel's name, or a user kernel (each thread loads its module once). */
  kernel: KernelChoice;
  impl: KernelImpl;
  simulateWorkMs?: number;
}

export interface RangeOutcome {
  stats: SliceStats;
  /** Thread time spent on the range, summed over its slices (waiting in the pool's queue excluded). */
  threadSeconds: number;
}

export class KernelPool {
  #pool: Piscina<SliceTask, SliceOutcome>;
  #opts: Required<KernelPoolOptions>;
  #closed = false;

  constructor(opts: KernelPoolOptions) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
      throw new RangeError('threads must be a positive integer');
    }
    this.#opts = { simulateWorkMs: 0, ...opts };
    this.#pool = new Piscina<SliceTask, SliceOutcome>({
      filename: new URL('./thread.js', import.meta.url).href,
      minThreads: opts.threads,
      maxThreads: opts.threads,
      // Threads stay for the whole sweep: each holds a compiled kernel instance.
      idleTimeout: 60 * 60 * 1000,
    });
  }

  get threads(): number {
    return this.#opts.threads;
  }

  /**
   * Evaluates the kernel over [start, end) of a sweep of `total`, split over
   * the threads, and returns the merged statistics with the thread time spent. Rejects if any slice
   * fails; a partial result is never returned.
   */
  async runRange(start: number, end: number, total: number): Promise<RangeOutcome> {
    if (this.#closed) throw new Error('the thread pool is closed');
    const { kernel, impl, simulateWorkMs, threads } = this.#opts;
    const slices = sliceRange(start, end, threads);
    const stats = await Promise.all(
      slices.map((s) => this.#pool.run({ kernel, impl, start: s.start, end: s.end, total, simulateWorkMs })),
    );
    return { stats: mergeSlices(stats), threadSeconds: stats.reduce((a, s) => a + s.seconds, 0) };
  }

  /** Waits for running slices, then stops the threads. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close();
  }
}

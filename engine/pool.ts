/**
 * The thread pool: a Piscina pool of THREADS threads, each holding one
 * instance of the kernel (engine/thread.ts). Ranges asked for in the same
 * turn of the event loop are scheduled together: a range whose estimated
 * cost is large is split into slices over the threads (merged exactly here,
 * on the main thread, which never runs the kernel and so stays free for the
 * queue); small ranges are batched several to a thread task instead, because
 * a task's round trip to a thread (~20-50 us) costs more than computing a
 * chunk of a few hundred placeholder parameters. Costs are estimated from the
 * thread time measured so far (seconds per parameter), so a kernel whose cost
 * varies across the range (mandelbrot) is still cut into tasks small enough
 * for whichever thread is free to take the next one.
 */
import { Piscina } from 'piscina';
import type { KernelChoice, KernelImpl, SliceStats } from '../kernel/types.js';
import type { SliceBatch, SliceTask, ThreadData } from './thread.js';
import { unpackBatch, type BatchOutcome, type SliceOutcome } from './batch-outcome.js';
import { mergeSlices, sliceRange } from './stats.js';

export interface KernelPoolOptions {
  threads: number;
  /** A built-in kernel's name, or a user kernel (each thread loads its module once). */
  kernel: KernelChoice;
  impl: KernelImpl;
  simulateWorkMs?: number;
  /** Bound the process's heap once the threads are up (engine/heap.ts): the long-running commands ask for it. */
  boundHeap?: boolean;
}

export interface RangeOutcome {
  stats: SliceStats;
  /** Thread time spent on the range, summed over its slices (waiting in the pool's queue excluded). */
  threadSeconds: number;
}

/**
 * Where runRangeInto() reports a range's outcome: `done` with its statistics and the thread time
 * spent on it, or `failed`; one of them once, always after the call returned. Meant for callers
 * that hand the pool thousands of small ranges a second, to whom a promise per range is garbage.
 */
export interface RangeSink {
  done(stats: SliceStats, threadSeconds: number): void;
  failed(err: Error): void;
}

/** Thread time one task aims at: long enough to pay for its round trip, short enough to balance the threads. */
const TASK_SECONDS = 0.004;
/** Ranges shorter than this are never split across threads, whatever their estimated cost. */
const MIN_SPLIT_PARAMS = 64;

interface WaitingRange {
  start: number;
  end: number;
  total: number;
  sink: RangeSink;
}

export class KernelPool {
  #pool: Piscina<SliceTask | SliceBatch, SliceOutcome | BatchOutcome>;
  #opts: Required<KernelPoolOptions>;
  #closed = false;
  /** Ranges asked for in this turn of the event loop, scheduled together at its end. */
  #waiting: WaitingRange[] = [];
  /** Measured thread seconds per parameter (0 until the first task returns). */
  #secondsPerParam = 0;

  constructor(opts: KernelPoolOptions) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
      throw new RangeError('threads must be a positive integer');
    }
    this.#opts = { simulateWorkMs: 0, boundHeap: false, ...opts };
    this.#pool = new Piscina<SliceTask | SliceBatch, SliceOutcome | BatchOutcome>({
      filename: new URL('./thread.js', import.meta.url).href,
      minThreads: opts.threads,
      maxThreads: opts.threads,
      // Threads stay for the whole sweep: each holds a compiled kernel instance.
      idleTimeout: 60 * 60 * 1000,
      workerData: { boundHeap: this.#opts.boundHeap } satisfies ThreadData,
    });
  }

  get threads(): number {
    return this.#opts.threads;
  }

  /**
   * Evaluates the kernel over [start, end) of a sweep of `total` and returns
   * its statistics with the thread time spent. Rejects if any slice of it
   * fails; a partial result is never returned. Calls made in the same turn
   * of the event loop share thread tasks (see the file comment).
   */
  runRange(start: number, end: number, total: number): Promise<RangeOutcome> {
    return new Promise<RangeOutcome>((resolve, reject) => {
      this.runRangeInto(start, end, total, { done: (stats, threadSeconds) => resolve({ stats, threadSeconds }), failed: reject });
    });
  }

  /** runRange(), its outcome told to `sink` rather than a promise (see RangeSink). */
  runRangeInto(start: number, end: number, total: number, sink: RangeSink): void {
    if (this.#closed) {
      queueMicrotask(() => sink.failed(new Error('the thread pool is closed')));
      return;
    }
    if (this.#waiting.length === 0) queueMicrotask(() => this.#schedule());
    this.#waiting.push({ start, end, total, sink });
  }

  /** Turns the ranges asked for into thread tasks: big ones split over the threads, small ones batched. */
  #schedule(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    const { threads } = this.#opts;
    const spp = this.#secondsPerParam;
    const small: WaitingRange[] = [];
    for (const w of waiting) {
      const length = w.end - w.start;
      const parts = spp > 0 ? Math.min(threads, Math.ceil((length * spp) / TASK_SECONDS)) : threads;
      if (threads > 1 && parts > 1 && length >= MIN_SPLIT_PARAMS * parts) this.#runSplit(w, parts);
      else small.push(w);
    }
    if (small.length === 0) return;
    // Small ranges: batches of about TASK_SECONDS each, and at least one per thread while there are enough.
    const params = small.reduce((a, w) => a + (w.end - w.start), 0);
    const perTask = Math.max(1, Math.min(spp > 0 ? TASK_SECONDS / spp : Infinity, Math.ceil(params / threads)));
    let batch: WaitingRange[] = [];
    let batchParams = 0;
    for (const w of small) {
      batch.push(w);
      batchParams += w.end - w.start;
      if (batchParams >= perTask) {
        this.#runBatch(batch);
        batch = [];
        batchParams = 0;
      }
    }
    if (batch.length) this.#runBatch(batch);
  }

  #taskBase(total: number) {
    const { kernel, impl, simulateWorkMs } = this.#opts;
    return { kernel, impl, total, simulateWorkMs };
  }

  #learn(params: number, seconds: number): void {
    if (params <= 0) return;
    const spp = seconds / params;
    this.#secondsPerParam = this.#secondsPerParam === 0 ? spp : 0.7 * this.#secondsPerParam + 0.3 * spp;
  }

  #runSplit(w: WaitingRange, parts: number): void {
    const slices = sliceRange(w.start, w.end, parts);
    Promise.all(slices.map((s) => this.#pool.run({ ...this.#taskBase(w.total), start: s.start, end: s.end }) as Promise<SliceOutcome>))
      .then((stats) => {
        const threadSeconds = stats.reduce((a, s) => a + s.seconds, 0);
        this.#learn(w.end - w.start, threadSeconds);
        w.sink.done(mergeSlices(stats), threadSeconds);
      }, (err: unknown) => w.sink.failed(err instanceof Error ? err : new Error(String(err))));
  }

  #runBatch(batch: WaitingRange[]): void {
    // One total per task (a pool serves one sweep, but nothing here relies on it).
    const total = batch[0]!.total;
    const mine = batch.filter((w) => w.total === total);
    const others = batch.filter((w) => w.total !== total);
    if (others.length) this.#runBatch(others);
    // A typed array crosses to the thread as one copy, not a value at a time.
    const ranges = new Float64Array(2 * mine.length);
    mine.forEach((w, i) => {
      ranges[2 * i] = w.start;
      ranges[2 * i + 1] = w.end;
    });
    (this.#pool.run({ ...this.#taskBase(total), ranges }) as Promise<BatchOutcome>).then((outcome) => {
      const outcomes = unpackBatch(outcome, mine.length);
      let params = 0;
      let seconds = 0;
      mine.forEach((w, i) => {
        const o = outcomes[i]!;
        if ('error' in o) {
          w.sink.failed(new Error(o.error));
          return;
        }
        params += w.end - w.start;
        seconds += o.seconds;
        w.sink.done(o, o.seconds);
      });
      this.#learn(params, seconds);
    }, (err: unknown) => {
      for (const w of mine) w.sink.failed(err instanceof Error ? err : new Error(String(err)));
    });
  }

  /** Waits for running slices, then stops the threads. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close();
  }
}

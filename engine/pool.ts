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
 *
 * The one exception to "the main thread never runs the kernel": a range of a
 * built-in kernel whose worst case is cheaper than handing it to a thread and
 * back (INLINE_MAX_STEPS) is computed right there, in the same turn. The
 * threads are therefore started when the first range is given to them, not
 * before: a worker whose chunks are all that cheap (placeholder chunks of up
 * to 2,000 parameters) never starts one, and saves the ~40 ms of CPU a
 * thread's start costs (one-chunk sweep: 160 -> 120 ms of CPU), on the cores
 * the other workers are starting on. Mandelbrot ranges (up to 1,000 steps a
 * parameter), user kernels and SIMULATE_WORK_MS go to the threads; for the
 * last two they start at once, and so they do for a built-in kernel whose
 * chunks (the caller's `rangeSize`) are costly (STARTING_INLINE_MAX_STEPS),
 * so that the threads' start overlaps the worker's connecting and joining
 * instead of following its first take. Between the two (placeholder chunks
 * of 2,001 to 100,000 parameters, ~12-600 us each) the threads start at the
 * first range that needs them, and the ranges asked for while they start are
 * computed inline: the worker's first chunk is not held up by a thread's
 * start, nor its start slowed by one (two workers, 10M params in chunks of
 * 10,000: first chunk ~190 -> ~125 ms on Redis, ~250 -> ~180 on RabbitMQ;
 * but on Redis the sweep 9-15% longer, a thread started mid-sweep costing
 * more CPU: docs/bench/queue-path-log.md entry 29). The decision is made
 * from the kernel's worst case, not from timings: the first calls of a
 * kernel on a cold thread take 5-150 times as long as the later ones.
 */
import { createRequire } from 'node:module';
import type { Piscina } from 'piscina';
import type { KernelChoice, KernelImpl, SliceStats } from '../kernel/types.js';
import type { SliceBatch, SliceTask, ThreadData } from './thread.js';
import { unpackBatch, type BatchOutcome, type SliceOutcome } from './batch-outcome.js';
import { mergeSlices, sliceRange } from './stats.js';
import { createKernelRunner } from '../kernel/index.js';
import type { KernelName, KernelRunner } from '../kernel/types.js';
import { boundHeap } from './heap.js';
import { restoreOptimisingCompiler } from './jit.js';

export interface KernelPoolOptions {
  threads: number;
  /** A built-in kernel's name, or a user kernel (each thread loads its module once). */
  kernel: KernelChoice;
  impl: KernelImpl;
  simulateWorkMs?: number;
  /** Bound the process's heap once the threads are up (engine/heap.ts): the long-running commands ask for it. */
  boundHeap?: boolean;
  /** Whether cheap ranges of a built-in kernel may run on the calling thread (see the file comment); default true. */
  inline?: boolean;
  /**
   * The size of the ranges the caller expects to ask for (its CHUNK_SIZE), if known. When ranges that
   * long are too costly to run inline, the threads start at once, while the caller connects and joins,
   * rather than at the first range (see the file comment).
   */
  rangeSize?: number;
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

/**
 * Thread time one task aims at: long enough to pay for its round trip, short enough to balance the
 * threads. With the caller topping up whenever a thread lacks its next task (wantsWork), a mandelbrot
 * sweep in chunks of 20,000 (~5 ms each, unsplit at 8 ms) ran with THREADS=2 at 1.74x THREADS=1 with
 * 4 ms, 1.86x with 8, 1.81x with 12 and 1.83x with 16 (5 interleaved runs each, two plain threads:
 * ~1.9x): every split costs the chunk a round trip per half and a wait for the slower half.
 */
const TASK_SECONDS = 0.008;
/** Ranges shorter than this are never split across threads, whatever their estimated cost. */
const MIN_SPLIT_PARAMS = 64;
/**
 * Piscina, loaded when the threads first start (synchronously: a pool starts in the middle of a turn).
 * A worker that never starts one does not load it either (~20 ms of a worker's start-up CPU).
 */
let PiscinaClass: typeof Piscina | null = null;
function piscina(): typeof Piscina {
  PiscinaClass ??= (createRequire(import.meta.url)('piscina') as { Piscina: typeof Piscina }).Piscina;
  return PiscinaClass;
}

/**
 * Tasks each thread is given at once: the next one waits in the thread's own inbox while it computes, so
 * it never waits for the main thread to hear of the last one and send another (a round trip of two
 * thread wake-ups, ~0.4 ms a task on the 2-core machine). With the threads up before the first chunk
 * (ready()), the share of a mandelbrot sweep's span (chunks of 20,000) its threads spent outside the
 * kernel fell from 8-9% to 2-4% with one thread, from 14-15% to 9-11% with two (`node dist/bench/threads.js`).
 */
const TASKS_PER_THREAD = 2;
/**
 * The thread with the fewest tasks. Piscina's default gives a second task to the first thread below the
 * limit, so both halves of a split range could queue on one thread while the other sat idle.
 */
export function leastBusy<W extends { currentUsage: number }>(_task: unknown, workers: W[]): W | null {
  let best: W | null = null;
  for (const w of workers) {
    if (w.currentUsage === 0) return w;
    if (w.currentUsage < TASKS_PER_THREAD && (best === null || w.currentUsage < best.currentUsage)) best = w;
  }
  return best;
}

/** Most steps a built-in kernel takes per parameter (mandelbrot: its iteration limit). */
const WORST_STEPS_PER_PARAM: Record<KernelName, number> = { placeholder: 1, mandelbrot: 1000 };
/**
 * A range of at most this many worst-case steps is computed on the calling thread: a placeholder
 * range of 2,000 parameters takes ~11 us, about what a range's share of the hop to a thread and
 * back costs (postMessage, packing, unpacking); 100 and 1,000 take ~1.3 and ~5.6 us.
 */
const INLINE_MAX_STEPS = 2000;
/**
 * Chunks of up to this many worst-case steps (a placeholder chunk of 100,000 parameters: ~0.6 ms) do not
 * start the threads before the first range; the threads start at the first range that needs them, and
 * such ranges are computed inline until the threads have answered their warm-up.
 */
const STARTING_INLINE_MAX_STEPS = 100_000;
/** Most worst-case steps computed inline in one turn of the event loop (~5 ms of placeholder); the rest go to the threads. */
const INLINE_TURN_STEPS = 1_000_000;

interface WaitingRange {
  start: number;
  end: number;
  total: number;
  sink: RangeSink;
}

export class KernelPool {
  /** Started when first needed (see the file comment). */
  #piscina: Piscina<SliceTask | SliceBatch, SliceOutcome | BatchOutcome> | null = null;
  /** Settles once the threads have answered their warm-up (see ready()). */
  #ready: Promise<void> = Promise.resolve();
  /** Whether the threads were started and have not all answered their warm-up yet. */
  #starting = false;
  #opts: Required<KernelPoolOptions>;
  /** The kernel on this thread, for ranges run inline (null: never, or not yet made). */
  #inlineRunner: KernelRunner | null = null;
  readonly #inlineKernel: KernelName | null;
  #closed = false;
  /** Ranges asked for in this turn of the event loop, scheduled together at its end. */
  #waiting: WaitingRange[] = [];
  /** Measured thread seconds per parameter (0 until the first task returns). */
  #secondsPerParam = 0;
  /** Thread tasks handed to Piscina and not yet answered (the warm-up's excluded). */
  #tasks = 0;
  /** Told when a task's answer leaves a thread without its next task (see onWantsWork()). */
  readonly #wantsWorkListeners = new Set<() => void>();

  constructor(opts: KernelPoolOptions) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
      throw new RangeError('threads must be a positive integer');
    }
    this.#opts = { simulateWorkMs: 0, boundHeap: false, inline: true, rangeSize: 0, ...opts };
    const { kernel, simulateWorkMs, inline, rangeSize } = this.#opts;
    this.#inlineKernel = inline && typeof kernel === 'string' && simulateWorkMs === 0 ? kernel : null;
    if (this.#worstSteps(rangeSize) > STARTING_INLINE_MAX_STEPS) {
      // Started now, at the process's start: with node's own V8 flags, so that their bootstrap comes from
      // node's code cache (engine/jit.ts). Started mid-sweep, they leave the optimising compiler held back.
      restoreOptimisingCompiler();
      this.#pool();
    }
    // No thread started yet, maybe none ever, to set the heap's flags (engine/heap.ts): set them here, as
    // early as a thread would have. Set later (at the first range), the young generation has grown by then
    // and stays large: a 50M-parameter sweep in chunks of 1,000 peaked at 110 MB instead of 87 (92 with the thread).
    else if (this.#opts.boundHeap) boundHeap();
  }

  /**
   * Resolves once every thread has started and loaded its kernel (at once when none was started): a
   * caller that waits for this before taking work neither holds chunks its threads cannot run yet nor
   * stamps them as started while a thread is still starting (~50-150 ms of node and the kernel's module).
   */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** The threads, started on first use. */
  #pool(): Piscina<SliceTask | SliceBatch, SliceOutcome | BatchOutcome> {
    if (this.#piscina === null) {
      this.#piscina = this.#startThreads();
      // An empty batch per thread (the balancer gives each idle thread one): the thread loads the kernel's
      // module for it and answers. A failure is the first real task's to report.
      const warm = { ...this.#taskBase(1), ranges: new Float64Array(0) };
      this.#starting = true;
      const up = () => {
        this.#starting = false;
      };
      this.#ready = Promise.all(Array.from({ length: this.#opts.threads }, () => this.#piscina!.run(warm))).then(up, up);
    }
    return this.#piscina;
  }

  #startThreads(): Piscina<SliceTask | SliceBatch, SliceOutcome | BatchOutcome> {
    return new (piscina())<SliceTask | SliceBatch, SliceOutcome | BatchOutcome>({
      filename: new URL('./thread.js', import.meta.url).href,
      minThreads: this.#opts.threads,
      maxThreads: this.#opts.threads,
      concurrentTasksPerWorker: TASKS_PER_THREAD,
      loadBalancer: leastBusy,
      // Threads stay for the whole sweep: each holds a compiled kernel instance.
      idleTimeout: 60 * 60 * 1000,
      workerData: { boundHeap: this.#opts.boundHeap } satisfies ThreadData,
    });
  }

  /**
   * Whether a started thread lacks its next task: fewer tasks are out than the threads hold together
   * (TASKS_PER_THREAD each). A caller holding work back to take it in batches should take now. A
   * mandelbrot sweep's chunks vary tenfold in cost: a thread sat 20-40 ms at a time while the other
   * ran two batches that turned out costly, its caller waiting for half its chunks in hand to finish.
   */
  get wantsWork(): boolean {
    return this.#piscina !== null && this.#tasks < this.#opts.threads * TASKS_PER_THREAD;
  }

  /**
   * Calls `listener` whenever a thread task's answer leaves wantsWork true (every worker loop of
   * `ttg run` shares one pool); the function returned stops that.
   */
  onWantsWork(listener: () => void): () => void {
    this.#wantsWorkListeners.add(listener);
    return () => this.#wantsWorkListeners.delete(listener);
  }

  /** Hands one task to the threads, counting it while it is out. */
  #post<T extends SliceOutcome | BatchOutcome>(task: SliceTask | SliceBatch): Promise<T> {
    this.#tasks++;
    const answered = () => {
      this.#tasks--;
      if (this.wantsWork) for (const listener of this.#wantsWorkListeners) listener();
    };
    const run = this.#pool().run(task) as Promise<T>;
    run.then(answered, answered);
    return run;
  }

  /** Whether any thread was started (ranges run inline start none). */
  get started(): boolean {
    return this.#piscina !== null;
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
    const kernel = this.#inlineKernel;
    let inlineSteps = INLINE_TURN_STEPS;
    for (const w of waiting) {
      const length = w.end - w.start;
      const steps = this.#worstSteps(length);
      // Too costly to run inline for good, cheap enough to while the threads start: the first such range starts them.
      const whileStarting = steps > INLINE_MAX_STEPS && steps <= STARTING_INLINE_MAX_STEPS;
      if (whileStarting && this.#piscina === null) this.#pool();
      if ((steps <= INLINE_MAX_STEPS || (whileStarting && this.#starting)) && steps <= inlineSteps) {
        inlineSteps -= steps;
        this.#runInline(w, kernel!);
        continue;
      }
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

  /** Worst-case kernel steps of a range of `length` params computed inline; Infinity when nothing runs inline. */
  #worstSteps(length: number): number {
    return this.#inlineKernel === null ? Infinity : length * WORST_STEPS_PER_PARAM[this.#inlineKernel];
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

  /** Computes a range on this thread (its time does not teach #learn: the threads' tasks are sized by theirs). */
  #runInline(w: WaitingRange, kernel: KernelName): void {
    this.#inlineRunner ??= createKernelRunner(this.#opts.impl);
    const t0 = performance.now();
    let stats: SliceStats;
    try {
      stats = this.#inlineRunner.sweep(kernel, w.start, w.end, w.total);
    } catch (err) {
      w.sink.failed(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const seconds = (performance.now() - t0) / 1000;
    try {
      w.sink.done(stats, seconds);
    } catch (err) {
      // The sink's own failure, not the kernel's: surfaced as it would be from a thread's answer, and
      // the other ranges of this turn are still computed.
      void Promise.reject(err);
    }
  }

  #runSplit(w: WaitingRange, parts: number): void {
    const slices = sliceRange(w.start, w.end, parts);
    Promise.all(slices.map((s) => this.#post<SliceOutcome>({ ...this.#taskBase(w.total), start: s.start, end: s.end })))
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
    this.#post<BatchOutcome>({ ...this.#taskBase(total), ranges }).then((outcome) => {
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
    await this.#piscina?.close();
  }
}

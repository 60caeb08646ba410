/**
 * Queue mode: the worker loop. Keeps chunks in hand (PREFETCH, or where it is
 * unset as many as the threads compute in HOLD_SECONDS, so they never wait
 * for the broker), each computed on the shared thread pool (which batches
 * small chunks into one thread task) and then completed (result published
 * and chunk acknowledged in one backend step; backends batch the completions
 * that arrive together into one round trip). Claims chunks of workers that
 * stopped answering, keeps its own chunks alive with heartbeats, retries or
 * dead-letters chunks that fail, and exits when the sweep is settled or
 * nothing has come for IDLE_TIMEOUT_SECONDS.
 */
import type { Config } from './config.js';
import type { Logger } from '../core/log.js';
import type { KernelPool, RangeSink } from './pool.js';
import type { ChunkResult, ChunkTask, Delivery, QueueBackend } from '../backends/types.js';
import type { SliceStats } from '../kernel/types.js';
import { toChunkStats } from './stats.js';
import { BrokerRefusedError, BrokerUnavailableError, SimulatedFaultError, SweepGoneError, TtgError } from '../core/errors.js';
import type { FailureOutcome, MetricsSource, WorkerMetrics } from './metrics.js';
import type { Probe } from './http.js';

/**
 * Work in hand, in seconds of this worker's measured rate, when PREFETCH is unset: covers a take's
 * round trip many times over. Not much more: every chunk in hand is garbage the collector copies
 * while it waits (at 100-parameter chunks, 0.05 s here meant ~50% more collection time than 0.02 s).
 */
const HOLD_SECONDS = 0.02;
/**
 * ...and where the chunks run on the pool's threads (large ones: few a second, little garbage): more in
 * hand lets the pool keep every thread fed across chunks whose costs vary tenfold. A mandelbrot sweep in
 * chunks of 20,000 ran 1.71x faster with THREADS=2 than 1 at 0.02 s, 1.80x at 0.05 s, and no better at
 * 0.1 s (`node dist/bench/threads.js`, docs/bench/queue-path-log.md).
 */
const HOLD_SECONDS_THREADS = 0.05;
/**
 * ...or, where committing takes longer (a loaded broker, RabbitMQ's stream confirms), this many
 * commit latencies: while one batch is being committed and its replacements fetched, the threads
 * have the next ones. Above 2 so that a worker held back by its own in-hand limit grows out of it.
 */
const HOLD_COMMITS = 4;
/** Most chunks in hand when PREFETCH is unset, and most asked for in one take(). */
const MAX_IN_HAND = 4096;
/**
 * Commit latency is measured as the fastest commit of each window this long: a commit also waits
 * for the commits queued before it, and counting that wait made a busy worker hold more chunks,
 * which queued more commits (at 100-parameter chunks, 4096 in hand and 50-100 ms "latencies"
 * while Redis answered a batch in a few ms), for nothing but garbage to collect.
 */
const COMMIT_WINDOW_MS = 200;

export type WorkerStatus = 'completed' | 'interrupted' | 'idle_timeout';

export interface QueueWorkerSummary {
  worker_id: string;
  consumer: string;
  mode: 'queue';
  status: WorkerStatus;
  params_processed: number;
  chunks_processed: number;
  chunks_recovered: number;
  /** Failed attempts (a chunk retried twice counts twice), whatever became of the chunk. */
  failed_attempts: number;
  /** Chunks this worker gave up on: their last failure here sent them to the dead letters. */
  chunks_dead_lettered: number;
  duration_seconds: number;
  params_per_second: number;
}

export interface QueueWorkerOptions {
  config: Config;
  backend: QueueBackend;
  pool: KernelPool;
  log: Logger;
  /** Longest single wait on the queue, so stop requests and stale checks are seen promptly. */
  pollMs?: number;
  /** Random source for SIMULATE_FAULT_RATE (Math.random unless given: a test can make the faults deterministic). */
  random?: () => number;
  /** Where chunk completions and failures are counted for /metrics. */
  metrics?: WorkerMetrics;
}

export class QueueWorker implements MetricsSource {
  #opts: QueueWorkerOptions;
  #initialized = false;
  /** Chunks taken and not yet settled (committed, failed, handed back or given up). */
  #inHand = new Set<Delivery>();
  #stopping = false;
  #aborted = false;
  #fatal: unknown = null;
  #paramsProcessed = 0;
  #chunksProcessed = 0;
  #chunksRecovered = 0;
  #chunksFailed = 0;
  #chunksDeadLettered = 0;
  #started = performance.now();
  #settledOnArrival = false;
  /** Called (once) when a chunk in hand is computed or done while the loop waits for that: one wait, whatever is in hand. */
  #waiter: (() => void) | null = null;
  /** Chunks in hand handed to the threads and not yet computed. */
  #computing = 0;
  /**
   * When this worker first took chunks (from the queue, or claimed from a stopped worker), for its rate (chunks
   * done per second) that sizes the work in hand: every chunk counted in the rate started after it.
   */
  #firstTakeAt = 0;
  /** Seconds from a chunk's result being ready to its commit being answered (moving average of COMMIT_WINDOW_MS minimums). */
  #commitSeconds = 0;
  /** The fastest commit of the current window (seconds), and when the window began (performance.now()). */
  #commitWindowMin = Infinity;
  #commitWindowStart = 0;

  /** Whether the per-chunk debug lines are written (their text is not even made otherwise: thousands of chunks a second). */
  readonly #chunkLines: boolean;

  constructor(opts: QueueWorkerOptions) {
    this.#opts = opts;
    this.#chunkLines = opts.config.logLevel === 'debug';
  }

  /** The consumer name (the `worker` label of the metrics). */
  get worker(): string {
    return this.#opts.backend.consumerName;
  }

  /** Chunks committed and chunks dead-lettered by this worker so far (ttg run's progress line). */
  settled(): { chunks: number; deadLettered: number } {
    return { chunks: this.#chunksProcessed, deadLettered: this.#chunksDeadLettered };
  }

  get chunksInHand(): number {
    return this.#inHand.size;
  }

  get reconnects(): number {
    return this.#opts.backend.reconnects;
  }

  /** /readyz: connected and the sweep initialized; not while the broker connection is being retried. */
  readiness(): Probe {
    const state = this.#opts.backend.connectionState;
    if (!this.#initialized) return { ok: false, detail: `joining the sweep on ${this.#opts.backend.kind} (${state})` };
    return { ok: state === 'ready', detail: `${this.#opts.backend.kind} connection ${state}` };
  }

  /** /healthz: alive unless a fatal broker error is ending the worker. */
  health(): Probe {
    if (this.#fatal !== null) return { ok: false, detail: `fatal: ${this.#fatal instanceof Error ? this.#fatal.message : String(this.#fatal)}` };
    return { ok: true, detail: `${this.#inHand.size} chunks in hand` };
  }

  /** First signal: stop taking chunks, finish and commit the ones in hand. */
  stop(): void {
    this.#stopping = true;
  }

  /** Second signal: give back unfinished chunks untouched and stop now. */
  async abort(): Promise<void> {
    this.#stopping = true;
    this.#aborted = true;
    const unfinished = [...this.#inHand];
    this.#inHand.clear();
    this.#wake();
    try {
      await this.#opts.backend.release(unfinished);
    } catch (err) {
      this.#opts.log.warn('could not give chunks back; they stay pending for stale recovery', { error: String(err) });
    }
  }

  async run(): Promise<QueueWorkerSummary> {
    const { config, backend, log } = this.#opts;
    this.#started = performance.now();
    // A user kernel's module hash is part of the sweep: a worker with another module is refused.
    const init = await backend.init({
      totalParams: config.totalParams, chunkSize: config.chunkSize, kernel: config.kernel,
      ...(config.kernelSha256 ? { kernelSha256: config.kernelSha256 } : {}),
    }, { consumeWhileCreating: true });
    this.#initialized = true;
    this.#opts.metrics?.watch(this);
    log.info(init.created ? 'created the sweep\'s tasks' : 'joined the sweep', {
      backend: backend.kind, consumer: backend.consumerName, chunks: init.totalChunks,
      threads: this.#opts.pool.threads, prefetch: config.prefetch, kernel: config.kernel, impl: config.kernelImpl,
    });
    // No chunk is taken before the threads can run it (engine/pool.ts, ready()); a test's stand-in pool may not say.
    const { pool } = this.#opts;
    if (typeof pool.ready === 'function') await pool.ready();
    // A thread left without its next task wakes the loop, which then tops up whatever the batching below says.
    const stopWaking = typeof pool.onWantsWork === 'function' ? pool.onWantsWork(() => this.#wake()) : () => {};
    const wantsWork = () => pool.wantsWork === true;

    const pollMs = this.#opts.pollMs ?? 1000;
    const staleEveryMs = config.staleCheckIntervalSeconds * 1000;
    // Refresh well within the threshold so a slow but live worker is never robbed.
    const heartbeatMs = Math.max(50, Math.min(config.staleThresholdMs / 3, 10_000));
    const heartbeat = setInterval(() => {
      if (this.#inHand.size === 0) return;
      backend.heartbeat([...this.#inHand]).catch((err) => {
        // Refused (an ACL without the heartbeat's command): no later beat will do better, and without them the chunks get stolen.
        if (err instanceof BrokerRefusedError) this.#fatal ??= err;
        else log.warn('heartbeat failed', { error: String(err) });
      });
    }, heartbeatMs);

    let status: WorkerStatus = 'completed';
    let lastWorkAt = Date.now();
    let nextStaleCheck = Date.now(); // look once at start: a restarted worker recovers right away
    // True at start too: a worker joining a sweep that is already settled leaves at once.
    let drainedWhileBusy = true;
    try {
      while (!this.#stopping && this.#fatal === null) {
        const target = this.#inHandTarget();
        // Sized by time (PREFETCH unset), the target counts the chunks the threads have yet to compute:
        // the next batch is taken while the last one is being committed, so the threads never wait
        // for a commit and a take in a row; but no more than a target's worth may wait for commits,
        // or a worker whose commits fall behind takes ever more (up to MAX_IN_HAND) that only wait
        // longer. A PREFETCH given counts every chunk held.
        const held = config.prefetchAuto ? Math.max(this.#computing, this.#inHand.size - target) : this.#inHand.size;
        let capacity = Math.min(target - held, MAX_IN_HAND - this.#inHand.size);
        if (capacity > 0 && Date.now() >= nextStaleCheck) {
          nextStaleCheck = Date.now() + staleEveryMs;
          const claimed = await backend.claimStale(capacity, config.staleThresholdMs);
          for (const d of claimed) {
            log.warn(`FAULT RECOVERY: claimed chunk ${d.chunkId} from a worker that stopped answering`, { chunk_id: d.chunkId });
            this.#start(d);
          }
          if (claimed.length > 0) lastWorkAt = Date.now();
          // As many as there was room for: more may be waiting. Look again as soon as there is room, before taking
          // new chunks, rather than a whole interval later: a busy worker has room for a chunk or two at a time, and a
          // dead worker's hundred chunks waited minutes for the survivors' one-or-two-a-second claims.
          if (claimed.length > 0 && claimed.length >= capacity) nextStaleCheck = Date.now();
          capacity -= claimed.length;
        }
        if (this.#inHand.size > 0) {
          // Busy: top up without blocking once half the target is free (one take per batch, not per
          // chunk) or a thread lacks its next task (engine/pool.ts, wantsWork), then wait for a chunk
          // to finish (or the next poll), so a blocked read never holds the loop after the last chunk
          // in hand is done.
          lastWorkAt = Date.now();
          let taken: Delivery[] = [];
          const topUp = capacity > 0 && (capacity * 2 >= target || wantsWork());
          if (topUp) {
            taken = await backend.take(capacity, 0);
            this.#startAll(taken);
          }
          if (taken.length === 0 && this.#inHand.size > 0) {
            if (topUp) drainedWhileBusy = true;
            // The timer is cleared once a chunk finishes first: a pending poll timer would keep a
            // finished process alive for up to pollMs.
            const poll = timer(Math.max(1, Math.min(pollMs, nextStaleCheck - Date.now())));
            await Promise.race([this.#changed(), poll.elapsed]).finally(poll.cancel);
          }
          continue;
        }
        // Nothing in hand. If the last chunk in hand just finished with the queue empty, the sweep
        // may be over: ask before blocking on the queue, so the exit does not wait a whole poll.
        if (drainedWhileBusy && (await backend.isSettled())) {
          this.#settledOnArrival = this.#firstTakeAt === 0; // no chunk was ever in hand
          break;
        }
        drainedWhileBusy = false;
        const waitMs = Math.max(1, Math.min(pollMs, nextStaleCheck - Date.now()));
        const taken = await backend.take(capacity, waitMs);
        this.#startAll(taken);
        if (taken.length > 0) {
          lastWorkAt = Date.now();
          continue;
        }
        if (await backend.isSettled()) break;
        const idleSeconds = (Date.now() - lastWorkAt) / 1000;
        if (idleSeconds >= config.idleTimeoutSeconds && !(await backend.hasOutstanding())) {
          status = 'idle_timeout';
          log.info(`nothing to take for ${config.idleTimeoutSeconds}s; exiting`);
          break;
        }
      }
      if (this.#stopping && this.#fatal === null) status = 'interrupted';
      // Finish and commit what is in hand (unless aborted: then it was released).
      await this.#drained();
    } catch (err) {
      // The loop itself failed (take, isSettled or claimStale found the sweep reset or the broker
      // gone): the chunks in hand still end before run() does, since the caller closes the backend
      // next and a chunk finishing after that would only add a misleading line.
      await this.#drained();
      throw err;
    } finally {
      clearInterval(heartbeat);
      stopWaking();
    }
    if (this.#fatal !== null) throw this.#fatal;
    if (this.#aborted) status = 'interrupted';

    return this.summary(status);
  }

  /** The sweep was settled when this worker first looked, before it took anything: it had nothing to do. */
  get settledOnArrival(): boolean {
    return this.#settledOnArrival;
  }

  /** The worker's summary line as it stands (also written when an abort cuts run() short). */
  summary(status: WorkerStatus): QueueWorkerSummary {
    const duration = (performance.now() - this.#started) / 1000;
    return {
      worker_id: this.#opts.config.workerId,
      consumer: this.#opts.backend.consumerName,
      mode: 'queue',
      status,
      params_processed: this.#paramsProcessed,
      chunks_processed: this.#chunksProcessed,
      chunks_recovered: this.#chunksRecovered,
      failed_attempts: this.#chunksFailed,
      chunks_dead_lettered: this.#chunksDeadLettered,
      duration_seconds: round3(duration),
      params_per_second: duration > 0 ? Math.round(this.#paramsProcessed / duration) : 0,
    };
  }

  /**
   * Chunks to hold: PREFETCH when set; else this worker's rate so far (chunks done per second since
   * its first take) times HOLD_SECONDS (HOLD_SECONDS_THREADS when its threads run the chunks) or
   * HOLD_COMMITS commit latencies, whichever is longer, at least the default PREFETCH and at most
   * MAX_IN_HAND.
   */
  #inHandTarget(): number {
    const { config } = this.#opts;
    if (!config.prefetchAuto) return config.prefetch;
    const seconds = (performance.now() - this.#firstTakeAt) / 1000;
    const rate = this.#firstTakeAt > 0 && seconds > 0 ? (this.#chunksProcessed + this.#chunksFailed) / seconds : 0;
    const hold = Math.max(this.#opts.pool.started === true ? HOLD_SECONDS_THREADS : HOLD_SECONDS, HOLD_COMMITS * this.#commitSeconds);
    return Math.max(config.prefetch, Math.min(MAX_IN_HAND, Math.ceil(rate * hold)));
  }

  #startAll(deliveries: Delivery[]): void {
    for (const d of deliveries) {
      // Brokers that redeliver by themselves (RabbitMQ) mark a dead consumer's chunks as recovered.
      if (d.recovered) this.#opts.log.warn(`FAULT RECOVERY: chunk ${d.chunkId} redelivered after its worker stopped`, { chunk_id: d.chunkId });
      this.#start(d);
    }
  }

  /**
   * Takes a chunk in hand: hands it to the pool, and its result to the backend, with callbacks
   * rather than an async function per chunk (thousands a second: the promises, closures and
   * suspended frames they left behind were much of the main thread's garbage), then settles it.
   * Failures of any step take the slow path, #failed.
   */
  #start(delivery: Delivery): void {
    // Claimed chunks too: a restarted worker that finished two claimed chunks before its first take counted
    // them against the first millisecond after it, took itself for a worker of thousands of chunks a second,
    // and took 75 chunks at once (the kill storm's victim, which then died holding them).
    if (this.#firstTakeAt === 0) this.#firstTakeAt = performance.now();
    this.#inHand.add(delivery);
    const { config, pool, log } = this.#opts;
    const task = delivery.task;
    if (task === null) {
      void this.#failed(delivery, new TtgError(`malformed task: ${delivery.malformed ?? 'unreadable'}`));
      return;
    }
    if (config.simulateFaultRate > 0 && (this.#opts.random ?? Math.random)() < config.simulateFaultRate) {
      void this.#failed(delivery, new SimulatedFaultError(`simulated fault (SIMULATE_FAULT_RATE=${config.simulateFaultRate})`));
      return;
    }
    if (this.#chunkLines) log.debug(`chunk ${task.chunkId} started`, { attempt: delivery.attempt });
    this.#computing++;
    const chunk = new Computing(this.#steps, delivery, task, isoNow(), performance.now());
    // A pool without runRangeInto (a test's stand-in) is asked through its promise.
    if (typeof pool.runRangeInto === 'function') pool.runRangeInto(task.startParam, task.endParam, task.totalParams, chunk);
    else pool.runRange(task.startParam, task.endParam, task.totalParams).then((o) => chunk.done(o.stats, o.threadSeconds), (e) => chunk.failed(e));
  }

  /** The steps of a chunk in hand after the pool, called by its Computing (one set per worker, not per chunk). */
  readonly #steps: ChunkSteps = {
    computed: (chunk, stats, durationSeconds) => {
      this.#computing--;
      this.#wake();
      if (this.#aborted) return this.#settle(chunk.delivery); // given back already: never commit after an abort
      const { config, backend } = this.#opts;
      const { delivery, task } = chunk;
      let result: ChunkResult;
      try {
        result = {
          chunkId: task.chunkId,
          workerId: config.workerId,
          // The process, not just WORKER_ID (which pods may share): the report's chunks per worker counts by it.
          consumer: backend.consumerName,
          status: 'completed',
          durationSeconds: round6(durationSeconds),
          completedAt: isoNow(),
          startedAt: chunk.startedAt,
          stats: toChunkStats(stats),
        };
        // Said in the result so a monitor can name the chunks each worker recovered, and the retried ones.
        if (delivery.recovered) result.recovered = true;
        if (delivery.attempt > 0) result.attempts = delivery.attempt;
      } catch (err) {
        return void this.#failed(delivery, err);
      }
      chunk.ready = performance.now();
      let commit: Promise<boolean>;
      try {
        commit = backend.complete(delivery, result);
      } catch (err) {
        commit = Promise.reject(err);
      }
      commit.then((committed) => this.#committed(chunk, stats.count, durationSeconds, committed), (err: unknown) => this.#commitFailed(chunk, err));
    },
    failed: (chunk, err) => {
      this.#computing--;
      this.#wake();
      void this.#failed(chunk.delivery, err);
    },
  };

  #committed(chunk: Computing, params: number, threadSeconds: number, committed: boolean): void {
    const { log, metrics } = this.#opts;
    const { delivery, task } = chunk;
    try {
      this.#commitTook(chunk.ready);
      if (committed) {
        this.#chunksProcessed++;
        this.#paramsProcessed += params;
        if (delivery.recovered) this.#chunksRecovered++;
        metrics?.chunkCompleted(this.worker, params, (performance.now() - chunk.taken) / 1000, delivery.recovered);
        if (this.#chunkLines) log.debug(`chunk ${task.chunkId} done`, { params, seconds: round6(threadSeconds) });
      } else if (this.#fatal === null) {
        log.warn(`chunk ${task.chunkId} is no longer this worker's (taken over, or its connection was lost); ` +
          'its result here is dropped and the chunk counts from whoever holds it now');
      }
    } catch (err) {
      void this.#failed(delivery, err);
      return;
    }
    this.#settle(delivery);
  }

  #commitTook(ready: number): void {
    const now = performance.now();
    const took = (now - ready) / 1000;
    if (took < this.#commitWindowMin) this.#commitWindowMin = took;
    if (this.#commitSeconds === 0) this.#commitSeconds = took;
    if (now - this.#commitWindowStart < COMMIT_WINDOW_MS) return;
    if (this.#commitWindowStart > 0) this.#commitSeconds = 0.7 * this.#commitSeconds + 0.3 * this.#commitWindowMin;
    this.#commitWindowMin = Infinity;
    this.#commitWindowStart = now;
  }

  /** The commit failed: fatal when the broker is gone or the sweep reset, else the chunk is handed back untouched. */
  async #commitFailed(chunk: Computing, err: unknown): Promise<void> {
    const { backend, log } = this.#opts;
    const { delivery, task } = chunk;
    try {
      if (err instanceof BrokerUnavailableError || err instanceof SweepGoneError) {
        this.#fatal ??= err;
        return;
      }
      // The kernel did its part: a commit refused by a broker hiccup is no failure of the chunk
      // and must not use up one of its retries. Give it back untouched for another try.
      log.warn(`could not commit chunk ${task.chunkId} (${err instanceof Error ? err.message : String(err)}); ` +
        'handed back to the queue, not counted as a failure', { chunk_id: task.chunkId });
      await backend.release([delivery]).catch((releaseErr: unknown) => {
        if (releaseErr instanceof BrokerUnavailableError) this.#fatal ??= releaseErr;
        else log.warn(`could not hand chunk ${task.chunkId} back; it stays pending for stale recovery`, { error: String(releaseErr) });
      });
    } finally {
      this.#settle(delivery);
    }
  }

  /** A chunk that could not be computed (malformed, a kernel error, a simulated fault): retried or dead-lettered. */
  async #failed(delivery: Delivery, err: unknown): Promise<void> {
    const { backend, log, metrics } = this.#opts;
    try {
      if (err instanceof BrokerUnavailableError || err instanceof SweepGoneError) {
        this.#fatal ??= err;
        return;
      }
      if (this.#aborted) return;
      this.#chunksFailed++;
      const reason = err instanceof Error ? err.message : String(err);
      try {
        const outcome = await backend.fail(delivery, reason);
        metrics?.chunkFailed(this.worker, outcome);
        const line = `chunk ${delivery.chunkId} failed (attempt ${delivery.attempt + 1}): ${reason}; ${outcome}`;
        if (outcome === 'dead-lettered') {
          this.#chunksDeadLettered++;
          log.error(line, { chunk_id: delivery.chunkId });
        } else {
          log.warn(line, { chunk_id: delivery.chunkId });
        }
      } catch (failErr) {
        metrics?.chunkFailed(this.worker, 'unrecorded' satisfies FailureOutcome);
        if (failErr instanceof BrokerUnavailableError) this.#fatal ??= failErr;
        else log.error(`could not record the failure of chunk ${delivery.chunkId}; it stays pending`, { error: String(failErr) });
      }
    } finally {
      this.#settle(delivery);
    }
  }

  #settle(delivery: Delivery): void {
    this.#inHand.delete(delivery);
    this.#wake();
  }

  /** Resolves once nothing is in hand. */
  async #drained(): Promise<void> {
    while (this.#inHand.size > 0) await this.#changed();
  }

  /** Resolves when a chunk in hand is next computed or settled. */
  #changed(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#waiter = resolve;
    });
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.();
  }
}

/** What a worker does with a chunk once the pool is done with it. */
interface ChunkSteps {
  computed(chunk: Computing, stats: SliceStats, threadSeconds: number): void;
  failed(chunk: Computing, err: Error): void;
}

/** A chunk handed to the pool: the one object a chunk in hand needs besides its delivery (the pool's RangeSink). */
class Computing implements RangeSink {
  /** When its result was handed to the backend (performance.now()). */
  ready = 0;

  constructor(
    readonly steps: ChunkSteps,
    readonly delivery: Delivery,
    readonly task: ChunkTask,
    readonly startedAt: string,
    /** When it was taken in hand (performance.now()). */
    readonly taken: number,
  ) {}

  done(stats: SliceStats, threadSeconds: number): void {
    this.steps.computed(this, stats, threadSeconds);
  }

  failed(err: Error): void {
    this.steps.failed(this, err);
  }
}

/** A wait that can be called off, so no timer outlives what it waited for. */
function timer(ms: number): { elapsed: Promise<void>; cancel: () => void } {
  let handle: NodeJS.Timeout | undefined;
  const elapsed = new Promise<void>((resolve) => {
    handle = setTimeout(resolve, ms);
  });
  return { elapsed, cancel: () => clearTimeout(handle) };
}

let isoMs = NaN;
let isoText = '';

/**
 * The time as an ISO string, made once per millisecond: chunks a few
 * microseconds long each stamp their start and end, and new Date().toISOString()
 * cost more than the rest of a chunk's bookkeeping on the main thread.
 */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

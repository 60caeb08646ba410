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
import type { KernelPool } from './pool.js';
import type { ChunkResult, Delivery, QueueBackend } from '../backends/types.js';
import { toChunkStats } from './stats.js';
import { BrokerRefusedError, BrokerUnavailableError, SimulatedFaultError, SweepGoneError, TtgError } from '../core/errors.js';
import type { FailureOutcome, MetricsSource, WorkerMetrics } from './metrics.js';
import type { Probe } from './http.js';

/** Work in hand, in seconds of this worker's measured rate, when PREFETCH is unset: covers a take's round trip many times over. */
const HOLD_SECONDS = 0.05;
/**
 * ...or, where committing takes longer (a loaded broker, RabbitMQ's stream confirms), this many
 * commit latencies: while one batch is being committed and its replacements fetched, the threads
 * have the next ones. Above 2 so that a worker held back by its own in-hand limit grows out of it.
 */
const HOLD_COMMITS = 4;
/** Most chunks in hand when PREFETCH is unset, and most asked for in one take(). */
const MAX_IN_HAND = 4096;

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
  #inHand = new Map<Delivery, Promise<void>>();
  #stopping = false;
  #aborted = false;
  #fatal: unknown = null;
  #paramsProcessed = 0;
  #chunksProcessed = 0;
  #chunksRecovered = 0;
  #chunksFailed = 0;
  #chunksDeadLettered = 0;
  #started = performance.now();
  /** Resolved (and replaced) whenever a chunk in hand is computed or done: one wait for the loop, whatever is in hand. */
  #changed = deferred();
  /** Chunks in hand handed to the threads and not yet computed. */
  #computing = 0;
  /** When this worker first took chunks, for its rate (chunks done per second) that sizes the work in hand. */
  #firstTakeAt = 0;
  /** Seconds from a chunk's result being ready to its commit being answered (moving average). */
  #commitSeconds = 0;

  constructor(opts: QueueWorkerOptions) {
    this.#opts = opts;
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
    const unfinished = [...this.#inHand.keys()];
    this.#inHand.clear();
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

    const pollMs = this.#opts.pollMs ?? 1000;
    const staleEveryMs = config.staleCheckIntervalSeconds * 1000;
    // Refresh well within the threshold so a slow but live worker is never robbed.
    const heartbeatMs = Math.max(50, Math.min(config.staleThresholdMs / 3, 10_000));
    const heartbeat = setInterval(() => {
      if (this.#inHand.size === 0) return;
      backend.heartbeat([...this.#inHand.keys()]).catch((err) => {
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
        // for a commit and a take in a row. A PREFETCH given counts every chunk held.
        const held = config.prefetchAuto ? this.#computing : this.#inHand.size;
        let capacity = Math.min(target - held, MAX_IN_HAND - this.#inHand.size);
        if (capacity > 0 && Date.now() >= nextStaleCheck) {
          nextStaleCheck = Date.now() + staleEveryMs;
          const claimed = await backend.claimStale(capacity, config.staleThresholdMs);
          for (const d of claimed) {
            log.warn(`FAULT RECOVERY: claimed chunk ${d.chunkId} from a worker that stopped answering`, { chunk_id: d.chunkId });
            this.#start(d);
          }
          if (claimed.length > 0) lastWorkAt = Date.now();
          capacity -= claimed.length;
        }
        if (this.#inHand.size > 0) {
          // Busy: top up without blocking once half the target is free (one take per batch, not per
          // chunk), then wait for a chunk to finish (or the next poll), so a blocked read never holds
          // the loop after the last chunk in hand is done.
          lastWorkAt = Date.now();
          let taken: Delivery[] = [];
          if (capacity > 0 && capacity * 2 >= target) {
            taken = await backend.take(capacity, 0);
            this.#startAll(taken);
          }
          if (taken.length === 0 && this.#inHand.size > 0) {
            if (capacity > 0 && capacity * 2 >= target) drainedWhileBusy = true;
            // The timer is cleared once a chunk finishes first: a pending poll timer would keep a
            // finished process alive for up to pollMs.
            const poll = timer(Math.max(1, Math.min(pollMs, nextStaleCheck - Date.now())));
            await Promise.race([this.#changed.promise, poll.elapsed]).finally(poll.cancel);
          }
          continue;
        }
        // Nothing in hand. If the last chunk in hand just finished with the queue empty, the sweep
        // may be over: ask before blocking on the queue, so the exit does not wait a whole poll.
        if (drainedWhileBusy && (await backend.isSettled())) break;
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
      await Promise.all(this.#inHand.values());
    } catch (err) {
      // The loop itself failed (take, isSettled or claimStale found the sweep reset or the broker
      // gone): the chunks in hand still end before run() does, since the caller closes the backend
      // next and a chunk finishing after that would only add a misleading line.
      await Promise.all(this.#inHand.values());
      throw err;
    } finally {
      clearInterval(heartbeat);
    }
    if (this.#fatal !== null) throw this.#fatal;
    if (this.#aborted) status = 'interrupted';

    return this.summary(status);
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
   * its first take) times HOLD_SECONDS or HOLD_COMMITS commit latencies, whichever is longer, at
   * least the default PREFETCH and at most MAX_IN_HAND.
   */
  #inHandTarget(): number {
    const { config } = this.#opts;
    if (!config.prefetchAuto) return config.prefetch;
    const seconds = (performance.now() - this.#firstTakeAt) / 1000;
    const rate = this.#firstTakeAt > 0 && seconds > 0 ? (this.#chunksProcessed + this.#chunksFailed) / seconds : 0;
    const hold = Math.max(HOLD_SECONDS, HOLD_COMMITS * this.#commitSeconds);
    return Math.max(config.prefetch, Math.min(MAX_IN_HAND, Math.ceil(rate * hold)));
  }

  #startAll(deliveries: Delivery[]): void {
    if (deliveries.length > 0 && this.#firstTakeAt === 0) this.#firstTakeAt = performance.now();
    for (const d of deliveries) {
      // Brokers that redeliver by themselves (RabbitMQ) mark a dead consumer's chunks as recovered.
      if (d.recovered) this.#opts.log.warn(`FAULT RECOVERY: chunk ${d.chunkId} redelivered after its worker stopped`, { chunk_id: d.chunkId });
      this.#start(d);
    }
  }

  #start(delivery: Delivery): void {
    const work = this.#process(delivery).finally(() => {
      this.#inHand.delete(delivery);
      this.#wake();
    });
    this.#inHand.set(delivery, work);
  }

  #wake(): void {
    const changed = this.#changed;
    this.#changed = deferred();
    changed.resolve();
  }

  async #process(delivery: Delivery): Promise<void> {
    const { config, backend, pool, log, metrics } = this.#opts;
    const random = this.#opts.random ?? Math.random;
    const taken = performance.now();
    try {
      const task = delivery.task;
      if (task === null) throw new TtgError(`malformed task: ${delivery.malformed ?? 'unreadable'}`);
      if (config.simulateFaultRate > 0 && random() < config.simulateFaultRate) {
        throw new SimulatedFaultError(`simulated fault (SIMULATE_FAULT_RATE=${config.simulateFaultRate})`);
      }
      const startedAt = new Date().toISOString();
      log.debug(`chunk ${task.chunkId} started`, { attempt: delivery.attempt });
      this.#computing++;
      let outcome: Awaited<ReturnType<KernelPool['runRange']>>;
      try {
        outcome = await pool.runRange(task.startParam, task.endParam, task.totalParams);
      } finally {
        this.#computing--;
        this.#wake();
      }
      const { stats, threadSeconds: durationSeconds } = outcome;
      if (this.#aborted) return; // given back already: never commit after an abort
      const result: ChunkResult = {
        chunkId: task.chunkId,
        workerId: config.workerId,
        // The process, not just WORKER_ID (which pods may share): the report's chunks per worker counts by it.
        consumer: backend.consumerName,
        status: 'completed',
        durationSeconds: round6(durationSeconds),
        completedAt: new Date().toISOString(),
        startedAt,
        // Said in the result so a monitor can name the chunks each worker recovered, and the retried ones.
        ...(delivery.recovered ? { recovered: true } : {}),
        ...(delivery.attempt > 0 ? { attempts: delivery.attempt } : {}),
        stats: toChunkStats(stats),
      };
      let committed: boolean;
      const ready = performance.now();
      try {
        committed = await backend.complete(delivery, result);
        const took = (performance.now() - ready) / 1000;
        this.#commitSeconds = this.#commitSeconds === 0 ? took : 0.9 * this.#commitSeconds + 0.1 * took;
      } catch (err) {
        if (err instanceof BrokerUnavailableError || err instanceof SweepGoneError) throw err;
        // The kernel did its part: a commit refused by a broker hiccup is no failure of the chunk
        // and must not use up one of its retries. Give it back untouched for another try.
        log.warn(`could not commit chunk ${task.chunkId} (${err instanceof Error ? err.message : String(err)}); ` +
          'handed back to the queue, not counted as a failure', { chunk_id: task.chunkId });
        await backend.release([delivery]).catch((releaseErr: unknown) => {
          if (releaseErr instanceof BrokerUnavailableError) this.#fatal ??= releaseErr;
          else log.warn(`could not hand chunk ${task.chunkId} back; it stays pending for stale recovery`, { error: String(releaseErr) });
        });
        return;
      }
      if (committed) {
        this.#chunksProcessed++;
        this.#paramsProcessed += stats.count;
        if (delivery.recovered) this.#chunksRecovered++;
        metrics?.chunkCompleted(this.worker, stats.count, (performance.now() - taken) / 1000, delivery.recovered);
        log.debug(`chunk ${task.chunkId} done`, { params: stats.count, seconds: round6(durationSeconds) });
      } else if (this.#fatal === null) {
        log.warn(`chunk ${task.chunkId} is no longer this worker's (taken over, or its connection was lost); ` +
          'its result here is dropped and the chunk counts from whoever holds it now');
      }
    } catch (err) {
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
    }
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A wait that can be called off, so no timer outlives what it waited for. */
function timer(ms: number): { elapsed: Promise<void>; cancel: () => void } {
  let handle: NodeJS.Timeout | undefined;
  const elapsed = new Promise<void>((resolve) => {
    handle = setTimeout(resolve, ms);
  });
  return { elapsed, cancel: () => clearTimeout(handle) };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/**
 * Static mode (USE_QUEUE=false): worker WORKER_ID of TOTAL_WORKERS takes a
 * fixed share of [0, TOTAL_PARAMS) — equal shares, the last worker also
 * takes the remainder — and evaluates it in batches on the thread pool,
 * logging progress per batch. No queue, no coordination: every share is
 * known from the environment alone.
 */
import type { Config } from './config.js';
import type { Logger } from '../core/log.js';
import type { KernelPool } from './pool.js';
import type { ChunkStats } from '../core/sweep.js';
import { emptySlice, mergeSlices, toChunkStats } from './stats.js';
import type { SliceStats } from '../kernel/types.js';
import type { WorkerMetrics } from './metrics.js';

export interface StaticWorkerSummary {
  worker_id: string;
  mode: 'static';
  status: 'completed' | 'interrupted';
  range_start: number;
  range_end: number;
  /** The sweep this share belongs to, so `ttg aggregate --static` can check the shares add up. */
  total_params: number;
  total_workers: number;
  kernel: string;
  /** A user kernel's module sha-256 (null for a built-in kernel): shares of different modules do not merge. */
  kernel_sha256: string | null;
  params_processed: number;
  duration_seconds: number;
  /** Thread time spent on the share, summed over its slices. */
  thread_seconds: number;
  started_at: string;
  completed_at: string;
  params_per_second: number;
  aggregates: ChunkStats;
}

/** The share [start, end) of worker `index` among `workers` over `total` parameters. */
export function staticShare(total: number, workers: number, index: number): { start: number; end: number } {
  const size = Math.floor(total / workers);
  const start = index * size;
  const end = index === workers - 1 ? total : start + size;
  return { start, end };
}

/** At most ~100 progress lines per worker, and never batches smaller than a chunk. */
export function batchSize(rangeLength: number, chunkSize: number): number {
  return Math.max(chunkSize, Math.ceil(rangeLength / 100));
}

export class StaticWorker {
  #config: Config;
  #pool: KernelPool;
  #log: Logger;
  #metrics: WorkerMetrics | undefined;
  #stopping = false;

  constructor(opts: { config: Config; pool: KernelPool; log: Logger; metrics?: WorkerMetrics }) {
    this.#config = opts.config;
    this.#pool = opts.pool;
    this.#log = opts.log;
    this.#metrics = opts.metrics;
  }

  /** Stops after the batches in flight; the summary then covers what was done. */
  stop(): void {
    this.#stopping = true;
  }

  async run(): Promise<StaticWorkerSummary> {
    const config = this.#config;
    await this.#pool.ready();
    const started = performance.now();
    const startedAt = new Date().toISOString();
    let threadSeconds = 0;
    const { start, end } = staticShare(config.totalParams, config.totalWorkers, Number(config.workerId));
    const batch = batchSize(end - start, config.chunkSize);
    const batches = Math.ceil((end - start) / batch);
    this.#log.info(`static share ${start}..${end} (${end - start} params) in ${batches} batches`, {
      worker: config.workerId, of: config.totalWorkers, threads: this.#pool.threads,
    });

    const done: SliceStats[] = [];
    let processed = 0;
    let next = start;
    let batchNo = 0;
    // Keep a few batches in the pool at once so threads never wait between batches.
    const inFlight = new Set<Promise<void>>();
    const depth = Math.max(2, config.prefetch);
    while (next < end || inFlight.size > 0) {
      while (!this.#stopping && next < end && inFlight.size < depth) {
        const from = next;
        const to = Math.min(end, from + batch);
        next = to;
        const p: Promise<void> = this.#pool.runRange(from, to, config.totalParams).then(({ stats, threadSeconds: spent }) => {
          done.push(stats);
          threadSeconds += spent;
          processed += stats.count;
          this.#metrics?.paramsEvaluated(`worker-${config.workerId}`, stats.count);
          batchNo++;
          const pct = ((processed / (end - start)) * 100).toFixed(1);
          this.#log.info(`batch ${batchNo}/${batches} done: params ${from}..${to}, ${processed}/${end - start} (${pct}%)`);
        });
        const tracked = p.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
      }
      if (inFlight.size === 0) break;
      await Promise.race(inFlight);
    }

    const aggregates = toChunkStats(done.length ? mergeSlices(done) : emptySlice());
    const duration = (performance.now() - started) / 1000;
    return {
      worker_id: config.workerId,
      mode: 'static',
      status: processed === end - start ? 'completed' : 'interrupted',
      range_start: start,
      range_end: end,
      total_params: config.totalParams,
      total_workers: config.totalWorkers,
      kernel: config.kernel,
      kernel_sha256: config.kernelSha256,
      params_processed: processed,
      duration_seconds: Math.round(duration * 1000) / 1000,
      thread_seconds: Math.round(threadSeconds * 1e6) / 1e6,
      started_at: startedAt,
      completed_at: new Date().toISOString(),
      params_per_second: duration > 0 ? Math.round(processed / duration) : 0,
      aggregates,
    };
  }
}

/**
 * Engine and broker benchmarks: whole sweeps through the real worker loop
 * (QueueWorker + KernelPool), timed by tinybench.
 *  - engine: mandelbrot on the embedded queue with THREADS = 1..N, to show
 *    how the pool scales with threads;
 *  - brokers: placeholder through memory, Redis and RabbitMQ at a few chunk
 *    sizes, to show the per-chunk round-trip cost of each queue.
 */
import { Bench } from 'tinybench';
import { loadConfig, type Config } from '../engine/config.js';
import { silentLogger } from '../core/log.js';
import { KernelPool } from '../engine/pool.js';
import { QueueWorker } from '../engine/queue-worker.js';
import { createBackend } from '../engine/backend.js';
import { usableCpus } from '../engine/cpus.js';
import type { KernelName } from '../kernel/types.js';
import type { QueueBackend } from '../backends/types.js';

export interface SweepBenchRow {
  suite: 'engine' | 'broker';
  backend: string;
  kernel: KernelName;
  threads: number;
  chunkSize: number;
  totalParams: number;
  /** Mean seconds per whole sweep. */
  seconds: number;
  paramsPerSecond: number;
  chunksPerSecond: number;
  error?: string;
}

let sweepNo = 0;

/**
 * One sweep as a tinybench task: the timed part is the worker's run (which
 * creates the sweep's tasks, takes, computes and commits every chunk); the
 * queue is cleared afterwards, outside the timing.
 */
function sweepTask(backendName: 'memory' | 'redis' | 'rabbitmq', pool: KernelPool, kernel: KernelName, totalParams: number, chunkSize: number, threads: number) {
  let backend: QueueBackend | null = null;
  let config: Config | null = null;
  return {
    beforeEach: async () => {
      config = loadConfig({
        ...process.env, USE_QUEUE: 'true', QUEUE_BACKEND: backendName, QUEUE_PREFIX: `ttgbench-${process.pid}-${sweepNo++}`,
        KERNEL: kernel, TOTAL_PARAMS: String(totalParams), CHUNK_SIZE: String(chunkSize), THREADS: String(threads),
        REDIS_HOST: process.env['REDIS_HOST'] ?? '127.0.0.1', RABBITMQ_HOST: process.env['RABBITMQ_HOST'] ?? '127.0.0.1',
        IDLE_TIMEOUT_SECONDS: '5', CONNECT_TIMEOUT_SECONDS: '3',
      });
      backend = await createBackend({ config, workerId: '0', log: silentLogger });
    },
    run: async () => {
      const summary = await new QueueWorker({ config: config!, backend: backend!, pool, log: silentLogger, pollMs: 50 }).run();
      if (summary.params_processed !== totalParams) throw new Error(`swept ${summary.params_processed} of ${totalParams}`);
    },
    afterEach: async () => {
      await backend?.reset().catch(() => {});
      await backend?.close().catch(() => {});
      backend = null;
    },
  };
}

async function timeSweeps(
  rows: SweepBenchRow[], suite: SweepBenchRow['suite'], backendName: 'memory' | 'redis' | 'rabbitmq',
  kernel: KernelName, threads: number, totalParams: number, chunkSizes: number[], iterations: number,
) {
  const pool = new KernelPool({ threads, kernel, impl: 'wasm' });
  try {
    for (const chunkSize of chunkSizes) {
      const bench = new Bench({ iterations, time: 0, warmupIterations: 1, warmupTime: 0 });
      const name = `${suite} ${backendName} ${kernel} threads=${threads} chunk=${chunkSize}`;
      const task = sweepTask(backendName, pool, kernel, totalParams, chunkSize, threads);
      bench.add(name, task.run, { beforeEach: task.beforeEach, afterEach: task.afterEach });
      const row: SweepBenchRow = { suite, backend: backendName, kernel, threads, chunkSize, totalParams, seconds: NaN, paramsPerSecond: NaN, chunksPerSecond: NaN };
      try {
        await bench.run();
        const result = bench.tasks[0]!.result as { state: string; latency?: { mean: number }; error?: unknown };
        if (!result.latency) throw result.error ?? new Error(`benchmark ${result.state}`);
        row.seconds = result.latency.mean / 1000;
        row.paramsPerSecond = Math.round(totalParams / row.seconds);
        row.chunksPerSecond = Math.round(Math.ceil(totalParams / chunkSize) / row.seconds);
      } catch (err) {
        row.error = err instanceof Error ? err.message : String(err);
      }
      rows.push(row);
    }
  } finally {
    await pool.close();
  }
}

export async function benchEngine(opts: { quick?: boolean } = {}): Promise<SweepBenchRow[]> {
  const rows: SweepBenchRow[] = [];
  const iterations = opts.quick ? 1 : 3;
  const maxThreads = Math.max(2, usableCpus());
  for (let threads = 1; threads <= maxThreads; threads++) {
    // The whole grid in both modes: the kernel rows measure the same parameters (bench/kernels.ts).
    await timeSweeps(rows, 'engine', 'memory', 'mandelbrot', threads, 1_000_000, [10_000, 50_000], iterations);
  }
  return rows;
}

export async function benchBrokers(opts: { quick?: boolean } = {}): Promise<SweepBenchRow[]> {
  const rows: SweepBenchRow[] = [];
  const iterations = opts.quick ? 1 : 3;
  const threads = Math.max(1, usableCpus());
  const total = opts.quick ? 200_000 : 1_000_000;
  const sizes = opts.quick ? [1_000, 10_000] : [100, 1_000, 10_000];
  for (const backend of ['memory', 'redis', 'rabbitmq'] as const) {
    for (const size of sizes) {
      // Keep the smallest chunks to a bounded count so one sweep stays a few seconds.
      await timeSweeps(rows, 'broker', backend, 'placeholder', threads, Math.min(total, size * 2_000), [size], iterations);
    }
  }
  return rows;
}

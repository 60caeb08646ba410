/**
 * The worker's Prometheus metrics (served on /metrics by engine/http.ts).
 * One registry per process, not prom-client's global one: `ttg run` holds
 * several workers in one process, told apart by the `worker` label (their
 * consumer names), and tests make several registries side by side.
 *
 * Counters are incremented where the event happens (the worker loop);
 * gauges and the reconnect counter are read from their sources when scraped,
 * so nothing polls between scrapes.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the scrape-time gauges read from a queue worker and its backend. */
export interface MetricsSource {
  /** The consumer name, as the `worker` label. */
  readonly worker: string;
  readonly chunksInHand: number;
  readonly reconnects: number;
}

export type FailureOutcome = 'retried' | 'dead-lettered' | 'not-owner' | 'unrecorded';

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly #chunksCompleted: Counter<'worker'>;
  readonly #chunksRecovered: Counter<'worker'>;
  readonly #chunksFailed: Counter<'worker' | 'outcome'>;
  readonly #paramsProcessed: Counter<'worker'>;
  readonly #chunkDuration: Histogram<'worker'>;
  readonly #sources = new Set<MetricsSource>();

  constructor(info: { mode: 'static' | 'queue'; backend: string; kernel: string; impl: string; threads: number; version: string }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'ttg_' });
    new Gauge({
      name: 'ttg_info', help: 'Constant 1, labelled with what this process runs',
      labelNames: ['mode', 'backend', 'kernel', 'impl', 'version'] as const, registers,
    }).set({ mode: info.mode, backend: info.backend, kernel: info.kernel, impl: info.impl, version: info.version }, 1);
    new Gauge({ name: 'ttg_threads', help: 'Kernel threads in this process (THREADS)', registers }).set(info.threads);
    this.#chunksCompleted = new Counter({
      name: 'ttg_chunks_completed_total', help: 'Chunks computed and committed (result published and acknowledged)',
      labelNames: ['worker'] as const, registers,
    });
    this.#chunksRecovered = new Counter({
      name: 'ttg_chunks_recovered_total', help: 'Committed chunks taken over from a worker that stopped answering',
      labelNames: ['worker'] as const, registers,
    });
    this.#chunksFailed = new Counter({
      name: 'ttg_chunk_failures_total',
      help: 'Failed chunk attempts by what became of the chunk (retried, dead-lettered, not-owner, unrecorded)',
      labelNames: ['worker', 'outcome'] as const, registers,
    });
    this.#paramsProcessed = new Counter({
      name: 'ttg_params_processed_total', help: 'Parameters evaluated and committed (static mode: evaluated)',
      labelNames: ['worker'] as const, registers,
    });
    this.#chunkDuration = new Histogram({
      name: 'ttg_chunk_duration_seconds', help: 'Wall time of a chunk, from taking it to committing it',
      labelNames: ['worker'] as const, registers,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    });
    const sources = this.#sources;
    new Gauge({
      name: 'ttg_chunks_in_hand', help: 'Chunks taken and not yet committed', labelNames: ['worker'] as const, registers,
      collect() {
        this.reset();
        for (const s of sources) this.set({ worker: s.worker }, s.chunksInHand);
      },
    });
    // A counter read from the backends at scrape time: each scrape adds what happened since the last.
    const seen = new Map<MetricsSource, number>();
    new Counter({
      name: 'ttg_broker_reconnects_total', help: 'Broker connections re-established after a loss',
      labelNames: ['worker'] as const, registers,
      collect() {
        for (const s of sources) {
          const now = s.reconnects;
          const delta = now - (seen.get(s) ?? 0);
          seen.set(s, now);
          this.inc({ worker: s.worker }, delta);
        }
      },
    });
  }

  /** Registers a worker whose in-hand chunks and reconnects are read at each scrape. */
  watch(source: MetricsSource): void {
    this.#sources.add(source);
  }

  chunkCompleted(worker: string, params: number, wallSeconds: number, recovered: boolean): void {
    this.#chunksCompleted.inc({ worker });
    this.#paramsProcessed.inc({ worker }, params);
    this.#chunkDuration.observe({ worker }, wallSeconds);
    if (recovered) this.#chunksRecovered.inc({ worker });
  }

  chunkFailed(worker: string, outcome: FailureOutcome): void {
    this.#chunksFailed.inc({ worker, outcome });
  }

  /** Static mode: a batch of parameters evaluated. */
  paramsEvaluated(worker: string, params: number): void {
    this.#paramsProcessed.inc({ worker }, params);
  }
}

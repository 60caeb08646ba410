/**
 * The queue backend contract: what the worker loop, `ttg run`, `ttg
 * aggregate`, `ttg monitor` and `ttg reset` need of a queue, whatever the
 * broker. One conformance suite (test/conformance.test.ts) runs against every
 * implementation.
 *
 * Deliberately left out: broker identifiers (stream entry ids, delivery
 * tags) never leave a backend; the engine holds them only as the opaque
 * `Delivery.handle`. How a backend keeps "each chunk counted once" is its own
 * business; the aggregator also de-duplicates by chunk id.
 */
import type { KernelName } from '../kernel/types.js';
import type { Logger } from '../engine/log.js';
import type { Config } from '../engine/config.js';

/** What identifies a sweep; a worker whose settings differ refuses to join. */
export interface SweepSettings {
  totalParams: number;
  chunkSize: number;
  kernel: KernelName;
}

/** One task: the parameters [startParam, endParam) of a sweep of totalParams. */
export interface ChunkTask {
  /** Zero-padded decimal (`00042`), see chunkIdOf(). */
  chunkId: string;
  startParam: number;
  endParam: number;
  totalParams: number;
}

/** Statistics of a chunk as they travel in `result_data`. */
export interface ChunkStats {
  count: number;
  /** Correctly rounded sum of the chunk's values. */
  sum: number;
  min: number;
  max: number;
  /** The smallest parameter at which `min` (`max`) is reached; -1 for an empty chunk. */
  argmin: number;
  argmax: number;
  avg: number;
  /** The exact sum as non-overlapping f64s (kernel/exact-sum.ts). */
  partials: number[];
}

export interface ChunkResult {
  chunkId: string;
  workerId: string;
  status: 'completed';
  durationSeconds: number;
  /** ISO-8601 time the chunk was finished. */
  completedAt: string;
  /** ISO-8601 time the chunk was handed to the threads (wire field `started_at`, beyond DESIGN.md's list). */
  startedAt?: string;
  stats: ChunkStats;
}

/** A task in a worker's hands, not yet acknowledged. */
export interface Delivery {
  /** The parsed task, or null when the message is malformed (see `malformed`). */
  task: ChunkTask | null;
  /** Why the message cannot be processed, when `task` is null. */
  malformed?: string;
  /** The chunk id as read (may be '?' for a message too broken to have one), for logs. */
  chunkId: string;
  /** Failed attempts before this delivery (0 the first time). */
  attempt: number;
  /** True when taken over from a worker that stopped answering (stale recovery). */
  recovered: boolean;
  /** Broker bookkeeping (stream id, delivery tag, channel generation). Opaque to the engine. */
  readonly handle: unknown;
}

export interface DeadLetter {
  chunkId: string;
  reason: string;
  attempts: number;
  workerId: string;
  /** The task, when it could be parsed. */
  task: ChunkTask | null;
}

export interface InitOutcome {
  /** True when this call created the sweep's tasks (the first worker to arrive). */
  created: boolean;
  totalChunks: number;
}

/** Queue statistics for `ttg monitor` (a backend reports -1 for what it cannot know). */
export interface QueueStats {
  settings: SweepSettings | null;
  totalChunks: number;
  /** Chunks with at least one result. */
  completedChunks: number;
  deadLettered: number;
  /** Waiting to be taken. */
  ready: number;
  /** Delivered and not yet acknowledged. */
  inFlight: number;
  /** Waiting out a retry delay. */
  retrying: number;
  /** Result entries, duplicates included. */
  results: number;
  /** Consumer name → chunks in its hands (where the broker tells). */
  consumers: Record<string, number>;
}

/**
 * Where a backend's connection stands, for /readyz: `connecting` until init()
 * has joined the sweep, `ready` while the broker answers, `reconnecting` while
 * a lost connection is being retried, `closed` after close().
 */
export type ConnectionState = 'connecting' | 'ready' | 'reconnecting' | 'closed';

export interface QueueBackend {
  readonly kind: 'redis' | 'rabbitmq' | 'memory';
  /** This worker's consumer name (`worker-<id>`, made unique per process). Valid after init(). */
  readonly consumerName: string;
  readonly connectionState: ConnectionState;
  /** Connections re-established after a loss, since the backend was made. */
  readonly reconnects: number;

  /**
   * Connects (retrying with backoff up to CONNECT_TIMEOUT_SECONDS, then
   * BrokerUnavailableError naming the address) and makes sure the sweep
   * exists: the first worker creates every task, atomically; the others join.
   * Throws SettingsMismatchError naming the difference when the queue holds
   * another sweep.
   */
  init(settings: SweepSettings): Promise<InitOutcome>;

  /** Up to `max` new deliveries; waits at most `waitMs` for the first one. */
  take(max: number, waitMs: number): Promise<Delivery[]>;

  /**
   * Publishes the result and acknowledges the delivery as one step. Returns
   * false, publishing nothing, when this worker no longer owns the delivery
   * (another worker recovered it, or the connection it came on is gone).
   */
  complete(delivery: Delivery, result: ChunkResult): Promise<boolean>;

  /**
   * The chunk failed: it comes back for another try (after the retry delay)
   * or, past RABBITMQ_MAX_RETRIES failures, goes to the dead letters with
   * `reason` and the attempt count. Acknowledges the delivery.
   */
  fail(delivery: Delivery, reason: string): Promise<'retried' | 'dead-lettered' | 'not-owner'>;

  /** Gives deliveries back untouched, for others to take (abort on a second signal). */
  release(deliveries: Delivery[]): Promise<void>;

  /** Tells the broker these deliveries are still being worked on, so nobody takes them as stale. */
  heartbeat(deliveries: Delivery[]): Promise<void>;

  /**
   * Takes over up to `max` deliveries that other consumers have held longer
   * than `thresholdMs` without a heartbeat. Brokers that redeliver by
   * themselves (RabbitMQ on connection loss) return [].
   */
  claimStale(max: number, thresholdMs: number): Promise<Delivery[]>;

  /** True when every chunk of the sweep has a result or is dead-lettered. */
  isSettled(): Promise<boolean>;

  /** True when chunks are held by other consumers or waiting out a retry delay: work may still come. */
  hasOutstanding(): Promise<boolean>;

  /** The sweep's settings as stored in the queue, or null when there is none. Does not need init(). */
  readSettings(): Promise<SweepSettings | null>;

  /** Every result entry, duplicates included, without consuming any. Does not need init(). */
  readResults(): Promise<ChunkResult[]>;

  /** Every dead-lettered chunk, without consuming any. Does not need init(). */
  readDeadLetters(): Promise<DeadLetter[]>;

  stats(): Promise<QueueStats>;

  /** Deletes the sweep's queue state: tasks, results, dead letters, settings. */
  reset(): Promise<void>;

  close(): Promise<void>;
}

/** What a backend constructor is given. */
export interface BackendOptions {
  config: Config;
  /** WORKER_ID of the worker this connection serves (aggregate, monitor and reset use their own). */
  workerId: string;
  log: Logger;
}

/**
 * The queue backend contract: what the worker loop, `ttg run`, `ttg
 * aggregate`, `ttg monitor` and `ttg reset` need of a queue, whatever the
 * broker. One conformance suite (test/conformance.ts, instantiated by
 * test/conformance-<backend>.test.ts) runs against every implementation.
 *
 * Deliberately left out: broker identifiers (stream entry ids, delivery
 * tags) never leave a backend; the engine holds them only as the opaque
 * `Delivery.handle`. How a backend keeps "each chunk counted once" is its own
 * business; the aggregator also de-duplicates by chunk id.
 */
import type { Logger } from '../core/log.js';
import type { FailOutcome } from '../core/outcomes.js';
import type { ChunkResult, ChunkTask, DeadLetter, SweepSettings } from '../core/sweep.js';

export type { ChunkResult, ChunkStats, ChunkTask, DeadLetter, SweepSettings } from '../core/sweep.js';
export type { FailOutcome } from '../core/outcomes.js';

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

export interface InitOptions {
  /**
   * The caller starts taking at once: a backend whose creation of the tasks
   * takes long (RabbitMQ: one confirmed message per task) may return before
   * every task is in the queue and go on adding them meanwhile; until they
   * are all in, hasOutstanding() is true. Unset, init() returns once every
   * task is there.
   */
  consumeWhileCreating?: boolean;
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
  /** Chunks of the sweep with at least one result. */
  completedChunks: number;
  /**
   * Chunks of the sweep that were dead-lettered and have no result. Dead
   * letters of tasks that were not chunks of the sweep (malformed, hand-made)
   * are not chunks and are not counted here.
   */
  deadLettered: number;
  /** completedChunks + deadLettered: never more than totalChunks; the sweep is settled when it equals it. */
  settledChunks: number;
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

/** A worker process that joined the sweep (init()), as the backend recorded it. */
export interface ConsumerRecord {
  /** Its consumer name: unique among the processes that were live together, where WORKER_ID may be shared. */
  consumer: string;
  workerId: string;
  /** Host or pod name. */
  host: string;
  /** ISO-8601 time it joined. */
  joinedAt: string;
}

/**
 * What re-driving dead letters did (`ttg retry-dead`): the chunks put back
 * on the queue, in order (none when nothing was dead); or, changing nothing,
 * the first asked-for chunk that cannot be re-driven and why: not a chunk of
 * the sweep, completed already, or not dead-lettered (still to be done, or
 * re-driven already and waiting to be taken).
 */
export type RedriveOutcome =
  | { redriven: string[] }
  | { refused: { chunkId: string; why: 'not-a-chunk' | 'completed' | 'not-dead' } };

/**
 * Where a backend's connection stands, for /readyz: `connecting` until init()
 * has joined the sweep, `ready` while the broker answers, `reconnecting` while
 * a lost connection is being retried, `closed` after close().
 */
export type ConnectionState = 'connecting' | 'ready' | 'reconnecting' | 'closed';

export interface QueueBackend {
  /** The backend's name in the registry (backends/registry.ts), e.g. `redis`. */
  readonly kind: string;
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
  init(settings: SweepSettings, options?: InitOptions): Promise<InitOutcome>;

  /** Up to `max` new deliveries; waits at most `waitMs` for the first one. */
  take(max: number, waitMs: number): Promise<Delivery[]>;

  /**
   * Publishes the result and acknowledges the delivery as one step. Returns
   * false, publishing nothing, when this worker no longer owns the delivery
   * (another worker recovered it, or the connection it came on is gone).
   */
  complete(delivery: Delivery, result: ChunkResult): Promise<boolean>;

  /**
   * The chunk failed: it comes back for another try, no sooner than the
   * retry delay (RETRY_DELAY_MS), or, on its MAX_RETRIES-th failure, goes to
   * the dead letters with `reason` and the attempt count. A malformed
   * delivery (not exactly a chunk of the sweep) goes to the dead letters at
   * once and settles no chunk. Acknowledges the delivery. A failed commit is
   * not a failure of the chunk: the worker releases it instead.
   */
  fail(delivery: Delivery, reason: string): Promise<FailOutcome>;

  /** Gives deliveries back untouched, for others to take (abort on a second signal). */
  release(deliveries: Delivery[]): Promise<void>;

  /** Tells the broker these deliveries are still being worked on, so nobody takes them as stale. */
  heartbeat(deliveries: Delivery[]): Promise<void>;

  /**
   * Takes over up to `max` deliveries held longer than `thresholdMs` without
   * a heartbeat (on Redis this consumer's own idle entries too: heartbeat
   * what you hold). Brokers that redeliver by themselves (RabbitMQ on
   * connection loss) return [].
   */
  claimStale(max: number, thresholdMs: number): Promise<Delivery[]>;

  /** True when every chunk of the sweep has a result or is dead-lettered. */
  isSettled(): Promise<boolean>;

  /** True when chunks are held by other consumers or waiting out a retry delay: work may still come. */
  hasOutstanding(): Promise<boolean>;

  /** The sweep's settings as stored in the queue, or null when there is none. Does not need init(). */
  readSettings(): Promise<SweepSettings | null>;

  /**
   * Every result entry, duplicates included, without consuming any. Does not need init(). With `until`, a
   * backend may stop reading after the first entry for which it is true (that entry is the last returned).
   */
  readResults(until?: (result: ChunkResult) => boolean): Promise<ChunkResult[]>;

  /**
   * Every dead letter, without consuming any, in the order written; those
   * followed by a re-drive of their chunk are marked `redriven` (they no
   * longer settle it). Does not need init().
   */
  readDeadLetters(): Promise<DeadLetter[]>;

  /**
   * Puts dead-lettered chunks back on the queue with fresh attempts (all of
   * them when `chunkIds` is null), atomically: two callers at once never
   * queue a chunk twice, and a refused id changes nothing. A re-driven chunk
   * counts as pending again (isSettled, stats) until it has a result or dies
   * again; its dead letters stay, marked `redriven`. Does not need init().
   */
  redriveDead(chunkIds: readonly string[] | null): Promise<RedriveOutcome>;

  /** Chunk id → how often it was re-driven (chunks never re-driven are absent). Does not need init(). */
  readRedrives(): Promise<Record<string, number>>;

  /** Every worker process that joined the sweep, in the order they joined, whatever it did since. Does not need init(). */
  readConsumers(): Promise<ConsumerRecord[]>;

  stats(): Promise<QueueStats>;

  /** Deletes the sweep's queue state: tasks, results, dead letters, re-drives, who joined, settings. */
  reset(): Promise<void>;

  close(): Promise<void>;
}

/**
 * What a backend is given: the few settings every backend needs, and its
 * own connection settings (as its registry entry read them from the
 * environment). Never the engine's whole configuration.
 */
export interface BackendOptions<Connection = unknown> {
  /** Namespace of every key and queue name (QUEUE_PREFIX). */
  queuePrefix: string;
  /** WORKER_ID of the worker this connection serves (aggregate, monitor and reset use their own). */
  workerId: string;
  /** Host or pod name, added to the consumer name where several processes share a WORKER_ID. */
  hostName: string;
  /** Failed attempts before a chunk is dead-lettered. */
  maxRetries: number;
  /** How long a failed chunk waits before it is offered again. */
  retryDelayMs: number;
  /** Chunks a worker holds at once (a broker-side prefetch where there is one). */
  prefetch: number;
  /** How long an unreachable or lost broker is retried before BrokerUnavailableError. */
  connectTimeoutSeconds: number;
  /**
   * STALE_THRESHOLD_MS: how long a worker may go silent before its chunks go to others. A broker that
   * redelivers by itself (RabbitMQ) tunes its dead-consumer detection to it; absent, the backend's default.
   */
  staleThresholdMs?: number;
  log: Logger;
  connection: Connection;
}

/** One backend as the registry lists it. */
export interface BackendEntry<Connection> {
  /** Every environment variable the backend reads (for ENV_VARIABLES and the deployment checks). */
  readonly variables: readonly string[];
  /** Reads and checks those variables, throwing ConfigError naming the first bad one. Never connects. */
  readEnv(env: Record<string, string | undefined>): Connection;
  /** Makes the backend; its client library is loaded here, only when this backend is used. */
  create(options: BackendOptions<Connection>): Promise<QueueBackend>;
}

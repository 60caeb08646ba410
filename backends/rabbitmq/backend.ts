/**
 * The RabbitMQ backend (AMQP 0-9-1 through amqplib).
 *
 * Topology, every name under QUEUE_PREFIX (`p`), declared idempotently by
 * each worker on each (re)connection:
 *
 *   p.exchange     direct exchange, durable: routes by queue name to
 *   p.tasks        quorum queue (names.ts says why): the chunks; consumed
 *                  with basic.consume, prefetch PREFETCH, manual acks
 *   p.tasks.retry  quorum delay queue: a failed chunk waits there for
 *                  RETRY_DELAY_MS (per-message expiration), then the broker
 *                  dead-letters it, at least once, to p.exchange → p.tasks
 *   p.tasks.dlq    stream: chunks that failed MAX_RETRIES times, and tasks that are not chunks of the
 *                  sweep: the original body with x-ttg-reason / x-ttg-attempts / x-ttg-worker headers
 *   p.results      stream: one entry per completed delivery (JSON, the Redis field names)
 *   p.meta         stream: the sweep's settings, written once by the creator,
 *                  then how many tasks are in (see init-lock.ts)
 *   p.meta.ready   exchange used as a flag: it exists once p.meta holds the
 *                  settings; the tasks follow while workers consume
 *   p.meta.begun   exchange used as a flag: a creator began writing p.meta
 *   p.init-lock    exclusive queue: the mutex of sweep creation
 *   p.consumers.<name>  exclusive queue per live worker: unique consumer names
 *   p.redrives, p.redrive-lock, p.joined  re-drives of dead letters and who joined (redrive.ts)
 *
 * How the parts work, each in its own module: session.ts (the connection,
 * its reconnect loop and explicit state, setup hooks re-run on every
 * connection), consumer.ts (the task consumer and the ownership of
 * deliveries), init-lock.ts (creating the sweep once), stream-reader.ts
 * (reading the streams without consuming or writing them), names.ts (names,
 * headers, topology), stats.ts, redrive.ts. This file only maps the backend
 * contract onto them.
 *
 * Reconnection: amqplib does not reconnect by itself (its opt-in recovery
 * mode would reopen channels behind our back, but we need to know which
 * channel a delivery came on). On loss of the connection or of one of its
 * channels the whole session is dropped; deliveries taken on it are no longer
 * ours (the broker redelivers them) and complete()/fail() answer false /
 * 'not-owner' for them. A new session is opened with exponential backoff for
 * CONNECT_TIMEOUT_SECONDS, the topology redeclared and the consumer restarted;
 * past that bound the next (or pending) call throws BrokerUnavailableError
 * naming the broker's address (never the URL, which holds the password).
 */
import type {
  BackendOptions, ChunkResult, ConnectionState, ConsumerRecord, DeadLetter, Delivery, InitOptions, InitOutcome, QueueBackend,
  QueueStats, RedriveOutcome, SweepSettings,
} from '../types.js';
import { SweepGoneError, sweepGoneMessage, TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { FailOutcome } from '../../core/outcomes.js';
import { chunkCount } from '../../core/sweep.js';
import { parseTaskJson, resultFields } from '../messages.js';
import type { Options } from 'amqplib';
import { TaskConsumer, type TaskHandle } from './consumer.js';
import { SweepCreation } from './init-lock.js';
import { attemptsOf, clip, connectionUrl, declareTopology, describe, JSON_TYPE, RABBIT_HEADERS, rabbitNames, type Names } from './names.js';
import type { RabbitConnection } from './options.js';
import { sessionSecurity } from './refusals.js';
import { RabbitSession, type Link } from './session.js';
import { StreamReader } from './stream-reader.js';
import { readJoined, recordJoin, redriveCounts, redriveDead } from './redrive.js';
import { sweepStats } from './stats.js';

export { rabbitNames, RABBIT_HEADERS } from './names.js';

/** Pause between attempts at the init lock while another worker creates the sweep (tens of ms). */
const LOCK_RETRY_MS = 10;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class RabbitBackend implements QueueBackend {
  readonly kind = 'rabbitmq' as const;
  readonly #opts: BackendOptions<RabbitConnection>;
  readonly #log: Logger;
  readonly #names: Names;
  readonly #session: RabbitSession;
  readonly #consumer: TaskConsumer;
  readonly #reader: StreamReader;
  readonly #creation: SweepCreation;
  #consumerName: string;
  #closed = false;
  /** Set by init(): (re)connections declare the topology. */
  #declareTopology = false;
  /** Set once init() has joined the sweep: reconnections check the sweep is still there, unchanged. */
  #joined = false;
  #settings: SweepSettings | null = null;
  /** The follower of the results saw every chunk settle: a waiting take() returns at once. */
  #settledSeen = false;

  constructor(opts: BackendOptions<RabbitConnection>) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#names = rabbitNames(opts.queuePrefix);
    this.#consumerName = `worker-${opts.workerId}`;
    this.#session = new RabbitSession({
      url: connectionUrl(opts.connection, opts.staleThresholdMs),
      address: opts.connection.address,
      connectTimeoutSeconds: opts.connectTimeoutSeconds,
      connectionName: () => `ttg ${opts.queuePrefix} ${this.#consumerName} ${opts.hostName}:${process.pid}`,
      log: opts.log,
      ...sessionSecurity({ connection: opts.connection, queuePrefix: opts.queuePrefix }),
    });
    this.#reader = new StreamReader(this.#session, this.#names, opts.queuePrefix);
    this.#creation = new SweepCreation(this.#session, this.#reader, this.#names, opts.queuePrefix, opts.log);
    this.#consumer = new TaskConsumer(this.#session, this.#names.tasks, opts.prefetch, opts.log,
      (link, prefetch) => `${this.#consumerName}@${opts.hostName}:${process.pid}#${link.gen}.${prefetch}`);
    // What every new connection does before it is used (the consumer, a ready hook, comes after): the sweep's
    // queues that exist must be running (stream-reader.ts); after a reconnection the sweep must still be the one
    // joined, before the topology is declared again and the consumer name taken back. On a first connection there is
    // nothing to check yet, and the topology is declared alongside the first check.
    this.#session.addSetup(async (link) => {
      if (!this.#joined || !this.#settings) {
        await Promise.all([this.#reader.checkRunning(link), this.#declareTopology ? this.#declare(link) : null]);
        return;
      }
      await this.#reader.checkRunning(link);
      const current = await this.#reader.settings(link);
      if (current === null) throw new SweepGoneError(sweepGoneMessage(opts.queuePrefix));
      this.#creation.check(current, this.#settings);
      if (this.#declareTopology) await this.#declare(link);
      await this.#session.tryExclusiveQueue(link, this.#names.consumer(this.#consumerName));
    });
    this.#session.reconnectEagerly = () => this.#joined;
  }

  get connectionState(): ConnectionState {
    if (this.#closed) return 'closed';
    if (!this.#joined) return 'connecting';
    return this.#session.state === 'ready' ? 'ready' : 'reconnecting';
  }

  get reconnects(): number {
    return this.#session.reconnects;
  }

  get consumerName(): string {
    return this.#consumerName;
  }

  // ---------------------------------------------------------------- sweep

  async init(settings: SweepSettings, options: InitOptions = {}): Promise<InitOutcome> {
    this.#assertUsable();
    this.#declareTopology = true;
    const totalChunks = chunkCount(settings);
    let waitLogged = false;
    for (;;) {
      const s = await this.#session.ensure();
      if (options.consumeWhileCreating === true) this.#consumer.prepare(s); // its channel readied beside the creation
      try {
        // A connection opened before init() (readSettings, stats) has not declared anything yet.
        if (!s.declared) await this.#declare(s);
        const created = await this.#creation.joinOrCreate(s, settings, this.#consumerName, options.consumeWhileCreating === true);
        if (created === null) {
          if (!waitLogged) this.#log.info('another worker is creating the sweep\'s tasks; waiting for it');
          waitLogged = true;
          await sleep(LOCK_RETRY_MS * (0.5 + Math.random()));
          continue;
        }
        this.#settings = settings;
        // Consuming starts with the first take() (a worker that joins does not hold chunks it never asks for), or
        // now for a caller that takes at once: its first chunks are on their way while it claims its name.
        if (options.consumeWhileCreating === true) this.#consumer.start(s);
        this.#consumerName = await this.#creation.claimConsumerName(s, this.#opts.workerId, this.#opts.hostName);
        await recordJoin(this.#session, s, this.#names, {
          consumer: this.#consumerName, workerId: this.#opts.workerId, host: this.#opts.hostName, joinedAt: new Date().toISOString(),
        });
        this.#joined = true;
        return { created, totalChunks };
      } catch (err) {
        // A lost connection released the lock (an exclusive queue) with it: start over on the next one.
        this.#consumer.wanted = false;
        if (err instanceof TtgError || !s.lost) throw err;
        this.#log.warn(`connection lost during initialization; retrying (${describe(err)})`);
      }
    }
  }

  async readSettings(): Promise<SweepSettings | null> {
    this.#assertUsable();
    return this.#session.withLink((s) => this.#reader.settings(s));
  }

  // ---------------------------------------------------------------- tasks

  async take(max: number, waitMs: number): Promise<Delivery[]> {
    this.#assertUsable();
    if (!this.#joined || this.#settings === null) throw new Error('take() called before init()');
    // A worker about to wait follows the results, so it is woken the moment the sweep settles.
    // Until the sweep's creation is known finished, look now and then whether it was abandoned (init-lock.ts).
    const current = this.#session.current;
    if (current && this.#creation.incomplete && !this.#settledSeen) void this.#creation.takeOverIfAbandoned(current, this.#settings);
    if (waitMs > 0 && !this.#settledSeen) {
      const link = this.#session.current;
      if (link) {
        this.#reader.follow(link, this.#settings, () => {
          this.#settledSeen = true;
          this.#session.wake();
        }).catch((err: unknown) => this.#log.debug(`could not follow the results (${describe(err)}); idle workers leave after a poll`));
      }
    }
    const handles = await this.#consumer.take(max, Date.now() + Math.max(0, waitMs), () => this.#closed || this.#settledSeen);
    return handles.map((h) => this.#toDelivery(h));
  }

  #toDelivery(h: TaskHandle): Delivery {
    // The shared parse and chunk check (messages.ts): a task that is not exactly a chunk of this sweep is malformed.
    const parsed = parseTaskJson(h.msg.content.toString('utf8'), this.#settings!);
    const attempt = attemptsOf(h.msg);
    const recovered = h.msg.fields.redelivered;
    if (parsed.ok) return { task: parsed.task, chunkId: parsed.task.chunkId, attempt, recovered, handle: h };
    return { task: null, malformed: parsed.reason, chunkId: clip(parsed.chunkId), attempt, recovered, handle: h };
  }

  async complete(delivery: Delivery, result: ChunkResult): Promise<boolean> {
    this.#throwIfFailed();
    const own = this.#consumer.owned(delivery.handle);
    if (!own) return false;
    const { h, link } = own;
    const body = Buffer.from(JSON.stringify(resultFields(result)));
    try {
      // The chunk id rides in correlation-id, not in a header: amqplib makes each message's header table the
      // prototype of an object of its own, which cost ~8 us a publish (3x the rest of encoding it).
      await this.#session.publish(link, this.#names.exchange, this.#names.results, body, {
        persistent: true, contentType: JSON_TYPE, correlationId: clip(result.chunkId),
      });
    } catch (err) {
      // Not confirmed: never ack. Hand the chunk back if the channel is still there, else the broker redelivers it.
      if (this.#consumer.settle(h, link, 'requeue')) {
        this.#log.warn(`the result of chunk ${delivery.chunkId} was not stored (${describe(err)}); chunk handed back`);
      }
      return false;
    }
    if (!this.#consumer.settle(h, link, 'ack')) return false;
    this.#reader.noteCommitted(link, result.chunkId);
    return true;
  }

  async fail(delivery: Delivery, reason: string): Promise<FailOutcome> {
    this.#throwIfFailed();
    const own = this.#consumer.owned(delivery.handle);
    if (!own) return 'not-owner';
    const { h, link } = own;
    const n = this.#names;
    const attempts = attemptsOf(h.msg) + 1;
    // A malformed task can never succeed: dead at once, as on every backend.
    const dead = delivery.task === null || attempts >= this.#opts.maxRetries;
    const headers = {
      [RABBIT_HEADERS.attempts]: attempts,
      [RABBIT_HEADERS.reason]: clip(reason),
      [RABBIT_HEADERS.worker]: this.#opts.workerId,
      [RABBIT_HEADERS.chunkId]: clip(delivery.chunkId),
      [RABBIT_HEADERS.failedAt]: new Date().toISOString(),
    };
    // A fresh header table (not the incoming one): a copied x-death would let the broker
    // take a second pass through the retry queue for a dead-letter cycle and drop it.
    const options: Options.Publish = dead
      ? { persistent: true, headers }
      : { persistent: true, headers, expiration: String(this.#opts.retryDelayMs) };
    const messageId = this.#session.newMessageId(link);
    const unexpect = dead ? this.#reader.expectOwnDeadLetter(link, messageId) : () => {};
    try {
      await this.#session.publish(link, n.exchange, dead ? n.dlq : n.retry, h.msg.content, { ...options, messageId });
    } catch (err) {
      unexpect();
      if (this.#consumer.settle(h, link, 'requeue')) {
        this.#log.warn(`could not move chunk ${delivery.chunkId} to ${dead ? n.dlq : n.retry} (${describe(err)}); chunk handed back`);
      }
      return 'not-owner';
    }
    if (!this.#consumer.settle(h, link, 'ack')) return 'not-owner';
    return dead ? 'dead-lettered' : 'retried';
  }

  /** Gives the deliveries back, and the ones buffered here too (see consumer.ts). */
  async release(deliveries: Delivery[]): Promise<void> {
    await this.#consumer.release(deliveries.map((d) => d.handle));
  }

  /** RabbitMQ keeps a delivery with its consumer until the connection drops: nothing to refresh. */
  async heartbeat(_deliveries: Delivery[]): Promise<void> {}

  /** The broker redelivers a dead consumer's chunks by itself. */
  async claimStale(_max: number, _thresholdMs: number): Promise<Delivery[]> {
    return [];
  }

  // ---------------------------------------------------------------- reading

  async readResults(until?: (result: ChunkResult) => boolean): Promise<ChunkResult[]> {
    this.#assertUsable();
    return this.#session.withLink((s) => this.#reader.results(s, this.#log, until));
  }

  async readDeadLetters(): Promise<DeadLetter[]> {
    this.#assertUsable();
    return this.#session.withLink(async (s) => this.#reader.deadLetters(s, this.#settings ?? (await this.#reader.settings(s))));
  }

  async isSettled(): Promise<boolean> {
    this.#assertUsable();
    return this.#session.withLink(async (s) => {
      const settings = this.#settings ?? (await this.#reader.settings(s));
      if (!settings || this.#creation.publishing) return false;
      const total = chunkCount(settings);
      // Nothing ready or retrying (malformed entries too wait for their dead letter); then every chunk has a
      // result as followed (take()), or the streams are read on (a dead-lettered chunk may be re-driven since).
      const idle = this.#consumer.buffered === 0
        && (await Promise.all([this.#names.tasks, this.#names.retry].map((q) => this.#reader.queueInfo(s, q)))).every((q) => q.messageCount === 0);
      const settled = idle && ((this.#settledSeen && this.#reader.allDone(s, total)) || (await this.#reader.poll(s, settings, true)).settled.size >= total);
      if (settled) await this.#consumer.handBack(); // deliveries on their way (malformed too) come back first
      const still = settled && (await this.#reader.queueInfo(s, this.#names.tasks)).messageCount === 0;
      if (!still) this.#settledSeen = false; // re-driven, or handed back: take() waits for work again
      return still;
    });
  }

  /**
   * Work may still come while the sweep is unsettled and a chunk is ready,
   * waiting out its retry delay, or may be in another consumer's hands.
   * The retry queue is looked at before the task queue: a chunk moving from
   * one to the other in between is then seen in the second.
   */
  async hasOutstanding(): Promise<boolean> {
    if (await this.isSettled()) return false;
    if (this.#consumer.buffered > 0 || this.#creation.incomplete) return true;
    return this.#session.withLink(async (s) => {
      const retry = await this.#reader.queueInfo(s, this.#names.retry);
      if (retry.messageCount > 0) return true;
      const tasks = await this.#reader.queueInfo(s, this.#names.tasks);
      if (tasks.messageCount > 0) return true;
      return tasks.consumerCount - (s.consumerTag ? 1 : 0) - s.retiredTags.length > 0;
    });
  }

  async stats(): Promise<QueueStats> {
    this.#assertUsable();
    return this.#session.withLink(async (s) => sweepStats(this.#reader, this.#names, s, this.#settings ?? (await this.#reader.settings(s))));
  }

  // ---------------------------------------------------------------- re-drives, who joined (redrive.ts)

  redriveDead(chunkIds: readonly string[] | null): Promise<RedriveOutcome> {
    this.#assertUsable();
    return redriveDead(this.#session, this.#reader, this.#names, this.#log, chunkIds);
  }

  readRedrives(): Promise<Record<string, number>> {
    this.#assertUsable();
    return redriveCounts(this.#session, this.#reader);
  }

  readConsumers(): Promise<ConsumerRecord[]> {
    this.#assertUsable();
    return readJoined(this.#session, this.#reader, this.#names);
  }

  // ---------------------------------------------------------------- reset / close

  async reset(): Promise<void> {
    this.#assertUsable();
    this.#joined = false; // consuming stops first, so the deletions below do not look like a lost connection
    this.#declareTopology = false;
    await this.#session.withLink(async (s) => {
      s.declared = false;
      await this.#consumer.stop(s);
      await this.#creation.deleteSweep(s, this.#consumerName);
    });
    this.#settings = null;
    this.#settledSeen = false;
    this.#reader.forget();
    this.#creation.forget();
    this.#log.debug(`deleted the sweep's queues and exchanges (QUEUE_PREFIX=${this.#opts.queuePrefix})`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#joined = false;
    // Closing the consumer's channel first hands its unacknowledged chunks back at once.
    await this.#session.close((link) => this.#consumer.stop(link));
    this.#consumer.wanted = false;
  }

  // ---------------------------------------------------------------- internals

  #assertUsable(): void {
    if (this.#closed) throw new Error('the RabbitMQ backend is closed');
  }

  #throwIfFailed(): void {
    if (this.#session.failure) throw this.#session.failure;
  }

  async #declare(link: Link): Promise<void> {
    const where = { address: this.#opts.connection.address, prefix: this.#opts.queuePrefix };
    await declareTopology((fn) => this.#session.probe(link, fn), this.#names, where);
    link.declared = true;
  }
}

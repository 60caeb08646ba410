/**
 * The RabbitMQ backend (AMQP 0-9-1 through amqplib).
 *
 * Topology, every name under QUEUE_PREFIX (`p`), declared idempotently by
 * each worker on each (re)connection:
 *
 *   p.exchange     direct exchange, durable: routes by queue name to
 *   p.tasks        classic durable queue: the chunks; consumed with
 *                  basic.consume, prefetch PREFETCH, manual acks
 *   p.tasks.retry  classic durable delay queue: a failed chunk waits there
 *                  for RABBITMQ_RETRY_DELAY_MS (per-message expiration), then
 *                  the broker dead-letters it to p.exchange → p.tasks
 *   p.tasks.dlq    stream: chunks that failed RABBITMQ_MAX_RETRIES times, the
 *                  original body with x-ttg-reason / x-ttg-attempts / x-ttg-worker headers
 *   p.results      stream: one entry per completed delivery (JSON, the Redis field names)
 *   p.meta         stream: the sweep's settings, written once by the creator
 *   p.meta.ready   exchange used as a flag: it exists once every task is
 *                  enqueued and p.meta holds the settings
 *   p.init-lock    exclusive queue: the mutex of sweep creation
 *   p.consumers.<name>  exclusive queue per live worker: unique consumer names
 *
 * Why streams for results and dead letters: a stream consumer reads from an
 * offset and removes nothing, so `ttg aggregate` can run again and again,
 * alongside workers and other readers, and sees the entries in the order they
 * were written. A classic queue read by get + nack(requeue) would hide the
 * entries another reader holds at that moment, and requeue can reorder them.
 *
 * Where a stream ends: AMQP 0-9-1 does not tell (RabbitMQ 3.x reports 0
 * messages for a stream in queue.declare-ok). Readers that must see
 * everything (readResults, readDeadLetters) attach a consumer, then publish a
 * marker message with a random id (confirmed) and read until that marker:
 * every entry confirmed before the read began lies before it. Markers are
 * skipped by every reader and counted nowhere. Polling readers (isSettled,
 * stats, every few seconds) write nothing: they read on from a cached offset
 * until the stream is quiet for a moment, so they may lag but never over-count.
 *
 * (RabbitMQ 3.x `rabbitmqctl list_queues name messages` shows 0 for streams
 * too; `ttg monitor` and `ttg aggregate` give the counts.)
 *
 * Consuming starts with the first take(), with a prefetch of PREFETCH (more
 * only if a caller asks take() for more at once; the worker loop never does).
 * release() cancels the consumer before handing chunks back, or the broker
 * would give them straight back to this worker.
 *
 * Why a per-message expiration rather than x-message-ttl on the retry queue:
 * RabbitMQ refuses to redeclare a queue with other arguments, so a worker
 * started with another RABBITMQ_RETRY_DELAY_MS would fail on declare.
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
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Message, Options } from 'amqplib';
import type {
  BackendOptions, ChunkResult, ConnectionState, DeadLetter, Delivery, InitOutcome, QueueBackend, QueueStats, SweepSettings,
} from './types.js';
import {
  chunkIdOf, mismatchMessage, parseResultFields, parseTaskJson, resultFields, settingsDifference, sweepTasks, taskFields,
  type ParsedTask,
} from './messages.js';
import { totalChunks as countChunks, type Config } from '../engine/config.js';
import { BrokerUnavailableError, SettingsMismatchError, TtgError } from '../engine/errors.js';
import { redact, type Logger } from '../engine/log.js';
import { KERNEL_NAMES, type KernelName } from '../kernel/types.js';

/** Every queue and exchange name of a sweep, built in one place. */
export function rabbitNames(prefix: string) {
  return {
    exchange: `${prefix}.exchange`,
    tasks: `${prefix}.tasks`,
    retry: `${prefix}.tasks.retry`,
    dlq: `${prefix}.tasks.dlq`,
    results: `${prefix}.results`,
    meta: `${prefix}.meta`,
    ready: `${prefix}.meta.ready`,
    initLock: `${prefix}.init-lock`,
    consumer: (name: string) => `${prefix}.consumers.${name}`,
  };
}
type Names = ReturnType<typeof rabbitNames>;

/** Headers this backend sets (and reads back). */
export const RABBIT_HEADERS = {
  /** Failed attempts so far (on retry copies and dead letters). */
  attempts: 'x-ttg-attempts',
  /** Why the last attempt failed. */
  reason: 'x-ttg-reason',
  /** WORKER_ID of the worker that failed it last. */
  worker: 'x-ttg-worker',
  chunkId: 'x-ttg-chunk-id',
  failedAt: 'x-ttg-failed-at',
  /** End-of-read marker in a stream (see the file comment). */
  marker: 'x-ttg-marker',
} as const;

const STREAM: Options.AssertQueue = { durable: true, arguments: { 'x-queue-type': 'stream' } };
const JSON_TYPE = 'application/json';
const MARKER_BODY = Buffer.from('{"ttg_marker":"end-of-read marker written by a reader; neither a task nor a result"}');
/** Tasks published per batch of confirms when a sweep is created. */
const PUBLISH_BATCH = 1000;
/** Stream consumers need a prefetch (credit); acks give it back. */
const STREAM_PREFETCH = 1000;
/** A polling read stops once its stream has been quiet this long. */
const POLL_QUIET_MS = 200;
/** A read that must reach its end gives up after this long without any message. */
const READ_STALL_MS = 30_000;
/** Pause between attempts at the init lock while another worker creates the sweep. */
const LOCK_RETRY_MS = 150;
/** AMQP heartbeat (seconds) unless AMQP_URL sets one: a cut network is noticed within ~2 of these. */
const HEARTBEAT_SECONDS = '15';
/** Reasons and ids travel in headers, which must stay small (amqplib refuses tables over 64 KiB). */
const MAX_HEADER_TEXT = 1000;

/** The connection (or a channel the session depends on) went away during an operation. */
class SessionLostError extends Error {}

interface Session {
  readonly gen: number;
  readonly conn: ChannelModel;
  /** Every publish goes through this confirm channel. */
  readonly pub: ConfirmChannel;
  /** The task consumer's channel (acks must go on the channel a delivery came on). */
  consumer: Channel | null;
  consumerTag: string | null;
  /** The per-consumer prefetch the current consumer was started with. */
  consumerPrefetch: number;
  /** Serializes consumer (re)starts. */
  consumerSetup: Promise<void>;
  /** The topology was declared on this connection. */
  declared: boolean;
  lost: boolean;
  /** messageIds the broker returned as unroutable; checked when their confirm arrives (a return precedes its ack). */
  readonly returned: Set<string>;
}

/** What Delivery.handle holds: the message and the session it came on. */
class TaskHandle {
  settled = false;
  constructor(
    readonly owner: RabbitBackend,
    readonly gen: number,
    readonly msg: ConsumeMessage,
  ) {}
}

/** Polling progress, read incrementally from the results and dead-letter streams. */
interface Progress {
  gen: number;
  resultsNext: number;
  deadNext: number;
  /** Result entries read, duplicates included. */
  results: number;
  /** Dead-letter entries read. */
  deadEntries: number;
  /** Chunk ids with a result. */
  done: Set<string>;
  /** Chunks of this sweep with a result or a dead letter of the genuine task. */
  settled: Set<string>;
}

type StreamEnd = 'marker' | 'first-entry' | { quietMs: number };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function errorCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}

function describe(err: unknown): string {
  return redact(err instanceof Error ? err.message : String(err));
}

function clip(text: string): string {
  return text.length > MAX_HEADER_TEXT ? `${text.slice(0, MAX_HEADER_TEXT)}…` : text;
}

function headerText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number') return String(value);
  return undefined;
}

function headerCount(value: unknown): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function headersOf(msg: ConsumeMessage): Record<string, unknown> {
  return (msg.properties.headers ?? {}) as Record<string, unknown>;
}

/** Failed attempts recorded on a message (0 for a first delivery, or for a header nobody should trust). */
function attemptsOf(msg: ConsumeMessage): number {
  return Math.min(headerCount(headersOf(msg)[RABBIT_HEADERS.attempts]) ?? 0, 1_000_000);
}

function streamOffset(msg: ConsumeMessage): number | null {
  const v = headersOf(msg)['x-stream-offset'];
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : null;
}

function jsonObject(content: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(content.toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The URL amqplib gets: AMQP_URL or the RABBITMQ_* parts, with a heartbeat unless it names one. */
function connectionUrl(config: Config): string {
  try {
    const url = new URL(config.rabbitmq.url);
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', HEARTBEAT_SECONDS);
    return url.toString();
  } catch {
    return config.rabbitmq.url;
  }
}

export class RabbitBackend implements QueueBackend {
  readonly kind = 'rabbitmq' as const;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #workerId: string;
  readonly #names: Names;
  readonly #url: string;
  #consumerName: string;

  #session: Session | null = null;
  #connecting: Promise<Session> | null = null;
  #generation = 0;
  #reconnects = 0;
  /** Sticky: once the broker stayed away past the bound (or refused us), every call throws this. */
  #fatal: Error | null = null;
  #closed = false;
  /** Set by init(): (re)connections declare the topology. */
  #declareTopology = false;
  /** Set once init() has joined the sweep: reconnections check the sweep is still there, unchanged. */
  #joined = false;
  /** Set by the first take(): (re)connections start the task consumer. */
  #consumerWanted = false;
  /**
   * The consumer's prefetch: PREFETCH, or more for a caller that asks take()
   * for more at once (the worker loop never does: it asks for PREFETCH minus
   * what it holds).
   */
  #prefetch: number;
  #settings: SweepSettings | null = null;

  #buffer: TaskHandle[] = [];
  #waiters = new Set<() => void>();
  #progress: Progress = freshProgress(0);
  #progressChain: Promise<unknown> = Promise.resolve();

  constructor(opts: BackendOptions) {
    this.#config = opts.config;
    this.#log = opts.log;
    this.#workerId = opts.workerId;
    this.#names = rabbitNames(opts.config.queuePrefix);
    this.#url = connectionUrl(opts.config);
    this.#consumerName = `worker-${opts.workerId}`;
    this.#prefetch = opts.config.prefetch;
  }

  get connectionState(): ConnectionState {
    if (this.#closed) return 'closed';
    if (!this.#joined) return 'connecting';
    return this.#session !== null && !this.#session.lost ? 'ready' : 'reconnecting';
  }

  get reconnects(): number {
    return this.#reconnects;
  }

  get consumerName(): string {
    return this.#consumerName;
  }

  // ---------------------------------------------------------------- sweep

  async init(settings: SweepSettings): Promise<InitOutcome> {
    this.#assertUsable();
    this.#declareTopology = true;
    const totalChunks = countChunks(settings.totalParams, settings.chunkSize);
    let waitLogged = false;
    for (;;) {
      const s = await this.#ensureSession();
      try {
        // A connection opened before init() (readSettings, stats) has not declared anything yet.
        if (!s.declared) await this.#declare(s);
        const created = await this.#joinOrCreate(s, settings);
        if (created === null) {
          if (!waitLogged) this.#log.info('another worker is creating the sweep\'s tasks; waiting for it');
          waitLogged = true;
          await sleep(LOCK_RETRY_MS * (0.5 + Math.random()));
          continue;
        }
        this.#settings = settings;
        await this.#claimConsumerName(s);
        // Consuming starts with the first take(): a worker that joins does not hold chunks it never asks for.
        this.#joined = true;
        return { created, totalChunks };
      } catch (err) {
        // A lost connection released the lock (an exclusive queue) with it: start over on the next one.
        if (err instanceof TtgError || !s.lost) throw err;
        this.#log.warn(`connection lost during initialization; retrying (${describe(err)})`);
      }
    }
  }

  /** true: created here; false: joined an existing sweep; null: another worker holds the init lock. */
  async #joinOrCreate(s: Session, settings: SweepSettings): Promise<boolean | null> {
    const existing = await this.#readSettingsOn(s);
    if (existing) return this.#join(existing, settings);
    if (!(await this.#tryExclusiveQueue(s, this.#names.initLock))) return null;
    try {
      // Checked again under the lock: the previous holder may have finished in between.
      const again = await this.#readSettingsOn(s);
      if (again) return this.#join(again, settings);
      await this.#createSweep(s, settings);
      return true;
    } finally {
      await this.#probe(s, (ch) => ch.deleteQueue(this.#names.initLock)).catch(() => {});
    }
  }

  #join(theirs: SweepSettings, ours: SweepSettings): false {
    const diff = settingsDifference(theirs, ours);
    if (diff !== null) throw new SettingsMismatchError(mismatchMessage(diff, this.#config.queuePrefix));
    return false;
  }

  /**
   * Called under the init lock with no ready flag: no worker has taken a task
   * yet (workers only consume once the flag exists), so whatever a creator
   * that died half-way left behind can be cleared and written again.
   */
  async #createSweep(s: Session, settings: SweepSettings): Promise<void> {
    const n = this.#names;
    await this.#probe(s, async (ch) => {
      await ch.deleteQueue(n.meta);
      await ch.assertQueue(n.meta, STREAM);
      await ch.purgeQueue(n.tasks);
      await ch.purgeQueue(n.retry);
    });
    const total = countChunks(settings.totalParams, settings.chunkSize);
    let batch: Array<Promise<void>> = [];
    for (const task of sweepTasks(settings)) {
      const body = Buffer.from(JSON.stringify(taskFields(task)));
      batch.push(this.#publish(s, n.exchange, n.tasks, body, { persistent: true, contentType: JSON_TYPE }));
      if (batch.length >= PUBLISH_BATCH) {
        await Promise.all(batch);
        batch = [];
      }
    }
    await Promise.all(batch);
    const meta = {
      total_params: settings.totalParams, chunk_size: settings.chunkSize, kernel: settings.kernel, total_chunks: total,
      created_by: this.#consumerName, created_at: new Date().toISOString(),
    };
    await this.#publish(s, '', n.meta, Buffer.from(JSON.stringify(meta)), { persistent: true, contentType: JSON_TYPE });
    await this.#probe(s, (ch) => ch.assertExchange(n.ready, 'fanout', { durable: true }));
    this.#log.info(`created the sweep: ${total} tasks in ${n.tasks}`);
  }

  async readSettings(): Promise<SweepSettings | null> {
    this.#assertUsable();
    return this.#withSession((s) => this.#readSettingsOn(s));
  }

  async #readSettingsOn(s: Session): Promise<SweepSettings | null> {
    const n = this.#names;
    const flagged = await this.#probe(s, (ch) => ch.checkExchange(n.ready)).then(
      () => true,
      (err) => {
        if (errorCode(err) === 404) return false;
        throw err;
      },
    );
    if (!flagged) return null;
    let body: Buffer | null = null;
    const found = await this.#readStream(s, n.meta, 0, 'first-entry', (msg) => {
      body = msg.content;
      return true;
    });
    const fields = body ? jsonObject(body) : null;
    const settings = fields ? settingsFrom(fields) : null;
    if (found === null || settings === null) {
      throw new TtgError(
        `the sweep settings in ${n.meta} are missing or unreadable (queues edited by hand?); ` +
          `clear the sweep with 'ttg reset' (QUEUE_PREFIX=${this.#config.queuePrefix})`,
      );
    }
    return settings;
  }

  // ---------------------------------------------------------------- tasks

  async take(max: number, waitMs: number): Promise<Delivery[]> {
    this.#assertUsable();
    if (!this.#joined || this.#settings === null) throw new Error('take() called before init()');
    const deadline = Date.now() + Math.max(0, waitMs);
    this.#consumerWanted = true;
    this.#prefetch = Math.min(65535, Math.max(this.#prefetch, Math.floor(max)));
    const s = this.#session;
    if (s && !s.lost) {
      await this.#ensureConsumer(s).catch((err: unknown) => {
        if (!s.lost) throw err;
      });
    } else {
      // Reconnecting: the new connection starts the consumer and wakes us; a failure past the bound sets #fatal.
      this.#ensureSession().catch(() => {});
    }
    while (this.#buffer.length === 0) {
      if (this.#fatal) throw this.#fatal;
      if (this.#closed) return [];
      const left = deadline - Date.now();
      if (left <= 0) return [];
      await this.#waitForSignal(left);
    }
    return this.#buffer.splice(0, Math.max(0, Math.floor(max))).map((h) => this.#toDelivery(h));
  }

  #toDelivery(h: TaskHandle): Delivery {
    const parsed = this.#parseTask(h.msg.content);
    const attempt = attemptsOf(h.msg);
    const recovered = h.msg.fields.redelivered;
    if (parsed.ok) return { task: parsed.task, chunkId: parsed.task.chunkId, attempt, recovered, handle: h };
    return { task: null, malformed: parsed.reason, chunkId: clip(parsed.chunkId), attempt, recovered, handle: h };
  }

  /**
   * parseTaskJson, then one more check: the task must be exactly the sweep's
   * chunk it names, so a hand-made message can never add a second, different
   * result under a real chunk id (the aggregate stays exact).
   */
  #parseTask(content: Buffer): ParsedTask {
    const settings = this.#settings!;
    const parsed = parseTaskJson(content.toString('utf8'), settings);
    if (!parsed.ok) return parsed;
    const { chunkId, startParam, endParam } = parsed.task;
    const total = countChunks(settings.totalParams, settings.chunkSize);
    const index = sweepIndex(chunkId, total);
    if (index === null) {
      return {
        ok: false, chunkId,
        reason: `chunk_id ${JSON.stringify(clip(chunkId).slice(0, 40))} is not a chunk of this sweep ` +
          `(${chunkIdOf(0, total)} to ${chunkIdOf(total - 1, total)})`,
      };
    }
    const start = index * settings.chunkSize;
    const end = Math.min(settings.totalParams, start + settings.chunkSize);
    if (startParam !== start || endParam !== end) {
      return {
        ok: false, chunkId,
        reason: `chunk ${chunkId} of this sweep is [${start}, ${end}) but the message says [${startParam}, ${endParam})`,
      };
    }
    return parsed;
  }

  async complete(delivery: Delivery, result: ChunkResult): Promise<boolean> {
    if (this.#fatal) throw this.#fatal;
    const own = this.#owned(delivery);
    if (!own) return false;
    const { h, s } = own;
    const body = Buffer.from(JSON.stringify(resultFields(result)));
    try {
      await this.#publish(s, this.#names.exchange, this.#names.results, body, {
        persistent: true, contentType: JSON_TYPE, headers: { [RABBIT_HEADERS.chunkId]: clip(result.chunkId) },
      });
    } catch (err) {
      // Not confirmed: never ack. Hand the chunk back if the channel is still there, else the broker redelivers it.
      if (this.#settle(h, s, 'requeue')) {
        this.#log.warn(`the result of chunk ${delivery.chunkId} was not stored (${describe(err)}); chunk handed back`);
      }
      return false;
    }
    return this.#settle(h, s, 'ack');
  }

  async fail(delivery: Delivery, reason: string): Promise<'retried' | 'dead-lettered' | 'not-owner'> {
    if (this.#fatal) throw this.#fatal;
    const own = this.#owned(delivery);
    if (!own) return 'not-owner';
    const { h, s } = own;
    const n = this.#names;
    const attempts = attemptsOf(h.msg) + 1;
    const dead = attempts >= this.#config.maxRetries;
    const headers = {
      [RABBIT_HEADERS.attempts]: attempts,
      [RABBIT_HEADERS.reason]: clip(reason),
      [RABBIT_HEADERS.worker]: this.#workerId,
      [RABBIT_HEADERS.chunkId]: clip(delivery.chunkId),
      [RABBIT_HEADERS.failedAt]: new Date().toISOString(),
    };
    // A fresh header table (not the incoming one): a copied x-death would let the broker
    // take a second pass through the retry queue for a dead-letter cycle and drop it.
    const options: Options.Publish = dead
      ? { persistent: true, headers }
      : { persistent: true, headers, expiration: String(this.#config.retryDelayMs) };
    try {
      await this.#publish(s, n.exchange, dead ? n.dlq : n.retry, h.msg.content, options);
    } catch (err) {
      if (this.#settle(h, s, 'requeue')) {
        this.#log.warn(`could not move chunk ${delivery.chunkId} to ${dead ? n.dlq : n.retry} (${describe(err)}); chunk handed back`);
      }
      return 'not-owner';
    }
    if (!this.#settle(h, s, 'ack')) return 'not-owner';
    return dead ? 'dead-lettered' : 'retried';
  }

  /**
   * Gives the deliveries back, and the ones buffered here too. The consumer is
   * cancelled first, or the broker would hand them straight back to us; the
   * next take() starts it again.
   */
  async release(deliveries: Delivery[]): Promise<void> {
    const s = this.#session;
    if (s && !s.lost && s.consumer && s.consumerTag) {
      const channel = s.consumer;
      const stop = async () => {
        const tag = s.consumerTag;
        s.consumerTag = null;
        s.consumerPrefetch = 0;
        if (tag) await channel.cancel(tag).catch(() => {});
      };
      const step = s.consumerSetup.then(stop, stop);
      s.consumerSetup = step.catch(() => {});
      await step;
    }
    for (const h of this.#buffer.splice(0)) {
      if (s) this.#settle(h, s, 'requeue');
    }
    for (const d of deliveries) {
      const own = this.#owned(d);
      if (own) this.#settle(own.h, own.s, 'requeue');
    }
  }

  /** RabbitMQ keeps a delivery with its consumer until the connection drops: nothing to refresh. */
  async heartbeat(_deliveries: Delivery[]): Promise<void> {}

  /** The broker redelivers a dead consumer's chunks by itself. */
  async claimStale(_max: number, _thresholdMs: number): Promise<Delivery[]> {
    return [];
  }

  #owned(delivery: Delivery): { h: TaskHandle; s: Session } | null {
    const h = delivery.handle;
    if (!(h instanceof TaskHandle) || h.owner !== this || h.settled) return null;
    const s = this.#session;
    if (this.#closed || !s || s.lost || s.gen !== h.gen || !s.consumer) return null;
    return { h, s };
  }

  #settle(h: TaskHandle, s: Session, how: 'ack' | 'requeue'): boolean {
    if (h.settled || s.lost || this.#session !== s || !s.consumer || s.gen !== h.gen) return false;
    try {
      if (how === 'ack') s.consumer.ack(h.msg);
      else s.consumer.nack(h.msg, false, true);
      h.settled = true;
      return true;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------- reading

  async readResults(): Promise<ChunkResult[]> {
    this.#assertUsable();
    return this.#withSession(async (s) => {
      const out: ChunkResult[] = [];
      await this.#readStream(s, this.#names.results, 0, 'marker', (msg) => {
        const fields = jsonObject(msg.content);
        const result = fields ? parseResultFields(fields) : null;
        if (result) out.push(result);
        else this.#log.warn(`ignoring an entry of ${this.#names.results} that is not a chunk result`);
      });
      return out;
    });
  }

  async readDeadLetters(): Promise<DeadLetter[]> {
    this.#assertUsable();
    return this.#withSession(async (s) => {
      const settings = this.#settings ?? (await this.#readSettingsOn(s));
      const out: DeadLetter[] = [];
      await this.#readStream(s, this.#names.dlq, 0, 'marker', (msg) => {
        out.push(deadLetterOf(msg, settings));
      });
      return out;
    });
  }

  async isSettled(): Promise<boolean> {
    this.#assertUsable();
    return this.#withSession(async (s) => {
      const settings = this.#settings ?? (await this.#readSettingsOn(s));
      if (!settings) return false;
      // Fast answer first: a task ready or waiting out its retry delay means not settled, without
      // reading the results stream to its quiet end (which takes a fraction of a second).
      if (this.#buffer.length > 0) return false;
      if ((await this.#queueInfo(s, this.#names.tasks)).messageCount > 0) return false;
      if ((await this.#queueInfo(s, this.#names.retry)).messageCount > 0) return false;
      const p = await this.#poll(s, settings, true);
      return p.settled.size >= countChunks(settings.totalParams, settings.chunkSize);
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
    if (this.#buffer.length > 0) return true;
    return this.#withSession(async (s) => {
      const retry = await this.#queueInfo(s, this.#names.retry);
      if (retry.messageCount > 0) return true;
      const tasks = await this.#queueInfo(s, this.#names.tasks);
      if (tasks.messageCount > 0) return true;
      const ours = s.consumerTag ? 1 : 0;
      return tasks.consumerCount - ours > 0;
    });
  }

  async stats(): Promise<QueueStats> {
    this.#assertUsable();
    return this.#withSession(async (s) => {
      const n = this.#names;
      const settings = this.#settings ?? (await this.#readSettingsOn(s));
      const retrying = (await this.#queueInfo(s, n.retry)).messageCount;
      const ready = (await this.#queueInfo(s, n.tasks)).messageCount;
      if (!settings) {
        this.#progress = freshProgress(s.gen);
        return {
          settings: null, totalChunks: 0, completedChunks: 0, deadLettered: 0, ready, inFlight: -1, retrying,
          results: 0, consumers: {},
        };
      }
      const total = countChunks(settings.totalParams, settings.chunkSize);
      const p = await this.#poll(s, settings, false);
      return {
        settings: { ...settings },
        totalChunks: total,
        completedChunks: p.done.size,
        // Entries in the dead-letter queue, as `results` counts result entries.
        deadLettered: p.deadEntries,
        ready,
        inFlight: Math.max(0, total - p.settled.size - ready - retrying),
        retrying,
        results: p.results,
        // AMQP tells how many consumers a queue has, not what each one holds.
        consumers: {},
      };
    });
  }

  /**
   * Reads on from where the last poll stopped (serialized: concurrent polls
   * would count twice). `untilSettled`: stop as soon as every chunk is
   * accounted for (isSettled); otherwise read until quiet (stats).
   */
  #poll(s: Session, settings: SweepSettings, untilSettled: boolean): Promise<Progress> {
    const total = countChunks(settings.totalParams, settings.chunkSize);
    const run = async (): Promise<Progress> => {
      // A new connection may follow a reset: read again from the start.
      if (this.#progress.gen !== s.gen) this.#progress = freshProgress(s.gen);
      const p = this.#progress;
      const settled = () => untilSettled && p.settled.size >= total;
      if (settled()) return p;
      const quiet = { quietMs: POLL_QUIET_MS };
      const [resultsNext, deadNext] = await Promise.all([
        this.#readStream(s, this.#names.results, p.resultsNext, quiet, (msg) => {
          const fields = jsonObject(msg.content);
          const result = fields ? parseResultFields(fields) : null;
          if (result) {
            p.results++;
            p.done.add(result.chunkId);
            if (sweepIndex(result.chunkId, total) !== null) p.settled.add(result.chunkId);
          }
          return settled();
        }),
        this.#readStream(s, this.#names.dlq, p.deadNext, quiet, (msg) => {
          const dead = deadLetterOf(msg, settings);
          p.deadEntries++;
          // Only a dead letter of the chunk's genuine task settles it; a hand-made message does not.
          if (dead.task && isGenuine(dead.task.chunkId, dead.task.startParam, dead.task.endParam, settings)) {
            p.settled.add(dead.task.chunkId);
          }
          return settled();
        }),
      ]);
      if (resultsNext !== null) p.resultsNext = resultsNext;
      if (deadNext !== null) p.deadNext = deadNext;
      return p;
    };
    const next = this.#progressChain.then(run, run);
    this.#progressChain = next.catch(() => {});
    return next;
  }

  /**
   * Reads stream `queue` from offset `from`, calling onEntry for each entry
   * that is not a marker (onEntry returns true to stop). `end` says when the
   * read is over: at our own marker, at the first entry, or after a quiet
   * spell. Returns the offset to read on from, or null when there is no such stream.
   */
  async #readStream(
    s: Session, queue: string, from: number, end: StreamEnd,
    onEntry: (msg: ConsumeMessage) => boolean | void,
  ): Promise<number | null> {
    const ch = await this.#openChannel(s);
    try {
      try {
        await ch.checkQueue(queue);
      } catch (err) {
        if (errorCode(err) === 404) return null;
        throw err;
      }
      await ch.prefetch(STREAM_PREFETCH);
      return await new Promise<number>((resolve, reject) => {
        const markerId = end === 'marker' ? randomUUID() : null;
        let next = from;
        let done = false;
        let timer: NodeJS.Timeout | undefined;
        const finish = (err?: unknown) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          ch.removeListener('close', onClose);
          if (err === undefined) resolve(next);
          else reject(err);
        };
        const arm = () => {
          clearTimeout(timer);
          timer = typeof end === 'object'
            ? setTimeout(() => finish(), end.quietMs)
            : setTimeout(() => finish(new TtgError(`reading ${queue} stalled: nothing came for ${READ_STALL_MS / 1000}s`)), READ_STALL_MS);
        };
        const onClose = () => finish(new SessionLostError(`the channel reading ${queue} closed`));
        ch.on('close', onClose);
        // Never throw from here: amqplib would take the whole connection down.
        const onMessage = (msg: ConsumeMessage | null) => {
          if (done) return;
          if (msg === null) {
            finish(new SessionLostError(`the broker cancelled the reader of ${queue} (deleted?)`));
            return;
          }
          try {
            ch.ack(msg);
            arm();
            const offset = streamOffset(msg);
            const marker = headersOf(msg)[RABBIT_HEADERS.marker];
            if (marker !== undefined) {
              if (markerId !== null && headerText(marker) === markerId) finish();
              return;
            }
            // A stream delivers whole chunks: entries before `from` may come first.
            if (offset === null || offset < next) return;
            next = offset + 1;
            if (onEntry(msg) === true) finish();
          } catch (err) {
            finish(err);
          }
        };
        arm();
        ch.consume(queue, onMessage, { noAck: false, arguments: { 'x-stream-offset': from } })
          .then(() => (markerId === null ? undefined : this.#publish(s, '', queue, MARKER_BODY, {
            headers: { [RABBIT_HEADERS.marker]: markerId },
          })))
          .catch((err: unknown) => finish(err));
      });
    } finally {
      ch.close().catch(() => {});
    }
  }

  async #queueInfo(s: Session, queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    return this.#probe(s, (ch) => ch.checkQueue(queue)).catch((err: unknown) => {
      if (errorCode(err) === 404) return { messageCount: 0, consumerCount: 0 };
      throw err;
    });
  }

  // ---------------------------------------------------------------- reset / close

  async reset(): Promise<void> {
    this.#assertUsable();
    // Stop consuming first, so the queue deletions below do not look like a lost connection.
    this.#joined = false;
    this.#consumerWanted = false;
    this.#declareTopology = false;
    await this.#withSession(async (s) => {
      const consumer = s.consumer;
      s.consumer = null;
      s.consumerTag = null;
      s.declared = false;
      this.#buffer = [];
      if (consumer) await consumer.close().catch(() => {});
      const n = this.#names;
      // The ready flag goes first: without it nobody trusts what is left of the sweep.
      await this.#probe(s, (ch) => ch.deleteExchange(n.ready)).catch(() => {});
      for (const queue of [n.tasks, n.retry, n.dlq, n.results, n.meta, n.initLock, n.consumer(this.#consumerName)]) {
        // An exclusive queue of another live connection cannot be deleted (405); it goes with that connection.
        await this.#probe(s, (ch) => ch.deleteQueue(queue)).catch(() => {});
      }
      await this.#probe(s, (ch) => ch.deleteExchange(n.exchange)).catch(() => {});
    });
    this.#settings = null;
    this.#progress = freshProgress(-1);
    this.#log.debug(`deleted the sweep's queues and exchanges (QUEUE_PREFIX=${this.#config.queuePrefix})`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#joined = false;
    this.#consumerWanted = false;
    this.#buffer = [];
    this.#wake();
    await this.#connecting?.catch(() => {});
    const s = this.#session;
    this.#session = null;
    if (!s || s.lost) return;
    s.lost = true;
    const consumer = s.consumer;
    s.consumer = null;
    // Closing the consumer's channel first hands its unacknowledged chunks back at once.
    if (consumer) await consumer.close().catch(() => {});
    await s.conn.close().catch(() => {});
  }

  // ---------------------------------------------------------------- connection

  #assertUsable(): void {
    if (this.#closed) throw new Error('the RabbitMQ backend is closed');
  }

  /** Runs fn on a live session; a connection lost meanwhile is reopened and fn run again. */
  async #withSession<T>(fn: (s: Session) => Promise<T>): Promise<T> {
    for (;;) {
      const s = await this.#ensureSession();
      try {
        return await fn(s);
      } catch (err) {
        if (!s.lost || this.#closed) throw err;
        this.#log.debug(`connection lost during a call; retrying on a new one (${describe(err)})`);
      }
    }
  }

  #ensureSession(): Promise<Session> {
    if (this.#fatal) return Promise.reject(this.#fatal);
    if (this.#closed) return Promise.reject(new Error('the RabbitMQ backend is closed'));
    const s = this.#session;
    if (s && !s.lost) return Promise.resolve(s);
    this.#connecting ??= this.#connectWithBackoff().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  async #connectWithBackoff(): Promise<Session> {
    const address = this.#config.rabbitmq.address;
    const limitMs = this.#config.connectTimeoutSeconds * 1000;
    const started = Date.now();
    const reconnecting = this.#generation > 0;
    let delay = 100;
    let attempts = 0;
    for (;;) {
      if (this.#closed) throw new Error('the RabbitMQ backend is closed');
      attempts++;
      const elapsed = Date.now() - started;
      try {
        const s = await this.#open(Math.max(1000, Math.min(10_000, limitMs - elapsed)));
        if (reconnecting || attempts > 1) this.#log.info(`connected to RabbitMQ at ${address}`, { attempts });
        return s;
      } catch (err) {
        if (err instanceof TtgError) {
          // Not a matter of waiting: wrong credentials, a sweep reset or changed under us.
          this.#fatal = err;
          this.#wake();
          throw err;
        }
        const waited = Date.now() - started;
        if (waited >= limitMs) {
          const what = reconnecting ? 'lost the connection to RabbitMQ at' : 'cannot reach RabbitMQ at';
          this.#fatal = new BrokerUnavailableError(
            `${what} ${address} and gave up after ${(waited / 1000).toFixed(1)}s and ${attempts} attempts ` +
              `(last error: ${describe(err)}); check RABBITMQ_HOST/RABBITMQ_PORT (or AMQP_URL) and that the broker runs, ` +
              `or allow longer with CONNECT_TIMEOUT_SECONDS`,
            { cause: err },
          );
          this.#wake();
          throw this.#fatal;
        }
        this.#log[attempts === 1 ? 'warn' : 'debug'](`RabbitMQ at ${address} not reachable (${describe(err)}); retrying`, { attempt: attempts });
        // Woken early by close().
        await this.#waitForSignal(Math.min(delay * (0.8 + 0.4 * Math.random()), limitMs - waited));
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /** One connection attempt: connection, confirm channel, topology, consumer. */
  async #open(timeoutMs: number): Promise<Session> {
    const address = this.#config.rabbitmq.address;
    let conn: ChannelModel;
    try {
      conn = await connect(this.#url, {
        timeout: timeoutMs,
        clientProperties: {
          connection_name: `ttg ${this.#config.queuePrefix} ${this.#consumerName} ${this.#config.hostName}:${process.pid}`,
        },
      });
    } catch (err) {
      const text = describe(err);
      if (/ACCESS[-_]REFUSED/.test(text)) {
        throw new BrokerUnavailableError(
          `RabbitMQ at ${address} refused the login; check RABBITMQ_USER/RABBITMQ_PASSWORD (or AMQP_URL) (${text})`, { cause: err });
      }
      if (/NOT[-_]ALLOWED/.test(text)) {
        throw new BrokerUnavailableError(
          `RabbitMQ at ${address} refused the virtual host; check RABBITMQ_VHOST (or AMQP_URL) (${text})`, { cause: err });
      }
      throw err;
    }
    // Unhandled 'error' events would crash the process: every emitter gets a handler.
    conn.on('error', (err: Error) => this.#log.debug(`RabbitMQ connection error: ${describe(err)}`));
    conn.on('blocked', (reason: string) => this.#log.warn(`RabbitMQ blocks publishing (${reason}); waiting`));
    conn.on('unblocked', () => this.#log.info('RabbitMQ accepts publishing again'));
    let s: Session | null = null;
    try {
      const pub = await conn.createConfirmChannel();
      const session: Session = {
        gen: ++this.#generation, conn, pub, consumer: null, consumerTag: null, consumerPrefetch: 0,
        consumerSetup: Promise.resolve(), declared: false, lost: false, returned: new Set(),
      };
      s = session;
      pub.on('error', (err: Error) => this.#log.debug(`RabbitMQ publish channel error: ${describe(err)}`));
      pub.on('return', (msg: Message) => {
        if (typeof msg.properties.messageId === 'string') session.returned.add(msg.properties.messageId);
      });
      pub.on('close', () => this.#onLost(session, 'the publish channel closed'));
      conn.on('close', (err?: Error) => this.#onLost(session, err ? describe(err) : 'the connection closed'));

      if (this.#joined && this.#settings) {
        // After a reconnection, make sure the sweep is still the one we joined before consuming again.
        const current = await this.#readSettingsOn(session);
        if (current === null) {
          throw new TtgError(`the sweep was deleted while this worker ran ('ttg reset'?); QUEUE_PREFIX=${this.#config.queuePrefix}`);
        }
        const diff = settingsDifference(current, this.#settings);
        if (diff !== null) throw new SettingsMismatchError(mismatchMessage(diff, this.#config.queuePrefix));
      }
      if (this.#declareTopology) await this.#declare(session);
      if (this.#joined) await this.#tryExclusiveQueue(session, this.#names.consumer(this.#consumerName));
      if (this.#closed) throw new Error('the RabbitMQ backend is closed');
      // Current before the consumer starts, so that its first deliveries are ours at once. Any session
      // after the first replaces a lost one: counted here, where /readyz starts to see it.
      if (session.gen > 1) this.#reconnects++;
      this.#session = session;
      if (this.#consumerWanted) await this.#ensureConsumer(session);
      this.#wake();
      return session;
    } catch (err) {
      if (s) {
        const gen = s.gen;
        s.lost = true;
        this.#buffer = this.#buffer.filter((h) => h.gen !== gen);
      }
      await conn.close().catch(() => {});
      throw err;
    }
  }

  #onLost(s: Session, why: string): void {
    if (s.lost) return;
    s.lost = true;
    this.#buffer = this.#buffer.filter((h) => h.gen !== s.gen);
    s.conn.close().catch(() => {});
    this.#wake();
    if (this.#closed || this.#session !== s) return;
    this.#log.warn(`lost the connection to RabbitMQ at ${this.#config.rabbitmq.address} (${why}); reconnecting`);
    // A consuming worker reconnects at once so chunks flow again; others on their next call.
    if (this.#joined) this.#ensureSession().catch(() => {});
  }

  async #declare(s: Session): Promise<void> {
    const n = this.#names;
    await this.#probe(s, async (ch) => {
      await ch.assertExchange(n.exchange, 'direct', { durable: true });
      await ch.assertQueue(n.tasks, { durable: true });
      await ch.assertQueue(n.retry, { durable: true, deadLetterExchange: n.exchange, deadLetterRoutingKey: n.tasks });
      await ch.assertQueue(n.dlq, STREAM);
      await ch.assertQueue(n.results, STREAM);
      await ch.assertQueue(n.meta, STREAM);
      for (const queue of [n.tasks, n.retry, n.dlq, n.results]) await ch.bindQueue(queue, n.exchange, queue);
    });
    s.declared = true;
  }

  /**
   * Starts the task consumer with the wanted prefetch, or restarts it with a
   * larger one: a new consumer on the same channel, then the old one
   * cancelled. Deliveries of the old one stay valid (same channel) and stop
   * counting against the new one's prefetch.
   */
  #ensureConsumer(s: Session): Promise<void> {
    const run = async (): Promise<void> => {
      if (s.lost) throw new SessionLostError('the connection is gone');
      const want = this.#prefetch;
      if (s.consumer && s.consumerTag && s.consumerPrefetch >= want) return;
      let ch = s.consumer;
      if (!ch) {
        const channel = await s.conn.createChannel();
        ch = channel;
        s.consumer = channel;
        channel.on('error', (err: Error) => this.#log.debug(`RabbitMQ task channel error: ${describe(err)}`));
        channel.on('close', () => {
          if (s.consumer === channel) this.#onLost(s, 'the task channel closed');
        });
      }
      const channel = ch;
      await channel.prefetch(want);
      const previous = s.consumerTag;
      const { consumerTag } = await channel.consume(this.#names.tasks, (msg) => {
        if (msg === null) {
          // The broker cancels a consumer whose queue was deleted (client-side cancels never come here).
          if (s.consumer === channel) this.#onLost(s, 'the broker cancelled the task consumer (queue deleted?)');
          return;
        }
        if (s.lost || s.consumer !== channel) return; // the broker redelivers it
        this.#buffer.push(new TaskHandle(this, s.gen, msg));
        this.#wake();
      }, { consumerTag: `${this.#consumerName}@${this.#config.hostName}:${process.pid}#${s.gen}.${want}` });
      s.consumerTag = consumerTag;
      s.consumerPrefetch = want;
      if (previous) await channel.cancel(previous);
    };
    const step = s.consumerSetup.then(run, run);
    s.consumerSetup = step.catch(() => {});
    return step;
  }

  /** Makes the consumer name unique among live workers: worker-<id>, then with host, pid, a random tag. */
  async #claimConsumerName(s: Session): Promise<void> {
    const base = `worker-${this.#workerId}`;
    const host = this.#config.hostName;
    const candidates = [base, `${base}-${host}`, `${base}-${host}-${process.pid}`, `${base}-${host}-${process.pid}-${randomUUID().slice(0, 8)}`];
    for (const name of candidates) {
      if (await this.#tryExclusiveQueue(s, this.#names.consumer(name))) {
        this.#consumerName = name;
        return;
      }
    }
  }

  /** Declares an exclusive queue; false when another connection holds it (405 RESOURCE_LOCKED). */
  async #tryExclusiveQueue(s: Session, queue: string): Promise<boolean> {
    try {
      await this.#probe(s, (ch) => ch.assertQueue(queue, { exclusive: true, durable: false }));
      return true;
    } catch (err) {
      if (errorCode(err) === 405) return false;
      throw err;
    }
  }

  async #openChannel(s: Session): Promise<Channel> {
    const ch = await s.conn.createChannel();
    ch.on('error', (err: Error) => this.#log.debug(`RabbitMQ channel error: ${describe(err)}`));
    return ch;
  }

  /** Runs fn on a throwaway channel: a failed probe (404, 405) closes only that channel. */
  async #probe<T>(s: Session, fn: (ch: Channel) => Promise<T>): Promise<T> {
    const ch = await this.#openChannel(s);
    try {
      return await fn(ch);
    } finally {
      ch.close().catch(() => {});
    }
  }

  /** Publishes on the confirm channel; resolves once the broker has the message (routed and confirmed). */
  #publish(s: Session, exchange: string, routingKey: string, body: Buffer, options: Options.Publish): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (s.lost) {
        reject(new SessionLostError('the connection is gone'));
        return;
      }
      const messageId = randomUUID();
      try {
        s.pub.publish(exchange, routingKey, body, { ...options, mandatory: true, messageId }, (err: unknown) => {
          if (s.returned.delete(messageId)) reject(new Error(`no queue took the message for ${routingKey} (deleted?)`));
          else if (err) reject(err instanceof Error ? err : new Error(String(err)));
          else resolve();
        });
      } catch (err) {
        reject(err);
      }
    });
  }

  #waitForSignal(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
    });
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}

function freshProgress(gen: number): Progress {
  return { gen, resultsNext: 0, deadNext: 0, results: 0, deadEntries: 0, done: new Set(), settled: new Set() };
}

/** The index of a chunk id of a sweep of `total` chunks, or null when it is not one (canonical form only). */
function sweepIndex(chunkId: string, total: number): number | null {
  if (!/^\d{1,16}$/.test(chunkId)) return null;
  const index = Number(chunkId);
  return index < total && chunkIdOf(index, total) === chunkId ? index : null;
}

function isGenuine(chunkId: string, startParam: number, endParam: number, settings: SweepSettings): boolean {
  const index = sweepIndex(chunkId, countChunks(settings.totalParams, settings.chunkSize));
  if (index === null) return false;
  const start = index * settings.chunkSize;
  return startParam === start && endParam === Math.min(settings.totalParams, start + settings.chunkSize);
}

function deadLetterOf(msg: ConsumeMessage, settings: SweepSettings | null): DeadLetter {
  const headers = headersOf(msg);
  const parsed = parseTaskJson(msg.content.toString('utf8'), settings);
  return {
    chunkId: headerText(headers[RABBIT_HEADERS.chunkId]) ?? (parsed.ok ? parsed.task.chunkId : clip(parsed.chunkId)),
    reason: headerText(headers[RABBIT_HEADERS.reason]) ?? (parsed.ok ? 'unknown' : parsed.reason),
    attempts: headerCount(headers[RABBIT_HEADERS.attempts]) ?? 0,
    workerId: headerText(headers[RABBIT_HEADERS.worker]) ?? '?',
    task: parsed.ok ? parsed.task : null,
  };
}

function settingsFrom(fields: Record<string, unknown>): SweepSettings | null {
  const totalParams = Number(fields['total_params']);
  const chunkSize = Number(fields['chunk_size']);
  const kernel = fields['kernel'];
  if (!Number.isSafeInteger(totalParams) || totalParams < 1 || !Number.isSafeInteger(chunkSize) || chunkSize < 1) return null;
  if (typeof kernel !== 'string' || !(KERNEL_NAMES as readonly string[]).includes(kernel)) return null;
  return { totalParams, chunkSize, kernel: kernel as KernelName };
}

/**
 * The Redis Streams backend (docs/design.md, "Queue contracts").
 *
 * Tasks are entries of the stream `<p>:tasks`, read through the consumer
 * group `<p>-workers`; results are entries of `<p>:results`. Every step that
 * changes more than one key (create the sweep, complete, fail, heartbeat) is
 * one Lua script in backends/redis/, so a worker that dies half-way leaves
 * nothing half-done, and ownership is checked in the same step as the change:
 * a worker whose entry was recovered by another cannot publish or retry it.
 *
 * Every key is named in keys.ts; the parts live beside this file:
 * connection.ts, scripts.ts, lease.ts, reader.ts, replies.ts.
 *
 * Retries wait out RETRY_DELAY_MS in the sorted set `<p>:delayed` until
 * promote-2.lua (run by take()) moves them back to the task stream.
 * Acknowledged task entries are trimmed from the head of the stream
 * (trim-acknowledged.lua): by take() every TRIM_EVERY_MS, and by the
 * completion or dead letter that settles the sweep.
 */
import type { RedisConnection } from './options.js';
import type {
  BackendOptions, ChunkResult, ConnectionState, ConsumerRecord, DeadLetter, Delivery, InitOutcome, QueueBackend, QueueStats,
  RedriveOutcome, SweepSettings,
} from '../types.js';
import { taskFields } from '../messages.js';
import type { FailOutcome } from '../../core/outcomes.js';
import { TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { redisKeys, type Keys } from './keys.js';
import { outcomeOf } from './scripts.js';
import { readGroupEntries, type StreamEntry } from './replies.js';
import { RedisLinks, type Link } from './connection.js';
import type { Redis } from 'ioredis';
import { ConsumerNameLease } from './lease.js';
import { RedisReader } from './reader.js';
import { SettleSignal } from './settle-signal.js';
import { Batcher } from '../../core/batch.js';
import {
  autoclaim, COMPLETIONS_PER_CALL, deliveryLimitReason, overDelivered, readDeliveries, sendCompletions, toDeliveries, type Completion, type RedisHandle,
} from './deliveries.js';
import { readJoined, readRedrives, recordJoin, redriveDead, streamIdAtMost } from './redrive.js';
import { initCall, TaskFiller, TASKS_PER_CALL } from './sweep-tasks.js';

/**
 * Idle time given to released entries: above any STALE_THRESHOLD_MS (at most
 * 7 days), below the epoch time (Redis replaces an idle time that would put
 * the delivery before 1970 by "now").
 */
const RELEASED_IDLE_MS = 30 * 86_400_000;
/** How often a worker looks for retries whose delay is over (they come back at most this late). */
const PROMOTE_EVERY_MS = 200;
/** How often a worker trims acknowledged entries from the task stream (trim-1.lua): memory only, never correctness. */
const TRIM_EVERY_MS = 500;

function handleOf(delivery: Delivery): RedisHandle {
  const handle = delivery.handle as Partial<RedisHandle> | null;
  if (!handle || typeof handle.entryId !== 'string') {
    throw new TtgError(`delivery of chunk ${delivery.chunkId} did not come from the Redis backend`);
  }
  return handle as RedisHandle;
}

export class RedisBackend implements QueueBackend {
  readonly kind = 'redis' as const;
  readonly #opts: BackendOptions<RedisConnection>;
  readonly #workerId: string;
  readonly #log: Logger;
  readonly #keys: Keys;
  /** One connection for commands and scripts, one for blocking reads, so a blocked read never delays a commit. */
  readonly #links: RedisLinks;
  #settings: SweepSettings | null = null;
  #consumer = '';
  /** The lease on `worker-<id>`, so that two live processes never read as one consumer. */
  readonly #lease: ConsumerNameLease;
  readonly #reader: RedisReader;
  /** Entries a restarted predecessor of this consumer name left pending: take() hands them out first. */
  #resumable: StreamEntry[] = [];
  /** When take() next moves due retries to the task stream (see #promoteDue). */
  #promoteAt = 0;
  /** When take() next trims acknowledged task entries (see #trimDue). */
  #trimAt = 0;
  /** Where the next XAUTOCLAIM scan of the pending list starts. */
  #claimCursor = '0-0';
  #closed = false;
  /** Adds the tasks the first init call left (sweep-tasks.ts). */
  #tasks: TaskFiller | null = null;
  /** Completions that arrive together go to Redis in one complete-5.lua call. */
  readonly #completions = new Batcher<Completion, boolean>(
    (items) => sendCompletions(this.#links, this.#keys, this.#consumer, this.#opts.queuePrefix, this.#log, items), COMPLETIONS_PER_CALL);
  /** Cuts a waiting take() short when the sweep settles. */
  readonly #settleSignal: SettleSignal;

  constructor(opts: BackendOptions<RedisConnection>) {
    this.#opts = opts;
    this.#workerId = opts.workerId;
    this.#log = opts.log;
    this.#keys = redisKeys(opts.queuePrefix);
    this.#links = new RedisLinks({
      connection: opts.connection, connectTimeoutSeconds: opts.connectTimeoutSeconds, workerId: opts.workerId, log: opts.log,
      keys: this.#keys, queuePrefix: opts.queuePrefix,
    });
    this.#reader = new RedisReader(this.#links, this.#keys, opts.queuePrefix, opts.log);
    this.#lease = new ConsumerNameLease(this.#links, this.#keys, opts.queuePrefix, opts.log);
    this.#settleSignal = new SettleSignal(this.#links, this.#keys.events, () => this.isSettled(), opts.log);
  }

  get connectionState(): ConnectionState {
    if (this.#closed) return 'closed';
    if (this.#settings === null) return 'connecting';
    return this.#links.anyDown ? 'reconnecting' : 'ready';
  }

  get reconnects(): number {
    return this.#links.reconnects;
  }

  get consumerName(): string {
    return this.#consumer;
  }

  // ------------------------------------------------------------ lifecycle

  async init(settings: SweepSettings): Promise<InitOutcome> {
    // Both connections open at once: the blocking one is needed right after.
    const blocking = this.#links.blocking();
    blocking.catch(() => {});
    const link = await this.#links.commands();
    const k = this.#keys;
    // The consumer name's lease travels with the first init call (one round trip for both).
    const naming = this.#consumer ? null : this.#lease.chooseName(`worker-${this.#workerId}`, this.#opts.hostName);
    naming?.catch(() => {});
    // The first call creates or joins the sweep with its first tasks; the rest are added while they are computed.
    const first = await initCall(this.#links, k, this.#opts.queuePrefix, settings, TASKS_PER_CALL, false);
    const created = first.outcome === 'created';
    const totalChunks = first.totalChunks;
    this.#tasks = new TaskFiller(this.#links, k, this.#opts.queuePrefix, settings, this.#log, () => this.#closed, first.added >= totalChunks);
    this.#settings = settings;
    if (created) this.#settleSignal.rearm();
    if (naming) {
      this.#consumer = await naming;
      this.#resumable = await this.#reader.ownPending(link, this.#consumer);
      await recordJoin(this.#links, link, k, {
        consumer: this.#consumer, workerId: this.#workerId, host: this.#opts.hostName, joinedAt: new Date().toISOString(),
      });
    }
    await blocking;
    this.#log.debug(created ? 'created the sweep in Redis' : 'joined the sweep in Redis', {
      tasks: k.tasks, chunks: totalChunks, consumer: this.#consumer,
    });
    return { created, totalChunks };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#lease.stop();
    // Give the name back at once, so a restarted worker need not wait for the lease to expire.
    await this.#links.close((link) => this.#lease.drop(link));
  }

  async reset(): Promise<void> {
    const link = await this.#links.commands();
    const k = this.#keys;
    await this.#links.run(link, (c) =>
      c.del(k.tasks, k.results, k.meta, k.done, k.dead, k.deadChunks, k.attempts, k.delayed, k.redrives, k.joined));
    let cursor = '0';
    do {
      const [next, keys] = await this.#links.run(link, (c) => c.scan(cursor, 'MATCH', k.leasePattern, 'COUNT', 1000));
      // Skip keys of a longer prefix that happens to match (`<p>:consumer:x:consumer:worker-0`).
      const mine = keys.filter((key) => !key.slice(k.lease('').length).includes(':'));
      if (mine.length) await this.#links.run(link, (c) => c.del(...mine));
      cursor = next;
    } while (cursor !== '0');
    this.#resumable = [];
    this.#claimCursor = '0-0';
    this.#settleSignal.rearm();
  }

  // ------------------------------------------------------------ taking and settling tasks

  async take(max: number, waitMs: number): Promise<Delivery[]> {
    this.#requireInit('take');
    if (max <= 0) return [];
    const k = this.#keys;
    const tasks = this.#tasks!;
    // The rest of the tasks are added once the first read is answered (so it does not queue behind them),
    // and again by any later read if adding them failed.
    if (tasks.started) tasks.fill();
    try {
      while (this.#resumable.length) {
        const own = await this.#deliveries(this.#resumable.splice(0, max), true);
        if (own.length) return own;
      }
      // Retries whose delay is over go back to the stream first; a blocked read wakes up for the next one due.
      // Both go out together (one round trip) when both are due.
      const [nextDueMs] = await Promise.all([this.#promoteDue(), this.#trimDue()]);
      const wait = Math.min(waitMs, Math.max(1, nextDueMs));
      // BLOCK 0 would wait forever: no wait means no BLOCK, and a read that does not wait is one read-3.lua
      // call. A blocking read ends early when the sweep settles; once it has, reads still look (entries
      // that are not chunks may be left) but never wait.
      if (wait <= 0 || this.#settleSignal.fired) {
        return await readDeliveries(this.#links, k, this.#log, this.#requireInit('take'), this.#consumer, max);
      }
      const link = await this.#links.blocking();
      const read = (block: (string | number)[]) => (c: Redis) =>
        c.call('XREADGROUP', 'GROUP', k.group, this.#consumer, 'COUNT', max, ...block, 'STREAMS', k.tasks, '>');
      this.#settleSignal.arm();
      let reply = await this.#settleSignal.blockingRead(link, read(['BLOCK', Math.ceil(wait)]));
      if (reply === null && this.#settleSignal.fired) reply = await this.#links.run(link, read([]));
      return await this.#deliveries(readGroupEntries(reply), false);
    } catch (err) {
      if (this.#closed) return [];
      throw err;
    } finally {
      tasks.fill();
    }
  }

  complete(delivery: Delivery, result: ChunkResult): Promise<boolean> {
    try {
      this.#requireInit('complete');
      const handle = handleOf(delivery);
      if (!delivery.task) throw new TtgError(`chunk ${delivery.chunkId} is malformed (${delivery.malformed}): it can only fail, not complete`);
      if (result.chunkId !== delivery.task.chunkId) {
        throw new TtgError(`result of chunk ${result.chunkId} given for the delivery of chunk ${delivery.task.chunkId}`);
      }
      return this.#completions.add({ entryId: handle.entryId, chunkId: delivery.task.chunkId, result });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** `maxRetries`: the sweep's MAX_RETRIES, or 1 to dead-letter the chunk now (its delivery limit). */
  async fail(delivery: Delivery, reason: string, maxRetries = this.#opts.maxRetries): Promise<FailOutcome> {
    this.#requireInit('fail');
    const handle = handleOf(delivery);
    const k = this.#keys;
    // The task's fields beside chunk_id: as parsed, or as read when the entry is malformed.
    const fields = delivery.task ? taskFields(delivery.task) : handle.fields ?? {};
    const rest = ['start_param', 'end_param', 'total_params'].flatMap((name) => (fields[name] !== undefined ? [name, fields[name]!] : []));
    const link = await this.#links.commands();
    const reply = await this.#links.script(link, 'fail', [k.tasks, k.dead, k.deadChunks, k.attempts, k.done, k.meta, k.delayed], [
      k.group, this.#consumer, handle.entryId, delivery.task?.chunkId ?? delivery.chunkId, reason, this.#workerId,
      maxRetries, delivery.task ? '0' : '1', new Date().toISOString(), this.#opts.retryDelayMs, ...rest,
    ]);
    const outcome = outcomeOf('fail', reply, { prefix: this.#opts.queuePrefix }) as FailOutcome;
    // This worker looks for its own retry when it is due, not a check later.
    if (outcome === 'retried') this.#promoteAt = Math.min(this.#promoteAt, Date.now() + this.#opts.retryDelayMs);
    // A dead letter may settle the sweep's last chunk: wake the workers waiting for tasks, as complete-5.lua does.
    if (outcome === 'dead-lettered' && (await this.isSettled())) await this.#links.run(link, (c) => c.publish(k.events, 'settled'));
    return outcome;
  }

  /**
   * Entries stay pending under this consumer but get an idle time beyond any
   * stale threshold, so the next stale check of any worker (this one
   * included) takes them over at once. (Redis has no "unclaim": XCLAIM with a
   * huge IDLE is the nearest thing.)
   */
  async release(deliveries: Delivery[]): Promise<void> {
    this.#requireInit('release');
    if (!deliveries.length) return;
    const link = await this.#links.commands();
    await this.#touch(link, deliveries, RELEASED_IDLE_MS);
  }

  async heartbeat(deliveries: Delivery[]): Promise<void> {
    this.#requireInit('heartbeat');
    const link = await this.#links.commands();
    const [owned] = await Promise.all([deliveries.length ? this.#touch(link, deliveries, 0) : 0, this.#lease.renew()]);
    if (owned < deliveries.length) {
      this.#log.debug('some chunks in hand were taken over by other workers', { held: deliveries.length, owned });
    }
  }

  async claimStale(max: number, thresholdMs: number): Promise<Delivery[]> {
    this.#requireInit('claimStale');
    if (max <= 0) return [];
    const k = this.#keys;
    const link = await this.#links.commands();
    const { claimed, cursor } = await autoclaim(this.#links, link, k, this.#consumer, thresholdMs, this.#claimCursor, max);
    this.#claimCursor = cursor;
    const deliveries = await this.#deliveries(claimed, true);
    const over = await overDelivered(this.#links, k, this.#consumer, deliveries);
    for (const [d, count] of over) {
      const reason = deliveryLimitReason(count);
      this.#log.warn(`chunk ${d.chunkId} dead-lettered: ${reason}`);
      await this.fail(d, reason, 1);
    }
    return over.size ? deliveries.filter((d) => !over.has(d)) : deliveries;
  }

  // ------------------------------------------------------------ progress

  readSettings(): Promise<SweepSettings | null> {
    return this.#reader.settings();
  }

  readResults(): Promise<ChunkResult[]> {
    return this.#reader.results();
  }

  async readDeadLetters(): Promise<DeadLetter[]> {
    const redrives = await readRedrives(this.#links, this.#keys);
    return this.#reader.deadLetters((entryId, chunkId) => {
      const after = redrives.get(chunkId)?.after;
      return after !== undefined && streamIdAtMost(entryId, after);
    });
  }

  /** One Lua call (redrive-7.lua), so two callers at once never queue a chunk twice. */
  redriveDead(chunkIds: readonly string[] | null): Promise<RedriveOutcome> {
    return redriveDead(this.#links, this.#keys, chunkIds);
  }

  async readRedrives(): Promise<Record<string, number>> {
    return Object.fromEntries([...(await readRedrives(this.#links, this.#keys))].map(([chunkId, r]) => [chunkId, r.count]));
  }

  readConsumers(): Promise<ConsumerRecord[]> {
    return readJoined(this.#links, this.#keys);
  }

  async isSettled(): Promise<boolean> {
    const k = this.#keys;
    const link = await this.#links.commands();
    const [total, done, dead] = await this.#links.run(link, (c) =>
      Promise.all([c.hget(k.meta, 'total_chunks'), c.hlen(k.done), c.hlen(k.deadChunks)]));
    return total !== null && done + dead >= Number(total);
  }

  async hasOutstanding(): Promise<boolean> {
    // Entries a predecessor with this consumer name left pending are still to be handed out by take().
    if (this.#resumable.length) return true;
    const link = await this.#links.commands();
    if ((await this.#links.run(link, (c) => c.zcard(this.#keys.delayed))) > 0) return true;
    const { consumers } = await this.#reader.pending(link);
    const heldByOthers = Object.entries(consumers).some(([name, n]) => name !== this.#consumer && n > 0);
    return heldByOthers || (await this.#reader.ready(link)) > 0;
  }

  async stats(): Promise<QueueStats> {
    return this.#reader.stats(await this.#links.commands());
  }

  // ------------------------------------------------------------ internals: tasks

  #requireInit(operation: string): SweepSettings {
    if (this.#closed) throw new TtgError(`${operation}() called after close()`);
    if (!this.#settings) throw new TtgError(`${operation}() called before init()`);
    return this.#settings;
  }

  /** Deliveries of entries read or claimed (see completions.ts). */
  #deliveries(entries: StreamEntry[], recovered: boolean): Promise<Delivery[]> {
    return toDeliveries(this.#links, this.#keys, this.#log, this.#requireInit('take'), entries, recovered);
  }

  /**
   * Moves due retries to the task stream (any worker's: the one that failed
   * a chunk may be gone), at most every PROMOTE_EVERY_MS unless a retry is
   * due sooner, so a busy worker's take() does not pay a script per call.
   * Returns ms until the next check (or a retry) is due.
   */
  async #promoteDue(): Promise<number> {
    const now = Date.now();
    if (now < this.#promoteAt) return this.#promoteAt - now;
    const link = await this.#links.commands();
    const reply = await this.#links.script(link, 'promote', [this.#keys.delayed, this.#keys.tasks], [1000]);
    const nextDue = Number((reply as unknown[])[1]);
    const wait = nextDue >= 0 ? Math.min(nextDue, PROMOTE_EVERY_MS) : PROMOTE_EVERY_MS;
    this.#promoteAt = now + wait;
    return wait;
  }

  /**
   * Every TRIM_EVERY_MS, drops the task entries acknowledged before the
   * group's oldest pending and first undelivered ones (trim-1.lua), so a
   * big sweep's stream shrinks as it runs, at no cost to its completions.
   */
  async #trimDue(): Promise<void> {
    const now = Date.now();
    if (now < this.#trimAt) return;
    this.#trimAt = now + TRIM_EVERY_MS;
    const link = await this.#links.commands();
    await this.#links.script(link, 'trim', [this.#keys.tasks], [this.#keys.group]);
  }

  async #touch(link: Link, deliveries: Delivery[], idleMs: number): Promise<number> {
    const k = this.#keys;
    const ids = deliveries.map((d) => handleOf(d).entryId);
    return Number(await this.#links.script(link, 'touch', [k.tasks], [k.group, this.#consumer, idleMs, ...ids]));
  }

}

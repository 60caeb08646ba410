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
 * Bookkeeping beside the streams: `<p>:meta` (the sweep's settings),
 * `<p>:done` and `<p>:dead-chunks` (chunk id → 1: what is settled),
 * `<p>:attempts` (chunk id → failures), `<p>:delayed` (retries waiting out
 * their delay), `<p>:dead` (dead-letter stream) and
 * `<p>:consumer:worker-<id>` (the lease on a consumer name).
 *
 * Retries wait out RETRY_DELAY_MS as the contract says: a failed chunk's
 * fresh copy waits in the sorted set `<p>:delayed` (scored by its due time
 * on the Redis clock) until promote-2.lua, run by every worker before it
 * reads tasks, moves it to the end of the task stream.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisConnection } from './options.js';
import { backoffDelay } from '../../core/backoff.js';
import type {
  BackendOptions, ChunkResult, ConnectionState, DeadLetter, Delivery, InitOutcome, QueueBackend, QueueStats, SweepSettings,
} from '../types.js';
import { parseResultFields, parseTaskFields, resultFields, taskFields } from '../messages.js';
import { chunkCount, chunkIdWidth, mismatchMessage, settingsDifference, settingsFromRecord, unreadableSettingsMessage } from '../../core/sweep.js';
import type { FailOutcome } from '../../core/outcomes.js';
import { BrokerUnavailableError, SettingsMismatchError, SweepGoneError, TtgError } from '../../core/errors.js';
import { redact, type Logger } from '../../core/log.js';
import type { KernelName } from '../../kernel/types.js';

/** Every Redis name of a sweep, built here and nowhere else. */
export function redisKeys(prefix: string) {
  return {
    tasks: `${prefix}:tasks`,
    results: `${prefix}:results`,
    group: `${prefix}-workers`,
    meta: `${prefix}:meta`,
    done: `${prefix}:done`,
    dead: `${prefix}:dead`,
    deadChunks: `${prefix}:dead-chunks`,
    attempts: `${prefix}:attempts`,
    delayed: `${prefix}:delayed`,
    lease: (consumer: string) => `${prefix}:consumer:${consumer}`,
    /** SCAN pattern of the lease keys (the prefix's characters are never glob syntax, see config). */
    leasePattern: `${prefix}:consumer:*`,
  };
}
type Keys = ReturnType<typeof redisKeys>;

/** How long a consumer-name lease lives without renewal, and how often it is renewed. */
const LEASE_MS = 10_000;
const LEASE_RENEW_MS = 3_000;
/**
 * Idle time given to released entries: above any STALE_THRESHOLD_MS (at most
 * 7 days), below the epoch time (Redis replaces an idle time that would put
 * the delivery before 1970 by "now").
 */
const RELEASED_IDLE_MS = 30 * 86_400_000;
/** Tasks one init-7.lua call adds: ~50 ms of Redis time, so big sweeps never block the server for long. */
const TASKS_PER_INIT_CALL = 50_000;
/** Reconnection delays: 100 ms doubling to 2 s (ioredis counts attempts from 1). */
const RECONNECT_BACKOFF = { initialMs: 100, maxMs: 2000 } as const;
/** Entries per XRANGE page when reading results and dead letters. */
const PAGE = 1000;

// ---------------------------------------------------------------- Lua scripts

/** The scripts in backends/redis/, `<name>-<number of keys>.lua`. */
const SCRIPT_FILES = ['init-7', 'complete-5', 'fail-7', 'promote-2', 'touch-1', 'lease-1'] as const;
type ScriptName = 'init' | 'complete' | 'fail' | 'promote' | 'touch' | 'lease';
interface ScriptSource {
  command: string;
  numberOfKeys: number;
  lua: string;
}

let scriptSources: Map<ScriptName, ScriptSource> | null = null;

/**
 * Reads the .lua files once per process. They are not copied into dist/:
 * this module runs as dist/backends/redis/*.js, so they live three levels
 * up in backends/redis/ (or beside this file when it runs from source).
 */
function loadScripts(): Map<ScriptName, ScriptSource> {
  if (scriptSources) return scriptSources;
  const candidates = [new URL('../../../backends/redis/', import.meta.url), new URL('./', import.meta.url)];
  const dir = candidates.find((url) => existsSync(new URL('init-7.lua', url)));
  if (!dir) throw new TtgError(`the Redis backend's Lua scripts are missing: looked in ${candidates.map((u) => u.pathname).join(' and ')}`);
  const sources = new Map<ScriptName, ScriptSource>();
  for (const file of SCRIPT_FILES) {
    const [, name, keys] = /^(.+)-(\d+)$/.exec(file)!;
    sources.set(name as ScriptName, {
      command: `ttg_${name}`,
      numberOfKeys: Number(keys),
      lua: readFileSync(new URL(`${file}.lua`, dir), 'utf8'),
    });
  }
  scriptSources = sources;
  return sources;
}

type Outcome =
  | 'created' | 'joined' | 'published' | 'duplicate' | 'retried' | 'dead-lettered' | 'not-owner' | 'sweep-gone'
  | 'lease-held' | 'lease-taken';

/**
 * The one place where script return codes become outcomes or errors (each
 * script's header lists its codes): 0 joined / lease taken by another,
 * 1 created / published / retried / lease held, 2 duplicate / dead-lettered,
 * -1 not the owner, -2 settings mismatch, -3 the sweep is gone. touch-1.lua
 * returns a count, not a code.
 */
function outcomeOf(script: ScriptName, reply: unknown, context: { prefix: string; settings?: SweepSettings }): Outcome {
  const code = Number(Array.isArray(reply) ? reply[0] : reply);
  switch (`${script}:${code}`) {
    case 'init:1': return 'created';
    case 'init:0': return 'joined';
    case 'init:-2': {
      const [, totalParams, chunkSize, kernel] = reply as unknown[];
      const theirs: SweepSettings = {
        totalParams: Number(totalParams), chunkSize: Number(chunkSize), kernel: String(kernel) as KernelName,
      };
      const diff = settingsDifference(theirs, context.settings!) ?? 'the stored settings are unreadable';
      return raise(new SettingsMismatchError(mismatchMessage(diff, context.prefix)));
    }
    case 'complete:1': return 'published';
    case 'complete:2': return 'duplicate';
    case 'fail:1': return 'retried';
    case 'fail:2': return 'dead-lettered';
    case 'complete:-1':
    case 'fail:-1': return 'not-owner';
    case 'complete:-3': return 'sweep-gone';
    case 'lease:1': return 'lease-held';
    case 'lease:0': return 'lease-taken';
  }
  return raise(new TtgError(`unexpected reply from the Redis script ${script}: ${JSON.stringify(reply)}`));
}

function raise(error: Error): never {
  throw error;
}

// ---------------------------------------------------------------- replies

type Fields = Record<string, string>;
interface StreamEntry {
  id: string;
  /** null for an entry deleted while pending. */
  fields: Fields | null;
}

function fieldsOf(flat: unknown): Fields | null {
  if (!Array.isArray(flat)) return null;
  const fields: Fields = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = String(flat[i + 1]);
  return fields;
}

function entriesOf(list: unknown): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  return list.map((item) => {
    const [id, flat] = item as [unknown, unknown];
    return { id: String(id), fields: fieldsOf(flat) };
  });
}

/** XREADGROUP's reply: [[stream, entries]] or null. */
function readGroupEntries(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  return entriesOf((reply[0] as unknown[])[1]);
}

/** XPENDING's summary form: [count, min id, max id, [[consumer, count], ...] | null]. */
function pendingSummary(reply: unknown): { count: number; consumers: Record<string, number> } {
  const [count, , , list] = Array.isArray(reply) ? reply : [];
  const consumers: Record<string, number> = {};
  if (Array.isArray(list)) for (const [name, n] of list as [unknown, unknown][]) consumers[String(name)] = Number(n);
  return { count: Number(count ?? 0), consumers };
}

function isRedisError(err: unknown, ...codes: string[]): boolean {
  const message = err instanceof Error ? err.message : '';
  return codes.some((code) => message.includes(code));
}

// ---------------------------------------------------------------- connections

/** One ioredis connection and what we know about its outage, if any. */
interface Link {
  client: Redis;
  role: 'commands' | 'blocking';
  /** When the connection went down (or started connecting); null while it is up. */
  downSince: number | null;
  lastError: Error | null;
  /** The retry strategy gave up: the connection is closed for good. */
  gaveUp: boolean;
}

/** Host, port, credentials, database and TLS from REDIS_URL or REDIS_HOST/PORT/PASSWORD. */
function connectionTarget(cfg: RedisConnection): RedisOptions {
  if (cfg.url === null) return { host: cfg.host, port: cfg.port, password: cfg.password ?? undefined };
  const url = new URL(cfg.url);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const password = url.password ? decodeURIComponent(url.password) : cfg.password ?? undefined;
  return {
    host,
    port: cfg.port,
    // A user name alone (no password) means nothing to AUTH.
    username: password !== undefined && url.username ? decodeURIComponent(url.username) : undefined,
    password,
    db: cfg.db,
    tls: url.protocol === 'rediss:' ? { servername: host } : undefined,
  };
}

/** Consumer names given this process when `worker-<id>` was taken (several backends may share a process in tests). */
let fallbackNames = 0;

/** Broker bookkeeping of a delivery: opaque to the engine. */
interface RedisHandle {
  readonly entryId: string;
  /** The entry's fields as read, kept for dead letters of malformed entries. */
  readonly fields: Fields;
}

function handleOf(delivery: Delivery): RedisHandle {
  const handle = delivery.handle as Partial<RedisHandle> | null;
  if (!handle || typeof handle.entryId !== 'string' || !handle.fields) {
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
  /** Identifies this process as the holder of a consumer-name lease. */
  readonly #nonce = randomBytes(12).toString('hex');

  /** One connection for commands and scripts, one for blocking reads, so a blocked read never delays a commit. */
  #linkByRole: Partial<Record<Link['role'], Promise<Link>>> = {};
  #links: Link[] = [];
  #settings: SweepSettings | null = null;
  #consumer = '';
  /** The consumer name whose lease this process holds (`worker-<id>`), if it got it. */
  #leased: string | null = null;
  #leaseTimer: NodeJS.Timeout | null = null;
  #renewing = false;
  #leaseLostWarned = false;
  /**
   * Entries this consumer name had pending when init() chose it (left by a
   * restarted predecessor): take() hands them out before any new entry.
   */
  #resumable: StreamEntry[] = [];
  /** Where the next XAUTOCLAIM scan of the pending list starts. */
  #claimCursor = '0-0';
  #closed = false;
  #reconnects = 0;

  constructor(opts: BackendOptions<RedisConnection>) {
    this.#opts = opts;
    this.#workerId = opts.workerId;
    this.#log = opts.log;
    this.#keys = redisKeys(opts.queuePrefix);
  }

  get connectionState(): ConnectionState {
    if (this.#closed) return 'closed';
    if (this.#settings === null) return 'connecting';
    return this.#links.some((l) => l.downSince !== null) ? 'reconnecting' : 'ready';
  }

  get reconnects(): number {
    return this.#reconnects;
  }

  get consumerName(): string {
    return this.#consumer;
  }

  // ------------------------------------------------------------ lifecycle

  async init(settings: SweepSettings): Promise<InitOutcome> {
    const link = await this.#commandLink();
    const k = this.#keys;
    const totalChunks = chunkCount(settings);
    const createdAt = new Date().toISOString();
    let created = false;
    // Each call adds one batch of tasks; whoever is here keeps calling until
    // all are in, so a sweep never depends on its creator staying alive.
    for (;;) {
      const reply = await this.#script(link, 'init', [k.meta, k.tasks, k.results, k.done, k.dead, k.deadChunks, k.attempts], [
        k.group, settings.totalParams, settings.chunkSize, settings.kernel, totalChunks, chunkIdWidth(totalChunks),
        createdAt, TASKS_PER_INIT_CALL,
      ]);
      if (outcomeOf('init', reply, { prefix: this.#opts.queuePrefix, settings }) === 'created') created = true;
      const [, storedChunks, added] = (reply as unknown[]).map(Number);
      if (added! >= storedChunks!) break;
    }
    this.#settings = settings;
    if (!this.#consumer) {
      await this.#chooseConsumerName(link);
      this.#resumable = await this.#ownPending(link);
    }
    await this.#blockingLink();
    this.#log.debug(created ? 'created the sweep in Redis' : 'joined the sweep in Redis', {
      tasks: k.tasks, chunks: totalChunks, consumer: this.#consumer,
    });
    return { created, totalChunks };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#leaseTimer) clearInterval(this.#leaseTimer);
    this.#leaseTimer = null;
    const links = this.#links;
    this.#links = [];
    for (const link of links) {
      if (link.role === 'commands' && link.client.status === 'ready') {
        // Give the name back at once, so a restarted worker need not wait for the lease to expire.
        if (this.#leased) {
          await this.#script(link, 'lease', [this.#keys.lease(this.#leased)], [this.#nonce, LEASE_MS, 'drop']).catch(() => {});
        }
        await link.client.quit().catch(() => hangUp(link.client));
      } else {
        // A blocked XREADGROUP would hold quit() for up to its wait: cut the line.
        hangUp(link.client);
      }
    }
  }

  async reset(): Promise<void> {
    const link = await this.#commandLink();
    const k = this.#keys;
    await this.#run(link, (c) => c.del(k.tasks, k.results, k.meta, k.done, k.dead, k.deadChunks, k.attempts, k.delayed));
    let cursor = '0';
    do {
      const [next, keys] = await this.#run(link, (c) => c.scan(cursor, 'MATCH', k.leasePattern, 'COUNT', 1000));
      // Skip keys of a longer prefix that happens to match (`<p>:consumer:x:consumer:worker-0`).
      const mine = keys.filter((key) => !key.slice(k.lease('').length).includes(':'));
      if (mine.length) await this.#run(link, (c) => c.del(...mine));
      cursor = next;
    } while (cursor !== '0');
    this.#resumable = [];
    this.#claimCursor = '0-0';
  }

  // ------------------------------------------------------------ taking and settling tasks

  async take(max: number, waitMs: number): Promise<Delivery[]> {
    this.#requireInit('take');
    if (max <= 0) return [];
    const k = this.#keys;
    try {
      while (this.#resumable.length) {
        const own = await this.#toDeliveries(this.#resumable.splice(0, max), true);
        if (own.length) return own;
      }
      // Retries whose delay is over go back to the stream first; a blocked read wakes up for the next one due.
      const nextDueMs = await this.#promoteDue();
      const wait = nextDueMs >= 0 ? Math.min(waitMs, Math.max(1, nextDueMs)) : waitMs;
      const link = await this.#blockingLink();
      // BLOCK 0 would wait forever: no wait means no BLOCK.
      const block = wait > 0 ? ['BLOCK', Math.ceil(wait)] : [];
      const reply = await this.#run(link, (c) =>
        c.call('XREADGROUP', 'GROUP', k.group, this.#consumer, 'COUNT', max, ...block, 'STREAMS', k.tasks, '>'));
      return await this.#toDeliveries(readGroupEntries(reply), false);
    } catch (err) {
      if (this.#closed) return [];
      throw err;
    }
  }

  async complete(delivery: Delivery, result: ChunkResult): Promise<boolean> {
    this.#requireInit('complete');
    const handle = handleOf(delivery);
    if (!delivery.task) throw new TtgError(`chunk ${delivery.chunkId} is malformed (${delivery.malformed}): it can only fail, not complete`);
    if (result.chunkId !== delivery.task.chunkId) {
      throw new TtgError(`result of chunk ${result.chunkId} given for the delivery of chunk ${delivery.task.chunkId}`);
    }
    const k = this.#keys;
    const link = await this.#commandLink();
    const reply = await this.#script(link, 'complete', [k.tasks, k.results, k.done, k.deadChunks, k.meta], [
      k.group, this.#consumer, handle.entryId, delivery.task.chunkId, ...Object.entries(resultFields(result)).flat(),
    ]);
    const outcome = outcomeOf('complete', reply, { prefix: this.#opts.queuePrefix });
    if (outcome === 'duplicate') this.#log.debug('chunk already had a result; published a duplicate', { chunk: delivery.chunkId });
    if (outcome === 'sweep-gone') this.#log.warn('the sweep was removed from Redis while this chunk was worked on', { chunk: delivery.chunkId });
    return outcome === 'published' || outcome === 'duplicate';
  }

  async fail(delivery: Delivery, reason: string): Promise<FailOutcome> {
    this.#requireInit('fail');
    const handle = handleOf(delivery);
    const k = this.#keys;
    // The task's fields beside chunk_id: as parsed, or as read when the entry is malformed.
    const fields = delivery.task ? taskFields(delivery.task) : handle.fields;
    const rest = ['start_param', 'end_param', 'total_params'].flatMap((name) => (fields[name] !== undefined ? [name, fields[name]!] : []));
    const link = await this.#commandLink();
    const reply = await this.#script(link, 'fail', [k.tasks, k.dead, k.deadChunks, k.attempts, k.done, k.meta, k.delayed], [
      k.group, this.#consumer, handle.entryId, delivery.task?.chunkId ?? delivery.chunkId, reason, this.#workerId,
      this.#opts.maxRetries, delivery.task ? '0' : '1', new Date().toISOString(), this.#opts.retryDelayMs, ...rest,
    ]);
    const outcome = outcomeOf('fail', reply, { prefix: this.#opts.queuePrefix });
    return outcome as 'retried' | 'dead-lettered' | 'not-owner';
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
    const link = await this.#commandLink();
    await this.#touch(link, deliveries, RELEASED_IDLE_MS);
  }

  async heartbeat(deliveries: Delivery[]): Promise<void> {
    this.#requireInit('heartbeat');
    const link = await this.#commandLink();
    const [owned] = await Promise.all([deliveries.length ? this.#touch(link, deliveries, 0) : 0, this.#renewLease()]);
    if (owned < deliveries.length) {
      this.#log.debug('some chunks in hand were taken over by other workers', { held: deliveries.length, owned });
    }
  }

  async claimStale(max: number, thresholdMs: number): Promise<Delivery[]> {
    this.#requireInit('claimStale');
    if (max <= 0) return [];
    const k = this.#keys;
    const link = await this.#commandLink();
    const claimed: StreamEntry[] = [];
    let cursor = this.#claimCursor;
    // One XAUTOCLAIM looks at no more than 10 × COUNT pending entries: go on
    // until `max` are found or the scan has reached the end of the list.
    do {
      const reply = await this.#run(link, (c) =>
        c.call('XAUTOCLAIM', k.tasks, k.group, this.#consumer, Math.max(0, Math.floor(thresholdMs)), cursor, 'COUNT', max - claimed.length));
      const [next, entries] = reply as [unknown, unknown];
      cursor = String(next);
      // Entries deleted from the stream come back without fields (Redis 6.2) or in a third list (7+); skip them.
      claimed.push(...entriesOf(entries).filter((entry) => entry.fields !== null));
    } while (claimed.length < max && cursor !== '0-0');
    this.#claimCursor = cursor;
    return this.#toDeliveries(claimed, true);
  }

  // ------------------------------------------------------------ progress

  async isSettled(): Promise<boolean> {
    const k = this.#keys;
    const link = await this.#commandLink();
    const [total, done, dead] = await this.#run(link, (c) =>
      Promise.all([c.hget(k.meta, 'total_chunks'), c.hlen(k.done), c.hlen(k.deadChunks)]));
    return total !== null && done + dead >= Number(total);
  }

  async hasOutstanding(): Promise<boolean> {
    // Entries a predecessor with this consumer name left pending are still to be handed out by take().
    if (this.#resumable.length) return true;
    const link = await this.#commandLink();
    if ((await this.#run(link, (c) => c.zcard(this.#keys.delayed))) > 0) return true;
    const { consumers } = await this.#pending(link);
    const heldByOthers = Object.entries(consumers).some(([name, n]) => name !== this.#consumer && n > 0);
    return heldByOthers || (await this.#ready(link)) > 0;
  }

  async readSettings(): Promise<SweepSettings | null> {
    const link = await this.#commandLink();
    const [totalParams, chunkSize, kernel] = await this.#run(link, (c) =>
      c.hmget(this.#keys.meta, 'total_params', 'chunk_size', 'kernel'));
    if (totalParams === null && chunkSize === null && kernel === null) return null;
    const settings = settingsFromRecord({ total_params: totalParams, chunk_size: chunkSize, kernel });
    if (settings === null) throw new TtgError(unreadableSettingsMessage(this.#keys.meta, this.#opts.queuePrefix));
    return settings;
  }

  async readResults(): Promise<ChunkResult[]> {
    const results: ChunkResult[] = [];
    let unreadable = 0;
    for await (const entry of this.#range(this.#keys.results)) {
      const result = parseResultFields(entry.fields ?? {});
      if (result) results.push(result);
      else unreadable++;
    }
    if (unreadable) this.#log.warn(`ignored ${unreadable} result entries that are not well-formed`, { stream: this.#keys.results });
    return results;
  }

  async readDeadLetters(): Promise<DeadLetter[]> {
    const letters: DeadLetter[] = [];
    for await (const entry of this.#range(this.#keys.dead)) {
      const fields = entry.fields ?? {};
      const parsed = parseTaskFields(fields, null);
      letters.push({
        chunkId: fields['chunk_id'] ?? '?',
        reason: fields['reason'] ?? '',
        attempts: Number(fields['attempts'] ?? 0),
        workerId: fields['worker_id'] ?? '?',
        task: parsed.ok ? parsed.task : null,
      });
    }
    return letters;
  }

  async stats(): Promise<QueueStats> {
    const k = this.#keys;
    const link = await this.#commandLink();
    const settings = await this.readSettings();
    const [total, completed, dead, results, pending, ready, retrying] = await Promise.all([
      this.#run(link, (c) => c.hget(k.meta, 'total_chunks')),
      this.#run(link, (c) => c.hlen(k.done)),
      this.#run(link, (c) => c.hlen(k.deadChunks)),
      this.#run(link, (c) => c.xlen(k.results)),
      this.#pending(link),
      this.#ready(link),
      this.#run(link, (c) => c.zcard(k.delayed)),
    ]);
    return {
      settings,
      totalChunks: total === null ? 0 : Number(total),
      completedChunks: completed,
      deadLettered: dead,
      settledChunks: completed + dead,
      ready,
      inFlight: pending.count,
      retrying,
      results,
      consumers: pending.consumers,
    };
  }

  // ------------------------------------------------------------ internals: tasks

  #requireInit(operation: string): SweepSettings {
    if (this.#closed) throw new TtgError(`${operation}() called after close()`);
    if (!this.#settings) throw new TtgError(`${operation}() called before init()`);
    return this.#settings;
  }

  /**
   * Entries pending under this consumer name when this process took it: an
   * earlier process of the same name (a restarted worker) left them, and
   * they were its own, so it finishes them first. Read once, at init(),
   * with XREADGROUP from id 0 (pending entries, no waiting), so entries this
   * process claims later are never handed out twice.
   */
  async #ownPending(link: Link): Promise<StreamEntry[]> {
    const k = this.#keys;
    const entries: StreamEntry[] = [];
    let from = '0';
    for (;;) {
      const page = readGroupEntries(await this.#run(link, (c) =>
        c.call('XREADGROUP', 'GROUP', k.group, this.#consumer, 'COUNT', PAGE, 'STREAMS', k.tasks, from)));
      entries.push(...page);
      if (page.length < PAGE) break;
      from = page[page.length - 1]!.id;
    }
    // Entries deleted from the stream while pending come back without fields: nothing to resume.
    const deleted = entries.filter((entry) => entry.fields === null).map((entry) => entry.id);
    if (deleted.length) await this.#run(link, (c) => c.xack(k.tasks, k.group, ...deleted));
    const resumable = entries.filter((entry) => entry.fields !== null);
    if (resumable.length) {
      this.#log.info(`resuming ${resumable.length} chunks this consumer name left pending before a restart`, { consumer: this.#consumer });
    }
    return resumable;
  }

  /**
   * Parses entries into deliveries, with each chunk's failure count. Entries
   * of chunks that already have a result (a recovered duplicate) are
   * acknowledged and dropped: nobody needs to compute them again.
   */
  async #toDeliveries(entries: StreamEntry[], recovered: boolean): Promise<Delivery[]> {
    if (!entries.length) return [];
    const settings = this.#requireInit('take');
    const k = this.#keys;
    const link = await this.#commandLink();
    const parsed = entries.map((entry) => ({ entry, parsed: parseTaskFields(entry.fields!, settings) }));
    const ids = parsed.map(({ parsed: p }) => (p.ok ? p.task.chunkId : p.chunkId));
    const [attempts, done] = await this.#run(link, (c) => Promise.all([c.hmget(k.attempts, ...ids), c.hmget(k.done, ...ids)]));
    const deliveries: Delivery[] = [];
    const settled: string[] = [];
    parsed.forEach(({ entry, parsed: p }, i) => {
      if (p.ok && done[i] !== null) {
        settled.push(entry.id);
        return;
      }
      const handle: RedisHandle = { entryId: entry.id, fields: entry.fields! };
      const attempt = p.ok ? Number(attempts[i] ?? 0) : 0;
      deliveries.push(p.ok
        ? { task: p.task, chunkId: p.task.chunkId, attempt, recovered, handle }
        : { task: null, malformed: p.reason, chunkId: p.chunkId, attempt, recovered, handle });
    });
    if (settled.length) {
      await this.#run(link, (c) => c.xack(k.tasks, k.group, ...settled));
      this.#log.debug(`acknowledged ${settled.length} entries of chunks that already have a result`);
    }
    return deliveries;
  }

  /** Moves due retries to the task stream; returns ms until the next one is due, or -1. */
  async #promoteDue(): Promise<number> {
    const link = await this.#commandLink();
    const reply = await this.#script(link, 'promote', [this.#keys.delayed, this.#keys.tasks], [1000]);
    return Number((reply as unknown[])[1]);
  }

  async #touch(link: Link, deliveries: Delivery[], idleMs: number): Promise<number> {
    const k = this.#keys;
    const ids = deliveries.map((d) => handleOf(d).entryId);
    return Number(await this.#script(link, 'touch', [k.tasks], [k.group, this.#consumer, idleMs, ...ids]));
  }

  /** XPENDING summary; an absent group (no sweep) holds nothing. */
  async #pending(link: Link): Promise<{ count: number; consumers: Record<string, number> }> {
    try {
      return pendingSummary(await this.#run(link, (c) => c.call('XPENDING', this.#keys.tasks, this.#keys.group)));
    } catch (err) {
      if (isRedisError(err, 'NOGROUP') || err instanceof SweepGoneError) return { count: 0, consumers: {} };
      throw err;
    }
  }

  /** Entries not yet delivered to any consumer: the group's `lag`, counted by hand where Redis cannot tell. */
  async #ready(link: Link): Promise<number> {
    const k = this.#keys;
    let groups: unknown;
    try {
      groups = await this.#run(link, (c) => c.call('XINFO', 'GROUPS', k.tasks));
    } catch (err) {
      if (isRedisError(err, 'no such key')) return 0;
      throw err;
    }
    const group = (groups as unknown[]).map(fieldsOfLoose).find((g) => g['name'] === k.group);
    if (!group) return 0;
    if (group['lag'] !== undefined && group['lag'] !== null) return Number(group['lag']);
    // lag is nil after deletions in the middle of the stream (and absent before Redis 7): count past last-delivered-id.
    let count = 0;
    for await (const _ of this.#range(k.tasks, `(${String(group['last-delivered-id'])}`)) count++;
    return count;
  }

  /** Every entry of a stream from `start`, page by page, without consuming anything. */
  async *#range(stream: string, start = '-'): AsyncGenerator<StreamEntry> {
    const link = await this.#commandLink();
    let from = start;
    for (;;) {
      const page = entriesOf(await this.#run(link, (c) => c.call('XRANGE', stream, from, '+', 'COUNT', PAGE)));
      yield* page;
      if (page.length < PAGE) return;
      from = `(${page[page.length - 1]!.id}`;
    }
  }

  // ------------------------------------------------------------ internals: consumer name

  /**
   * `worker-<id>` when no live process uses it (its lease is free or
   * expired), else `worker-<id>-<host>-<pid>`: two processes never read as
   * one consumer, or they would complete each other's entries.
   */
  async #chooseConsumerName(link: Link): Promise<void> {
    const base = `worker-${this.#workerId}`;
    const held = await this.#holdLease(link, base);
    if (held) {
      this.#consumer = base;
      this.#leased = base;
      this.#leaseTimer = setInterval(() => void this.#renewLease(), LEASE_RENEW_MS);
      this.#leaseTimer.unref();
    } else {
      const n = fallbackNames++;
      const host = this.#opts.hostName.replace(/[^A-Za-z0-9_.-]/g, '_');
      this.#consumer = `${base}-${host}-${process.pid}${n ? `-${n + 1}` : ''}`;
      this.#log.info(`consumer name ${base} is in use by another live process; using ${this.#consumer}`);
    }
  }

  /** Takes or renews the lease on `name`; false when another live process holds it. */
  async #holdLease(link: Link, name: string): Promise<boolean> {
    const reply = await this.#script(link, 'lease', [this.#keys.lease(name)], [this.#nonce, LEASE_MS, 'hold']);
    return outcomeOf('lease', reply, { prefix: this.#opts.queuePrefix }) === 'lease-held';
  }

  async #renewLease(): Promise<void> {
    if (!this.#leased || this.#renewing || this.#closed) return;
    this.#renewing = true;
    try {
      const link = await this.#commandLink();
      const held = await this.#holdLease(link, this.#leased);
      if (!held && !this.#leaseLostWarned) {
        this.#leaseLostWarned = true;
        this.#log.warn(`another process took the consumer name ${this.#leased} after this one stalled for over ${LEASE_MS / 1000} s; ` +
          'chunks both hold may be computed twice (the aggregate counts them once)');
      }
    } catch (err) {
      if (!this.#closed) this.#log.debug('could not renew the consumer-name lease', { error: (err as Error).message });
    } finally {
      this.#renewing = false;
    }
  }

  // ------------------------------------------------------------ internals: connections and commands

  async #script(link: Link, name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const script = loadScripts().get(name)!;
    if (keys.length !== script.numberOfKeys) throw new TtgError(`script ${name} takes ${script.numberOfKeys} keys, given ${keys.length}`);
    return this.#run(link, (c) => {
      const command = (c as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[script.command]!;
      return command.call(c, ...keys, ...args);
    });
  }

  /** Runs commands on a link, turning connection and protocol failures into errors that say what to do. */
  async #run<T>(link: Link, fn: (client: Redis) => Promise<T>): Promise<T> {
    try {
      return await fn(link.client);
    } catch (err) {
      throw this.#explain(link, err);
    }
  }

  #explain(link: Link, err: unknown): unknown {
    const address = this.#opts.connection.address;
    const cause = link.lastError ?? err;
    const detail = redact(cause instanceof Error ? cause.message : String(cause));
    if (isRedisError(err, 'WRONGPASS', 'NOAUTH', 'invalid password', 'invalid username-password')) {
      return new BrokerUnavailableError(
        `Redis at ${address} refused the credentials (${redact((err as Error).message)}); check the password in REDIS_URL or REDIS_PASSWORD`,
        { cause: err });
    }
    if (link.gaveUp || (link.client.status === 'end' && !this.#closed)) {
      return new BrokerUnavailableError(
        `cannot reach Redis at ${address}: gave up after ${this.#opts.connectTimeoutSeconds} s of retrying (${detail}); ` +
        'check REDIS_HOST and REDIS_PORT (or REDIS_URL), that Redis runs, or raise CONNECT_TIMEOUT_SECONDS',
        { cause: err });
    }
    if (isRedisError(err, 'NOGROUP')) {
      return new SweepGoneError(
        `the sweep's task stream ${this.#keys.tasks} or its group ${this.#keys.group} is gone from Redis at ${address} ` +
        `(was 'ttg reset' run while workers were busy?)`, { cause: err });
    }
    return err;
  }

  #commandLink(): Promise<Link> {
    return this.#link('commands');
  }

  #blockingLink(): Promise<Link> {
    return this.#link('blocking');
  }

  /** The connection for `role`, opened on first use; a failed open is forgotten so the next call retries. */
  #link(role: Link['role']): Promise<Link> {
    if (this.#closed) return Promise.reject(new TtgError('the Redis backend is closed'));
    this.#linkByRole[role] ??= this.#open(role).catch((err) => {
      delete this.#linkByRole[role];
      throw err;
    });
    return this.#linkByRole[role];
  }

  /**
   * Opens a connection and waits until it answers. ioredis reconnects with
   * backoff after every loss; past CONNECT_TIMEOUT_SECONDS without a working
   * connection the retry strategy gives up, queued commands fail, and
   * #explain() names the address (never the password). Commands wait
   * through an outage (no per-command retry limit), so the timeout is the
   * one bound. Blocking reads get a connection of their own, so a worker
   * waiting for tasks never delays its commits and heartbeats.
   */
  async #open(role: Link['role']): Promise<Link> {
    const timeoutMs = this.#opts.connectTimeoutSeconds * 1000;
    const options: RedisOptions = {
      ...connectionTarget(this.#opts.connection),
      // RESP2: raw replies of call() keep their classic shapes (under RESP3,
      // XREADGROUP's map would arrive flattened as [stream, entries]).
      protocol: 2,
      lazyConnect: true,
      maxRetriesPerRequest: null,
      connectTimeout: Math.min(10_000, Math.max(500, timeoutMs)),
      connectionName: `ttg-${role}-${this.#workerId}`,
      retryStrategy: (attempt: number) => {
        const now = Date.now();
        link.downSince ??= now;
        const elapsed = now - link.downSince;
        if (elapsed >= timeoutMs) {
          link.gaveUp = true;
          return null;
        }
        return Math.max(1, Math.min(timeoutMs - elapsed, backoffDelay(attempt, RECONNECT_BACKOFF)));
      },
    };
    const link: Link = { client: new Redis(options), role, downSince: Date.now(), lastError: null, gaveUp: false };
    const address = this.#opts.connection.address;
    let lost = false;
    // ioredis emits status events on the next tick, after its retry strategy has already run (and set
    // downSince), so whether the link was up is kept here rather than read from downSince.
    let up = false;
    link.client.on('close', () => {
      // Down after having been up: say so once; connection attempts that fail at start-up stay quiet.
      if (up && !this.#closed) {
        up = false;
        lost = true;
        this.#log.warn(`lost the connection to Redis at ${address}; retrying for up to ${this.#opts.connectTimeoutSeconds} s`, {
          connection: role,
        });
      }
      link.downSince ??= Date.now();
    });
    link.client.on('error', (err: Error) => {
      link.lastError = err;
      if (!this.#closed) this.#log.debug('Redis connection error', { error: redact(err.message), connection: role });
    });
    link.client.on('ready', () => {
      if (lost) {
        this.#reconnects++;
        this.#log.info(`reconnected to Redis at ${address}`, { connection: role });
      }
      lost = false;
      up = true;
      link.downSince = null;
      link.lastError = null;
    });
    if (role === 'commands') {
      for (const script of loadScripts().values()) {
        link.client.defineCommand(script.command, { lua: script.lua, numberOfKeys: script.numberOfKeys });
      }
    }
    this.#links.push(link);
    link.client.connect().catch(() => {}); // failures surface through the ping below
    try {
      await this.#run(link, (c) => c.ping());
    } catch (err) {
      this.#links = this.#links.filter((l) => l !== link);
      hangUp(link.client);
      throw err;
    }
    if (this.#closed) hangUp(link.client);
    return link;
  }
}

/**
 * Closes a connection unless it is closed already: ioredis's disconnect() on
 * an ended connection arms a 2 s timer that nothing clears, which keeps the
 * process alive for nothing.
 */
function hangUp(client: Redis): void {
  if (client.status !== 'end') client.disconnect();
}


/** XINFO's flat [key, value, ...] arrays, values kept as they come (lag may be nil). */
function fieldsOfLoose(flat: unknown): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (Array.isArray(flat)) for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = flat[i + 1];
  return fields;
}


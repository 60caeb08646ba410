/**
 * The embedded backend: the queue contract inside one process, for `ttg run`
 * (several in-process workers sharing one pool) and for tests. It keeps the
 * contract of backends/types.ts as the conformance suite checks it: entries
 * are owned by the consumer that took them, completion checks ownership,
 * entries idle past the stale threshold can be claimed, failed chunks come
 * back after the retry delay and are dead-lettered past MAX_RETRIES. Unlike
 * Redis nothing survives the process, and a "crash" is only close().
 */
import type {
  BackendEntry, BackendOptions, ChunkResult, ConnectionState, ConsumerRecord, DeadLetter, Delivery, InitOutcome, QueueBackend,
  QueueStats, RedriveOutcome, SweepSettings,
} from './types.js';
import { parseTaskFields, taskFields } from './messages.js';
import { SettingsMismatchError } from '../core/errors.js';
import type { FailOutcome } from '../core/outcomes.js';
import { chunkIndexOf, chunkTaskOf, mismatchMessage, settingsDifference, sweepTasks } from '../core/sweep.js';

/** A task entry as a broker would hold it: wire fields, parsed (and checked) when handed out. */
interface Entry {
  id: number;
  fields: Record<string, unknown>;
}

interface PendingEntry {
  entry: Entry;
  consumer: string;
  lastSeen: number;
}

interface Store {
  settings: SweepSettings | null;
  totalChunks: number;
  nextId: number;
  ready: Entry[];
  pending: Map<number, PendingEntry>;
  results: ChunkResult[];
  done: Set<string>;
  dead: DeadLetter[];
  deadChunks: Set<string>;
  attempts: Map<string, number>;
  waiters: Set<() => void>;
  consumers: Set<string>;
  /** Retry copies waiting out the retry delay. */
  retrying: number;
  /** Per chunk: times re-driven, and how many entries `dead` had at its last re-drive (earlier ones are re-driven). */
  redrives: Map<string, { count: number; deadBefore: number }>;
  joined: ConsumerRecord[];
}

/** The embedded queue reads no variables: there is nothing to connect to. */
export type MemoryConnection = Record<string, never>;

/** Its registry entry. */
export const memoryBackend: BackendEntry<MemoryConnection> = {
  variables: [],
  readEnv: () => ({}),
  create: async (options) => new MemoryBackend(options),
};

const stores = new Map<string, Store>();

function storeFor(prefix: string): Store {
  let store = stores.get(prefix);
  if (!store) {
    store = {
      settings: null, totalChunks: 0, nextId: 1, ready: [], pending: new Map(), results: [], done: new Set(),
      dead: [], deadChunks: new Set(), attempts: new Map(), waiters: new Set(), consumers: new Set(), retrying: 0,
      redrives: new Map(), joined: [],
    };
    stores.set(prefix, store);
  }
  return store;
}

/**
 * Adds a task entry as given, like a hand-made message on a real broker
 * (the conformance suite's malformed and out-of-range tasks). It goes
 * through the same parse and chunk check as every other entry.
 */
export function enqueueRawTask(prefix: string, fields: Record<string, unknown>): void {
  const store = storeFor(prefix);
  store.ready.push({ id: store.nextId++, fields: { ...fields } });
  wake(store);
}

function wake(store: Store): void {
  for (const w of [...store.waiters]) w();
}

export class MemoryBackend implements QueueBackend {
  readonly kind = 'memory' as const;
  #store: Store;
  #opts: BackendOptions<MemoryConnection>;
  #consumer = '';
  #closed = false;

  constructor(opts: BackendOptions<MemoryConnection>) {
    this.#opts = opts;
    this.#store = storeFor(opts.queuePrefix);
  }

  get connectionState(): ConnectionState {
    return this.#closed ? 'closed' : this.#consumer ? 'ready' : 'connecting';
  }

  /** In-process: never disconnected. */
  readonly reconnects = 0;

  get consumerName(): string {
    return this.#consumer;
  }

  async init(settings: SweepSettings): Promise<InitOutcome> {
    const store = this.#store;
    const base = `worker-${this.#opts.workerId}`;
    let name = base;
    for (let n = 2; store.consumers.has(name); n++) name = `${base}-${this.#opts.hostName}-${n}`;
    store.consumers.add(name);
    this.#consumer = name;
    if (store.settings) {
      const diff = settingsDifference(store.settings, settings);
      if (diff) throw new SettingsMismatchError(mismatchMessage(diff, this.#opts.queuePrefix));
      this.#recordJoin();
      return { created: false, totalChunks: store.totalChunks };
    }
    store.settings = { ...settings };
    let count = 0;
    for (const task of sweepTasks(settings)) {
      store.ready.push({ id: store.nextId++, fields: taskFields(task) });
      count++;
    }
    store.totalChunks = count;
    this.#recordJoin();
    wake(store);
    return { created: true, totalChunks: store.totalChunks };
  }

  #recordJoin(): void {
    this.#store.joined.push({ consumer: this.#consumer, workerId: this.#opts.workerId, host: this.#opts.hostName, joinedAt: new Date().toISOString() });
  }

  #deliver(p: PendingEntry, recovered: boolean): Delivery {
    const parsed = parseTaskFields(p.entry.fields, this.#store.settings);
    if (!parsed.ok) return { task: null, malformed: parsed.reason, chunkId: parsed.chunkId, attempt: 0, recovered, handle: p.entry.id };
    return {
      task: parsed.task,
      chunkId: parsed.task.chunkId,
      attempt: this.#store.attempts.get(parsed.task.chunkId) ?? 0,
      recovered,
      handle: p.entry.id,
    };
  }

  async take(max: number, waitMs: number): Promise<Delivery[]> {
    const store = this.#store;
    // A settled sweep has nothing more to come: no waiting (a chunk settled before the wait began wakes nobody).
    if (store.ready.length === 0 && waitMs > 0 && !this.#closed && !this.#settledNow()) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          store.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        store.waiters.add(done);
      });
    }
    const out: Delivery[] = [];
    while (out.length < max && store.ready.length > 0) {
      const entry = store.ready.shift()!;
      const p: PendingEntry = { entry, consumer: this.#consumer, lastSeen: Date.now() };
      store.pending.set(entry.id, p);
      out.push(this.#deliver(p, false));
    }
    return out;
  }

  #owned(delivery: Delivery): PendingEntry | null {
    const p = this.#store.pending.get(delivery.handle as number);
    return p && p.consumer === this.#consumer ? p : null;
  }

  async complete(delivery: Delivery, result: ChunkResult): Promise<boolean> {
    const p = this.#owned(delivery);
    if (!p) return false;
    this.#store.pending.delete(p.entry.id);
    this.#store.results.push(structuredClone(result));
    this.#store.done.add(result.chunkId);
    this.#wakeIfSettled();
    return true;
  }

  async fail(delivery: Delivery, reason: string): Promise<FailOutcome> {
    const store = this.#store;
    const p = this.#owned(delivery);
    if (!p) return 'not-owner';
    store.pending.delete(p.entry.id);
    const task = delivery.task;
    if (task === null) {
      // A malformed entry can never succeed: dead at once, and it settles no chunk.
      store.dead.push({ chunkId: delivery.chunkId, reason, attempts: 1, workerId: this.#opts.workerId, task: null });
      return 'dead-lettered';
    }
    const attempts = (store.attempts.get(task.chunkId) ?? 0) + 1;
    store.attempts.set(task.chunkId, attempts);
    if (attempts >= this.#opts.maxRetries) {
      store.dead.push({ chunkId: task.chunkId, reason, attempts, workerId: this.#opts.workerId, task });
      if (!store.done.has(task.chunkId)) store.deadChunks.add(task.chunkId);
      this.#wakeIfSettled();
      return 'dead-lettered';
    }
    const delay = this.#opts.retryDelayMs;
    const again: Entry = { ...p.entry, id: store.nextId++ };
    const requeue = () => {
      store.retrying--;
      store.ready.push(again);
      wake(store);
    };
    store.retrying++;
    if (delay > 0) setTimeout(requeue, delay).unref();
    else requeue();
    return 'retried';
  }

  async release(deliveries: Delivery[]): Promise<void> {
    for (const d of deliveries) {
      const p = this.#owned(d);
      if (!p) continue;
      this.#store.pending.delete(p.entry.id);
      this.#store.ready.unshift(p.entry);
    }
    wake(this.#store);
  }

  async heartbeat(deliveries: Delivery[]): Promise<void> {
    const now = Date.now();
    for (const d of deliveries) {
      const p = this.#owned(d);
      if (p) p.lastSeen = now;
    }
  }

  async claimStale(max: number, thresholdMs: number): Promise<Delivery[]> {
    const now = Date.now();
    const out: Delivery[] = [];
    for (const p of this.#store.pending.values()) {
      if (out.length >= max) break;
      if (p.consumer === this.#consumer || now - p.lastSeen < thresholdMs) continue;
      p.consumer = this.#consumer;
      p.lastSeen = now;
      out.push(this.#deliver(p, true));
    }
    return out;
  }

  /** The last chunk settled: waiting take()s return at once, so idle workers leave now rather than after a poll. */
  #wakeIfSettled(): void {
    if (this.#settledNow()) wake(this.#store);
  }

  #settledNow(): boolean {
    const s = this.#store;
    if (!s.settings) return false;
    let settled = s.done.size;
    for (const c of s.deadChunks) if (!s.done.has(c)) settled++;
    return settled >= s.totalChunks;
  }

  async isSettled(): Promise<boolean> {
    return this.#settledNow();
  }

  /** Unsettled chunks are in someone's hands, ready, or waiting out a retry delay: nothing here is ever lost. */
  async hasOutstanding(): Promise<boolean> {
    return this.#store.settings !== null && !(await this.isSettled());
  }

  async readSettings(): Promise<SweepSettings | null> {
    return this.#store.settings ? { ...this.#store.settings } : null;
  }

  async readResults(): Promise<ChunkResult[]> {
    return structuredClone(this.#store.results);
  }

  async readDeadLetters(): Promise<DeadLetter[]> {
    const { dead, redrives } = this.#store;
    return dead.map((d, i) => {
      const below = d.task ? redrives.get(d.task.chunkId)?.deadBefore ?? 0 : 0;
      return i < below ? { ...structuredClone(d), redriven: true } : structuredClone(d);
    });
  }

  async redriveDead(chunkIds: readonly string[] | null): Promise<RedriveOutcome> {
    const s = this.#store;
    if (!s.settings) return { redriven: [] };
    for (const chunkId of chunkIds ?? []) {
      if (chunkIndexOf(chunkId, s.totalChunks) === null) return { refused: { chunkId, why: 'not-a-chunk' } };
      if (s.done.has(chunkId)) return { refused: { chunkId, why: 'completed' } };
      if (!s.deadChunks.has(chunkId)) return { refused: { chunkId, why: 'not-dead' } };
    }
    const redriven: string[] = [];
    for (const chunkId of chunkIds ? [...new Set(chunkIds)] : [...s.deadChunks].sort()) {
      s.deadChunks.delete(chunkId);
      s.attempts.delete(chunkId);
      s.redrives.set(chunkId, { count: (s.redrives.get(chunkId)?.count ?? 0) + 1, deadBefore: s.dead.length });
      s.ready.push({ id: s.nextId++, fields: taskFields(chunkTaskOf(s.settings, chunkId)!) });
      redriven.push(chunkId);
    }
    wake(s);
    return { redriven };
  }

  async readRedrives(): Promise<Record<string, number>> {
    return Object.fromEntries([...this.#store.redrives].map(([chunkId, r]) => [chunkId, r.count]));
  }

  async readConsumers(): Promise<ConsumerRecord[]> {
    return structuredClone(this.#store.joined);
  }

  async stats(): Promise<QueueStats> {
    const s = this.#store;
    const consumers: Record<string, number> = {};
    for (const p of s.pending.values()) consumers[p.consumer] = (consumers[p.consumer] ?? 0) + 1;
    const deadWithoutResult = [...s.deadChunks].filter((c) => !s.done.has(c)).length;
    const settled = s.done.size + deadWithoutResult;
    return {
      settings: s.settings ? { ...s.settings } : null,
      totalChunks: s.totalChunks,
      completedChunks: s.done.size,
      deadLettered: deadWithoutResult,
      settledChunks: settled,
      ready: s.ready.length,
      inFlight: s.pending.size,
      retrying: s.retrying,
      results: s.results.length,
      consumers,
    };
  }

  async reset(): Promise<void> {
    const s = this.#store;
    stores.delete(this.#opts.queuePrefix);
    wake(s);
    this.#store = storeFor(this.#opts.queuePrefix);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#store.consumers.delete(this.#consumer);
  }
}

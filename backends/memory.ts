/**
 * The embedded backend: the queue contract inside one process, for `ttg run`
 * (several in-process workers sharing one pool) and for tests. Same
 * semantics as the Redis backend: entries are owned by the consumer that
 * took them, completion checks ownership, idle entries can be claimed, failed
 * chunks are retried then dead-lettered.
 */
import type {
  BackendOptions, ChunkResult, ConnectionState, ChunkTask, DeadLetter, Delivery, InitOutcome, QueueBackend, QueueStats,
  SweepSettings,
} from './types.js';
import { mismatchMessage, settingsDifference, sweepTasks } from './messages.js';
import { SettingsMismatchError } from '../engine/errors.js';

/** The embedded queue only ever holds the tasks it made itself, so no entry is malformed. */
interface Entry {
  id: number;
  task: ChunkTask;
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
}

const stores = new Map<string, Store>();

function storeFor(prefix: string): Store {
  let store = stores.get(prefix);
  if (!store) {
    store = {
      settings: null, totalChunks: 0, nextId: 1, ready: [], pending: new Map(), results: [], done: new Set(),
      dead: [], deadChunks: new Set(), attempts: new Map(), waiters: new Set(), consumers: new Set(),
    };
    stores.set(prefix, store);
  }
  return store;
}

function wake(store: Store): void {
  for (const w of [...store.waiters]) w();
}

export class MemoryBackend implements QueueBackend {
  readonly kind = 'memory' as const;
  #store: Store;
  #opts: BackendOptions;
  #consumer = '';
  #closed = false;

  constructor(opts: BackendOptions) {
    this.#opts = opts;
    this.#store = storeFor(opts.config.queuePrefix);
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
    for (let n = 2; store.consumers.has(name); n++) name = `${base}-${this.#opts.config.hostName}-${n}`;
    store.consumers.add(name);
    this.#consumer = name;
    if (store.settings) {
      const diff = settingsDifference(store.settings, settings);
      if (diff) throw new SettingsMismatchError(mismatchMessage(diff, this.#opts.config.queuePrefix));
      return { created: false, totalChunks: store.totalChunks };
    }
    store.settings = { ...settings };
    for (const task of sweepTasks(settings)) store.ready.push({ id: store.nextId++, task });
    store.totalChunks = store.ready.length;
    wake(store);
    return { created: true, totalChunks: store.totalChunks };
  }

  #deliver(p: PendingEntry, recovered: boolean): Delivery {
    const { entry } = p;
    return {
      task: entry.task,
      chunkId: entry.task.chunkId,
      attempt: this.#store.attempts.get(entry.task.chunkId) ?? 0,
      recovered,
      handle: entry.id,
    };
  }

  async take(max: number, waitMs: number): Promise<Delivery[]> {
    const store = this.#store;
    if (store.ready.length === 0 && waitMs > 0 && !this.#closed) {
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
    return true;
  }

  async fail(delivery: Delivery, reason: string): Promise<'retried' | 'dead-lettered' | 'not-owner'> {
    const store = this.#store;
    const p = this.#owned(delivery);
    if (!p) return 'not-owner';
    store.pending.delete(p.entry.id);
    const attempts = (store.attempts.get(p.entry.task.chunkId) ?? 0) + 1;
    store.attempts.set(p.entry.task.chunkId, attempts);
    if (attempts >= this.#opts.config.maxRetries) {
      store.dead.push({ chunkId: p.entry.task.chunkId, reason, attempts, workerId: this.#opts.workerId, task: p.entry.task });
      store.deadChunks.add(p.entry.task.chunkId);
      return 'dead-lettered';
    }
    const delay = this.#opts.config.retryDelayMs;
    const again: Entry = { ...p.entry, id: store.nextId++ };
    const requeue = () => {
      store.ready.push(again);
      wake(store);
    };
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

  async isSettled(): Promise<boolean> {
    const s = this.#store;
    if (!s.settings) return false;
    let settled = s.done.size;
    for (const c of s.deadChunks) if (!s.done.has(c)) settled++;
    return settled >= s.totalChunks;
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
    return structuredClone(this.#store.dead);
  }

  async stats(): Promise<QueueStats> {
    const s = this.#store;
    const consumers: Record<string, number> = {};
    for (const p of s.pending.values()) consumers[p.consumer] = (consumers[p.consumer] ?? 0) + 1;
    const settled = s.done.size + [...s.deadChunks].filter((c) => !s.done.has(c)).length;
    return {
      settings: s.settings ? { ...s.settings } : null,
      totalChunks: s.totalChunks,
      completedChunks: s.done.size,
      deadLettered: s.deadChunks.size,
      ready: s.ready.length,
      inFlight: s.pending.size,
      retrying: Math.max(0, s.totalChunks - settled - s.ready.length - s.pending.size),
      results: s.results.length,
      consumers,
    };
  }

  async reset(): Promise<void> {
    const s = this.#store;
    stores.delete(this.#opts.config.queuePrefix);
    wake(s);
    this.#store = storeFor(this.#opts.config.queuePrefix);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#store.consumers.delete(this.#consumer);
  }
}

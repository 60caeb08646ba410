/**
 * The queue worker loop against a scripted fake backend: no broker, no
 * threads. Each test scripts what the queue answers and checks what the loop
 * asked of it (complete, fail, release) and the summary it reports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../engine/config.js';
import { BrokerUnavailableError } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import type { KernelPool } from '../engine/pool.js';
import { QueueWorker } from '../engine/queue-worker.js';
import { waitFor } from './helpers.js';
import type {
  ConsumerRecord, RedriveOutcome, ChunkResult, DeadLetter, Delivery, InitOutcome, QueueBackend, QueueStats, SweepSettings,
} from '../backends/types.js';

type Call = { op: string; chunkId?: string; detail?: string };

/** A queue whose answers the test scripts; it records every call. */
class ScriptedBackend implements QueueBackend {
  readonly kind = 'memory' as const;
  readonly consumerName = 'worker-scripted';
  readonly connectionState = 'ready' as const;
  readonly reconnects = 0;
  readonly calls: Call[] = [];
  /** Deliveries take() hands out, in order. */
  queue: Delivery[] = [];
  /** Deliveries claimStale() hands out (a stopped worker's chunks), in order. */
  stale: Delivery[] = [];
  /** The `max` of every take() and claimStale(), in order. */
  asked: Array<{ op: 'take' | 'claim'; max: number }> = [];
  settled = false;
  outstanding = false;
  /** What complete() does: resolve true/false or throw. */
  onComplete: (d: Delivery) => Promise<boolean> = async () => true;
  onTake: () => Promise<void> = async () => {};

  async init(settings: SweepSettings): Promise<InitOutcome> {
    this.calls.push({ op: 'init' });
    return { created: true, totalChunks: Math.ceil(settings.totalParams / settings.chunkSize) };
  }
  async take(max: number, waitMs: number): Promise<Delivery[]> {
    this.asked.push({ op: 'take', max });
    await this.onTake();
    const out = this.queue.splice(0, max);
    if (out.length === 0 && waitMs > 0) await new Promise((r) => setTimeout(r, Math.min(waitMs, 20)));
    return out;
  }
  async complete(d: Delivery, _r: ChunkResult): Promise<boolean> {
    this.calls.push({ op: 'complete', chunkId: d.chunkId });
    return this.onComplete(d);
  }
  async fail(d: Delivery, reason: string): Promise<'retried' | 'dead-lettered' | 'not-owner'> {
    this.calls.push({ op: 'fail', chunkId: d.chunkId, detail: reason });
    return 'retried';
  }
  async release(ds: Delivery[]): Promise<void> {
    for (const d of ds) this.calls.push({ op: 'release', chunkId: d.chunkId });
  }
  async heartbeat(): Promise<void> {}
  async claimStale(max: number): Promise<Delivery[]> {
    this.asked.push({ op: 'claim', max });
    return this.stale.splice(0, max);
  }
  async isSettled(): Promise<boolean> {
    return this.settled;
  }
  async hasOutstanding(): Promise<boolean> {
    return this.outstanding;
  }
  async readSettings(): Promise<SweepSettings | null> {
    return null;
  }
  async readResults(): Promise<ChunkResult[]> {
    return [];
  }
  async readDeadLetters(): Promise<DeadLetter[]> {
    return [];
  }
  async redriveDead(): Promise<RedriveOutcome> {
    return { redriven: [] };
  }
  async readRedrives(): Promise<Record<string, number>> {
    return {};
  }
  async readConsumers(): Promise<ConsumerRecord[]> {
    return [];
  }
  async stats(): Promise<QueueStats> {
    throw new Error('not scripted');
  }
  async reset(): Promise<void> {}
  async close(): Promise<void> {}
  ops(op: string): string[] {
    return this.calls.filter((c) => c.op === op).map((c) => c.chunkId ?? '');
  }
}

function delivery(index: number, attempt = 0): Delivery {
  const chunkId = String(index).padStart(5, '0');
  return {
    task: { chunkId, startParam: index * 10, endParam: index * 10 + 10, totalParams: 100 }, chunkId, attempt,
    recovered: false, handle: { index, attempt },
  };
}

/** A pool that computes nothing: count = range length, or what `run` scripts. */
function fakePool(run?: (start: number, end: number) => Promise<void>): KernelPool {
  return {
    threads: 1,
    async runRange(start: number, end: number) {
      await run?.(start, end);
      const count = end - start;
      return { stats: { count, min: start, max: end - 1, partials: [count] }, threadSeconds: 0.001 };
    },
  } as unknown as KernelPool;
}

function config(extra: Record<string, string> = {}) {
  return loadConfig({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'memory', THREADS: '1', PREFETCH: '2', IDLE_TIMEOUT_SECONDS: '5',
    STALE_CHECK_INTERVAL_SECONDS: '60', TOTAL_PARAMS: '100', CHUNK_SIZE: '10', ...extra,
  });
}

test('a commit the broker refuses is handed back, not failed: no retry attempt is used up', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(0)];
  let refusals = 1;
  backend.onComplete = async (d) => {
    if (refusals-- > 0) throw new Error('connection reset by peer');
    backend.settled = true;
    return d.chunkId === '00000';
  };
  // The chunk handed back comes round again, once.
  let redelivered = false;
  backend.onTake = async () => {
    if (!redelivered && backend.ops('release').length === 1) {
      redelivered = true;
      backend.queue.push(delivery(0));
    }
  };
  const worker = new QueueWorker({ config: config(), backend, pool: fakePool(), log: silentLogger, pollMs: 20 });
  const summary = await worker.run();
  assert.deepEqual(backend.ops('fail'), [], 'a refused commit is no kernel failure');
  assert.deepEqual(backend.ops('release'), ['00000'], 'the chunk went back to the queue untouched');
  assert.deepEqual(backend.ops('complete'), ['00000', '00000']);
  assert.equal(summary.failed_attempts, 0);
  assert.equal(summary.chunks_processed, 1);
  assert.equal(summary.status, 'completed');
});

test('a kernel failure is reported to the backend with its reason and counted', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(3)];
  const pool = fakePool(async () => {
    backend.settled = true;
    throw new Error('kernel exploded');
  });
  const summary = await new QueueWorker({ config: config(), backend, pool, log: silentLogger, pollMs: 20 }).run();
  assert.deepEqual(backend.calls.filter((c) => c.op === 'fail').map((c) => [c.chunkId, c.detail]), [['00003', 'kernel exploded']]);
  assert.equal(summary.failed_attempts, 1);
  assert.equal(summary.chunks_processed, 0);
});

test('a commit refused because another worker owns the chunk counts nothing', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(1)];
  backend.onComplete = async () => {
    backend.settled = true;
    return false;
  };
  const summary = await new QueueWorker({ config: config(), backend, pool: fakePool(), log: silentLogger, pollMs: 20 }).run();
  assert.deepEqual(backend.ops('complete'), ['00001']);
  assert.deepEqual(backend.ops('fail'), []);
  assert.equal(summary.chunks_processed, 0);
  assert.equal(summary.params_processed, 0);
});

test('idle timeout: nothing to take and nothing outstanding for IDLE_TIMEOUT_SECONDS ends the loop', async () => {
  const backend = new ScriptedBackend();
  const started = Date.now();
  const summary = await new QueueWorker({
    config: config({ IDLE_TIMEOUT_SECONDS: '0.3' }), backend, pool: fakePool(), log: silentLogger, pollMs: 20,
  }).run();
  const elapsed = Date.now() - started;
  assert.equal(summary.status, 'idle_timeout');
  assert.ok(elapsed >= 300, `waited the idle timeout (${elapsed} ms)`);
  assert.ok(elapsed < 5000, `and no longer (${elapsed} ms)`);
});

test('idle timeout waits while chunks are outstanding elsewhere', async () => {
  const backend = new ScriptedBackend();
  backend.outstanding = true;
  const started = Date.now();
  let pushed = false;
  backend.onTake = async () => {
    // Outstanding work turns up well after the 0.1 s idle timeout: a loop that ignored it would be gone.
    if (!pushed && Date.now() - started > 250) {
      pushed = true;
      backend.queue.push(delivery(2));
    }
  };
  backend.onComplete = async () => {
    backend.settled = true;
    return true;
  };
  const summary = await new QueueWorker({
    config: config({ IDLE_TIMEOUT_SECONDS: '0.1' }), backend, pool: fakePool(), log: silentLogger, pollMs: 20,
  }).run();
  assert.equal(summary.status, 'completed');
  assert.equal(summary.chunks_processed, 1);
});

test('a fatal broker error ends run() with that error', async () => {
  const backend = new ScriptedBackend();
  const lost = new BrokerUnavailableError('cannot reach the broker at 127.0.0.1:1');
  backend.onTake = async () => {
    throw lost;
  };
  await assert.rejects(new QueueWorker({ config: config(), backend, pool: fakePool(), log: silentLogger, pollMs: 20 }).run(), (err) => err === lost);
});

test('a fatal broker error during a commit ends run() with that error, and nothing is failed', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(0), delivery(1)];
  const lost = new BrokerUnavailableError('lost the broker');
  backend.onComplete = async () => {
    throw lost;
  };
  await assert.rejects(new QueueWorker({ config: config(), backend, pool: fakePool(), log: silentLogger, pollMs: 20 }).run(), (err) => err === lost);
  assert.deepEqual(backend.ops('fail'), []);
});

test('abort gives the chunks in hand back untouched and never commits them', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(4), delivery(5)];
  let started = 0;
  let allStarted!: () => void;
  const inHand = new Promise<void>((resolve) => (allStarted = resolve));
  let finish!: () => void;
  const blocked = new Promise<void>((resolve) => (finish = resolve));
  const pool = fakePool(async () => {
    if (++started === 2) allStarted();
    await blocked;
  });
  const worker = new QueueWorker({ config: config(), backend, pool, log: silentLogger, pollMs: 20 });
  const running = worker.run();
  await inHand;
  await worker.abort();
  finish(); // the threads' work ends after the abort: its results must be dropped
  const summary = await running;
  assert.equal(summary.status, 'interrupted');
  assert.deepEqual(backend.ops('release').sort(), ['00004', '00005']);
  assert.deepEqual(backend.ops('complete'), []);
  assert.deepEqual(backend.ops('fail'), []);
});

test('stop finishes and commits the chunks in hand, then reports interrupted', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(6), delivery(7), delivery(8)];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let started = 0;
  let twoInHand!: () => void;
  const inHand = new Promise<void>((resolve) => (twoInHand = resolve));
  const pool = fakePool(async () => {
    if (++started === 2) twoInHand();
    await gate;
  });
  const worker = new QueueWorker({ config: config(), backend, pool, log: silentLogger, pollMs: 20 });
  const running = worker.run();
  await inHand;
  worker.stop();
  release();
  const summary = await running;
  assert.equal(summary.status, 'interrupted');
  assert.deepEqual(backend.ops('complete').sort(), ['00006', '00007']);
  assert.deepEqual(backend.queue.map((d) => d.chunkId), ['00008'], 'no chunk taken after the stop');
  assert.equal(summary.chunks_processed, 2);
});

test('no chunk is taken before the pool says its threads are up, and every chunk is stamped as started after that', async () => {
  const backend = new ScriptedBackend();
  backend.queue = [delivery(0), delivery(1)];
  let up = false;
  let takesBeforeUp = 0;
  backend.onTake = async () => {
    if (!up) takesBeforeUp++;
    if (backend.queue.length === 0) backend.settled = true;
  };
  let threadsUp!: () => void;
  const upAt: number[] = [];
  const pool = {
    ...fakePool(),
    ready: () => new Promise<void>((resolve) => {
      threadsUp = resolve;
    }),
  } as unknown as KernelPool;
  const stamped: string[] = [];
  backend.onComplete = async (d) => {
    stamped.push(d.chunkId);
    return true;
  };
  const completes: ChunkResult[] = [];
  // Wrapped to see each result's started_at.
  const complete = backend.complete.bind(backend);
  backend.complete = async (d, r) => {
    completes.push(r);
    return complete(d, r);
  };
  const running = new QueueWorker({ config: config(), backend, pool, log: silentLogger, pollMs: 20 }).run();
  // The worker joined (init) and now waits for the threads: give it every chance to take meanwhile.
  for (let i = 0; i < 20 && backend.ops('init').length === 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(backend.ops('init').length, 1, 'the worker joins the sweep while its threads start');
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(takesBeforeUp, 0, 'no take() before the threads are up');
  up = true;
  upAt.push(Date.now());
  threadsUp();
  const summary = await running;
  assert.equal(summary.chunks_processed, 2);
  assert.deepEqual(stamped.sort(), ['00000', '00001']);
  for (const r of completes) assert.ok(Date.parse(r.startedAt!) >= upAt[0]! - 1, `chunk ${r.chunkId} stamped as started before the threads were up`);
});

test('a thread left without work makes the worker take more, though most of its chunks in hand are still computing', async () => {
  const backend = new ScriptedBackend();
  backend.queue = Array.from({ length: 6 }, (_, i) => delivery(i));
  backend.onTake = async () => {
    if (backend.queue.length === 0) backend.settled = true;
  };
  // Chunks 0-2 compute until released (one thread's costly batch); the others at once, each leaving a thread idle.
  let release!: () => void;
  const costly = new Promise<void>((resolve) => {
    release = resolve;
  });
  const asked: number[] = [];
  let wantsWork = false;
  let listener: (() => void) | null = null;
  const base = fakePool(async (start) => {
    asked.push(start / 10);
    if (start < 30) return costly;
    wantsWork = true;
    queueMicrotask(() => listener?.());
  });
  const pool = {
    threads: 2, started: true, runRange: base.runRange,
    get wantsWork() {
      return wantsWork;
    },
    onWantsWork(l: () => void) {
      listener = l;
      return () => {
        listener = null;
      };
    },
  } as unknown as KernelPool;
  // PREFETCH 4: with chunks 0-2 in hand, one chunk's room is less than half: alone, not worth a take.
  const running = new QueueWorker({ config: config({ PREFETCH: '4', THREADS: '2' }), backend, pool, log: silentLogger, pollMs: 20 }).run();
  await waitFor('chunk 4 asked for', () => asked.includes(4), 2000).catch(() => {}); // the assertion below says what was asked
  const takenWhileCostlyRan = [...asked];
  release();
  const summary = await running;
  assert.ok(takenWhileCostlyRan.includes(4), `chunk 4 taken while chunks 0-2 still computed (asked for: ${takenWhileCostlyRan.join(', ')})`);
  assert.equal(listener, null, 'the worker stops listening to the pool when its run ends');
  assert.equal(summary.chunks_processed, 6);
  assert.deepEqual(backend.ops('complete').sort(), ['00000', '00001', '00002', '00003', '00004', '00005']);
});

test('a worker that finds the sweep settled at its first look had nothing to do; one that took chunks, or whose sweep settled while it waited, had', async () => {
  // Settled before the worker looked: it leaves without taking anything.
  const idle = new ScriptedBackend();
  idle.settled = true;
  const first = new QueueWorker({ config: config(), backend: idle, pool: fakePool(), log: silentLogger, pollMs: 20 });
  assert.equal((await first.run()).chunks_processed, 0);
  assert.equal(first.settledOnArrival, true);

  // It computed the last chunks, then found the sweep settled.
  const busy = new ScriptedBackend();
  busy.queue = [delivery(0), delivery(1)];
  busy.onComplete = async () => {
    busy.settled = busy.ops('complete').length === 2;
    return true;
  };
  const second = new QueueWorker({ config: config(), backend: busy, pool: fakePool(), log: silentLogger, pollMs: 20 });
  assert.equal((await second.run()).chunks_processed, 2);
  assert.equal(second.settledOnArrival, false);

  // Nothing to take at first, and the sweep settled (by other workers) while it waited.
  const late = new ScriptedBackend();
  let takes = 0;
  late.onTake = async () => {
    late.settled = ++takes >= 2;
  };
  const third = new QueueWorker({ config: config(), backend: late, pool: fakePool(), log: silentLogger, pollMs: 20 });
  assert.equal((await third.run()).chunks_processed, 0);
  assert.equal(third.settledOnArrival, false);
});

test('a worker that starts by finishing claimed chunks does not take them for its rate: it takes no more than it can hold', async () => {
  const backend = new ScriptedBackend();
  backend.stale = [delivery(0), delivery(1)].map((d) => ({ ...d, recovered: true }));
  backend.queue = Array.from({ length: 8 }, (_, i) => delivery(i + 2));
  backend.onComplete = async () => {
    backend.settled = backend.ops('complete').length === 10;
    return true;
  };
  // Chunks of ~30 ms, as the kill storm's (SIMULATE_WORK_MS=0.3 at 100 parameters); PREFETCH unset, so the
  // work in hand is sized by the worker's rate.
  const pool = fakePool(() => new Promise((r) => setTimeout(r, 30)));
  const summary = await new QueueWorker({ config: { ...config(), prefetchAuto: true }, backend, pool, log: silentLogger, pollMs: 20 }).run();
  assert.equal(summary.chunks_processed, 10);
  assert.equal(summary.chunks_recovered, 2);
  // ~30 chunks a second held for HOLD_SECONDS is less than the floor of PREFETCH (2). The two claimed chunks,
  // counted against the time since the first take, made it ask for hundreds.
  const most = Math.max(...backend.asked.filter((a) => a.op === 'take').map((a) => a.max));
  assert.ok(most <= 4, `the takes asked for at most ${most} chunks`);
});

test('a stopped worker\'s chunks are claimed as fast as there is room, not one claim per STALE_CHECK_INTERVAL_SECONDS', async () => {
  const backend = new ScriptedBackend();
  // Twenty chunks a dead worker left behind; nothing new in the queue.
  backend.stale = Array.from({ length: 20 }, (_, i) => ({ ...delivery(i), recovered: true }));
  backend.onComplete = async () => {
    backend.settled = backend.ops('complete').length === 20;
    return true;
  };
  // The next stale check would be a minute away: the twenty are claimed before that only if the worker looks
  // again while a claim fills the room it had.
  const worker = new QueueWorker({
    config: config({ STALE_CHECK_INTERVAL_SECONDS: '60', IDLE_TIMEOUT_SECONDS: '30' }), backend, pool: fakePool(), log: silentLogger, pollMs: 20,
  });
  const summary = await worker.run();
  assert.equal(summary.status, 'completed');
  assert.equal(summary.chunks_recovered, 20);
  assert.deepEqual(backend.ops('complete').sort(), backend.ops('complete').map((_, i) => String(i).padStart(5, '0')));
  assert.ok(backend.asked.filter((a) => a.op === 'claim').every((a) => a.max <= 2), 'each claim asks for no more than the room (PREFETCH 2)');
});

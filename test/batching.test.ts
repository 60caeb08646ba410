/**
 * The batched hot path: completions that travel together to Redis are each
 * still checked for ownership and counted once; a worker waiting for tasks
 * is woken when another settles the sweep; the pool batches small ranges
 * into shared thread tasks, or computes the cheapest on the calling thread,
 * without changing a single statistic.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { RedisBackend } from '../backends/redis/backend.js';
import type { ChunkResult, Delivery } from '../backends/types.js';
import { loadConfig } from '../engine/config.js';
import { backendOptions } from '../engine/backend.js';
import { KernelPool, leastBusy } from '../engine/pool.js';
import { toChunkStats } from '../engine/stats.js';
import { createKernelRunner } from '../kernel/index.js';
import { Redis } from 'ioredis';
import { silentLogger } from '../core/log.js';
import { golden, randomPrefix, REDIS_HOST, REDIS_PORT, requireRedis } from './helpers.js';

const opened: RedisBackend[] = [];
after(async () => {
  for (const b of opened) {
    await b.reset().catch(() => {});
    await b.close().catch(() => {});
  }
});

function redis(prefix: string, workerId: string): RedisBackend {
  const config = loadConfig({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_HOST, REDIS_PORT: String(REDIS_PORT), QUEUE_PREFIX: prefix,
    TOTAL_PARAMS: '1000', CHUNK_SIZE: '100', WORKER_ID: workerId, CONNECT_TIMEOUT_SECONDS: '5',
  });
  const b = new RedisBackend(backendOptions(config, 'redis', workerId, silentLogger));
  opened.push(b);
  return b;
}

const settings = { totalParams: 1000, chunkSize: 100, kernel: 'placeholder' };

function resultOf(d: Delivery, workerId: string): ChunkResult {
  const t = d.task!;
  const count = t.endParam - t.startParam;
  return {
    chunkId: t.chunkId, workerId, status: 'completed', durationSeconds: 0, completedAt: new Date().toISOString(),
    stats: { count, sum: count, min: 1, max: 1, avg: 1, argmin: t.startParam, argmax: t.startParam, partials: [count] },
  };
}

test('redis: completions sent in one batch are each checked for ownership; taken-over chunks publish nothing', async () => {
  await requireRedis();
  const prefix = randomPrefix('batch-own');
  const a = redis(prefix, 'a');
  const b = redis(prefix, 'b');
  await a.init(settings);
  await b.init(settings);
  const held = await a.take(10, 1000);
  assert.equal(held.length, 10);
  // b takes over three of them (idle 0 ms counts as stale here), as stale recovery would.
  const stolen = await b.claimStale(3, 0);
  assert.equal(stolen.length, 3);
  // All ten completions of a leave in the same turn, so they travel together.
  const answers = await Promise.all(held.map((d) => a.complete(d, resultOf(d, 'a'))));
  const stolenIds = new Set(stolen.map((d) => d.chunkId));
  held.forEach((d, i) => assert.equal(answers[i], !stolenIds.has(d.chunkId), `chunk ${d.chunkId}`));
  assert.equal((await a.readResults()).length, 7, 'only the chunks a still owned were published');
  assert.deepEqual(await Promise.all(stolen.map((d) => b.complete(d, resultOf(d, 'b')))), [true, true, true]);
  const results = await a.readResults();
  assert.equal(results.length, 10);
  assert.equal(new Set(results.map((r) => r.chunkId)).size, 10, 'each chunk counted once');
  assert.equal(await a.isSettled(), true);
});

test('redis: a worker blocked waiting for tasks returns as soon as another settles the sweep', async () => {
  await requireRedis();
  const prefix = randomPrefix('batch-wake');
  const busy = redis(prefix, 'busy');
  const idle = redis(prefix, 'idle');
  await busy.init(settings);
  await idle.init(settings);
  const all = await busy.take(10, 1000);
  assert.equal(all.length, 10);
  // idle waits up to 20 s; the sweep settles while it waits.
  const started = Date.now();
  const waiting = idle.take(5, 20_000);
  // Settle only once idle is subscribed and blocked in its read: that wait is the one to cut short.
  const raw = new Redis({ host: REDIS_HOST, port: REDIS_PORT });
  try {
    for (const deadline = Date.now() + 10_000; ; ) {
      assert.ok(Date.now() < deadline, 'the idle worker subscribed to the sweep\'s events and blocked in its read within 10 s');
      const [, subscribers] = (await raw.call('PUBSUB', 'NUMSUB', `${prefix}:events`)) as [string, number];
      const clients = String(await raw.call('CLIENT', 'LIST'));
      const blocked = clients.split('\n').some((line) => line.includes('name=ttg-blocking-idle') && /flags=\S*b/.test(line));
      if (Number(subscribers) > 0 && blocked) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } finally {
    raw.disconnect();
  }
  assert.deepEqual(await Promise.all(all.map((d) => busy.complete(d, resultOf(d, 'busy')))), Array(10).fill(true));
  assert.deepEqual(await waiting, []);
  assert.ok(Date.now() - started < 10_000, `woken when the sweep settled, not after its wait (${Date.now() - started} ms)`);
  assert.equal(await idle.isSettled(), true);
});

test('the pool batches small ranges into shared thread tasks and splits big ones, with exactly the stats of one range at a time', async () => {
  // No range on the calling thread here: this is about the threads' batches.
  const pool = new KernelPool({ threads: 2, kernel: 'placeholder', impl: 'wasm', inline: false });
  try {
    const runner = createKernelRunner('wasm');
    const total = 1_000_000;
    // Many small ranges asked for in one turn (batched), then a big one (split over both threads).
    const ranges: Array<[number, number]> = [];
    for (let start = 0; start < 20_000; start += 97) ranges.push([start, Math.min(20_000, start + 97)]);
    ranges.push([20_000, total]);
    const outcomes = await Promise.all(ranges.map(([s, e]) => pool.runRange(s, e, total)));
    outcomes.forEach((o, i) => {
      const [s, e] = ranges[i]!;
      // Split ranges merge their slices' partials: another list with the same exact sum.
      const { partials: _a, ...got } = toChunkStats(o.stats);
      const { partials: _b, ...want } = toChunkStats(runner.sweep('placeholder', s, e, total));
      assert.deepEqual(got, want, `range ${s}-${e}`);
    });
  } finally {
    await pool.close();
  }
});

test('ranges of a built-in kernel cheaper than a thread hop are computed on the calling thread, with the same stats, and start no thread until one is not', async () => {
  const pool = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm' });
  try {
    const runner = createKernelRunner('wasm');
    const total = 1_000_000;
    const same = (o: { stats: Parameters<typeof toChunkStats>[0] }, s: number, e: number) =>
      assert.deepEqual(toChunkStats(o.stats), toChunkStats(runner.sweep('placeholder', s, e, total)), `range ${s}-${e}`);
    const small: Array<[number, number]> = [];
    for (let start = 0; start < 20_000; start += 100) small.push([start, start + 100]);
    const outcomes = await Promise.all(small.map(([s, e]) => pool.runRange(s, e, total)));
    outcomes.forEach((o, i) => same(o, ...small[i]!));
    assert.equal(pool.started, false, 'placeholder chunks of 100 never start a thread');
    // A range far too long to run inline goes to a thread, which starts for it.
    same(await pool.runRange(20_000, total, total), 20_000, total);
    assert.equal(pool.started, true);
  } finally {
    await pool.close();
  }
});

test('a user kernel, or SIMULATE_WORK_MS, starts the threads at once and never runs on the calling thread', async () => {
  const busy = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm', simulateWorkMs: 0.001 });
  const never = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm', inline: false });
  try {
    assert.equal(busy.started, true);
    assert.equal(never.started, true);
    const o = await busy.runRange(0, 10, 1000);
    assert.equal(o.stats.count, 10);
  } finally {
    await busy.close();
    await never.close();
  }
});

test('a built-in kernel whose chunks are too costly to run inline starts its threads at once; one whose chunks are cheap starts none', async () => {
  const costly = new KernelPool({ threads: 1, kernel: 'mandelbrot', impl: 'wasm', rangeSize: 20_000 });
  const cheap = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm', rangeSize: 1000 });
  const edge = new KernelPool({ threads: 1, kernel: 'mandelbrot', impl: 'wasm', rangeSize: 2 });
  try {
    assert.equal(costly.started, true, 'mandelbrot chunks of 20,000 params go to the threads: they start before the first range');
    assert.equal(cheap.started, false, 'placeholder chunks of 1,000 run inline: no thread');
    assert.equal(edge.started, false, 'mandelbrot chunks of 2 params (2,000 worst-case steps) run inline');
    const o = await costly.runRange(0, 10, 1000);
    assert.equal(o.stats.count, 10);
  } finally {
    await Promise.all([costly.close(), cheap.close(), edge.close()]);
  }
});

test('placeholder chunks of 10,000 start the threads at the first range, which is computed inline meanwhile; every sum exact', async () => {
  const pool = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm', rangeSize: 10_000 });
  const ref = golden().placeholder;
  const exact = (o: { stats: Parameters<typeof toChunkStats>[0] }, start: number, end: number) => {
    const g = ref.find((r) => r.start === start && r.end === end)!;
    const s = toChunkStats(o.stats);
    assert.deepEqual({ count: s.count, sum: s.sum, min: s.min, max: s.max }, { count: g.count, sum: g.sum, min: g.min, max: g.max });
  };
  try {
    assert.equal(pool.started, false, 'no thread before the first range');
    await pool.ready();
    let first: { stats: Parameters<typeof toChunkStats>[0] } | null = null;
    const asked = pool.runRange(0, 10_000, 100_000).then((o) => (first = o));
    assert.equal(pool.started, false, 'ranges are scheduled at the end of the turn');
    // A thread answers by message, turns of the event loop after it starts: a range settled by the next
    // turn was computed on this thread.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(pool.started, true, 'the first range started the threads');
    assert.notEqual(first, null, 'the first range was computed inline while the thread starts');
    exact((await asked)!, 0, 10_000);
    await pool.ready();
    exact(await pool.runRange(0, 100_000, 100_000), 0, 100_000);
  } finally {
    await pool.close();
  }
});

test('the pool\'s balancer gives a task to an idle thread first, then to the least busy one, and none beyond two a thread', () => {
  const w = (currentUsage: number) => ({ currentUsage });
  const idle = w(0);
  assert.equal(leastBusy(null, [w(1), idle, w(1)]), idle, 'an idle thread, wherever it is in the list');
  const lighter = w(1);
  // Piscina's own balancer took the first thread below the limit: both halves of a split range then queued on one.
  assert.equal(leastBusy(null, [w(2), lighter, w(1)]), lighter);
  const first = w(1);
  const tasks = [first, w(1)];
  assert.equal(leastBusy(null, tasks), first);
  first.currentUsage = 2;
  assert.equal(leastBusy(null, tasks), tasks[1], 'the second task goes to the other thread');
  assert.equal(leastBusy(null, [w(2), w(2)]), null, 'every thread has two: the task waits in the pool\'s queue');
});

test('ready() resolves at once for a pool that starts no thread, and once the threads answered for one that does', async () => {
  const inline = new KernelPool({ threads: 2, kernel: 'placeholder', impl: 'wasm', rangeSize: 100 });
  const threaded = new KernelPool({ threads: 2, kernel: 'mandelbrot', impl: 'wasm', rangeSize: 20_000 });
  try {
    await inline.ready();
    assert.equal(inline.started, false);
    assert.equal(threaded.started, true);
    await threaded.ready();
    const [a, b] = await Promise.all([threaded.runRange(0, 50, 100), threaded.runRange(50, 100, 100)]);
    assert.equal(a.stats.count + b.stats.count, 100);
  } finally {
    await Promise.all([inline.close(), threaded.close()]);
  }
});

test('the pool says when a thread lacks its next task, and tells its listener as the tasks come back', async () => {
  const inline = new KernelPool({ threads: 2, kernel: 'placeholder', impl: 'wasm', rangeSize: 100 });
  const pool = new KernelPool({ threads: 2, kernel: 'mandelbrot', impl: 'wasm', rangeSize: 20_000 });
  try {
    assert.equal(inline.wantsWork, false, 'no thread started: nothing to feed');
    await pool.ready();
    assert.equal(pool.wantsWork, true, 'two idle threads');
    let told = 0;
    let toldToo = 0;
    let toldGone = 0;
    pool.onWantsWork(() => told++);
    pool.onWantsWork(() => toldToo++);
    // Every worker loop of `ttg run` shares the pool: each is told, until it stops listening.
    const stop = pool.onWantsWork(() => toldGone++);
    stop();
    // Six ranges too costly to batch (split over the threads, or not): more tasks than the threads hold.
    const total = 1_000_000;
    const ranges = Array.from({ length: 6 }, (_, i) => pool.runRange(500_000 + i * 20_000, 520_000 + i * 20_000, total));
    await new Promise((r) => setImmediate(r)); // the pool schedules a turn's ranges at its end
    assert.equal(pool.wantsWork, false, 'six tasks out: both threads have their next one');
    await Promise.all(ranges);
    assert.equal(pool.wantsWork, true, 'every task back');
    assert.ok(told >= 3, `told at least once per task that left fewer than four out (${told})`);
    assert.equal(toldToo, told, 'every listener is told');
    assert.equal(toldGone, 0, 'a listener that stopped is not told');
  } finally {
    await Promise.all([inline.close(), pool.close()]);
  }
});

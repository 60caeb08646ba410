/**
 * What is specific to the Redis Streams backend (the contract itself is
 * test/conformance.ts), against a real Redis (127.0.0.1:6379 unless
 * TEST_REDIS_HOST/PORT say otherwise). Each test works under its own random
 * QUEUE_PREFIX and resets it afterwards.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisBackend } from '../backends/redis/backend.js';
import type { ChunkResult, Delivery } from '../backends/types.js';
import { loadConfig } from '../engine/config.js';
import { backendOptions } from '../engine/backend.js';
import { BrokerUnavailableError } from '../core/errors.js';
import { createLogger, silentLogger } from '../core/log.js';
import { nonEmpty, randomPrefix, REDIS_HOST, REDIS_PORT, requireRedis, waitFor } from './helpers.js';
import { TcpRelay } from './relay.js';
import { initCall, TASKS_PER_CALL } from '../backends/redis/sweep-tasks.js';
import { redisKeys } from '../backends/redis/keys.js';
import { RedisLinks } from '../backends/redis/connection.js';

type Env = Record<string, string | number>;

const open: RedisBackend[] = [];
let raw: Redis;

function env(prefix: string, extra: Env = {}): Record<string, string> {
  const base: Env = {
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_HOST, REDIS_PORT, QUEUE_PREFIX: prefix, THREADS: '1',
    TOTAL_PARAMS: 1000, CHUNK_SIZE: 100, CONNECT_TIMEOUT_SECONDS: 5, ...extra,
  };
  return Object.fromEntries(Object.entries(base).map(([k, v]) => [k, String(v)]));
}

function backend(prefix: string, extra: Env = {}, workerId = '0'): RedisBackend {
  const config = loadConfig(env(prefix, { WORKER_ID: workerId, ...extra }));
  const b = new RedisBackend(backendOptions(config, 'redis', workerId, silentLogger));
  open.push(b);
  return b;
}

function settingsOf(prefix: string, extra: Env = {}) {
  const c = loadConfig(env(prefix, extra));
  return { totalParams: c.totalParams, chunkSize: c.chunkSize, kernel: c.kernel };
}

/** A backend that has joined (or created) the sweep of `extra`. */
async function joined(prefix: string, extra: Env = {}, workerId = '0'): Promise<RedisBackend> {
  const b = backend(prefix, extra, workerId);
  await b.init(settingsOf(prefix, extra));
  return b;
}

function resultFor(d: Delivery, workerId = '0'): ChunkResult {
  const count = d.task!.endParam - d.task!.startParam;
  return {
    chunkId: d.task!.chunkId, workerId, status: 'completed', durationSeconds: 0.25, completedAt: new Date().toISOString(),
    stats: { count, sum: count * 2, min: 1, max: 3, argmin: d.task!.startParam, argmax: d.task!.startParam + 1, avg: 2, partials: [count * 2] },
  };
}

/** Stream entries as field records. */
async function entries(key: string): Promise<Record<string, string>[]> {
  const list = await raw.xrange(key, '-', '+');
  return list.map(([, flat]) => {
    const fields: Record<string, string> = {};
    for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
    return fields;
  });
}

async function pendingCount(prefix: string): Promise<number> {
  const [count] = (await raw.call('XPENDING', `${prefix}:tasks`, `${prefix}-workers`)) as [number];
  return Number(count);
}


const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls `probe` until it returns a non-empty list (the condition), failing after `timeoutMs`. */
function until<T>(probe: () => Promise<T[]>, timeoutMs = 5000): Promise<T[]> {
  return waitFor('a non-empty answer', async () => nonEmpty(await probe()), timeoutMs, 5);
}

describe('Redis backend', () => {
  before(async () => {
    await requireRedis();
    raw = new Redis({ host: REDIS_HOST, port: REDIS_PORT });
  });
  afterEach(async () => {
    const backends = open.splice(0);
    // Every backend's sweep (a test may use several prefixes); one closed on purpose, or refused, cannot.
    for (const b of backends) await b.reset().catch(() => {});
    await Promise.all(backends.map((b) => b.close()));
  });
  after(async () => {
    await raw?.quit();
  });

  it('lets ten workers initialise at once: exactly one creates the sweep, every task exists once', async () => {
    const prefix = randomPrefix('init');
    const extra = { TOTAL_PARAMS: 1000, CHUNK_SIZE: 7 };
    const backends = Array.from({ length: 10 }, () => backend(prefix, extra));
    const outcomes = await Promise.all(backends.map((b) => b.init(settingsOf(prefix, extra))));
    assert.equal(outcomes.filter((o) => o.created).length, 1);
    assert.ok(outcomes.every((o) => o.totalChunks === 143));
    assert.equal(await raw.xlen(`${prefix}:tasks`), 143);
    const tasks = await entries(`${prefix}:tasks`);
    assert.deepEqual(tasks.map((t) => t.chunk_id), Array.from({ length: 143 }, (_, i) => String(i).padStart(5, '0')));
    assert.deepEqual(tasks[142], { chunk_id: '00142', start_param: '994', end_param: '1000', total_params: '1000' });
    const meta = await raw.hgetall(`${prefix}:meta`);
    assert.equal(meta['total_params'], '1000');
    assert.equal(meta['chunk_size'], '7');
    assert.equal(meta['kernel'], 'placeholder');
    assert.equal(meta['total_chunks'], '143');
    assert.ok(meta['created_at']);
    const groups = (await raw.call('XINFO', 'GROUPS', `${prefix}:tasks`)) as unknown[][];
    assert.equal(groups.length, 1);
    assert.equal(groups[0]![1], `${prefix}-workers`);
    // One process, one WORKER_ID: one consumer gets worker-0, the rest unique fallbacks.
    const names = backends.map((b) => b.consumerName);
    assert.equal(new Set(names).size, 10);
    assert.equal(names.filter((n) => n === 'worker-0').length, 1);
  });

  it('adds the tasks of a sweep of 100 000+ chunks in batches, once, with wider ids', async () => {
    const prefix = randomPrefix('big');
    const extra = { TOTAL_PARAMS: 120_001, CHUNK_SIZE: 1 };
    const workers = [0, 1, 2].map((i) => backend(prefix, extra, String(i)));
    const outcomes = await Promise.all(workers.map((b) => b.init(settingsOf(prefix, extra))));
    assert.equal(outcomes.filter((o) => o.created).length, 1);
    // init() returns with the first tasks in; the workers add the rest, each batch once, from their first take on.
    assert.ok(await raw.xlen(`${prefix}:tasks`) >= TASKS_PER_CALL, 'the first tasks are in when init() returns');
    await Promise.all(workers.map((b) => b.take(1, 0)));
    await waitFor('every task added', async () => (await raw.hget(`${prefix}:meta`, 'tasks_added')) === '120001');
    assert.equal(await raw.xlen(`${prefix}:tasks`), 120_001);
    const [[, first]] = (await raw.xrange(`${prefix}:tasks`, '-', '+', 'COUNT', 1)) as [string, string[]][] as [[string, string[]]];
    const [[, last]] = (await raw.xrevrange(`${prefix}:tasks`, '+', '-', 'COUNT', 1)) as [[string, string[]]];
    assert.deepEqual(first, ['chunk_id', '000000', 'start_param', '0', 'end_param', '1', 'total_params', '120001']);
    assert.deepEqual(last, ['chunk_id', '120000', 'start_param', '120000', 'end_param', '120001', 'total_params', '120001']);
  });

  it('adds the rest of the tasks to an existing sweep only: after a reset the filling workers do not bring it back', async () => {
    const prefix = randomPrefix('gone');
    const extra = { TOTAL_PARAMS: 10_000, CHUNK_SIZE: 1 };
    const b = backend(prefix, extra);
    await b.init(settingsOf(prefix, extra));
    await b.reset();
    // What a worker still filling calls next: the sweep is gone, so nothing is created.
    const config = loadConfig(env(prefix, extra));
    const options = backendOptions(config, 'redis', '1', silentLogger);
    const keys = redisKeys(prefix);
    const links = new RedisLinks({
      connection: options.connection, connectTimeoutSeconds: 5, workerId: '1', log: silentLogger, keys, queuePrefix: prefix,
    });
    try {
      const call = await initCall(links, keys, prefix, settingsOf(prefix, extra), 100, true);
      assert.equal(call.outcome, 'sweep-gone');
      assert.equal(await raw.exists(`${prefix}:meta`, `${prefix}:tasks`), 0);
      // The same call without joinOnly, as at a worker's start, creates it.
      assert.equal((await initCall(links, keys, prefix, settingsOf(prefix, extra), 100, false)).outcome, 'created');
      assert.equal(await raw.xlen(`${prefix}:tasks`), 100);
    } finally {
      await links.close(async () => {});
      await raw.del(`${prefix}:meta`, `${prefix}:tasks`);
    }
  });

  it('takes tasks, publishes the result fields of docs/design.md and acknowledges, in one step', async () => {
    const prefix = randomPrefix('complete');
    const b = await joined(prefix);
    const got = await b.take(3, 100);
    assert.deepEqual(got.map((d) => d.chunkId), ['00000', '00001', '00002']);
    assert.deepEqual(got[1]!.task, { chunkId: '00001', startParam: 100, endParam: 200, totalParams: 1000 });
    assert.ok(got.every((d) => d.attempt === 0 && !d.recovered && d.malformed === undefined));
    assert.equal(await pendingCount(prefix), 3);
    for (const d of got) assert.equal(await b.complete(d, resultFor(d)), true);
    assert.equal(await pendingCount(prefix), 0);
    const results = await entries(`${prefix}:results`);
    assert.equal(results.length, 3);
    assert.deepEqual(Object.keys(results[0]!).sort(),
      ['chunk_id', 'completed_at', 'duration_seconds', 'result_data', 'status', 'worker_id']);
    assert.equal(results[0]!['status'], 'completed');
    assert.equal(results[0]!['worker_id'], '0');
    assert.equal(results[0]!['duration_seconds'], '0.25');
    assert.deepEqual(Object.keys(JSON.parse(results[0]!['result_data']!)).sort(), ['argmax', 'argmin', 'avg', 'count', 'max', 'min', 'partials', 'sum']);
    assert.equal(await raw.hlen(`${prefix}:done`), 3);
    // Reading results does not consume them.
    const once = await b.readResults();
    assert.deepEqual(await b.readResults(), once);
    assert.deepEqual(once.map((r) => r.chunkId), ['00000', '00001', '00002']);
    assert.equal(once[0]!.stats.count, 100);
  });

  it('never hands out again an entry it claimed before its first take', async () => {
    const prefix = randomPrefix('claimfirst');
    const gone = await joined(prefix, { TOTAL_PARAMS: 200, CHUNK_SIZE: 100 }, '1');
    const [lost] = await gone.take(1, 100);
    await gone.close();
    const rescuer = await joined(prefix, { TOTAL_PARAMS: 200, CHUNK_SIZE: 100 }, '2');
    const claimed = await until(() => rescuer.claimStale(10, 10));
    assert.deepEqual(claimed.map((d) => d.chunkId), [lost!.chunkId]);
    assert.deepEqual((await rescuer.take(10, 100)).map((d) => d.chunkId), ['00001']);
  });

  it('retries a failed chunk, then dead-letters it after RABBITMQ_MAX_RETRIES failures', async () => {
    const prefix = randomPrefix('retry');
    const extra = { TOTAL_PARAMS: 10, CHUNK_SIZE: 10, RABBITMQ_MAX_RETRIES: 3, RABBITMQ_RETRY_DELAY_MS: 0 };
    const b = await joined(prefix, extra, '4');
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const [d] = await b.take(1, 100);
      assert.equal(d!.chunkId, '00000');
      assert.equal(d!.attempt, attempt);
      outcomes.push(await b.fail(d!, `boom ${attempt}`));
    }
    assert.deepEqual(outcomes, ['retried', 'retried', 'dead-lettered']);
    // The original entry and two retry copies were added, each acknowledged by its failure; the
    // dead letter that settles the sweep trims them all (test/redis-trim.test.ts).
    const info = (await raw.call('XINFO', 'STREAM', `${prefix}:tasks`)) as unknown[];
    assert.equal(info[info.indexOf('entries-added') + 1], 3, 'the original entry and two retries');
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0);
    assert.equal(await pendingCount(prefix), 0);
    assert.deepEqual(await b.take(1, 50), []);
    assert.deepEqual(await b.readDeadLetters(), [{
      chunkId: '00000', reason: 'boom 2', attempts: 3, workerId: '4',
      task: { chunkId: '00000', startParam: 0, endParam: 10, totalParams: 10 },
    }]);
    const [dead] = await entries(`${prefix}:dead`);
    assert.equal(dead!['end_param'], '10');
    assert.equal(await b.isSettled(), true);
  });

  it('dead-letters a chunk handed out more than 100 times without a result, as RabbitMQ\'s delivery limit does', async () => {
    const prefix = randomPrefix('deliveries');
    const extra = { TOTAL_PARAMS: 20, CHUNK_SIZE: 10 };
    const first = await joined(prefix, extra, '5');
    const [d] = await first.take(1, 100); // delivery 1 of chunk 00000
    const other = await joined(prefix, extra, '6');
    // Each worker that takes it over "dies" at once: the next claim is its next delivery.
    for (let delivery = 2; delivery <= 100; delivery++) {
      const claimed = await other.claimStale(10, 0);
      assert.deepEqual(claimed.map((c) => c.chunkId), [d!.chunkId], `delivery ${delivery} is still handed out`);
    }
    const pending = (await raw.call('XPENDING', `${prefix}:tasks`, `${prefix}-workers`, '-', '+', 10)) as Array<[string, string, number, number]>;
    assert.equal(pending.find(([id]) => id === (d!.handle as { entryId: string }).entryId)?.[3], 100, 'Redis counts 100 deliveries');
    assert.deepEqual(await other.claimStale(10, 0), [], 'the 101st is not handed out');
    const [dead] = await other.readDeadLetters();
    assert.equal(dead?.chunkId, '00000');
    assert.match(dead!.reason, /handed out 101 times without a result \(more than 100\)/);
    assert.equal(await pendingCount(prefix), 0, 'its entry is acknowledged');
    // The other chunk still runs, and the sweep settles with one dead letter.
    const [rest] = await other.take(1, 100);
    assert.equal(await other.complete(rest!, resultFor(rest!, '6')), true);
    assert.equal(await other.isSettled(), true);
  });

  it('surfaces malformed entries with a reason and dead-letters them at once', async () => {
    const prefix = randomPrefix('malformed');
    const b = await joined(prefix, { TOTAL_PARAMS: 100, CHUNK_SIZE: 50 });
    const tasks = `${prefix}:tasks`;
    await raw.xadd(tasks, '*', 'start_param', '0', 'end_param', '10', 'total_params', '100');
    await raw.xadd(tasks, '*', 'chunk_id', '00007', 'start_param', '40', 'end_param', '30', 'total_params', '100');
    await raw.xadd(tasks, '*', 'chunk_id', '00008', 'start_param', '90', 'end_param', '120', 'total_params', '100');
    await raw.xadd(tasks, '*', 'chunk_id', '00009', 'start_param', 'ten', 'end_param', '20', 'total_params', '100');
    await raw.xadd(tasks, '*', 'chunk_id', '00010', 'end_param', '20', 'total_params', '100');
    const got = await b.take(10, 100);
    assert.equal(got.length, 7);
    const [first, second, ...bad] = got;
    assert.deepEqual(bad.map((d) => [d.chunkId, d.task]), [['?', null], ['00007', null], ['00008', null], ['00009', null], ['00010', null]]);
    assert.match(bad[0]!.malformed!, /missing field chunk_id/);
    assert.match(bad[1]!.malformed!, /end_param \(30\) must be greater than start_param \(40\)/);
    assert.match(bad[2]!.malformed!, /end_param \(120\) is beyond total_params \(100\)/);
    assert.match(bad[3]!.malformed!, /start_param must be a non-negative integer, got "ten"/);
    assert.match(bad[4]!.malformed!, /missing field start_param/);
    for (const d of bad) assert.equal(await b.fail(d, d.malformed!), 'dead-lettered');
    const letters = await b.readDeadLetters();
    assert.deepEqual(letters.map((l) => [l.chunkId, l.attempts, l.task]), bad.map((d) => [d.chunkId, 1, null]));
    assert.deepEqual(letters.map((l) => l.reason), bad.map((d) => d.malformed));
    // Junk ids are no chunks of the sweep: the two real chunks still decide when it is settled.
    assert.equal(await b.isSettled(), false);
    await b.complete(first!, resultFor(first!));
    await b.complete(second!, resultFor(second!));
    assert.equal(await b.isSettled(), true);
    assert.equal(await pendingCount(prefix), 0);
  });

  it('reads entries of any shape the same way whether take() waits or not, in stream order', async () => {
    // A take that does not wait reads with read-3.lua (one line per entry of the usual shape), one that waits with XREADGROUP.
    const seen: unknown[] = [];
    for (const waitMs of [100, 0]) {
      const prefix = randomPrefix(`shapes-${waitMs}`);
      const b = await joined(prefix, { TOTAL_PARAMS: 300, CHUNK_SIZE: 50 });
      const tasks = `${prefix}:tasks`;
      await raw.hset(`${prefix}:attempts`, '00001', '2');
      await raw.hset(`${prefix}:done`, '00002', '1');
      await raw.xadd(tasks, '*', 'start_param', '0', 'end_param', '10', 'total_params', '300');
      await raw.xadd(tasks, '*', 'chunk_id', '00003', 'start_param', '100', 'end_param', '150', 'total_params', '300');
      await raw.xadd(tasks, '*', 'chunk_id', '00004', 'start_param', ' 200', 'end_param', '250', 'total_params', '300');
      await raw.xadd(tasks, '*', 'total_params', '300', 'chunk_id', '00005', 'start_param', '250', 'end_param', '300');
      await raw.xadd(tasks, '*', 'chunk_id', '00002', 'start_param', '100', 'end_param', '150', 'total_params', '300');
      const got = await b.take(20, waitMs);
      const task = (i: number) => ({ chunkId: `0000${i}`, startParam: i * 50, endParam: i * 50 + 50, totalParams: 300 });
      // Chunk 00002 has a result: both its entries are acknowledged and dropped, the other nine stay pending.
      assert.deepEqual(got.map((d) => [d.chunkId, d.attempt, d.task]), [
        ['00000', 0, task(0)], ['00001', 2, task(1)], ['00003', 0, task(3)], ['00004', 0, task(4)], ['00005', 0, task(5)],
        ['?', 0, null], ['00003', 0, null], ['00004', 0, task(4)], ['00005', 0, task(5)],
      ], `take(20, ${waitMs})`);
      assert.match(got[5]!.malformed!, /missing field chunk_id/);
      assert.match(got[6]!.malformed!, /chunk 00003 of this sweep is \[150, 200\) but the task says \[100, 150\)/);
      assert.equal(await pendingCount(prefix), 9);
      seen.push(got.map((d) => [d.chunkId, d.attempt, d.task, d.malformed, d.recovered]));
    }
    assert.deepEqual(seen[1], seen[0]);
  });

  it('publishes each result with its own fields, whatever else travels in the same call', async () => {
    const prefix = randomPrefix('fields');
    const b = await joined(prefix, { TOTAL_PARAMS: 300, CHUNK_SIZE: 100 });
    const got = await b.take(3, 0);
    assert.equal(got.length, 3);
    // Separators of complete-5.lua's lines in a free-text field, another worker's fields, the optional fields.
    const odd = 'x\ty\nz\\w\\t';
    const results: ChunkResult[] = [
      { ...resultFor(got[0]!), completedAt: odd, startedAt: '\\' },
      { ...resultFor(got[1]!, 'other'), consumer: 'worker-other', recovered: true, attempts: 2 },
      { ...resultFor(got[2]!), startedAt: '2026-01-01T00:00:00.000Z', consumer: 'worker-0' },
    ];
    // One turn of the event loop: the three go to Redis together.
    assert.deepEqual(await Promise.all(got.map((d, i) => b.complete(d, results[i]!))), [true, true, true]);
    const byChunk = new Map((await raw.xrange(`${prefix}:results`, '-', '+')).map(([, flat]) => [flat[1]!, flat]));
    const data = (i: number) => JSON.stringify(results[i]!.stats);
    assert.deepEqual(byChunk.get('00000'), ['chunk_id', '00000', 'worker_id', '0', 'status', 'completed', 'duration_seconds', '0.25',
      'completed_at', 'x\ty\nz\\w\\t', 'started_at', '\\', 'result_data', data(0)]);
    assert.deepEqual(byChunk.get('00001'), ['chunk_id', '00001', 'worker_id', 'other', 'status', 'completed', 'duration_seconds', '0.25',
      'completed_at', results[1]!.completedAt, 'recovered', 'true', 'attempts', '2', 'consumer', 'worker-other', 'result_data', data(1)]);
    assert.deepEqual(byChunk.get('00002'), ['chunk_id', '00002', 'worker_id', '0', 'status', 'completed', 'duration_seconds', '0.25',
      'completed_at', results[2]!.completedAt, 'started_at', '2026-01-01T00:00:00.000Z', 'consumer', 'worker-0', 'result_data', data(2)]);
    assert.deepEqual((await b.readResults()).map((r) => [r.chunkId, r.completedAt, r.startedAt]).sort(),
      [['00000', odd, '\\'], ['00001', results[1]!.completedAt, undefined], ['00002', results[2]!.completedAt, '2026-01-01T00:00:00.000Z']]);
    assert.equal(await raw.hlen(`${prefix}:done`), 3);
    assert.equal(await pendingCount(prefix), 0);
  });

  it('reports what is ready, in flight and held by others', async () => {
    const prefix = randomPrefix('stats');
    const a = await joined(prefix, { TOTAL_PARAMS: 40, CHUNK_SIZE: 10 }, '1');
    const b = await joined(prefix, { TOTAL_PARAMS: 40, CHUNK_SIZE: 10 }, '2');
    assert.equal(await a.hasOutstanding(), true, 'tasks are waiting');
    const held = await a.take(4, 100);
    assert.equal(held.length, 4);
    assert.equal(await a.hasOutstanding(), false, 'only its own chunks are out');
    assert.equal(await b.hasOutstanding(), true, 'another worker holds chunks');
    const stats = await b.stats();
    assert.equal(stats.ready, 0);
    assert.equal(stats.inFlight, 4);
    assert.deepEqual(stats.consumers, { 'worker-1': 4 });
  });

  it('releases deliveries so that the next stale check takes them at once', async () => {
    const prefix = randomPrefix('release');
    const a = await joined(prefix, {}, '1');
    const b = await joined(prefix, {}, '2');
    const got = await a.take(2, 100);
    await a.release(got);
    const again = await b.claimStale(10, 60_000);
    assert.deepEqual(again.map((d) => d.chunkId), ['00000', '00001']);
    assert.ok(again.every((d) => d.recovered));
  });

  it('gives a second live process its own consumer name, and a restarted one its old name and pending entries', async () => {
    const prefix = randomPrefix('names');
    const first = await joined(prefix, {}, '7');
    const twin = await joined(prefix, {}, '7');
    assert.equal(first.consumerName, 'worker-7');
    assert.match(twin.consumerName, new RegExp(`^worker-7-.+-${process.pid}`));
    const held = await first.take(2, 100);
    await first.close(); // a restart: its entries stay pending under worker-7
    const restarted = await joined(prefix, {}, '7');
    assert.equal(restarted.consumerName, 'worker-7');
    assert.equal(await restarted.hasOutstanding(), true);
    const resumed = await restarted.take(10, 100);
    assert.deepEqual(resumed.map((d) => [d.chunkId, d.recovered]), held.map((d) => [d.chunkId, true]));
    const fresh = await restarted.take(1, 100);
    assert.deepEqual(fresh.map((d) => [d.chunkId, d.recovered]), [['00002', false]]);
  });

  it('reads settings, results and dead letters without init, and finds nothing where there is no sweep', async () => {
    const prefix = randomPrefix('read');
    const worker = await joined(prefix);
    const [d] = await worker.take(1, 100);
    await worker.complete(d!, resultFor(d!));
    const reader = backend(prefix, {}, 'reader');
    assert.deepEqual(await reader.readSettings(), settingsOf(prefix));
    assert.deepEqual((await reader.readResults()).map((r) => r.chunkId), ['00000']);
    assert.deepEqual(await reader.readDeadLetters(), []);
    const nobody = backend(randomPrefix('empty'));
    assert.equal(await nobody.readSettings(), null);
    assert.deepEqual(await nobody.readResults(), []);
    assert.equal((await nobody.stats()).totalChunks, 0);
  });

  it('deletes every key of the prefix on reset', async () => {
    const prefix = randomPrefix('reset');
    const b = await joined(prefix, { TOTAL_PARAMS: 20, CHUNK_SIZE: 10, RABBITMQ_MAX_RETRIES: 1 });
    const [d0, d1] = await b.take(2, 100);
    await b.complete(d0!, resultFor(d0!));
    await b.fail(d1!, 'x');
    await b.reset();
    await b.close();
    await b.close();
    assert.deepEqual(await raw.keys(`${prefix}*`), []);
  });

  it('gives up on an unreachable Redis within CONNECT_TIMEOUT_SECONDS, naming the address', async () => {
    const prefix = randomPrefix('down');
    const b = backend(prefix, { REDIS_HOST: '127.0.0.1', REDIS_PORT: 1, CONNECT_TIMEOUT_SECONDS: 1 });
    const started = Date.now();
    await assert.rejects(b.init(settingsOf(prefix)), (err: Error) => {
      assert.ok(err instanceof BrokerUnavailableError, `${err.name}: ${err.message}`);
      assert.match(err.message, /127\.0\.0\.1:1\b/);
      return true;
    });
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    open.splice(open.indexOf(b), 1);
    await b.close();
  });

  it('rides out a dropped connection and a short outage, and names the address after CONNECT_TIMEOUT_SECONDS', async () => {
    const prefix = randomPrefix('outage');
    const link = new TcpRelay(REDIS_HOST, REDIS_PORT);
    await link.up();
    const b = await joined(prefix, { REDIS_PORT: link.port, CONNECT_TIMEOUT_SECONDS: 1.5 });
    const [d] = await b.take(1, 100);
    await link.down(); // connections dropped ...
    await link.up(); // ... and the relay answers again: ioredis reconnects
    await b.heartbeat([d!]);
    await link.down();
    const pending = b.complete(d!, resultFor(d!)); // waits for the connection to come back
    await sleep(400); // the length of the outage (the scenario), well under CONNECT_TIMEOUT_SECONDS
    await link.up();
    assert.equal(await pending, true);
    await link.down();
    const started = Date.now();
    await assert.rejects(b.isSettled(), (err: Error) => {
      assert.ok(err instanceof BrokerUnavailableError, `${err.name}: ${err.message}`);
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${link.port}\\b.*gave up after 1.5 s`));
      return true;
    });
    assert.ok(Date.now() - started < 3500, `took ${Date.now() - started} ms`);
    const reader = backend(prefix);
    assert.deepEqual((await reader.readResults()).map((r) => r.chunkId), ['00000']);
  });

  it('a user not granted the events channel: the worker still takes and waits, and says once, at warn, what to grant', async () => {
    const prefix = randomPrefix('nochan');
    await joined(prefix, { TOTAL_PARAMS: 200 });
    // Keys and commands, but no channel (Redis 7 creates users with resetchannels).
    const user = `ttgtest-${randomBytes(4).toString('hex')}`;
    const password = `pw-${randomBytes(6).toString('hex')}`;
    await raw.call('ACL', 'SETUSER', user, 'on', `>${password}`, `~${prefix}:*`, 'resetchannels', '+@all');
    const lines: string[] = [];
    const config = loadConfig(env(prefix, { TOTAL_PARAMS: 200, WORKER_ID: '1', REDIS_URL: `redis://${user}:${password}@${REDIS_HOST}:${REDIS_PORT}` }));
    const worker = new RedisBackend(backendOptions(config, 'redis', '1', createLogger({ level: 'debug', write: (line) => lines.push(line) })));
    try {
      await worker.init(settingsOf(prefix, { TOTAL_PARAMS: 200 }));
      const held = await worker.take(2, 0);
      assert.equal(held.length, 2);
      // Nothing left: each waiting take tries to subscribe, and is refused.
      assert.deepEqual(await worker.take(1, 100), []);
      await waitFor('the refused subscription to be logged', () => lines.some((l) => l.includes('could not subscribe')), 5000, 10);
      assert.deepEqual(await worker.take(1, 100), []);
      await waitFor('the second refusal', () => lines.filter((l) => l.includes('could not subscribe')).length >= 2, 5000, 10);
      const said = lines.filter((l) => l.includes('could not subscribe'));
      assert.equal(said.filter((l) => / WARN /.test(l)).length, 1, `said once at warn:\n${said.join('\n')}`);
      assert.match(said[0]!, new RegExp(`ACL SETUSER <user> &${prefix}:events`));
      assert.ok(!lines.some((l) => l.includes(password)), 'the password must not appear');
      await worker.close();
    } finally {
      await raw.call('ACL', 'DELUSER', user);
    }
  });

  it('connects with REDIS_URL, with and without a password, and says so clearly when the password is wrong', async () => {
    const prefix = randomPrefix('url');
    const plain = await joined(prefix, { REDIS_URL: `redis://${REDIS_HOST}:${REDIS_PORT}/0` });
    assert.equal(plain.consumerName, 'worker-0');
    // A throw-away ACL user (the default user and its password stay untouched).
    const user = `ttgtest-${randomBytes(4).toString('hex')}`;
    const password = `pw-${randomBytes(6).toString('hex')}`;
    await raw.call('ACL', 'SETUSER', user, 'on', `>${password}`, `~${prefix}:*`, '+@all');
    try {
      const withPassword = backend(prefix, { REDIS_URL: `redis://${user}:${password}@${REDIS_HOST}:${REDIS_PORT}` }, '1');
      assert.deepEqual(await withPassword.readSettings(), settingsOf(prefix));
      const wrong = backend(prefix, { REDIS_URL: `redis://${user}:not-${password}@${REDIS_HOST}:${REDIS_PORT}` }, '2');
      await assert.rejects(wrong.readSettings(), (err: Error) => {
        assert.ok(err instanceof BrokerUnavailableError, `${err.name}: ${err.message}`);
        assert.match(err.message, new RegExp(`${REDIS_HOST}:${REDIS_PORT}.*refused the login of user .*REDIS_URL`));
        assert.ok(!err.message.includes(password), 'the password must not appear');
        return true;
      });
      // Closed before the user goes: deleting it drops its connections, which would start reconnecting.
      await withPassword.close();
      await wrong.close();
    } finally {
      await raw.call('ACL', 'DELUSER', user);
    }
  });
});

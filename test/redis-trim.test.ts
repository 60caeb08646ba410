/**
 * Trimming the Redis task stream (issue 9): acknowledged task entries go
 * away (trim-acknowledged.lua) without breaking stale recovery, ownership,
 * `ttg aggregate` or the monitor's counts. Real Redis, a random
 * QUEUE_PREFIX per test, reset afterwards; references are the golden file
 * and counts worked out by hand, never the code's own output.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { RedisBackend } from '../backends/redis/backend.js';
import { loadScripts } from '../backends/redis/scripts.js';
import type { ChunkResult, Delivery } from '../backends/types.js';
import { loadConfig } from '../engine/config.js';
import { backendOptions } from '../engine/backend.js';
import { silentLogger } from '../core/log.js';
import {
  golden, lastJsonLine, randomPrefix, REDIS_HOST, REDIS_PORT, requireRedis, ROOT, runTtg, startTtg, testEnv, waitFor, type TtgProcess,
} from './helpers.js';

type Env = Record<string, string | number>;

const open: RedisBackend[] = [];
const prefixes: string[] = [];
const children: TtgProcess[] = [];
let raw: Redis;

function fresh(tag: string): string {
  const prefix = randomPrefix(`trim-${tag}`);
  prefixes.push(prefix);
  return prefix;
}

function workerEnv(prefix: string, extra: Env = {}): NodeJS.ProcessEnv {
  return testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, IDLE_TIMEOUT_SECONDS: 20,
    STALE_THRESHOLD_MS: 1500, STALE_CHECK_INTERVAL_SECONDS: 0.5, CONNECT_TIMEOUT_SECONDS: 10, ...extra,
  });
}

async function joined(prefix: string, extra: Env, workerId: string): Promise<RedisBackend> {
  const config = loadConfig(Object.fromEntries(Object.entries({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_HOST, REDIS_PORT, QUEUE_PREFIX: prefix, THREADS: 1, WORKER_ID: workerId, ...extra,
  }).map(([k, v]) => [k, String(v)])));
  const b = new RedisBackend(backendOptions(config, 'redis', workerId, silentLogger));
  open.push(b);
  await b.init({ totalParams: config.totalParams, chunkSize: config.chunkSize, kernel: config.kernel });
  return b;
}

function resultFor(d: Delivery, workerId: string): ChunkResult {
  const count = d.task!.endParam - d.task!.startParam;
  return {
    chunkId: d.task!.chunkId, workerId, status: 'completed', durationSeconds: 0.01, completedAt: new Date().toISOString(),
    stats: { count, sum: count, min: 1, max: 1, argmin: d.task!.startParam, argmax: d.task!.startParam, avg: 1, partials: [count] },
  };
}

/** XINFO GROUPS of the sweep's group, as a record (lag is null where Redis cannot tell). */
async function groupInfo(prefix: string): Promise<Record<string, unknown>> {
  const groups = (await raw.call('XINFO', 'GROUPS', `${prefix}:tasks`)) as unknown[][];
  const flat = groups.find((g) => g[1] === `${prefix}-workers`)!;
  const info: Record<string, unknown> = {};
  for (let i = 0; i < flat.length; i += 2) info[String(flat[i])] = flat[i + 1];
  return info;
}

async function entriesAdded(prefix: string): Promise<number> {
  const info = (await raw.call('XINFO', 'STREAM', `${prefix}:tasks`)) as unknown[];
  return Number(info[info.indexOf('entries-added') + 1]);
}

/** Chunk ids of the task entries still in the stream. */
async function chunkIdsInStream(prefix: string): Promise<string[]> {
  const list = await raw.xrange(`${prefix}:tasks`, '-', '+');
  return list.map(([, fields]) => fields[fields.indexOf('chunk_id') + 1]!);
}

/** Runs the trim as workers do (trim-1.lua, with its include), returning how many entries it removed. */
async function trim(prefix: string): Promise<number> {
  return Number(await raw.eval(loadScripts().get('trim')!.lua, 1, `${prefix}:tasks`, `${prefix}-workers`));
}

/** A worker's exit code, or 'SIGKILL' when it outlived `timeoutMs` (so a stuck sweep fails the test instead of hanging it). */
async function ended(p: TtgProcess, timeoutMs = 90_000): Promise<number | string> {
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  try {
    return await p.exited;
  } finally {
    clearTimeout(timer);
  }
}

const range = (from: number, to: number, width: number) =>
  Array.from({ length: to - from }, (_, i) => String(from + i).padStart(width, '0'));

describe('Redis task stream trimming', () => {
  before(async () => {
    await requireRedis();
    raw = new Redis({ host: REDIS_HOST, port: REDIS_PORT });
  });
  afterEach(async () => {
    for (const p of children.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    const backends = open.splice(0);
    await Promise.all(backends.map((b) => b.close()));
  });
  after(async () => {
    for (const prefix of prefixes) await runTtg(['reset'], workerEnv(prefix), 20_000);
    await raw?.quit();
  });

  it('a sweep run by two worker processes shrinks its task stream as it runs and leaves it empty, with an exact aggregate', async () => {
    const prefix = fresh('sweep');
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100_000)!;
    // 2000 chunks of 2 ms each (SIMULATE_WORK_MS per parameter): long enough to look at the stream while it runs.
    const env = (id: string) => workerEnv(prefix, { TOTAL_PARAMS: 100_000, CHUNK_SIZE: 50, SIMULATE_WORK_MS: 0.04, WORKER_ID: id });
    const workers = ['0', '1'].map((id) => startTtg(['worker'], env(id)));
    children.push(...workers);
    // While chunks are still to be done, the stream already holds fewer entries than were added.
    await waitFor('acknowledged entries trimmed while the sweep runs', async () => {
      if (!(await raw.exists(`${prefix}:tasks`))) return false;
      const done = await raw.hlen(`${prefix}:done`);
      return done < 1500 && (await raw.xlen(`${prefix}:tasks`)) < (await entriesAdded(prefix)) - 100;
    }, 60_000, 20);
    const codes = await Promise.all(workers.map((w) => ended(w)));
    workers.forEach((w, i) => assert.equal(codes[i], 0, w.stderr()));

    assert.equal(await entriesAdded(prefix), 2000, 'one entry per chunk was added');
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0, 'no acknowledged entry is left');
    const group = await groupInfo(prefix);
    assert.deepEqual([group['pending'], group['lag'], group['entries-read']], [0, 0, 2000]);

    const aggregate = await runTtg(['aggregate', '--json'], workerEnv(prefix), 30_000);
    assert.equal(aggregate.code, 0, aggregate.stderr);
    const report = lastJsonLine(aggregate.stdout);
    assert.equal(report['grand_sum'], ref.sum);
    assert.equal(report['total_params'], ref.count);
    assert.equal(report['global_min'], ref.min);
    assert.equal(report['global_max'], ref.max);
    assert.deepEqual([report['total_chunks'], report['missing_chunks'], report['duplicate_results']], [2000, [], 0]);

    const monitor = await runTtg(['monitor', '--once'], workerEnv(prefix), 20_000);
    assert.equal(monitor.code, 0, monitor.stderr);
    assert.match(monitor.stdout, /2000\/2000 chunks, .*in flight 0, retrying 0, dead-lettered 0, ready 0, results 2000/, monitor.stdout);
  });

  it('never trims an entry still pending or not yet delivered, and the monitor\'s counts stay exact', async () => {
    const prefix = fresh('bounds');
    const extra = { TOTAL_PARAMS: 1000, CHUNK_SIZE: 1 };
    const a = await joined(prefix, extra, '0');
    // The first 300 entries (chunks 000..299) go to one worker; it completes 50..299 and keeps 0..49.
    const taken: Delivery[] = [];
    while (taken.length < 300) taken.push(...(await a.take(300 - taken.length, 100)));
    assert.deepEqual(taken.map((d) => d.chunkId), range(0, 300, 5));
    const results = await Promise.all(taken.slice(50).map((d) => a.complete(d, resultFor(d, '0'))));
    assert.ok(results.every(Boolean));

    // Chunk 000 is pending: it holds back the trim of everything after it.
    await trim(prefix);
    assert.deepEqual(await chunkIdsInStream(prefix), range(0, 1000, 5), 'nothing removed while the oldest entry is pending');
    let stats = await a.stats();
    assert.deepEqual(
      [stats.totalChunks, stats.completedChunks, stats.settledChunks, stats.ready, stats.inFlight, stats.retrying, stats.results],
      [1000, 250, 250, 700, 50, 0, 250]);
    assert.deepEqual(stats.consumers, { 'worker-0': 50 });

    // Once 0..49 are done too, the 300 acknowledged entries may go; the 700 undelivered ones all stay.
    assert.ok((await Promise.all(taken.slice(0, 50).map((d) => a.complete(d, resultFor(d, '0'))))).every(Boolean));
    await trim(prefix);
    const left = await chunkIdsInStream(prefix);
    assert.deepEqual(left.slice(-700), range(300, 1000, 5), 'every undelivered entry is still there, in order');
    // Whole stream nodes (100 entries by default) go at once: at most one node's worth of acknowledged entries stays.
    assert.ok(left.length <= 800, `acknowledged entries were trimmed: ${left.length} entries left`);
    const group = await groupInfo(prefix);
    assert.equal(group['lag'], 700, 'the group\'s lag stays exact (no tombstone): KEDA and the monitor read it');
    stats = await a.stats();
    assert.deepEqual(
      [stats.totalChunks, stats.completedChunks, stats.settledChunks, stats.ready, stats.inFlight, stats.retrying, stats.results],
      [1000, 300, 300, 700, 0, 0, 300]);
    const monitor = await runTtg(['monitor', '--once'], workerEnv(prefix, extra), 20_000);
    assert.equal(monitor.code, 0, monitor.stderr);
    assert.match(monitor.stdout, /300\/1000 chunks, .*in flight 0, retrying 0, dead-lettered 0, ready 700, results 300/, monitor.stdout);

    // The rest, taken and completed: the completion that settles the sweep empties the stream.
    for (;;) {
      const more = await a.take(500, 0);
      if (!more.length) break;
      assert.ok((await Promise.all(more.map((d) => a.complete(d, resultFor(d, '0'))))).every(Boolean));
    }
    assert.equal(await a.isSettled(), true);
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0);
    assert.deepEqual((await a.readResults()).map((r) => r.chunkId).sort(), range(0, 1000, 5));
  });

  it('a completion refused for ownership deletes nothing: the new owner\'s entry stays until it completes it', async () => {
    const prefix = fresh('owner');
    const extra = { TOTAL_PARAMS: 300, CHUNK_SIZE: 100 };
    const first = await joined(prefix, extra, '1');
    const firstHeld = await first.take(3, 100);
    assert.deepEqual(firstHeld.map((d) => d.chunkId), ['00000', '00001', '00002']);
    // The second worker takes all three over (a threshold of 0: as if the first had stopped answering).
    const second = await joined(prefix, extra, '2');
    const secondHeld = await waitFor('the takeover', async () => {
      const claimed = await second.claimStale(3, 0);
      return claimed.length === 3 ? claimed : null;
    });
    assert.deepEqual(secondHeld.map((d) => d.chunkId), ['00000', '00001', '00002']);
    const entryOf = (d: Delivery) => (d.handle as { entryId: string }).entryId;

    // The second completes 1 and 2; the first's late completions of all three are refused.
    assert.deepEqual(await Promise.all(secondHeld.slice(1).map((d) => second.complete(d, resultFor(d, '2')))), [true, true]);
    assert.deepEqual(await Promise.all(firstHeld.map((d) => first.complete(d, resultFor(d, '1')))), [false, false, false]);
    await trim(prefix);
    // Chunk 0's entry is still there and still the second worker's; 1 and 2 wait behind it.
    assert.equal((await raw.xrange(`${prefix}:tasks`, entryOf(secondHeld[0]!), entryOf(secondHeld[0]!))).length, 1);
    const pending = (await raw.call('XPENDING', `${prefix}:tasks`, `${prefix}-workers`, '-', '+', 10)) as unknown[][];
    assert.deepEqual(pending.map((p) => [p[0], p[1]]), [[entryOf(secondHeld[0]!), 'worker-2']]);
    assert.deepEqual(await chunkIdsInStream(prefix), ['00000', '00001', '00002']);
    assert.deepEqual((await first.readResults()).map((r) => [r.chunkId, r.workerId]), [['00001', '2'], ['00002', '2']]);

    // Its owner completes it: the sweep is settled and the stream empty.
    assert.equal(await second.complete(secondHeld[0]!, resultFor(secondHeld[0]!, '2')), true);
    assert.equal(await second.isSettled(), true);
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0);
    assert.deepEqual((await second.readResults()).map((r) => [r.chunkId, r.workerId]).sort(), [['00000', '2'], ['00001', '2'], ['00002', '2']]);
  });

  it('a worker killed with SIGKILL mid-chunk after trimming started: its chunks are recovered and the sum is exact', async () => {
    const prefix = fresh('kill');
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10_000)!;
    const common = { TOTAL_PARAMS: 10_000, CHUNK_SIZE: 50 };
    // The survivor starts alone (chunks of 50 ms, 10 s for the sweep), so the stream is already being trimmed when
    // the victim joins.
    const survivor = startTtg(['worker'], workerEnv(prefix, { ...common, WORKER_ID: '0', SIMULATE_WORK_MS: 1 }));
    children.push(survivor);
    await waitFor('trimming under way', async () =>
      (await raw.exists(`${prefix}:tasks`)) === 1 && (await raw.xlen(`${prefix}:tasks`)) < (await entriesAdded(prefix)) - 20, 60_000, 20);
    // The victim's chunks take 1 s each (20 ms per parameter): it is mid-chunk whenever it holds one.
    const victim = startTtg(['worker'], workerEnv(prefix, { ...common, WORKER_ID: '9', SIMULATE_WORK_MS: 20, PREFETCH: 2 }));
    children.push(victim);
    const held = await waitFor('the victim holding chunks', async () => {
      const pending = (await raw.call('XPENDING', `${prefix}:tasks`, `${prefix}-workers`, '-', '+', 1000, 'worker-9')) as unknown[][];
      return pending.length > 0 ? pending.map((p) => String(p[0])) : null;
    }, 30_000, 5);
    const heldChunks: string[] = [];
    for (const id of held) {
      const [[, fields]] = (await raw.xrange(`${prefix}:tasks`, id, id)) as [[string, string[]]];
      heldChunks.push(fields[fields.indexOf('chunk_id') + 1]!);
    }
    victim.child.kill('SIGKILL');
    assert.equal(await victim.exited, 'SIGKILL');
    assert.equal(await raw.hlen(`${prefix}:done`) < 200, true, 'the victim died before the sweep was over');

    assert.equal(await ended(survivor), 0, survivor.stderr());
    for (const chunk of heldChunks) {
      assert.match(survivor.stderr(), new RegExp(`FAULT RECOVERY: claimed chunk ${chunk}\\b`), `chunk ${chunk} was recovered`);
    }
    assert.ok(Number(lastJsonLine(survivor.stdout())['chunks_recovered']) >= heldChunks.length);
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0, 'the recovered entries were trimmed once acknowledged');
    const aggregate = await runTtg(['aggregate', '--json'], workerEnv(prefix), 30_000);
    assert.equal(aggregate.code, 0, aggregate.stderr);
    const report = lastJsonLine(aggregate.stdout);
    assert.deepEqual([report['total_chunks'], report['missing_chunks'], report['duplicate_results']], [200, [], 0]);
    assert.equal(report['grand_sum'], ref.sum);
    assert.equal(report['total_params'], ref.count);
  });

  it('a duplicate entry of a chunk already done, delivered after the sweep settled, is acknowledged and trimmed', async () => {
    const prefix = fresh('dup');
    const a = await joined(prefix, { TOTAL_PARAMS: 200, CHUNK_SIZE: 100 }, '0');
    const both = await a.take(2, 100);
    assert.deepEqual(await Promise.all(both.map((d) => a.complete(d, resultFor(d, '0')))), [true, true]);
    assert.equal(await a.isSettled(), true);
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0);
    // Chunk 00000 once more, exactly as its genuine entry: it has a result already, so nobody computes it again.
    await raw.xadd(`${prefix}:tasks`, '*', 'chunk_id', '00000', 'start_param', '0', 'end_param', '100', 'total_params', '200');
    assert.deepEqual(await a.take(10, 0), []);
    assert.equal(await raw.xlen(`${prefix}:tasks`), 0);
    assert.deepEqual([(await groupInfo(prefix))['pending'], (await groupInfo(prefix))['lag']], [0, 0]);
    assert.deepEqual((await a.readResults()).map((r) => r.chunkId), ['00000', '00001']);
  });

  it('works out the bound after the last delivered id in decimal strings, beyond a double\'s exact range', async () => {
    const lua = readFileSync(path.join(ROOT, 'backends/redis/trim-acknowledged.lua'), 'utf8');
    const next = async (id: string) => raw.eval(`${lua}\nreturn nextStreamId(ARGV[1]) or false`, 0, id);
    assert.equal(await next('1700000000000-0'), '1700000000000-1');
    assert.equal(await next('1700000000000-99'), '1700000000000-100');
    assert.equal(await next('1700000000000-1299'), '1700000000000-1300');
    assert.equal(await next('5-9007199254740993'), '5-9007199254740994');
    assert.equal(await next('18446744073709551615-18446744073709551614'), '18446744073709551615-18446744073709551615');
    assert.equal(await next('not an id'), null);
  });
});

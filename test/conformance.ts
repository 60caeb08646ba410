/**
 * The backend conformance suite: every queue backend (memory, Redis,
 * RabbitMQ) must pass the same tests of the contract in backends/types.ts.
 * Instantiated by test/conformance-<backend>.test.ts.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../engine/config.js';
import { SettingsMismatchError } from '../engine/errors.js';
import { silentLogger } from '../engine/log.js';
import { KernelPool } from '../engine/pool.js';
import { QueueWorker } from '../engine/queue-worker.js';
import { buildReport } from '../engine/aggregate.js';
import { toChunkStats } from '../engine/stats.js';
import { createBackend } from '../backends/index.js';
import type { ChunkResult, Delivery, QueueBackend, SweepSettings } from '../backends/types.js';
import { golden, randomPrefix } from './helpers.js';

export interface ConformanceTarget {
  kind: 'memory' | 'redis' | 'rabbitmq';
  /** Fails with how to start the server when it is not there. */
  requireServer: () => Promise<void>;
  /** Connection variables. */
  env: Record<string, string>;
  /**
   * Makes `backend`'s unacknowledged deliveries available to others as if its
   * process had died, and returns the stale threshold (ms) others must use to
   * take them (0 where the broker redelivers by itself).
   */
  crash: (backend: QueueBackend) => Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function conformanceSuite(target: ConformanceTarget): void {
  const opened: QueueBackend[] = [];
  const prefixes = new Set<string>();
  let pool: KernelPool | null = null;

  function env(prefix: string, extra: Record<string, string | number> = {}) {
    const e: Record<string, string> = {
      ...target.env, USE_QUEUE: 'true', QUEUE_BACKEND: target.kind, QUEUE_PREFIX: prefix, THREADS: '1',
      CONNECT_TIMEOUT_SECONDS: '5', RABBITMQ_RETRY_DELAY_MS: '100', RABBITMQ_MAX_RETRIES: '2',
      STALE_THRESHOLD_MS: '200', STALE_CHECK_INTERVAL_SECONDS: '0.1', IDLE_TIMEOUT_SECONDS: '10',
    };
    for (const [k, v] of Object.entries(extra)) e[k] = String(v);
    return e;
  }

  async function open(prefix: string, workerId: string, extra: Record<string, string | number> = {}): Promise<QueueBackend> {
    prefixes.add(prefix);
    const config = loadConfig(env(prefix, { WORKER_ID: workerId, ...extra }));
    const backend = await createBackend({ config, workerId, log: silentLogger });
    opened.push(backend);
    return backend;
  }

  function settings(totalParams: number, chunkSize: number): SweepSettings {
    return { totalParams, chunkSize, kernel: 'placeholder' };
  }

  async function takeAtLeast(backend: QueueBackend, n: number, timeoutMs = 5000): Promise<Delivery[]> {
    const got: Delivery[] = [];
    const deadline = Date.now() + timeoutMs;
    while (got.length < n && Date.now() < deadline) got.push(...(await backend.take(n - got.length, 200)));
    return got;
  }

  function fakeResult(d: Delivery, workerId: string): ChunkResult {
    const t = d.task!;
    const n = t.endParam - t.startParam;
    return {
      chunkId: t.chunkId, workerId, status: 'completed', durationSeconds: 0.001, completedAt: new Date().toISOString(),
      stats: toChunkStats({ count: n, min: t.startParam, max: t.endParam - 1, argmin: t.startParam, argmax: t.endParam - 1, partials: [((t.startParam + t.endParam - 1) * n) / 2] }),
    };
  }

  after(async () => {
    for (const b of opened) await b.close().catch(() => {});
    for (const prefix of prefixes) {
      const cleaner = await createBackend({ config: loadConfig(env(prefix)), workerId: 'cleanup', log: silentLogger });
      await cleaner.reset().catch(() => {});
      await cleaner.close().catch(() => {});
    }
    await pool?.close();
  });

  test(`${target.kind}: workers initializing at once create the tasks exactly once`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-init`);
    const backends = await Promise.all(Array.from({ length: 8 }, (_, i) => open(prefix, String(i))));
    const outcomes = await Promise.all(backends.map((b) => b.init(settings(1000, 30))));
    assert.equal(outcomes.filter((o) => o.created).length, 1, 'exactly one worker creates the tasks');
    for (const o of outcomes) assert.equal(o.totalChunks, 34);
    const stats = await backends[0]!.stats();
    assert.equal(stats.totalChunks, 34);
    assert.equal(stats.ready, 34, 'no chunk enqueued twice');
    // Taking everything yields each chunk id once.
    const all = await takeAtLeast(backends[1]!, 34);
    assert.equal(all.length, 34);
    assert.equal(new Set(all.map((d) => d.chunkId)).size, 34);
    assert.deepEqual(await backends[2]!.take(5, 300), []);
    assert.equal(new Set(backends.map((b) => b.consumerName)).size, 8, 'consumer names are unique per process');
  });

  test(`${target.kind}: a worker with different sweep settings refuses, naming the difference`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-mismatch`);
    const first = await open(prefix, '0');
    await first.init(settings(1000, 100));
    const cases: Array<[SweepSettings, RegExp]> = [
      [settings(2000, 100), /TOTAL_PARAMS is 2000 here but 1000 in the queue/],
      [settings(1000, 50), /CHUNK_SIZE is 50 here but 100 in the queue/],
      [{ totalParams: 1000, chunkSize: 100, kernel: 'mandelbrot' }, /KERNEL is mandelbrot here but placeholder in the queue/],
    ];
    for (const [s, pattern] of cases) {
      const other = await open(prefix, '1');
      await assert.rejects(other.init(s), (err: unknown) => {
        assert.ok(err instanceof SettingsMismatchError, String(err));
        assert.match(err.message, pattern);
        return true;
      });
    }
    assert.deepEqual(await first.readSettings(), settings(1000, 100));
  });

  test(`${target.kind}: three workers sweep with the exact aggregate, and reading results consumes nothing`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-sweep`);
    pool ??= new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm' });
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100000)!;
    const workers = await Promise.all(['0', '1', '2'].map(async (id) => {
      const config = loadConfig(env(prefix, { WORKER_ID: id, TOTAL_PARAMS: ref.end, CHUNK_SIZE: 777, PREFETCH: 3 }));
      const backend = await open(prefix, id, { TOTAL_PARAMS: ref.end, CHUNK_SIZE: 777 });
      return new QueueWorker({ config, backend, pool: pool!, log: silentLogger, pollMs: 200 });
    }));
    const summaries = await Promise.all(workers.map((w) => w.run()));
    for (const s of summaries) assert.equal(s.status, 'completed');
    const chunks = Math.ceil(ref.end / 777);
    assert.equal(summaries.reduce((a, s) => a + s.chunks_processed, 0), chunks);
    const reader = await open(prefix, 'reader');
    const report = buildReport(await reader.readSettings(), await reader.readResults(), await reader.readDeadLetters());
    assert.equal(report.grand_sum, ref.sum);
    assert.equal(report.total_params, ref.count);
    assert.equal(report.global_min, ref.min);
    assert.equal(report.global_max, ref.max);
    assert.equal(report.total_chunks, chunks);
    assert.deepEqual(report.missing_chunks, []);
    assert.equal(report.complete, true);
    assert.equal(Object.values(report.worker_distribution).reduce((a, b) => a + b, 0), chunks);
    const again = buildReport(await reader.readSettings(), await reader.readResults(), await reader.readDeadLetters());
    assert.deepEqual(again, report, 'the aggregate is the same the second time');
    assert.equal(await reader.isSettled(), true);
  });

  test(`${target.kind}: chunks of a crashed worker are finished by the others, exactly`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-crash`);
    pool ??= new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm' });
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
    const victim = await open(prefix, '9', { TOTAL_PARAMS: ref.end, CHUNK_SIZE: 100 });
    await victim.init(settings(ref.end, 100));
    const held = await takeAtLeast(victim, 5);
    assert.equal(held.length, 5);
    await target.crash(victim);
    const config = loadConfig(env(prefix, { WORKER_ID: '1', TOTAL_PARAMS: ref.end, CHUNK_SIZE: 100 }));
    const backend = await open(prefix, '1', { TOTAL_PARAMS: ref.end, CHUNK_SIZE: 100 });
    const summary = await new QueueWorker({ config, backend, pool, log: silentLogger, pollMs: 100 }).run();
    assert.equal(summary.status, 'completed');
    const report = buildReport(await backend.readSettings(), await backend.readResults(), []);
    assert.deepEqual(report.missing_chunks, []);
    assert.equal(report.grand_sum, ref.sum);
    assert.equal(report.total_chunks, 100);
  });

  test(`${target.kind}: a chunk delivered twice is counted once`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-twice`);
    const a = await open(prefix, 'a');
    await a.init(settings(300, 100));
    const [first] = await takeAtLeast(a, 1);
    assert.ok(first?.task);
    await target.crash(a);
    await sleep(300);
    const b = await open(prefix, 'b');
    await b.init(settings(300, 100));
    const redelivered: Delivery[] = [...(await b.claimStale(10, 200))];
    redelivered.push(...(await takeAtLeast(b, 3 - redelivered.length)));
    const again = redelivered.find((d) => d.chunkId === first.chunkId);
    assert.ok(again, `chunk ${first.chunkId} was delivered again`);
    // The crashed worker's late completion must not count twice, whether the backend refuses it or keeps it.
    const late = await a.complete(first, fakeResult(first, 'a')).catch(() => false);
    assert.equal(await b.complete(again, fakeResult(again, 'b')), true);
    for (const d of redelivered) if (d !== again) assert.equal(await b.complete(d, fakeResult(d, 'b')), true);
    const results = await b.readResults();
    const forChunk = results.filter((r) => r.chunkId === first.chunkId);
    assert.equal(forChunk.length, late ? 2 : 1);
    const report = buildReport(await b.readSettings(), results, []);
    assert.equal(report.total_chunks, 3);
    assert.equal(report.total_params, 300);
    assert.equal(report.grand_sum, (299 * 300) / 2);
    assert.equal(report.duplicate_results, forChunk.length - 1);
    assert.equal(await b.isSettled(), true);
  });

  test(`${target.kind}: a failing chunk is retried, then dead-lettered with its reason and attempts`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-fail`);
    const w = await open(prefix, '0');
    await w.init(settings(200, 100));
    const taken = await takeAtLeast(w, 2);
    const bad = taken[0]!;
    const good = taken[1]!;
    assert.equal(await w.complete(good, fakeResult(good, '0')), true);
    assert.equal(await w.fail(bad, 'kernel exploded'), 'retried');
    assert.equal(await w.isSettled(), false);
    assert.equal(await w.hasOutstanding(), true, 'a chunk waiting out its retry delay is outstanding');
    const [retry] = await takeAtLeast(w, 1, 10000);
    assert.ok(retry, 'the failed chunk came back');
    assert.equal(retry.chunkId, bad.chunkId);
    assert.equal(retry.attempt, 1);
    assert.equal(await w.fail(retry, 'kernel exploded again'), 'dead-lettered');
    const dead = await w.readDeadLetters();
    assert.equal(dead.length, 1);
    assert.equal(dead[0]!.chunkId, bad.chunkId);
    assert.equal(dead[0]!.attempts, 2);
    assert.match(dead[0]!.reason, /kernel exploded again/);
    assert.equal(await w.isSettled(), true);
    const report = buildReport(await w.readSettings(), await w.readResults(), dead);
    assert.deepEqual(report.missing_chunks, [bad.chunkId]);
    assert.equal(report.dead_lettered_chunks[0]!.chunk_id, bad.chunkId);
    assert.deepEqual(await w.readDeadLetters(), dead, 'reading dead letters consumes nothing');
  });

  test(`${target.kind}: released chunks go to the next worker; reset removes the sweep`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-release`);
    const a = await open(prefix, 'a');
    await a.init(settings(500, 100));
    const held = await takeAtLeast(a, 2);
    await a.release(held);
    const b = await open(prefix, 'b');
    await b.init(settings(500, 100));
    const ids = new Set<string>();
    const deadline = Date.now() + 5000;
    while (ids.size < 5 && Date.now() < deadline) {
      for (const d of [...(await b.take(5, 200)), ...(await b.claimStale(5, 200))]) ids.add(d.chunkId);
    }
    assert.equal(ids.size, 5, 'every chunk, the released ones too, reaches the other worker');
    await b.reset();
    assert.equal(await b.readSettings(), null);
    assert.deepEqual(await b.readResults(), []);
  });
}

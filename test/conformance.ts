/**
 * The backend conformance suite: the contract of backends/types.ts, tested
 * once, run against every backend (memory, Redis, RabbitMQ) by
 * test/conformance-<backend>.test.ts. A new backend proves itself here
 * (docs/contributing.md); its own test file keeps only what is specific to
 * its broker.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../engine/config.js';
import { SettingsMismatchError } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import { KernelPool } from '../engine/pool.js';
import { QueueWorker } from '../engine/queue-worker.js';
import { buildReport } from '../engine/aggregate.js';
import { formatStats, runMonitor } from '../engine/monitor.js';
import { toChunkStats } from '../engine/stats.js';
import { createBackend } from '../engine/backend.js';
import type { ChunkResult, Delivery, QueueBackend, SweepSettings } from '../backends/types.js';
import { golden, nonEmpty, randomPrefix, waitFor } from './helpers.js';
import { TcpRelay } from './relay.js';

export interface ConformanceTarget {
  /** The backend's name in the registry: QUEUE_BACKEND's value. */
  kind: string;
  /** Fails with how to start the server when it is not there. */
  requireServer: () => Promise<void>;
  /** Connection variables. */
  env: Record<string, string>;
  /**
   * Where the broker listens, and which variable points a worker at it: a
   * crashed worker is one whose connection goes through a TCP relay
   * (test/relay.ts) that is then cut, so the broker really sees the
   * connection die while the backend object lives on. null for the embedded
   * queue, which has no connection to cut: its crash is close().
   */
  broker: { host: string; port: number; portVariable: string } | null;
  /** True when the broker hands a dead consumer's deliveries to others by itself (claimStale then returns []). */
  redeliversByItself: boolean;
  /** Adds a task entry exactly as given, as a hand-made message on the broker would be. */
  injectTask: (prefix: string, fields: Record<string, unknown>) => Promise<void>;
}

export function conformanceSuite(target: ConformanceTarget): void {
  const opened: QueueBackend[] = [];
  const relays: TcpRelay[] = [];
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

  /**
   * A backend whose process "dies" on crash(): its connection is cut at the
   * relay (or, in-process, it is closed), so what it held goes to others.
   * heal() lets it reconnect, to show that a late commit is refused.
   */
  async function openCrashable(prefix: string, workerId: string, extra: Record<string, string | number> = {}) {
    if (target.broker === null) {
      const backend = await open(prefix, workerId, extra);
      return { backend, crash: () => backend.close(), heal: async () => {} };
    }
    const relay = new TcpRelay(target.broker.host, target.broker.port);
    await relay.up();
    relays.push(relay);
    const backend = await open(prefix, workerId, { ...extra, [target.broker.portVariable]: relay.port, CONNECT_TIMEOUT_SECONDS: 20 });
    return { backend, crash: () => relay.down(), heal: () => relay.up() };
  }

  /** Calls `probe` until it returns a non-empty list: the condition waited on, never a sleep. */
  function until<T>(probe: () => Promise<T[]>, timeoutMs = 10_000): Promise<T[]> {
    return waitFor('a non-empty answer', async () => nonEmpty(await probe()), timeoutMs, 0);
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
    // Crashed workers get their connection back so they can close cleanly; then the relays go.
    for (const r of relays) await r.up().catch(() => {});
    for (const b of opened) await b.close().catch(() => {});
    for (const r of relays) await r.down().catch(() => {});
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
      [{ totalParams: 1000, chunkSize: 100, kernel: 'placeholder', kernelSha256: 'c'.repeat(64) }, /KERNEL is placeholder \(module sha-256 c{64}\) here but placeholder in the queue/],
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

    // A user kernel's sweep records its module: the same module joins, another is refused naming both hashes.
    const userPrefix = randomPrefix(`${target.kind}-module`);
    const module = (sha: string): SweepSettings => ({ ...settings(1000, 100), kernel: 'collatz', kernelSha256: sha });
    const creator = await open(userPrefix, '0');
    await creator.init(module('a'.repeat(64)));
    assert.deepEqual(await creator.readSettings(), module('a'.repeat(64)));
    assert.equal((await (await open(userPrefix, '1')).init(module('a'.repeat(64)))).created, false, 'the same module joins');
    await assert.rejects((await open(userPrefix, '2')).init(module('b'.repeat(64))), (err: unknown) => {
      assert.ok(err instanceof SettingsMismatchError, String(err));
      assert.match(err.message, new RegExp(`KERNEL collatz is the module with sha-256 b{64} here but a{64} in the queue`));
      return true;
    });
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
    const { backend: victim, crash } = await openCrashable(prefix, '9', { TOTAL_PARAMS: ref.end, CHUNK_SIZE: 100 });
    await victim.init(settings(ref.end, 100));
    const held = await takeAtLeast(victim, 5);
    assert.equal(held.length, 5);
    await crash();
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
    const { backend: a, crash, heal } = await openCrashable(prefix, 'a');
    await a.init(settings(300, 100));
    const [first] = await takeAtLeast(a, 1);
    assert.ok(first?.task);
    await crash();
    const b = await open(prefix, 'b');
    await b.init(settings(300, 100));
    // Until all three chunks are in hand: redelivered by the broker, or claimed once stale (200 ms).
    const redelivered: Delivery[] = [];
    const deadline = Date.now() + 10_000;
    while (redelivered.length < 3 && Date.now() < deadline) {
      // Heartbeats keep b's own chunks from looking stale while it waits for a's.
      await b.heartbeat(redelivered);
      redelivered.push(...(await b.claimStale(10, 200)), ...(await b.take(3 - redelivered.length, 100)));
    }
    const again = redelivered.find((d) => d.chunkId === first.chunkId);
    assert.ok(again, `chunk ${first.chunkId} was delivered again`);
    assert.equal(await b.complete(again, fakeResult(again, 'b')), true);
    // The crashed worker comes back (its connection heals) and tries to commit late: refused,
    // or at worst kept as a duplicate that the aggregate does not count.
    await heal();
    const late = await a.complete(first, fakeResult(first, 'a')).catch(() => false);
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
    const stats = await w.stats();
    assert.deepEqual([stats.completedChunks, stats.deadLettered, stats.settledChunks, stats.totalChunks], [1, 1, 2, 2]);
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

  test(`${target.kind}: a failed chunk waits out RETRY_DELAY_MS before it comes back`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-delay`);
    const delayMs = 400;
    const w = await open(prefix, '0', { RABBITMQ_RETRY_DELAY_MS: delayMs, RABBITMQ_MAX_RETRIES: 3 });
    await w.init(settings(100, 100));
    const [d] = await takeAtLeast(w, 1);
    assert.ok(d);
    const failedAt = Date.now();
    assert.equal(await w.fail(d, 'boom'), 'retried');
    assert.equal((await w.stats()).retrying, 1, 'the chunk is reported as waiting out its delay');
    assert.equal(await w.hasOutstanding(), true);
    const [again] = await takeAtLeast(w, 1, 10_000);
    const waited = Date.now() - failedAt;
    assert.ok(again, 'the chunk came back');
    assert.equal(again.chunkId, d.chunkId);
    assert.equal(again.attempt, 1);
    // A lower bound only: it cannot come back early, however loaded the machine.
    assert.ok(waited >= delayMs * 0.9, `it came back after ${waited} ms, before the ${delayMs} ms delay`);
    assert.equal((await w.stats()).retrying, 0);
  });

  test(`${target.kind}: tasks that are not exactly a chunk of the sweep are dead-lettered at once and settle nothing`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-notchunk`);
    const w = await open(prefix, '0', { RABBITMQ_MAX_RETRIES: 3 });
    await w.init(settings(300, 100));
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      // A real chunk id with a wrong range: its result would be the chunk's first, and wrong.
      [{ chunk_id: '00001', start_param: '0', end_param: '100', total_params: '300' }, /chunk 00001 of this sweep is \[100, 200\) but the task says \[0, 100\)/],
      [{ chunk_id: '00007', start_param: '0', end_param: '100', total_params: '300' }, /chunk_id "00007" is not a chunk of this sweep \(00000 to 00002\)/],
      [{ chunk_id: '2', start_param: '200', end_param: '300', total_params: '300' }, /chunk_id "2" is not a chunk of this sweep/],
      [{ chunk_id: '00002', start_param: '200', end_param: '300', total_params: '600' }, /total_params \(600\) differs from the sweep's 300/],
      [{ chunk_id: '00000', start_param: '50', end_param: '10', total_params: '300' }, /end_param \(10\) must be greater than start_param \(50\)/],
      [{ chunk_id: '00000', end_param: '100', total_params: '300' }, /missing field start_param/],
    ];
    for (const [fields] of bad) await target.injectTask(prefix, fields);
    const got = await takeAtLeast(w, 3 + bad.length);
    assert.equal(got.length, 3 + bad.length);
    const malformed = got.filter((d) => d.task === null);
    assert.equal(malformed.length, bad.length, 'every hand-made task is refused');
    for (const [, pattern] of bad) assert.ok(malformed.some((d) => pattern.test(d.malformed ?? '')), `a delivery refused with ${pattern}`);
    const genuine = got.filter((d) => d.task !== null);
    assert.deepEqual(genuine.map((d) => d.task), [...settingsTasks(300, 100)]);
    for (const d of malformed) assert.equal(await w.fail(d, d.malformed!), 'dead-lettered', `dead at once: ${d.malformed}`);
    assert.equal(await w.complete(genuine[0]!, fakeResult(genuine[0]!, '0')), true);

    // One chunk of three is settled, whatever the dead letters say.
    assert.equal(await w.isSettled(), false);
    const stats = await w.stats();
    assert.deepEqual([stats.completedChunks, stats.deadLettered, stats.settledChunks, stats.totalChunks], [1, 0, 1, 3]);
    assert.match(formatStats(stats, null), /\s1\/3 chunks/);
    const lines: string[] = [];
    await runMonitor({ backend: w, config: loadConfig(env(prefix)), intervalSeconds: 1, once: true, shouldStop: () => true, write: (t) => lines.push(t) });
    assert.match(lines.join('\n'), /\s1\/3 chunks/);
    assert.doesNotMatch(lines.join('\n'), /sweep settled/);

    for (const d of genuine.slice(1)) assert.equal(await w.complete(d, fakeResult(d, '0')), true);
    assert.equal(await w.isSettled(), true);
    const report = buildReport(await w.readSettings(), await w.readResults(), await w.readDeadLetters());
    assert.equal(report.grand_sum, (299 * 300) / 2, 'only the genuine chunks are summed');
    assert.equal(report.total_chunks, 3);
    assert.equal(report.duplicate_results, 0);
    const settled = await w.stats();
    assert.deepEqual([settled.completedChunks, settled.deadLettered, settled.settledChunks], [3, 0, 3]);
    lines.length = 0;
    await runMonitor({ backend: w, config: loadConfig(env(prefix)), intervalSeconds: 1, once: true, shouldStop: () => true, write: (t) => lines.push(t) });
    assert.match(lines.join('\n'), /\s3\/3 chunks/);
    assert.match(lines.join('\n'), /sweep settled/);
  });

  test(`${target.kind}: heartbeats keep a delivery with its worker; a worker that lost one can neither complete nor fail it`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-owner`);
    const a = await open(prefix, 'a');
    const b = await open(prefix, 'b');
    await a.init(settings(100, 100));
    await b.init(settings(100, 100));
    const [d] = await takeAtLeast(a, 1);
    assert.ok(d);
    // While A heartbeats more often than the 300 ms threshold, nobody may claim its chunk (over twice the threshold).
    const end = Date.now() + 500;
    while (Date.now() < end) {
      await a.heartbeat([d]);
      assert.deepEqual(await b.claimStale(10, 300), [], 'a heartbeated delivery was claimed');
      await a.heartbeat([d]);
    }
    if (target.redeliversByItself) {
      // The broker keeps it with A for as long as A's connection lives: A still owns it.
      assert.deepEqual(await b.claimStale(10, 0), []);
      assert.equal(await a.complete(d, fakeResult(d, 'a')), true);
    } else {
      // A goes silent: B takes it over once it is idle past the threshold.
      const [stolen] = await untilClaimed(() => b.claimStale(10, 300));
      assert.equal(stolen!.chunkId, d.chunkId);
      assert.equal(stolen!.recovered, true);
      assert.equal(await a.complete(d, fakeResult(d, 'a')), false, 'the old owner cannot complete it');
      assert.equal(await a.fail(d, 'late'), 'not-owner', 'nor fail it');
      await a.heartbeat([d]); // a late heartbeat takes nothing back
      assert.equal(await b.complete(stolen!, fakeResult(stolen!, 'b')), true);
    }
    const results = await b.readResults();
    assert.deepEqual(results.map((r) => r.chunkId), [d.chunkId], 'one result for the chunk');
    assert.equal(await b.isSettled(), true);
    assert.equal(await b.hasOutstanding(), false);
  });

  /** Polls claimStale (the condition) until it yields. */
  function untilClaimed(probe: () => Promise<Delivery[]>): Promise<Delivery[]> {
    return until(probe);
  }

  test(`${target.kind}: settled only when every chunk has a result or a dead letter; outstanding while any is out`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-settle`);
    const w = await open(prefix, '0', { RABBITMQ_MAX_RETRIES: 1 });
    assert.equal(await w.readSettings(), null, 'no sweep yet');
    assert.equal(await w.isSettled(), false, 'no sweep is not a settled sweep');
    await w.init(settings(30, 10));
    assert.equal(await w.hasOutstanding(), true, 'chunks are waiting');
    const [d0, d1, d2] = await takeAtLeast(w, 3);
    assert.equal(await w.isSettled(), false);
    assert.equal(await w.complete(d0!, fakeResult(d0!, '0')), true);
    assert.equal(await w.fail(d1!, 'broken'), 'dead-lettered');
    assert.equal(await w.isSettled(), false, 'one chunk is still in hand');
    assert.equal(await w.complete(d2!, fakeResult(d2!, '0')), true);
    assert.equal(await w.isSettled(), true);
    assert.equal(await w.hasOutstanding(), false);
    const stats = await w.stats();
    assert.deepEqual([stats.totalChunks, stats.completedChunks, stats.deadLettered, stats.settledChunks, stats.ready, stats.retrying, stats.results],
      [3, 2, 1, 3, 0, 0, 2]);
    assert.deepEqual(stats.settings, settings(30, 10));
    // A worker that asks for more once the sweep has settled is not kept waiting for its poll (a minute here):
    // `ttg run` and idle workers leave the moment the last chunk is in.
    const guard = new Promise<'waited'>((resolve) => setTimeout(() => resolve('waited'), 20_000).unref());
    assert.deepEqual(await Promise.race([w.take(1, 60_000), guard]), [], 'take() on a settled sweep returns at once, empty');
  });

  test(`${target.kind}: a dead-lettered chunk re-driven comes back with fresh attempts, counts as pending, and is counted once`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-redrive`);
    const w = await open(prefix, '0', { RABBITMQ_MAX_RETRIES: 2 });
    await w.init(settings(300, 100));
    const [d0, d1, d2] = (await takeAtLeast(w, 3)).sort((a, b) => a.chunkId.localeCompare(b.chunkId));
    assert.equal(await w.complete(d0!, fakeResult(d0!, '0')), true);
    assert.equal(await w.complete(d2!, fakeResult(d2!, '0')), true);
    const bad = d1!.chunkId;
    /** Takes chunk `bad` again and fails it, expecting `outcome` at attempt `attempt`. */
    const failAgain = async (b: QueueBackend, attempt: number, outcome: string) => {
      const [d] = await takeAtLeast(b, 1, 10_000);
      assert.ok(d, `chunk ${bad} came back`);
      assert.equal(d.chunkId, bad);
      assert.equal(d.attempt, attempt, 'attempts as counted since the last re-drive');
      assert.equal(await b.fail(d, 'kernel exploded'), outcome);
    };
    assert.equal(await w.fail(d1!, 'kernel exploded'), 'retried');
    await failAgain(w, 1, 'dead-lettered');
    assert.equal(await w.isSettled(), true, 'settled: two results and a dead letter');

    // Refusals name the chunk and change nothing.
    assert.deepEqual(await w.redriveDead(['00007']), { refused: { chunkId: '00007', why: 'not-a-chunk' } });
    assert.deepEqual(await w.redriveDead([bad, d0!.chunkId]), { refused: { chunkId: d0!.chunkId, why: 'completed' } });
    assert.equal(await w.isSettled(), true, 'a refused re-drive changes nothing');
    assert.deepEqual(await w.readRedrives(), {});

    // A reader that never joined re-drives it.
    const operator = await open(prefix, 'operator');
    assert.deepEqual(await operator.redriveDead(null), { redriven: [bad] });
    assert.equal(await w.isSettled(), false, 'the re-driven chunk is pending again');
    assert.equal(await w.hasOutstanding(), true);
    let stats = await w.stats();
    // Ready, or already in a consumer's prefetch (RabbitMQ pushes to consumers): either way, one chunk out there.
    assert.deepEqual([stats.completedChunks, stats.deadLettered, stats.settledChunks, stats.ready + stats.inFlight], [2, 0, 2, 1]);
    assert.deepEqual(await operator.redriveDead(null), { redriven: [] }, 'nothing is dead now');
    assert.deepEqual(await operator.redriveDead([bad]), { refused: { chunkId: bad, why: 'not-dead' } });
    assert.deepEqual(await w.readRedrives(), { [bad]: 1 });
    const letters = await w.readDeadLetters();
    assert.deepEqual(letters.map((d) => [d.chunkId, d.redriven ?? false]), [[bad, true]]);
    let report = buildReport(await w.readSettings(), await w.readResults(), letters, { redrives: await w.readRedrives() });
    assert.deepEqual([report.missing_chunks, report.dead_lettered_chunks, report.redriven_chunks, report.complete], [[bad], [], { [bad]: 1 }, false]);

    // A worker that joins now takes it with fresh attempts: its first failure is retried again, not dead.
    await w.close(); // (so that the first worker's prefetch cannot hold the chunk)
    const late = await open(prefix, '1', { RABBITMQ_MAX_RETRIES: 2 });
    assert.equal((await late.init(settings(300, 100))).created, false);
    await failAgain(late, 0, 'retried');
    await failAgain(late, 1, 'dead-lettered');
    assert.equal(await late.isSettled(), true, 'dead again: settled again');
    stats = await late.stats();
    assert.deepEqual([stats.completedChunks, stats.deadLettered, stats.settledChunks], [2, 1, 3]);
    report = buildReport(await late.readSettings(), await late.readResults(), await late.readDeadLetters(), { redrives: await late.readRedrives() });
    assert.deepEqual(report.dead_lettered_chunks.map((d) => [d.chunk_id, d.redriven]), [[bad, 1]], 'dead again, after one re-drive');

    // Re-driven once more, by name, and completed: the sweep is complete, every chunk counted once.
    assert.deepEqual(await operator.redriveDead([bad]), { redriven: [bad] });
    const [last] = await takeAtLeast(late, 1, 10_000);
    assert.equal(last?.chunkId, bad);
    assert.equal(last.attempt, 0);
    assert.equal(await late.complete(last, fakeResult(last, '1')), true);
    assert.equal(await late.isSettled(), true);
    const letters2 = await late.readDeadLetters();
    assert.deepEqual(letters2.map((d) => d.redriven ?? false), [true, true], 'both dead letters were re-driven');
    report = buildReport(await late.readSettings(), await late.readResults(), letters2, { redrives: await late.readRedrives() });
    assert.equal(report.complete, true);
    assert.equal(report.grand_sum, (299 * 300) / 2, 'every chunk once: 0 + 1 + ... + 299');
    assert.equal(report.duplicate_results, 0);
    assert.deepEqual([report.dead_lettered_chunks, report.redriven_chunks], [[], { [bad]: 2 }]);
    stats = await late.stats();
    assert.deepEqual([stats.completedChunks, stats.deadLettered, stats.settledChunks, stats.ready], [3, 0, 3, 0]);
    assert.deepEqual(await operator.redriveDead([bad]), { refused: { chunkId: bad, why: 'completed' } });
  });

  test(`${target.kind}: two re-drives at once queue each dead chunk once`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-redrive-race`);
    const w = await open(prefix, '0', { RABBITMQ_MAX_RETRIES: 1 });
    await w.init(settings(400, 100));
    const taken = await takeAtLeast(w, 4);
    for (const d of taken) assert.equal(await w.fail(d, 'broken'), 'dead-lettered');
    assert.equal(await w.isSettled(), true);
    const [a, b] = await Promise.all([open(prefix, 'a'), open(prefix, 'b')]);
    const outcomes = await Promise.all([a.redriveDead(null), b.redriveDead(null)]);
    const redriven = outcomes.flatMap((o) => ('redriven' in o ? o.redriven : [])).sort();
    assert.deepEqual(redriven, ['00000', '00001', '00002', '00003'], 'each chunk re-driven by exactly one of them');
    const queued = await w.stats();
    assert.equal(queued.ready + queued.inFlight, 4, 'each queued once');
    const again = await takeAtLeast(w, 5, 1500);
    assert.deepEqual(again.map((d) => d.chunkId).sort(), ['00000', '00001', '00002', '00003']);
    for (const d of again) assert.equal(await w.complete(d, fakeResult(d, '0')), true);
    assert.equal(await w.isSettled(), true);
    assert.deepEqual(await w.readRedrives(), { '00000': 1, '00001': 1, '00002': 1, '00003': 1 });
  });

  test(`${target.kind}: a worker that joins after a re-drive never takes the re-driven chunks for dead while another holds them`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-redrive-join`);
    const w = await open(prefix, '0', { RABBITMQ_MAX_RETRIES: 1 });
    await w.init(settings(600, 100));
    const taken = (await takeAtLeast(w, 6)).sort((a, b) => a.chunkId.localeCompare(b.chunkId));
    assert.equal(await w.complete(taken[0]!, fakeResult(taken[0]!, '0')), true);
    for (const d of taken.slice(1)) assert.equal(await w.fail(d, 'broken'), 'dead-lettered');
    assert.equal(await w.isSettled(), true);
    const operator = await open(prefix, 'operator');
    assert.deepEqual(await operator.redriveDead(null), { redriven: ['00001', '00002', '00003', '00004', '00005'] });
    // Another worker holds every re-driven chunk: the queue is empty, and nothing is in the newcomers' hands.
    const holder = await open(prefix, 'holder');
    await holder.init(settings(600, 100));
    const held = await takeAtLeast(holder, 5);
    assert.equal(held.length, 5);
    // A newcomer that starts waiting for work (RabbitMQ: following the streams, which come in side by side)
    // and asks at once, and again, whether the sweep is over: never, while the re-driven chunks are out.
    for (let k = 0; k < 8; k++) {
      const late = await open(prefix, `late${k}`);
      await late.init(settings(600, 100));
      assert.deepEqual(await late.take(1, 1), []);
      for (let i = 0; i < 5; i++) assert.equal(await late.isSettled(), false, `newcomer ${k}, ask ${i}: five re-driven chunks are held`);
      await late.close();
    }
    for (const d of held) assert.equal(await holder.complete(d, fakeResult(d, 'holder')), true);
    assert.equal(await holder.isSettled(), true);
  });

  test(`${target.kind}: every worker process that joins is recorded under its own consumer name, WORKER_ID shared or not`, async () => {
    await target.requireServer();
    const prefix = randomPrefix(`${target.kind}-joined`);
    const [x, y] = await Promise.all([open(prefix, '7'), open(prefix, '7')]);
    await Promise.all([x.init(settings(100, 100)), y.init(settings(100, 100))]);
    const z = await open(prefix, 'late');
    await z.init(settings(100, 100));
    const reader = await open(prefix, 'reader');
    const joined = await reader.readConsumers();
    assert.deepEqual(joined.map((c) => c.consumer).sort(), [x.consumerName, y.consumerName, z.consumerName].sort());
    assert.notEqual(x.consumerName, y.consumerName);
    assert.deepEqual(joined.map((c) => c.workerId).sort(), ['7', '7', 'late']);
    for (const c of joined) assert.ok(Number.isFinite(Date.parse(c.joinedAt)), `${c.consumer} joined at ${c.joinedAt}`);
  });
}

/** The tasks of a sweep as the contract defines them, written out here independently of backends/. */
function* settingsTasks(totalParams: number, chunkSize: number) {
  for (let i = 0; i * chunkSize < totalParams; i++) {
    yield {
      chunkId: String(i).padStart(5, '0'), startParam: i * chunkSize,
      endParam: Math.min(totalParams, (i + 1) * chunkSize), totalParams,
    };
  }
}

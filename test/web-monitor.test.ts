/**
 * The web monitor's snapshot (engine/web-monitor.ts describeSweep) from
 * hand-made readings whose right answers are known, and `ttg run --monitor
 * web` end to end over HTTP: the embedded queue's sweep served live, its
 * report the same as the one `ttg run --json` prints.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeSweep, throughputSeries, type SweepReading } from '../engine/web-monitor.js';
import { buildReport } from '../engine/aggregate.js';
import type { ChunkResult, DeadLetter, QueueStats, SweepSettings } from '../backends/types.js';
import { golden, lastJsonLine, startTtg, testEnv } from './helpers.js';
import { freePort } from './relay.js';

const settings: SweepSettings = { totalParams: 1000, chunkSize: 100, kernel: 'placeholder' };
const T0 = Date.parse('2026-11-30T10:00:00.000Z');

function result(chunk: number, worker: string, endSecond: number, extra: Record<string, unknown> = {}): ChunkResult {
  const id = String(chunk).padStart(5, '0');
  return {
    chunkId: id, workerId: worker, status: 'completed', durationSeconds: 1,
    startedAt: new Date(T0 + (endSecond - 1) * 1000).toISOString(), completedAt: new Date(T0 + endSecond * 1000).toISOString(),
    stats: { count: 100, sum: 100 * chunk, min: chunk, max: chunk, argmin: chunk * 100, argmax: chunk * 100, avg: chunk, partials: [100 * chunk] },
    ...extra,
  } as ChunkResult;
}

const dead = (chunkId: string, reason: string): DeadLetter => ({ chunkId, reason, attempts: 3, workerId: '1', task: null });

const stats = (over: Partial<QueueStats> = {}): QueueStats => ({
  settings, totalChunks: 10, completedChunks: 0, deadLettered: 0, settledChunks: 0, ready: 0, inFlight: 0, retrying: 0, results: 0, consumers: {}, ...over,
});

const ctx = { now: T0 + 60_000, backend: 'redis', queuePrefix: 'p', samples: [] };

test('counts never exceed their totals: duplicates, malformed dead letters and dead letters of finished chunks do not count', () => {
  const results = [0, 1, 2, 3, 4, 5, 6, 7].map((c) => result(c, c % 2 ? '1' : '0', c + 1));
  results.push(result(3, '1', 9)); // a duplicate delivery of chunk 3
  const reading: SweepReading = {
    settings, results,
    deadLetters: [
      dead('00008', 'simulated fault'), dead('00008', 'simulated fault'), // chunk 8, dead-lettered (twice)
      dead('?', 'message is not JSON'), dead('junk', 'not a chunk of this sweep'), dead('oops', 'missing field start_param'),
      dead('00002', 'failed once, then done'), // a chunk that has a result after all
    ],
    stats: stats({ completedChunks: 8, deadLettered: 6, ready: 1, results: 9 }),
  };
  const s = describeSweep(reading, ctx);
  assert.deepEqual(
    [s.progress!.completed_chunks, s.progress!.dead_lettered_chunks, s.progress!.settled_chunks, s.progress!.total_chunks],
    [8, 1, 9, 10],
  );
  assert.equal(s.progress!.params_done, 800);
  assert.equal(s.progress!.duplicate_results, 1);
  assert.equal(s.progress!.fraction, 0.9);
  assert.equal(s.settled, false);
  assert.equal(s.report, null, 'no report before the sweep is settled');
  // Every dead letter that left a chunk without a result is listed with its reason (malformed ones included).
  assert.deepEqual(s.failures.dead_letters.map((d) => d.chunk_id).sort(), ['00008', '?', 'junk', 'oops']);
  assert.ok(s.failures.dead_letters.some((d) => d.reason === 'message is not JSON'));
});

test('settled: the report is the aggregate\'s, worker rows add up, recovered chunks and retries are named', () => {
  const results = Array.from({ length: 10 }, (_, c) => result(c, c < 6 ? '0' : '1', c + 1,
    c === 7 ? { recovered: true } : c === 4 ? { attempts: 2 } : {}));
  const s = describeSweep({ settings, results, deadLetters: [], stats: stats({ consumers: { 'worker-1': 0 } }) }, ctx);
  assert.equal(s.settled, true);
  assert.equal(s.progress!.settled_chunks, 10);
  assert.equal(s.report!.grand_sum, 100 * 45);
  assert.equal(s.report!.complete, true);
  assert.match(s.report_text!, /Grand sum {12}: 4,500/);
  assert.deepEqual(s.workers.map((w) => [w.consumer, w.worker, w.chunks, w.recovered, w.retried]),
    [['worker-0', '0', 6, [], 1], ['worker-1', '1', 4, ['00007'], 0]]);
  assert.equal(s.workers[0]!.in_hand, 0);
  assert.equal(s.failures.retried_attempts, 2);
  // worker 0 did 600 params from second 0 to 6.
  assert.equal(s.workers[0]!.params_per_second, 100);
  assert.equal(s.eta_seconds, 0);
});

test('a row per worker process, as the report: two processes sharing a WORKER_ID are two rows, each with its own chunks in hand', () => {
  // Process worker-1 took the name; a second process with WORKER_ID=1 got worker-1-host-42 (as both brokers name them).
  const results = [
    result(0, '0', 1), result(1, '1', 2, { consumer: 'worker-1' }), result(2, '1', 3, { consumer: 'worker-1-host-42' }),
    result(3, '1', 4, { consumer: 'worker-1-host-42' }),
  ];
  const consumers = { 'worker-0': 1, 'worker-1': 0, 'worker-1-host-42': 2, 'worker-12': 1 };
  const s = describeSweep({ settings, results, deadLetters: [], stats: stats({ consumers }) }, ctx);
  assert.deepEqual(s.workers.map((w) => [w.consumer, w.worker, w.chunks, w.in_hand]), [
    ['worker-0', '0', 1, 1],
    ['worker-1', '1', 1, 0],
    ['worker-1-host-42', '1', 2, 2],
    // Joined, holding a chunk, nothing counted yet: its own row, its id read off its name.
    ['worker-12', '12', 0, 1],
  ]);
  // The report's chunks per consumer (`ttg aggregate`) are the rows' chunks.
  const perConsumer = buildReport(settings, results).consumer_distribution;
  for (const w of s.workers) assert.equal(perConsumer[w.consumer] ?? 0, w.chunks, w.consumer);
  const t = throughputSeries(results);
  assert.deepEqual(Object.keys(t.workers).sort(), ['worker-0', 'worker-1', 'worker-1-host-42']);
});

test('rate and ETA come from the monitor\'s own earlier polls; RabbitMQ\'s unknown in-hand stays unknown', () => {
  const results = [0, 1, 2, 3].map((c) => result(c, '0', c + 1));
  const samples = [{ at: ctx.now - 10_000, params: 200, chunks: 2 }];
  const s = describeSweep({ settings, results, deadLetters: [], stats: stats({ inFlight: -1, retrying: 2 }) },
    { ...ctx, samples, inHandKnown: false });
  assert.equal(s.rate!.params_per_second, 20);
  assert.equal(s.rate!.chunks_per_second, 0.2);
  assert.equal(s.eta_seconds, 30, '600 params left at 20 params/s');
  assert.equal(s.workers[0]!.in_hand, null);
  assert.equal(s.progress!.in_flight, null, 'a broker that cannot tell (-1) shows as unknown');
  assert.equal(s.failures.retrying_now, 2);
});

test('no sweep yet: an empty snapshot that says so', () => {
  const s = describeSweep({ settings: null, results: [], deadLetters: [], stats: null }, ctx);
  assert.equal(s.sweep, null);
  assert.equal(s.progress, null);
  assert.deepEqual(s.workers, []);
});

test('the throughput series spreads each chunk over the seconds it ran, and adds up to the parameters', () => {
  const results = [result(0, '0', 1), result(1, '1', 2), { ...result(2, '0', 3), startedAt: new Date(T0 + 1500).toISOString() }];
  const t = throughputSeries(results);
  assert.equal(t.bucket_seconds, 1);
  assert.deepEqual(t.t, [T0 / 1000, T0 / 1000 + 1, T0 / 1000 + 2]);
  // chunk 2 ran 1.5 s (1.5 → 3.0): a third of its 100 params in second 1, two thirds in second 2.
  assert.deepEqual(t.workers['worker-0'], [100, 33, 67]);
  assert.deepEqual(t.workers['worker-1'], [0, 100, 0]);
  assert.deepEqual(t.total, [100, 133, 67]);
  // A sweep that ends half-way through its last second ran at 200 params/s there, not 100.
  const half = throughputSeries([result(0, '0', 1), { ...result(1, '0', 2), completedAt: new Date(T0 + 1500).toISOString() }]);
  assert.deepEqual(half.total, [100, 200]);
  // A long sweep is bucketed so the chart stays small; the total still adds up.
  const long = Array.from({ length: 1000 }, (_, c) => result(c, '0', c * 3 + 1));
  const lt = throughputSeries(long);
  assert.ok(lt.t.length <= 240 && lt.bucket_seconds > 1);
  assert.ok(Math.abs(lt.total.reduce((a, x) => a + x * lt.bucket_seconds, 0) - 100_000) < lt.t.length * lt.bucket_seconds);
});

test('ttg run --monitor web serves the embedded sweep live, then its report until SIGTERM', async () => {
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
  const port = await freePort();
  const run = startTtg(['run', '--workers', '2', '--monitor', 'web', '--port', String(port), '--json'],
    testEnv({ TOTAL_PARAMS: 10000, CHUNK_SIZE: 250, SIMULATE_WORK_MS: 0.2 }));
  try {
    const fetchSnapshot = async () => {
      try {
        return await (await fetch(`http://127.0.0.1:${port}/snapshot.json`)).json();
      } catch {
        return null;
      }
    };
    const deadline = Date.now() + 30_000;
    let snapshot = await fetchSnapshot();
    while (!snapshot?.settled) {
      assert.ok(Date.now() < deadline, `the sweep settles on the page: ${run.stderr()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      snapshot = await fetchSnapshot();
    }
    assert.equal(snapshot.backend, 'memory');
    assert.equal(snapshot.report.grand_sum, ref.sum);
    assert.equal(snapshot.progress.settled_chunks, 40);
    assert.deepEqual(snapshot.workers.map((w: { worker: string }) => w.worker), ['0', '1']);
    // stdout is the report alone (the page's address goes to stderr), and it is the page's report.
    const deadline2 = Date.now() + 10_000;
    while (!run.stdout().includes('\n')) {
      assert.ok(Date.now() < deadline2, 'the report is printed');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const printed = lastJsonLine(run.stdout());
    assert.equal(run.stdout().trim().split('\n').length, 1);
    delete printed['command_seconds'];
    assert.deepEqual(printed, snapshot.report);
    assert.match(run.stderr(), new RegExp(`is at http://localhost:${port}/`));
    assert.equal(run.child.exitCode, null, 'still serving the page after the sweep');
  } finally {
    run.child.kill('SIGTERM');
  }
  assert.equal(await run.exited, 0, run.stderr());
});

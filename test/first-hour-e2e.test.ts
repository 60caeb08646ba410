/**
 * Issue 10's last items, end to end through real `ttg` processes against
 * the real brokers: re-driving dead letters (`ttg retry-dead`), chunks per
 * worker counted by consumer (every process that joined, 0 chunks too), and
 * RabbitMQ readers that write nothing into the streams they read.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'amqplib';
import {
  assertEndedByItself, golden, lastJsonLine, RABBIT_HOST, RABBIT_PORT, randomPrefix, requireRabbit, requireRedis, runTtg, startTtg,
  testEnv, waitFor, type TtgProcess,
} from './helpers.js';
import { loadConfig } from '../engine/config.js';
import { createBackend } from '../engine/backend.js';
import { silentLogger } from '../core/log.js';
import { resultFields } from '../backends/messages.js';

const KINDS = [['redis', requireRedis], ['rabbitmq', requireRabbit]] as const;
const prefixes: Array<[string, string]> = [];

function env(kind: string, prefix: string, extra: Record<string, string | number> = {}) {
  return testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: kind, QUEUE_PREFIX: prefix, IDLE_TIMEOUT_SECONDS: 20, CONNECT_TIMEOUT_SECONDS: 10,
    RETRY_DELAY_MS: 50, ...extra,
  });
}

function fresh(kind: string, tag: string): string {
  const prefix = randomPrefix(`${kind}-${tag}`);
  prefixes.push([kind, prefix]);
  return prefix;
}

after(async () => {
  for (const [kind, prefix] of prefixes) await runTtg(['reset', '--yes'], env(kind, prefix), 20_000);
});

/** `ttg aggregate --json`: its report, with the exit status checked against it (0 complete, 3 incomplete). */
async function aggregate(kind: string, prefix: string): Promise<Record<string, any>> {
  const r = await runTtg(['aggregate', '--json'], env(kind, prefix), 30_000);
  const report = lastJsonLine(r.stdout);
  assert.equal(r.code, report['complete'] ? 0 : 3, r.stderr);
  return report;
}

async function finish(p: TtgProcess, timeoutMs = 90_000): Promise<number | string> {
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  if (code !== 'SIGKILL') assertEndedByItself(p.stderr(), 'ttg worker');
  return code;
}

test('ttg retry-dead refuses a malformed --chunk before connecting', async () => {
  // Port 1: nothing listens there, so an answer naming the flag proves nothing was connected to.
  for (const [args, pattern] of [
    [['retry-dead', '--chunk'], /--chunk needs one chunk id or more/],
    [['retry-dead', '--chunk', 'abc'], /--chunk takes chunk ids \(digits.*got "abc"/],
    [['retry-dead', '--chunk=00001,x7'], /got "x7"/],
  ] as const) {
    const r = await runTtg([...args], testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_PORT: 1 }));
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, pattern);
  }
});

for (const [kind, requireServer] of KINDS) {
  test(`${kind}: dead-lettered chunks re-driven by ttg retry-dead complete the sweep exactly`, async () => {
    await requireServer();
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
    const prefix = fresh(kind, 'redrive');
    const sweep = { TOTAL_PARAMS: 10000, CHUNK_SIZE: 500, MAX_RETRIES: 1 };
    // Half the chunks fail (each dead at its first failure): with 20 chunks, some die and some complete.
    const faulty = await runTtg(['worker'], env(kind, prefix, { ...sweep, WORKER_ID: '0', SIMULATE_FAULT_RATE: 0.5 }));
    assert.equal(faulty.code, 0, faulty.stderr);
    const first = await aggregate(kind, prefix);
    const dead = (first['dead_lettered_chunks'] as Array<{ chunk_id: string }>).map((d) => d.chunk_id).sort();
    assert.ok(dead.length >= 1 && dead.length < 20, `some chunks died: ${dead.join(', ')}`);
    assert.deepEqual([...first['missing_chunks']].sort(), dead, 'the dead chunks are the missing ones');
    assert.equal(first['complete'], false);
    const text = await runTtg(['aggregate'], env(kind, prefix));
    assert.equal(text.code, 3);
    assert.match(text.stdout, /Sweep INCOMPLETE: .*ttg retry-dead puts the dead-lettered ones back on the queue/);

    // A chunk that is not dead-lettered: one line naming it, exit 2, nothing changed.
    const completedChunk = Array.from({ length: 20 }, (_, i) => String(i).padStart(5, '0')).find((id) => !dead.includes(id))!;
    for (const [id, why] of [['99999', /chunk 99999 is not a chunk of this sweep \(00000 to 00019\)/],
      [completedChunk, new RegExp(`chunk ${completedChunk} is not dead-lettered: it has a result`)]] as const) {
      const r = await runTtg(['retry-dead', '--chunk', dead[0]!, id], env(kind, prefix));
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /nothing was re-driven/);
    }
    assert.deepEqual(await aggregate(kind, prefix), first, 'the refused re-drives changed nothing');

    // Two ttg retry-dead at once: each dead chunk is re-driven by exactly one of them.
    const both = await Promise.all([runTtg(['retry-dead'], env(kind, prefix)), runTtg(['retry-dead'], env(kind, prefix))]);
    const redriven: string[] = [];
    for (const r of both) {
      assert.equal(r.code, 0, r.stderr);
      const m = /re-drove \d+ dead-lettered chunks? on \S+ under QUEUE_PREFIX=\S+: (.*)$/m.exec(r.stdout);
      if (m) redriven.push(...m[1]!.split(', '));
      else assert.match(r.stdout, /no dead-lettered chunks/);
    }
    assert.deepEqual(redriven.sort(), dead, 'every dead chunk re-driven once');
    const none = await runTtg(['retry-dead'], env(kind, prefix));
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /no dead-lettered chunks on \S+ under QUEUE_PREFIX=\S+: nothing to re-drive/);

    const pending = await aggregate(kind, prefix);
    assert.deepEqual([...pending['missing_chunks']].sort(), dead, 'still missing until a worker does them');
    assert.deepEqual(pending['dead_lettered_chunks'], [], 'no longer listed as dead');
    assert.deepEqual(pending['redriven_chunks'], Object.fromEntries(dead.map((id) => [id, 1])));

    // A worker without the fault finishes them: the aggregate completes, each chunk counted once.
    const healer = await runTtg(['worker'], env(kind, prefix, { ...sweep, WORKER_ID: '1' }));
    assert.equal(healer.code, 0, healer.stderr);
    const healed = lastJsonLine(healer.stdout);
    assert.equal(healed['chunks_processed'], dead.length, 'the healer did exactly the re-driven chunks');
    const report = await aggregate(kind, prefix);
    assert.equal(report['complete'], true);
    assert.equal(report['grand_sum'], ref.sum);
    assert.equal(report['total_params'], ref.count);
    assert.deepEqual([report['global_min'], report['global_max']], [ref.min, ref.max]);
    assert.equal(report['total_chunks'], 20);
    assert.equal(report['duplicate_results'], 0);
    assert.deepEqual(report['dead_lettered_chunks'], []);
    assert.deepEqual(report['redriven_chunks'], Object.fromEntries(dead.map((id) => [id, 1])));
    const faultyConsumer = String(lastJsonLine(faulty.stdout)['consumer']);
    assert.deepEqual(report['consumer_distribution'], { [faultyConsumer]: 20 - dead.length, [String(healed['consumer'])]: dead.length });
    const final = await runTtg(['aggregate'], env(kind, prefix));
    assert.equal(final.code, 0, final.stderr);
    assert.match(final.stdout, new RegExp(`Re-driven chunks\\s+: ${dead.length} \\(put back on the queue by ttg retry-dead\\)`));
    assert.match(final.stdout, new RegExp(`${dead[0]}: re-driven 1, completed`));
    assert.match(final.stdout, /Sweep complete\./);
  });

  test(`${kind}: chunks per worker has a row per consumer: two processes sharing a WORKER_ID, and one that came too late`, async () => {
    await requireServer();
    const prefix = fresh(kind, 'consumers');
    // Slow chunks (about 4 s of work), so the second process joins while the first is still at it.
    const sweep = { TOTAL_PARAMS: 4000, CHUNK_SIZE: 100, SIMULATE_WORK_MS: 1, PREFETCH: 1 };
    const a = startTtg(['worker'], env(kind, prefix, { ...sweep, WORKER_ID: '5' }));
    await waitFor('the first worker to join', () => /created the sweep's tasks|joined the sweep/.test(a.stderr()), 30_000);
    const b = startTtg(['worker'], env(kind, prefix, { ...sweep, WORKER_ID: '5' }));
    assert.deepEqual(await Promise.all([finish(a), finish(b)]), [0, 0], `${a.stderr()}\n${b.stderr()}`);
    const late = await runTtg(['worker'], env(kind, prefix, { ...sweep, WORKER_ID: 'late' }));
    assert.equal(late.code, 0, late.stderr);
    const [ca, cb, cl] = [a.stdout(), b.stdout(), late.stdout].map((out) => String(lastJsonLine(out)['consumer']));
    assert.notEqual(ca, cb, 'two live processes never share a consumer name');
    const report = await aggregate(kind, prefix);
    const dist = report['consumer_distribution'] as Record<string, number>;
    assert.deepEqual(Object.keys(dist).sort(), [ca, cb, cl].sort(), 'every consumer that joined has a row');
    assert.equal(dist[cl], 0, 'the late one did nothing');
    assert.equal(dist[ca]! + dist[cb]!, 40);
    assert.equal(dist[ca], lastJsonLine(a.stdout())['chunks_processed']);
    assert.deepEqual(report['worker_distribution'], { 5: 40 }, 'by WORKER_ID the two merge (the contract\'s key)');
    const text = (await runTtg(['aggregate'], env(kind, prefix))).stdout;
    const rows = text.slice(text.indexOf('Chunks per worker')).split('\n').slice(1, 4);
    for (const c of [ca, cb]) assert.ok(rows.some((row) => new RegExp(`^  ${c}\\s+${dist[c]}\\s`).test(row)), `a row for ${c}: ${rows.join(' | ')}`);
    assert.ok(rows.some((row) => new RegExp(`^  ${cl}\\s+0\\s+0\\.0%\\s*$`).test(row)), `a row for ${cl} with 0: ${rows.join(' | ')}`);
  });
}

test('rabbitmq: ttg aggregate writes nothing into the streams, and the monitor never counts more chunks than exist', async () => {
  await requireRabbit();
  const prefix = fresh('rabbitmq', 'nowrite');
  const total = 30;
  const sweep = { TOTAL_PARAMS: 3000, CHUNK_SIZE: 100, SIMULATE_WORK_MS: 0.5, PREFETCH: 2, WORKER_ID: '0' };
  const worker = startTtg(['worker'], env('rabbitmq', prefix, sweep));
  // While it runs: the figures of every poll fit within the sweep's chunks.
  const reader = await createBackend({ config: loadConfig(env('rabbitmq', prefix)), workerId: 'reader', log: silentLogger });
  try {
    let polls = 0;
    while (worker.child.exitCode === null) {
      const s = await reader.stats();
      if (s.settings === null) continue;
      polls++;
      assert.equal(s.totalChunks, total);
      assert.ok(s.settledChunks <= total && s.completedChunks <= s.settledChunks, JSON.stringify(s));
      assert.ok(s.settledChunks + s.ready + s.retrying + Math.max(0, s.inFlight) <= total, `more chunks than exist: ${JSON.stringify(s)}`);
    }
    assert.ok(polls >= 1, 'the sweep was polled while it ran');
  } finally {
    await reader.close();
  }
  assert.equal(await finish(worker), 0, worker.stderr());
  const monitor = await runTtg(['monitor', '--once'], env('rabbitmq', prefix));
  assert.equal(monitor.code, 0, monitor.stderr);
  assert.match(monitor.stdout, new RegExp(`\\s${total}/${total} chunks`));

  // The broker's own count of a stream is refreshed by a statistics tick (every 5 s on 3.10): a stream of our own,
  // with one entry written now, shows 1 once a tick has passed since, and the results stream's count is then current.
  const conn = await connect(`amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`);
  const ch = await conn.createConfirmChannel();
  const tick = `${prefix}.tick-probe`;
  const countsAfterATick = async () => {
    await ch.deleteQueue(tick);
    await ch.assertQueue(tick, { durable: true, arguments: { 'x-queue-type': 'stream' } });
    ch.sendToQueue(tick, Buffer.from('tick'));
    await ch.waitForConfirms();
    await waitFor('a statistics tick of the broker', async () => (await ch.checkQueue(tick)).messageCount === 1, 30_000, 200);
    return Promise.all([`${prefix}.results`, `${prefix}.tasks.dlq`].map(async (q) => (await ch.checkQueue(q)).messageCount));
  };
  try {
    const before = await countsAfterATick();
    assert.deepEqual(before, [total, 0], 'one result per chunk, no dead letters');
    const reports = [];
    for (let i = 0; i < 6; i++) reports.push(await aggregate('rabbitmq', prefix));
    for (const r of reports) assert.deepEqual(r, reports[0], 'the same report every time');
    assert.equal(reports[0]!['total_chunks'], total);
    assert.deepEqual(await countsAfterATick(), before, 'six aggregates later, the streams hold what they held');
  } finally {
    await ch.deleteQueue(tick).catch(() => {});
    await conn.close().catch(() => {});
  }
});

test('rabbitmq: a read of a stream that is being written without pause still ends, with every entry written before it began', async () => {
  await requireRabbit();
  const prefix = fresh('rabbitmq', 'liveread');
  const conn = await connect(`amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`);
  const ch = await conn.createConfirmChannel();
  const stream = `${prefix}.results`;
  const reader = await createBackend({ config: loadConfig(env('rabbitmq', prefix)), workerId: 'reader', log: silentLogger });
  let written = 0;
  const entry = (i: number) => Buffer.from(JSON.stringify(resultFields({
    chunkId: String(i), workerId: 'w', status: 'completed', durationSeconds: 0, completedAt: new Date().toISOString(),
    stats: { count: 1, sum: i, min: i, max: i, argmin: i, argmax: i, avg: i, partials: [i] },
  })));
  await ch.assertQueue(stream, { durable: true, arguments: { 'x-queue-type': 'stream' } });
  let writing = true;
  const writer = (async () => {
    while (writing) {
      for (let k = 0; k < 20; k++) ch.sendToQueue(stream, entry(written++));
      await ch.waitForConfirms();
    }
  })();
  try {
    await waitFor('a first thousand entries', () => written >= 1000, 30_000);
    const before = written; // confirmed: each batch is confirmed before the next is counted as written
    const started = Date.now();
    // A guard, not a wait: a read that follows the writer for ever fails here instead of hanging the suite.
    let guard: NodeJS.Timeout | undefined;
    const results = await Promise.race([
      reader.readResults(),
      new Promise<never>((_, reject) => (guard = setTimeout(() => reject(new Error('the read did not end within 20 s')), 20_000))),
    ]).finally(() => clearTimeout(guard));
    const tookMs = Date.now() - started;
    assert.ok(writing, 'the writer was still going');
    assert.ok(results.length >= before - 20, `read ${results.length} entries, ${before} were written before the read began`);
    assert.deepEqual(results.map((r) => Number(r.chunkId)), Array.from({ length: results.length }, (_, i) => i), 'in order, none twice');
    assert.ok(tookMs < 15_000, `the read ended (after ${tookMs} ms) although the stream never went quiet`);
  } finally {
    writing = false;
    await writer.catch(() => {});
    await reader.close();
    await ch.deleteQueue(stream).catch(() => {});
    await conn.close().catch(() => {});
  }
});

/**
 * The RabbitMQ backend's batched paths, against a real broker: acks that
 * leave once per turn (one `multiple` ack for the settled run, single acks
 * past a gap) never acknowledge a chunk still being worked on; workers
 * consume while the creator still publishes the tasks; a creator that dies
 * half-way is taken over and the sweep still completes, each chunk counted
 * once. Each test uses its own QUEUE_PREFIX and deletes it afterwards.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { loadConfig } from '../engine/config.js';
import { backendOptions } from '../engine/backend.js';
import { KernelPool } from '../engine/pool.js';
import { QueueWorker } from '../engine/queue-worker.js';
import { buildReport } from '../engine/aggregate.js';
import { silentLogger } from '../core/log.js';
import { RabbitBackend, rabbitNames } from '../backends/rabbitmq/backend.js';
import { ACK_SPACING_MS, SINGLE_ACKS } from '../backends/rabbitmq/consumer.js';
import type { ChunkResult, Delivery, SweepSettings } from '../backends/types.js';
import { golden, RABBIT_HOST, RABBIT_PORT, randomPrefix, requireRabbit, waitFor } from './helpers.js';
import { TcpRelay } from './relay.js';

const opened: RabbitBackend[] = [];
const prefixes = new Set<string>();
const relays: TcpRelay[] = [];
let raw: ChannelModel | null = null;
let pool: KernelPool | null = null;

after(async () => {
  for (const r of relays) await r.up().catch(() => {});
  for (const b of opened) await b.close().catch(() => {});
  for (const r of relays) await r.down().catch(() => {});
  for (const prefix of prefixes) {
    const cleaner = new RabbitBackend(backendOptions(loadConfig(env(prefix)), 'rabbitmq', 'cleanup', silentLogger));
    await cleaner.reset().catch(() => {});
    await cleaner.close();
  }
  await raw?.close().catch(() => {});
  await pool?.close();
});

function env(prefix: string, extra: Record<string, string | number> = {}): Record<string, string> {
  const e: Record<string, string> = {
    USE_QUEUE: 'true', QUEUE_BACKEND: 'rabbitmq', RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: String(RABBIT_PORT),
    QUEUE_PREFIX: prefix, THREADS: '1', TOTAL_PARAMS: '600', CHUNK_SIZE: '100', CONNECT_TIMEOUT_SECONDS: '20',
  };
  for (const [k, v] of Object.entries(extra)) e[k] = String(v);
  return e;
}

function open(prefix: string, workerId: string, extra: Record<string, string | number> = {}): RabbitBackend {
  prefixes.add(prefix);
  const backend = new RabbitBackend(backendOptions(loadConfig(env(prefix, { WORKER_ID: workerId, ...extra })), 'rabbitmq', workerId, silentLogger));
  opened.push(backend);
  return backend;
}

/** A backend whose connections go through a relay, so the test can cut them as a crash would. */
async function openCrashable(prefix: string, workerId: string, extra: Record<string, string | number> = {}) {
  const relay = new TcpRelay(RABBIT_HOST, RABBIT_PORT);
  await relay.up();
  relays.push(relay);
  return { backend: open(prefix, workerId, { ...extra, RABBITMQ_PORT: relay.port }), crash: () => relay.down() };
}

function settings(totalParams: number, chunkSize: number): SweepSettings {
  return { totalParams, chunkSize, kernel: 'placeholder' };
}

function resultFor(d: Delivery): ChunkResult {
  const t = d.task!;
  const n = t.endParam - t.startParam;
  const sum = ((t.startParam + t.endParam - 1) * n) / 2;
  return {
    chunkId: t.chunkId, workerId: 'w', status: 'completed', durationSeconds: 0.001, completedAt: new Date().toISOString(),
    stats: { count: n, sum, min: t.startParam, max: t.endParam - 1, argmin: t.startParam, argmax: t.endParam - 1, avg: sum / n, partials: [sum] },
  };
}

async function takeAtLeast(backend: RabbitBackend, n: number, timeoutMs = 10_000): Promise<Delivery[]> {
  const got: Delivery[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < n && Date.now() < deadline) got.push(...(await backend.take(n - got.length, 200)));
  return got;
}

/** The broker's own count of a queue's delivered, unacknowledged messages. */
function unacknowledged(queue: string): number {
  let out: string;
  try {
    out = execFileSync('rabbitmqctl', ['-q', 'list_queues', 'name', 'messages_unacknowledged'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`rabbitmqctl list_queues failed (this test needs rabbitmqctl on PATH, talking to the test broker): ${String(err)}`);
  }
  const line = out.split('\n').find((l) => l.split('\t')[0] === queue);
  return line ? Number(line.split('\t')[1]) : NaN;
}

/** queue.declare-ok of a queue, with plain amqplib: how many messages wait, unacknowledged ones excluded. */
async function ready(queue: string): Promise<number> {
  raw ??= await connect(`amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`);
  const ch = await raw.createChannel();
  try {
    return (await ch.checkQueue(queue)).messageCount;
  } finally {
    await ch.close().catch(() => {});
  }
}

test('acks leave in batches but never cover a chunk still in hand: after a crash exactly the unfinished chunks come back', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-acks');
  const { backend: a, crash } = await openCrashable(prefix, 'a', { PREFETCH: 6 });
  await a.init(settings(600, 100));
  const held = await takeAtLeast(a, 6);
  assert.deepEqual(held.map((d) => d.chunkId), ['00000', '00001', '00002', '00003', '00004', '00005'], 'delivered in order');
  // 0 and 1 form the settled run at the front (one multiple ack); 3 and 5 lie past the gap at 2 (single acks).
  const done = [held[0]!, held[1]!, held[3]!, held[5]!];
  assert.deepEqual(await Promise.all(done.map((d) => a.complete(d, resultFor(d)))), [true, true, true, true]);
  // The acks have reached the broker once only the two unfinished chunks are unacknowledged there.
  await waitFor('the broker has the acks of the four completed chunks', () => unacknowledged(rabbitNames(prefix).tasks) === 2, 20_000, 100);
  const b = open(prefix, 'b');
  await b.init(settings(600, 100));
  await crash();
  const back = await takeAtLeast(b, 2);
  assert.deepEqual(back.map((d) => d.chunkId).sort(), ['00002', '00004'], 'only the chunks that were never completed come back');
  assert.deepEqual(await b.take(10, 500), [], 'no completed chunk is handed out again');
  for (const d of back) assert.equal(await b.complete(d, resultFor(d)), true);
  const report = buildReport(await b.readSettings(), await b.readResults(), []);
  assert.deepEqual(report.missing_chunks, []);
  assert.equal(report.duplicate_results, 0);
  assert.equal(report.grand_sum, (599 * 600) / 2);
});

test('acks leave at most once per ACK_SPACING_MS however fast chunks complete, and the last ones before a close', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-spaced');
  const spy = await spyOnAcks(rabbitNames(prefix).tasks);
  try {
    const total = 300;
    const { backend: a, held } = await holdingAll(prefix, total);
    // One at a time, as a slow caller would: each completion is confirmed in a turn of its own.
    for (const d of held) assert.equal(await a.complete(d, resultFor(d)), true);
    // Closing sends at once what is still due, before the channel goes (else those chunks would be handed out again).
    const closing = performance.now();
    await a.close();
    // In-order completions leave no gap: one multiple ack a flush, and flushes at least ACK_SPACING_MS apart
    // by the clock (Date.now(): whole milliseconds), give or take a pause of the thread before the frame leaves.
    const sent = spy.acks().filter((f) => f.at < closing);
    const span = sent.at(-1)!.at - sent[0]!.at;
    assert.ok(sent.every((f) => f.multiple), 'one multiple ack a flush');
    assert.ok(sent.length <= Math.floor(span / (ACK_SPACING_MS - 1)) + 2,
      `${sent.length} ack frames in ${span.toFixed(1)} ms for ${total} chunks completed one a turn: at most one per ${ACK_SPACING_MS} ms`);
    // Every chunk was acknowledged: a second worker finds nothing to take, and the sweep settled.
    const b = open(prefix, 'b', { TOTAL_PARAMS: total, CHUNK_SIZE: 1 });
    await b.init(settings(total, 1));
    assert.equal(await b.isSettled(), true);
    assert.equal(await ready(rabbitNames(prefix).tasks), 0);
  } finally {
    spy.restore();
  }
});

test('completions past a chunk still in hand are acknowledged SINGLE_ACKS a flush at most, and all of them', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-singles');
  const names = rabbitNames(prefix);
  const spy = await spyOnAcks(names.tasks);
  try {
    const total = 3 * SINGLE_ACKS + 1;
    const { backend: a, held } = await holdingAll(prefix, total, { PREFETCH: total });
    // Chunk 00000 stays in hand: every other completion lies past it and needs an ack of its own.
    assert.deepEqual(await Promise.all(held.slice(1).map((d) => a.complete(d, resultFor(d)))), held.slice(1).map(() => true));
    await waitFor('the broker has the acks of every chunk but the one in hand', () => unacknowledged(names.tasks) === 1, 30_000, 100);
    const acks = spy.acks();
    assert.equal(acks.length, total - 1, 'one single ack each');
    assert.ok(acks.every((f) => !f.multiple), 'no multiple ack covers the chunk in hand');
    // A flush's frames leave together; flushes are ACK_SPACING_MS apart (2 ms tells them apart, pauses included).
    const bursts: number[] = [];
    acks.forEach((f, i) => {
      if (i === 0 || f.at - acks[i - 1]!.at > 2) bursts.push(0);
      bursts[bursts.length - 1]! += 1;
    });
    assert.ok(bursts.length >= 3 && bursts.every((n) => n <= SINGLE_ACKS), `frames a flush: ${bursts.join(', ')}`);
    assert.equal(await a.complete(held[0]!, resultFor(held[0]!)), true);
    await waitFor('the broker has every ack', () => unacknowledged(names.tasks) === 0, 30_000, 100);
    assert.ok(spy.acks().at(-1)!.multiple, 'the last completion closes the gap: one multiple ack');
  } finally {
    spy.restore();
  }
});

/** A backend `a` on a sweep of `total` one-parameter chunks, holding every one of them. */
async function holdingAll(prefix: string, total: number, extra: Record<string, string | number> = {}) {
  const backend = open(prefix, 'a', { TOTAL_PARAMS: total, CHUNK_SIZE: 1, ...extra });
  await backend.init(settings(total, 1));
  const held = await takeAtLeast(backend, total);
  assert.equal(held.length, total);
  return { backend, held };
}

/** Records every basic.ack and basic.nack frame sent for deliveries of `queue`, with the time it left, until restore(). */
async function spyOnAcks(queue: string) {
  // The class of amqplib's channels, which the package does not export: taken from a channel of its own.
  raw ??= await connect(`amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`);
  const probe = await raw.createChannel();
  type Settle = (msg: unknown, allUpTo?: boolean, requeue?: boolean) => void;
  const proto = Object.getPrototypeOf(probe) as { ack: Settle; nack: Settle };
  await probe.close();
  const { ack, nack } = proto;
  const frames: Array<{ kind: 'ack' | 'nack'; at: number; multiple: boolean }> = [];
  // Task deliveries only: the readers of the sweep's streams acknowledge what they read too.
  const record = (kind: 'ack' | 'nack', msg: unknown, allUpTo?: boolean) => {
    if ((msg as ConsumeMessage).fields.routingKey === queue) frames.push({ kind, at: performance.now(), multiple: allUpTo === true });
  };
  proto.ack = function (this: unknown, msg: unknown, allUpTo?: boolean) {
    record('ack', msg, allUpTo);
    return ack.call(this, msg, allUpTo);
  };
  proto.nack = function (this: unknown, msg: unknown, allUpTo?: boolean, requeue?: boolean) {
    record('nack', msg, allUpTo);
    return nack.call(this, msg, allUpTo, requeue);
  };
  return {
    /** Acks and nacks, in the order they left. */
    frames,
    acks: () => frames.filter((f) => f.kind === 'ack'),
    /** Each frame's kind and `multiple` flag. */
    kinds: () => frames.map(({ kind, multiple }) => ({ kind, multiple })),
    restore: () => {
      proto.ack = ack;
      proto.nack = nack;
    },
  };
}

test('chunks given back leave after the acks due, in one multiple nack when they are all that is open', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-release');
  const spy = await spyOnAcks(rabbitNames(prefix).tasks);
  try {
    const total = 40;
    const { backend: a, held } = await holdingAll(prefix, total, { PREFETCH: total });
    // Ten completed one a turn (their acks spaced, some still due), the other thirty given back at once.
    for (const d of held.slice(0, 10)) assert.equal(await a.complete(d, resultFor(d)), true);
    await a.release(held.slice(10));
    const nacks = spy.kinds().filter((f) => f.kind === 'nack');
    assert.deepEqual(nacks, [{ kind: 'nack', multiple: true }], 'one multiple nack for the thirty');
    assert.equal(spy.frames.at(-1)!.kind, 'nack', 'every ack due left before it');
    // The broker has exactly the thirty back: another worker gets them, and none of the ten.
    const b = open(prefix, 'b', { TOTAL_PARAMS: total, CHUNK_SIZE: 1 });
    await b.init(settings(total, 1));
    const back = await takeAtLeast(b, total - 10);
    assert.deepEqual(back.map((d) => d.chunkId).sort(), held.slice(10).map((d) => d.chunkId).sort());
    assert.deepEqual(await b.take(10, 500), [], 'no completed chunk is handed out again');
    // Giving back only some of what is open: one nack each, never a multiple one over a chunk still in hand.
    spy.frames.length = 0;
    await b.release(back.slice(0, 3));
    assert.deepEqual(spy.kinds(), [0, 1, 2].map(() => ({ kind: 'nack', multiple: false })));
  } finally {
    spy.restore();
  }
});

test('a consumer started again on a new channel after the sweep settled keeps its prefetch', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-qos');
  const names = rabbitNames(prefix);
  const w = open(prefix, 'w', { PREFETCH: 2 });
  await w.init(settings(200, 100));
  for (const d of await takeAtLeast(w, 2)) assert.equal(await w.complete(d, resultFor(d)), true);
  // Settled: the consumer's channel is closed (nothing is on its way any more).
  assert.equal(await w.isSettled(), true);
  // Tasks come again (as a re-drive, or a creator's take-over, would bring them): ten copies of chunk 00000.
  raw ??= await connect(`amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`);
  const ch = await raw.createConfirmChannel();
  const body = Buffer.from(JSON.stringify({ chunk_id: '00000', start_param: '0', end_param: '100', total_params: '200' }));
  for (let i = 0; i < 10; i++) ch.sendToQueue(names.tasks, body, { persistent: true, contentType: 'application/json' });
  await ch.waitForConfirms();
  await ch.close();
  // The consumer starts again, on a new channel: with PREFETCH=2, two deliveries, not the ten.
  assert.equal((await takeAtLeast(w, 1)).length > 0, true);
  await waitFor('the broker counts two unacknowledged', () => unacknowledged(names.tasks) === 2, 20_000, 100);
  assert.equal(await ready(names.tasks), 8, 'the other eight wait in the queue');
});

test('a worker consumes while its creator is still publishing the tasks, and the sweep is exact', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-early');
  const total = 5000;
  const creator = open(prefix, 'c', { TOTAL_PARAMS: total, CHUNK_SIZE: 1 });
  const outcome = await creator.init(settings(total, 1), { consumeWhileCreating: true });
  assert.equal(outcome.created, true);
  // init() returned before the tasks are all in, and the first ones can be taken at once.
  assert.ok((await ready(rabbitNames(prefix).tasks)) < total, 'the tasks are still being published');
  const first = await takeAtLeast(creator, 1);
  assert.equal(first[0]?.chunkId, '00000');
  assert.equal(await creator.hasOutstanding(), true);
  for (const d of first) assert.equal(await creator.complete(d, resultFor(d)), true);
  let taken = first.length;
  // Every task comes (a take may come back empty on a busy machine while the creator publishes).
  const deadline = Date.now() + 60_000;
  while (taken < total) {
    assert.ok(Date.now() < deadline, `tasks keep coming (${taken} of ${total} so far)`);
    const got = await creator.take(500, 1000);
    for (const d of got) assert.equal(await creator.complete(d, resultFor(d)), true);
    taken += got.length;
  }
  await waitFor('the sweep is settled', () => creator.isSettled(), 10_000, 50);
  const report = buildReport(await creator.readSettings(), await creator.readResults(), []);
  assert.equal(report.total_chunks, total);
  assert.deepEqual(report.missing_chunks, []);
  assert.equal(report.duplicate_results, 0, 'every task was published once');
  assert.equal(report.grand_sum, ((total - 1) * total) / 2);
  assert.equal(await ready(rabbitNames(prefix).tasks), 0);
});

test('a creator that dies half-way through the tasks is taken over: the sweep completes, each chunk counted once', { timeout: 120_000 }, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-takeover');
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100000)!;
  const chunkSize = 20; // 5,000 tasks: far more than the creator publishes before the cut
  const { backend: creator, crash } = await openCrashable(prefix, 'c', { TOTAL_PARAMS: ref.end, CHUNK_SIZE: chunkSize });
  assert.equal((await creator.init(settings(ref.end, chunkSize), { consumeWhileCreating: true })).created, true);
  await crash();
  const published = await ready(rabbitNames(prefix).tasks);
  assert.ok(published < 5000, `the creator died before publishing every task (${published} of 5000 in the queue)`);

  pool ??= new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm' });
  const config = loadConfig(env(prefix, { WORKER_ID: '1', TOTAL_PARAMS: ref.end, CHUNK_SIZE: chunkSize }));
  const worker = open(prefix, '1', { TOTAL_PARAMS: ref.end, CHUNK_SIZE: chunkSize });
  const summary = await new QueueWorker({ config, backend: worker, pool, log: silentLogger, pollMs: 100 }).run();
  assert.equal(summary.status, 'completed');
  const report = buildReport(await worker.readSettings(), await worker.readResults(), []);
  assert.deepEqual(report.missing_chunks, []);
  assert.equal(report.total_chunks, 5000);
  assert.equal(report.grand_sum, ref.sum);
  assert.equal(report.total_params, ref.count);
});

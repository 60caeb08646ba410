/**
 * What is specific to the RabbitMQ backend (the contract itself is
 * test/conformance.ts), against a real broker (127.0.0.1:5672,
 * guest/guest): the queues as rabbitmqctl and plain amqplib see them,
 * results through a reconnection, the retry queue and the
 * dead-letter stream, reconnection, an unreachable broker, reset.
 * Each test uses its own QUEUE_PREFIX and deletes it afterwards.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect } from 'amqplib';
import type { ChannelModel, ConsumeMessage } from 'amqplib';
import { BrokerUnavailableError } from '../core/errors.js';
import { rabbitNames } from '../backends/rabbitmq/backend.js';
import { consumeStream } from '../backends/rabbitmq/stream-read.js';
import { heartbeatSeconds, STREAM } from '../backends/rabbitmq/names.js';
import { settingsRecord } from '../core/sweep.js';
import type { SweepSettings } from '../backends/types.js';
import { RABBIT_HOST, RABBIT_PORT, randomPrefix, requireRabbit, waitFor, rangeResult, takeAtLeast } from './helpers.js';
import { rabbitFixture } from './rabbit-fixture.js';
import { TcpRelay } from './relay.js';

const RAW_URL = `amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let raw: ChannelModel | null = null;

const { open, cleanup } = rabbitFixture({
  TOTAL_PARAMS: 300, CHUNK_SIZE: 100, RABBITMQ_RETRY_DELAY_MS: 200, RABBITMQ_MAX_RETRIES: 3, CONNECT_TIMEOUT_SECONDS: 10,
});

function settings(totalParams: number, chunkSize: number): SweepSettings {
  return { totalParams, chunkSize, kernel: 'placeholder' };
}

async function rawConnection(): Promise<ChannelModel> {
  raw ??= await connect(RAW_URL);
  return raw;
}

/** queue.declare-ok of a queue, through a throwaway channel (a 404 closes the channel). */
async function queueInfo(queue: string): Promise<{ messageCount: number; consumerCount: number } | null> {
  const ch = await (await rawConnection()).createChannel();
  ch.on('error', () => {});
  try {
    return await ch.checkQueue(queue);
  } catch {
    return null;
  } finally {
    await ch.close().catch(() => {});
  }
}

/** Reads `count` entries of a stream from its start with plain amqplib (an independent check of what the backend wrote). */
async function rawStream(queue: string, count: number): Promise<ConsumeMessage[]> {
  const ch = await (await rawConnection()).createChannel();
  ch.on('error', () => {});
  await ch.prefetch(100);
  const got: ConsumeMessage[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${count} entries in ${queue}`)), 10_000);
    void ch.consume(queue, (msg) => {
      if (!msg) return;
      ch.ack(msg);
      if (msg.properties.headers?.['x-ttg-marker'] !== undefined) return;
      got.push(msg);
      if (got.length === count) {
        clearTimeout(timer);
        resolve();
      }
    }, { arguments: { 'x-stream-offset': 'first' } });
  });
  await ch.close().catch(() => {});
  return got;
}

async function publishRaw(queue: string, bodies: string[]): Promise<void> {
  const ch = await (await rawConnection()).createConfirmChannel();
  for (const body of bodies) ch.sendToQueue(queue, Buffer.from(body), { persistent: true });
  await ch.waitForConfirms();
  await ch.close();
}


function rabbitmqctl(...args: string[]): string {
  try {
    return execFileSync('rabbitmqctl', ['-q', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`rabbitmqctl ${args.join(' ')} failed (this test needs rabbitmqctl on PATH, talking to the test broker): ${String(err)}`);
  }
}

/** Closes, from the broker's side, every connection the backend opened for `prefix` (named "ttg <prefix> ..."). */
async function closeBrokerConnections(prefix: string): Promise<number> {
  const pidsOf = () => rabbitmqctl('list_connections', 'pid', 'client_properties')
    .split('\n')
    .filter((line) => line.includes(`"ttg ${prefix} `))
    .map((line) => line.split('\t')[0]!);
  const pids = pidsOf();
  for (const pid of pids) rabbitmqctl('close_connection', pid, 'test: forced close');
  // Wait until the broker has let them go (the callers then wait for the client to notice).
  const deadline = Date.now() + 10_000;
  while (pidsOf().some((p) => pids.includes(p)) && Date.now() < deadline) await sleep(100);
  return pids.length;
}


after(async () => {
  await cleanup();
  await raw?.close().catch(() => {});
});

test('the AMQP heartbeat, as the broker sees it, is a third of STALE_THRESHOLD_MS (1 to 15 s) unless AMQP_URL names one', async () => {
  await requireRabbit();
  // A silent connection is closed after two to three heartbeats: its chunks come back within the threshold.
  assert.deepEqual([1000, 5999, 6000, 9000, 45_000, 60_000, 600_000].map(heartbeatSeconds), [1, 1, 2, 3, 15, 15, 15]);
  assert.equal(heartbeatSeconds(undefined), 15, 'no threshold given: the old default');
  const cases: Array<[Record<string, string | number>, number]> = [
    [{ STALE_THRESHOLD_MS: 1000 }, 1],
    [{ STALE_THRESHOLD_MS: 9000 }, 3],
    [{}, 15], // the default threshold, 60 s
    [{ STALE_THRESHOLD_MS: 1000, AMQP_URL: `${RAW_URL}?heartbeat=7` }, 7],
  ];
  // A connection still opening (another test's, the suite runs two files at once) is listed without its properties
  // yet: rabbitmqctl gives something other than a list for them, and they are none of this test's.
  const timeoutsOf = (prefix: string) => (JSON.parse(rabbitmqctl('list_connections', 'client_properties', 'timeout', '--formatter', 'json')) as
    Array<{ client_properties: Array<[string, string, unknown]> | unknown; timeout: number }>)
    .filter((c) => Array.isArray(c.client_properties) &&
      (c.client_properties as Array<[string, string, unknown]>).some(([k, , v]) => k === 'connection_name' && String(v).startsWith(`ttg ${prefix} `)))
    .map((c) => c.timeout);
  for (const [extra, seconds] of cases) {
    const prefix = randomPrefix('rabbit-hb');
    const b = open(prefix, '0', extra);
    // On a busy machine the broker may close a 1 s heartbeat's connection before it is listed: the next call reopens it.
    await waitFor(`a connection with a ${seconds} s heartbeat for ${JSON.stringify(extra)}`, async () => {
      await b.readSettings();
      const timeouts = timeoutsOf(prefix);
      for (const t of timeouts) assert.equal(t, seconds, JSON.stringify(extra));
      return timeouts.length > 0 || null;
    }, 60_000, 100);
  }
});

test('ten workers initializing at once create the tasks exactly once, with unique consumer names', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-init');
  const backends = Array.from({ length: 10 }, (_, i) => open(prefix, i < 5 ? '7' : String(i)));
  const outcomes = await Promise.all(backends.map((b) => b.init(settings(1000, 7))));
  assert.equal(outcomes.filter((o) => o.created).length, 1, 'exactly one worker creates the tasks');
  for (const o of outcomes) assert.equal(o.totalChunks, 143);
  const names = rabbitNames(prefix);
  assert.equal((await queueInfo(names.tasks))?.messageCount, 143, 'every chunk enqueued once');
  assert.equal((await queueInfo(names.retry))?.messageCount, 0);
  assert.ok(await queueInfo(names.dlq), 'the dead-letter queue is declared');
  assert.ok(await queueInfo(names.results), 'the results queue is declared');
  const consumers = backends.map((b) => b.consumerName);
  assert.equal(new Set(consumers).size, 10, `consumer names are unique: ${consumers.join(', ')}`);
  assert.ok(consumers.includes('worker-7') && consumers.includes('worker-9'));
  // Every chunk id once, whichever worker takes it.
  const all = await takeAtLeast(backends[3]!, 143);
  assert.equal(new Set(all.map((d) => d.chunkId)).size, 143);
  assert.deepEqual(all.slice(0, 2).map((d) => d.task), [
    { chunkId: '00000', startParam: 0, endParam: 7, totalParams: 1000 },
    { chunkId: '00001', startParam: 7, endParam: 14, totalParams: 1000 },
  ]);
  assert.deepEqual(await backends[4]!.take(5, 200), []);
});


test('a creator that died after writing its settings, before raising the flag: the next one clears them and the sweep has its own', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-begun');
  const n = rabbitNames(prefix);
  // What the dead creator left: <p>.meta.begun raised, its settings (another sweep's) in <p>.meta, no ready flag.
  const ch = await (await rawConnection()).createConfirmChannel();
  ch.on('error', () => {});
  await ch.assertQueue(n.meta, STREAM);
  await ch.assertExchange(n.begun, 'fanout', { durable: true });
  const stale = { ...settingsRecord(settings(999, 9)), total_chunks: 111, created_by: 'worker-dead', created_at: new Date().toISOString() };
  ch.sendToQueue(n.meta, Buffer.from(JSON.stringify(stale)), { persistent: true });
  await ch.waitForConfirms();
  await ch.close();
  const creator = open(prefix, 'a');
  assert.deepEqual(await creator.init(settings(300, 100)), { created: true, totalChunks: 3 });
  assert.deepEqual(await creator.readSettings(), settings(300, 100));
  const joiner = open(prefix, 'b');
  assert.deepEqual(await joiner.init(settings(300, 100)), { created: false, totalChunks: 3 }, 'joins without a mismatch');
  const first = await rawStream(n.meta, 1);
  assert.equal(JSON.parse(first[0]!.content.toString()).total_params, 300, 'the stream starts with this sweep\'s settings');
  // A reset takes the marker too: the next sweep under the prefix starts without clearing anything.
  await creator.reset();
  assert.equal(await exchangeExists(n.begun), false);
});

async function exchangeExists(name: string): Promise<boolean> {
  const ch = await (await rawConnection()).createChannel();
  ch.on('error', () => {});
  try {
    await ch.checkExchange(name);
    return true;
  } catch {
    return false;
  } finally {
    await ch.close().catch(() => {});
  }
}

test('a reset the broker refuses says so, naming the permission, and deletes nothing', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-reset-refused');
  const user = `ttg-noconf-${prefix}`;
  rabbitmqctl('add_user', user, 'pw');
  try {
    rabbitmqctl('set_permissions', user, '^$', '.*', '.*'); // may read and write, may not delete
    const owner = open(prefix, '0');
    await owner.init(settings(100, 10));
    const limited = open(prefix, '1', { RABBITMQ_USER: user, RABBITMQ_PASSWORD: 'pw', CONNECT_TIMEOUT_SECONDS: 3 });
    await assert.rejects(limited.reset(), /refused user 'ttg-noconf-[^']+' access to the exchange .*set_permissions/);
    await limited.close();
    assert.equal((await queueInfo(rabbitNames(prefix).tasks))?.messageCount, 10, 'the tasks are still there');
  } finally {
    rabbitmqctl('delete_user', user);
  }
});

test('a stream consumer gets what the broker sends before basic.consume-ok (a starting stream does that; amqplib alone would throw "Unknown consumer")', async () => {
  await requireRabbit();
  const queue = `${randomPrefix('rb-early')}.stream`;
  const ch = await (await rawConnection()).createChannel();
  let closed = false;
  ch.on('error', () => {});
  ch.on('close', () => { closed = true; });
  try {
    await ch.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'stream' } });
    ch.sendToQueue(queue, Buffer.from('written before the read'));
    await ch.prefetch(10);
    const got: string[] = [];
    const attached = consumeStream(ch, queue, (msg) => {
      if (!msg) return;
      got.push(msg.content.toString());
      if (msg.fields.deliveryTag !== undefined) ch.ack(msg);
    }, { noAck: false, arguments: { 'x-stream-offset': 'first' } });
    // What amqplib does with a frame for a consumer it does not know: the broker's early frame, replayed by hand.
    const tags = [...(ch as unknown as { consumers: Map<string, unknown> }).consumers.keys()];
    assert.equal(tags.length, 1, 'the handler is registered before the broker has answered basic.consume');
    assert.doesNotThrow(() => (ch as unknown as { dispatchMessage: (f: object, m: object) => void })
      .dispatchMessage({ consumerTag: tags[0] }, { content: Buffer.from('early'), fields: {}, properties: {} }));
    assert.equal((await attached).consumerTag, tags[0]);
    await waitFor('the stream entry after the early one', () => got.length >= 2 || null, 10_000);
    assert.deepEqual(got, ['early', 'written before the read']);
    assert.equal(closed, false, 'the channel stays open');
  } finally {
    await ch.deleteQueue(queue).catch(() => {});
    await ch.close().catch(() => {});
  }
});
test('take and complete: the result is readable again and again, the task is gone, the sweep settles', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-complete');
  const w = open(prefix, 'w', { PREFETCH: 1 });
  const before = await w.stats();
  assert.equal(before.settings, null);
  assert.equal(before.inFlight, -1);
  await w.init(settings(300, 100));
  const [first] = await takeAtLeast(w, 1);
  assert.ok(first?.task);
  assert.equal(first.attempt, 0);
  assert.equal(first.recovered, false);
  assert.equal(await w.complete(first, rangeResult(first, 'w')), true);
  assert.equal(await w.complete(first, rangeResult(first, 'w')), false, 'a delivery is completed once');
  const once = await w.readResults();
  assert.equal(once.length, 1);
  assert.equal(once[0]!.chunkId, first.chunkId);
  assert.deepEqual(once[0]!.stats, rangeResult(first, 'w').stats);
  assert.deepEqual(await w.readResults(), once, 'reading results consumes nothing');
  assert.equal(await w.isSettled(), false);
  assert.equal(await w.hasOutstanding(), true);

  const rest = await takeAtLeast(w, 2);
  assert.equal(rest.length, 2);
  for (const d of rest) assert.equal(await w.complete(d, rangeResult(d, 'w')), true);
  assert.deepEqual(await w.take(5, 300), [], 'completed chunks do not come back');
  const results = await w.readResults();
  assert.deepEqual(results.map((r) => r.chunkId).sort(), ['00000', '00001', '00002']);
  const second = results[1]!.chunkId;
  assert.deepEqual(await w.readResults((r) => r.chunkId === second), results.slice(0, 2), 'a read told where to stop stops there');
  assert.equal(await w.isSettled(), true);
  assert.equal(await w.hasOutstanding(), false);
  const stats = await w.stats();
  assert.deepEqual(
    { total: stats.totalChunks, done: stats.completedChunks, ready: stats.ready, retrying: stats.retrying, inFlight: stats.inFlight, results: stats.results },
    { total: 3, done: 3, ready: 0, retrying: 0, inFlight: 0, results: 3 },
  );
  assert.equal((await queueInfo(rabbitNames(prefix).tasks))?.messageCount, 0);

  // reset deletes every queue and exchange of the prefix.
  await w.reset();
  assert.equal(await w.readSettings(), null);
  assert.deepEqual(await w.readResults(), []);
  const leftQueues = rabbitmqctl('list_queues', 'name').split('\n').filter((l) => l.startsWith(prefix));
  const leftExchanges = rabbitmqctl('list_exchanges', 'name').split('\n').filter((l) => l.startsWith(prefix));
  assert.deepEqual([...leftQueues, ...leftExchanges], [], 'nothing of the prefix is left');
});

test('the retry queue and the dead-letter stream as they look on the broker: headers, original bodies', async () => {
  // The contract (retry delay, malformed tasks dead at once, dead-letter counting) is in test/conformance.ts;
  // this checks what is RabbitMQ's own: the retry queue, the stream's headers, bodies kept byte for byte.
  await requireRabbit();
  const prefix = randomPrefix('rb-retry');
  const w = open(prefix, 'w', { TOTAL_PARAMS: 200, RABBITMQ_RETRY_DELAY_MS: 100, PREFETCH: 10 });
  await w.init(settings(200, 100));
  const names = rabbitNames(prefix);
  const malformed: Array<[string, RegExp]> = [
    ['this is {not json', /not JSON/],
    ['{"chunk_id":"00001","start_param":"100"}', /missing field end_param/],
    ['{"chunk_id":"00001","start_param":0,"end_param":100,"total_params":200}', /chunk 00001 of this sweep is \[100, 200\)/],
  ];
  await publishRaw(names.tasks, malformed.map(([body]) => body));

  let pending = await takeAtLeast(w, 5);
  assert.equal(pending.length, 5);
  const good = pending.find((d) => d.chunkId === '00001' && d.task !== null)!;
  assert.equal(await w.complete(good, rangeResult(good, 'w')), true);
  for (const d of pending.filter((x) => x.task === null)) assert.equal(await w.fail(d, d.malformed!), 'dead-lettered');
  pending = pending.filter((d) => d.chunkId === '00000' && d.task !== null);
  assert.equal(pending.length, 1);
  for (let attempt = 0; attempt < 3; attempt++) {
    assert.equal(pending[0]!.attempt, attempt);
    const outcome = await w.fail(pending[0]!, `kernel exploded (attempt ${attempt + 1})`);
    if (attempt === 2) {
      assert.equal(outcome, 'dead-lettered');
      break;
    }
    assert.equal(outcome, 'retried');
    assert.equal((await queueInfo(names.retry))?.messageCount, 1, 'waiting in the retry queue');
    pending = await takeAtLeast(w, 1);
  }
  assert.deepEqual(await w.take(10, 300), []);

  const dead = await w.readDeadLetters();
  assert.equal(dead.length, 4);
  const genuine = dead.find((d) => d.task !== null)!;
  assert.deepEqual(genuine.task, { chunkId: '00000', startParam: 0, endParam: 100, totalParams: 200 });
  assert.equal(genuine.attempts, 3);
  assert.match(genuine.reason, /kernel exploded \(attempt 3\)/);
  for (const [, pattern] of malformed) assert.ok(dead.some((d) => d.attempts === 1 && pattern.test(d.reason)), `a dead letter for ${pattern}`);

  // The same through plain amqplib: the original body, the reason and the attempt count in headers.
  const rawDead = await rawStream(names.dlq, 4);
  for (const msg of rawDead) {
    const h = msg.properties.headers ?? {};
    assert.ok(h['x-ttg-attempts'] === 1 || h['x-ttg-attempts'] === 3);
    assert.equal(typeof h['x-ttg-reason'], 'string');
    assert.equal(h['x-ttg-worker'], 'w');
  }
  assert.ok(rawDead.some((m) => m.content.toString() === 'this is {not json'), 'the original body is kept');
  assert.equal(await w.isSettled(), true);
  const stats = await w.stats();
  assert.deepEqual(
    { done: stats.completedChunks, dead: stats.deadLettered, ready: stats.ready, retrying: stats.retrying, results: stats.results },
    { done: 1, dead: 1, ready: 0, retrying: 0, results: 1 },
  );
});

test('results survive a reconnection; deliveries of the lost connection come back', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-reconnect');
  const w = open(prefix, 'w', { PREFETCH: 1 });
  await w.init(settings(300, 100));
  const [first] = await takeAtLeast(w, 1);
  assert.equal(await w.complete(first!, rangeResult(first!, 'w')), true);
  const [second] = await takeAtLeast(w, 1);
  assert.ok(second);

  const reconnectsBefore = w.reconnects;
  assert.ok((await closeBrokerConnections(prefix)) >= 1, 'the backend\'s connection was found');
  await waitFor('the backend noticed the loss and reconnected', () => w.reconnects > reconnectsBefore, 10_000, 20);
  assert.equal(await w.complete(second, rangeResult(second, 'w')), false, 'a delivery of a lost connection is not ours any more');

  // The backend reconnects by itself; the unacknowledged chunk is redelivered.
  const after = await takeAtLeast(w, 2);
  assert.deepEqual(after.map((d) => d.chunkId).sort(), ['00000', '00001', '00002'].filter((id) => id !== first!.chunkId));
  assert.equal(after.find((d) => d.chunkId === second.chunkId)?.recovered, true);
  for (const d of after) assert.equal(await w.complete(d, rangeResult(d, 'w')), true);
  const results = await w.readResults();
  assert.deepEqual(results.map((r) => r.chunkId).sort(), ['00000', '00001', '00002'], 'the result from before the cut is still there');
  assert.equal(await w.isSettled(), true);
});

test('an unreachable broker fails after CONNECT_TIMEOUT_SECONDS, naming the address, never the password', async () => {
  const prefix = randomPrefix('rb-down');
  const byParts = open(prefix, '0', { RABBITMQ_PORT: 1, RABBITMQ_PASSWORD: 'sekrit-pw', CONNECT_TIMEOUT_SECONDS: 1 });
  const byUrl = open(prefix, '1', { AMQP_URL: 'amqp://ttg:sekrit-url@127.0.0.1:1/sweeps', CONNECT_TIMEOUT_SECONDS: 1 });
  const started = Date.now();
  const [a, b] = await Promise.allSettled([byParts.init(settings(300, 100)), byUrl.init(settings(300, 100))]);
  const elapsed = Date.now() - started;
  for (const [outcome, address] of [[a, 'amqp://127.0.0.1:1/'], [b, 'amqp://127.0.0.1:1/sweeps']] as const) {
    assert.equal(outcome.status, 'rejected');
    const err = (outcome as PromiseRejectedResult).reason as Error;
    assert.ok(err instanceof BrokerUnavailableError, String(err));
    assert.ok(err.message.includes(address), err.message);
    assert.doesNotMatch(err.message, /sekrit/);
    assert.doesNotMatch(String(err.stack), /sekrit/);
  }
  assert.ok(elapsed >= 900, `retried for the whole second (${elapsed} ms)`);
  assert.ok(elapsed < 8000, `then gave up (${elapsed} ms)`);
  // The failure sticks: later calls report it too.
  await assert.rejects(byParts.readResults(), BrokerUnavailableError);
});

test('a network cut: the worker reconnects with backoff and carries on; cut for too long, it reports the broker address', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rb-cut');
  const relay = new TcpRelay(RABBIT_HOST, RABBIT_PORT);
  await relay.up();
  const w = open(prefix, 'w', { RABBITMQ_PORT: relay.port, CONNECT_TIMEOUT_SECONDS: 2, PREFETCH: 1 });
  await w.init(settings(300, 100));
  const [first] = await takeAtLeast(w, 1);
  assert.ok(first);

  await relay.down();
  await waitFor('the backend noticed the cut', () => w.connectionState === 'reconnecting', 10_000, 20);
  // The broker is unreachable meanwhile: the backend keeps retrying, and take() still returns in time.
  assert.deepEqual(await w.take(1, 300), []);
  assert.equal(await w.complete(first, rangeResult(first, 'w')), false, 'a delivery of the cut connection is not acknowledged');
  await relay.up();
  const all = await takeAtLeast(w, 3);
  assert.deepEqual(all.map((d) => d.chunkId).sort(), ['00000', '00001', '00002'], 'the unacknowledged chunk came back');
  for (const d of all) assert.equal(await w.complete(d, rangeResult(d, 'w')), true);
  assert.equal((await w.readResults()).length, 3);

  await relay.down(); // for good
  const started = Date.now();
  // The sweep is settled, so a take() may answer [] at once, before the cut is even noticed: keep
  // asking until the backend gives up, which it must do after about CONNECT_TIMEOUT_SECONDS.
  const err = await waitFor('the backend to give up on the broker', async () => {
    try {
      await w.take(1, 500);
      return null;
    } catch (e) {
      return { e };
    }
  }, 20_000, 0);
  assert.ok(err.e instanceof BrokerUnavailableError, String(err.e));
  assert.ok(err.e.message.includes(`127.0.0.1:${relay.port}`), err.e.message);
  assert.doesNotMatch(err.e.message, /guest@/);
  const waited = Date.now() - started;
  assert.ok(waited >= 1500 && waited < 10_000, `gave up after about CONNECT_TIMEOUT_SECONDS (${waited} ms)`);
  await assert.rejects(w.complete(all[0]!, rangeResult(all[0]!, 'w')), BrokerUnavailableError);
});

/**
 * The RabbitMQ task and retry queues are quorum queues that dead-letter at
 * least once (backends/rabbitmq/names.ts), against the real broker
 * (127.0.0.1:5672): their type and arguments as rabbitmqctl shows them, a
 * retry whose way back is cut kept rather than dropped, the delivery limit
 * ending in ttg's dead-letter stream with its reason, and a sweep left by an
 * older ttg (classic queues) refused with one line saying to run `ttg reset`.
 * Each test uses its own QUEUE_PREFIX and deletes it afterwards.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect, type ChannelModel } from 'amqplib';
import { QueueLayoutError } from '../core/errors.js';
import { rabbitNames } from '../backends/rabbitmq/backend.js';
import { TASK_DELIVERY_LIMIT } from '../backends/rabbitmq/names.js';
import type { SweepSettings } from '../backends/types.js';
import {
  golden, lastJsonLine, RABBIT_HOST, RABBIT_PORT, randomPrefix, requireRabbit, runTtg, testEnv, waitFor, rangeResult, takeAtLeast,
} from './helpers.js';
import { rabbitFixture } from './rabbit-fixture.js';

const RAW_URL = `amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`;
let raw: ChannelModel | null = null;

const { env, open, prefixes, cleanup } = rabbitFixture({ TOTAL_PARAMS: 300, CHUNK_SIZE: 100, RETRY_DELAY_MS: 100, MAX_RETRIES: 3, CONNECT_TIMEOUT_SECONDS: 10 });

const SETTINGS: SweepSettings = { totalParams: 300, chunkSize: 100, kernel: 'placeholder' };

async function rawConnection(): Promise<ChannelModel> {
  raw ??= await connect(RAW_URL);
  return raw;
}

function rabbitmqctl(...args: string[]): string {
  try {
    return execFileSync('rabbitmqctl', ['-q', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`rabbitmqctl ${args.join(' ')} failed (this test needs rabbitmqctl on PATH, talking to the test broker): ${String(err)}`);
  }
}

/** `rabbitmqctl list_queues` rows of one prefix, by queue name: the columns asked for, as text. */
function listQueues(prefix: string, ...columns: string[]): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of rabbitmqctl('list_queues', '--no-table-headers', 'name', ...columns).split('\n')) {
    const [name, ...rest] = line.split('\t');
    if (name?.startsWith(`${prefix}.`)) rows.set(name, rest);
  }
  return rows;
}

after(async () => {
  await cleanup();
  await raw?.close().catch(() => {});
});

test('the task and retry queues are quorum queues dead-lettering at least once: a retry whose way back is cut is kept, not dropped', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rq-layout');
  const n = rabbitNames(prefix);
  const w = open(prefix, 'w', { PREFETCH: 3 });
  await w.init(SETTINGS);

  const rows = listQueues(prefix, 'type', 'arguments');
  assert.equal(rows.get(n.tasks)?.[0], 'quorum');
  assert.equal(rows.get(n.retry)?.[0], 'quorum');
  for (const stream of [n.dlq, n.results, n.meta]) assert.equal(rows.get(stream)?.[0], 'stream', stream);
  for (const queue of [n.tasks, n.retry]) {
    const args = rows.get(queue)![1]!;
    // RabbitMQ applies at-least-once only with reject-publish; with drop-head it would fall back to at-most-once.
    assert.match(args, /"x-dead-letter-strategy","at-least-once"/, `${queue}: ${args}`);
    assert.match(args, /"x-overflow","reject-publish"/, `${queue}: ${args}`);
    assert.match(args, new RegExp(`"x-dead-letter-exchange","${n.exchange}"`), `${queue}: ${args}`);
  }
  assert.match(rows.get(n.retry)![1]!, new RegExp(`"x-dead-letter-routing-key","${n.tasks}"`));
  assert.match(rows.get(n.tasks)![1]!, new RegExp(`"x-dead-letter-routing-key","${n.dlq}"`));
  assert.match(rows.get(n.tasks)![1]!, new RegExp(`"x-delivery-limit",${TASK_DELIVERY_LIMIT}\\b`));

  // Cut the retry queue's way back (no queue bound for its dead letters), then fail a chunk.
  // At most once, the broker would drop the expired retry; at least once, it keeps it until the hop succeeds.
  const ch = await (await rawConnection()).createChannel();
  await ch.unbindQueue(n.tasks, n.exchange, n.tasks);
  const [first] = await takeAtLeast(w, 1);
  assert.equal(await w.fail(first!, 'kernel exploded'), 'retried');
  const held = await waitFor('the expired retry is held by its queue (messages 1, none ready)', () => {
    const retry = listQueues(prefix, 'messages', 'messages_ready').get(n.retry);
    return retry?.[0] === '1' && retry[1] === '0' ? retry : null;
  }, 30_000, 200);
  assert.deepEqual(held, ['1', '0']);
  // Still there well after its 100 ms delay ran out, and not in the task queue (whose way in is cut).
  await ch.bindQueue(n.tasks, n.exchange, n.tasks);
  assert.deepEqual(listQueues(prefix, 'messages').get(n.retry), ['1']);
  await ch.close();
});

test(`a chunk handed out more than ${TASK_DELIVERY_LIMIT} times unacknowledged goes to ttg's dead-letter stream with that reason`, async () => {
  await requireRabbit();
  const prefix = randomPrefix('rq-limit');
  const n = rabbitNames(prefix);
  const w = open(prefix, 'w', { PREFETCH: 2 });
  await w.init(SETTINGS);

  // A consumer that never acknowledges chunk 00001: every delivery of it is handed back, as a worker
  // killed with it in hand would (quorum queues count both). The other chunks it holds untouched.
  const ch = await (await rawConnection()).createChannel();
  await ch.prefetch(3);
  let deliveries = 0;
  const gone = new Promise<void>((resolve) => {
    void ch.consume(n.tasks, (msg) => {
      if (!msg || JSON.parse(msg.content.toString()).chunk_id !== '00001') return;
      deliveries++;
      ch.nack(msg, false, true);
      if (deliveries === TASK_DELIVERY_LIMIT + 1) resolve();
    });
  });
  await gone;
  await ch.close(); // hands the two untouched chunks back

  const dead = await waitFor('the dead letter is readable', async () => {
    const letters = await w.readDeadLetters();
    return letters.length > 0 ? letters : null;
  }, 20_000, 100);
  assert.equal(dead.length, 1);
  assert.deepEqual(dead[0]!.task, { chunkId: '00001', startParam: 100, endParam: 200, totalParams: 300 });
  assert.match(dead[0]!.reason, new RegExp(`handed out more than ${TASK_DELIVERY_LIMIT} times without ever being acknowledged`));

  // The other chunks are intact; the sweep settles with one chunk dead-lettered, as on every backend.
  const rest = await takeAtLeast(w, 2);
  assert.deepEqual(rest.map((d) => d.chunkId).sort(), ['00000', '00002']);
  for (const d of rest) assert.equal(await w.complete(d, rangeResult(d)), true);
  assert.deepEqual(await w.take(5, 300), []);
  assert.equal(await w.isSettled(), true);
  const stats = await w.stats();
  assert.deepEqual({ done: stats.completedChunks, dead: stats.deadLettered }, { done: 2, dead: 1 });
});

test('a sweep left by an older ttg (classic task queues) is refused at once with one line saying to run ttg reset; after it, the sweep runs', async () => {
  await requireRabbit();
  const prefix = randomPrefix('rq-classic');
  prefixes.add(prefix);
  const n = rabbitNames(prefix);
  // What the previous version declared: classic durable queues, the retry queue dead-lettering back to the tasks.
  const ch = await (await rawConnection()).createChannel();
  await ch.assertExchange(n.exchange, 'direct', { durable: true });
  await ch.assertQueue(n.tasks, { durable: true });
  await ch.assertQueue(n.retry, { durable: true, deadLetterExchange: n.exchange, deadLetterRoutingKey: n.tasks });
  await ch.close();

  const w = open(prefix, 'w', { CONNECT_TIMEOUT_SECONDS: 30 });
  const started = Date.now();
  await assert.rejects(w.init(SETTINGS), (err: unknown) => {
    assert.ok(err instanceof QueueLayoutError, String(err));
    assert.match(err.message, new RegExp(`already has a queue ${n.tasks} that is not the quorum queue this ttg declares`));
    assert.match(err.message, /the broker says: inequivalent arg/);
    assert.match(err.message, new RegExp(`Run 'ttg reset' with QUEUE_PREFIX=${prefix}`));
    assert.match(err.message, /amqp:\/\/127\.0\.0\.1:5672\//);
    assert.doesNotMatch(err.message, /guest@/);
    return true;
  });
  assert.ok(Date.now() - started < 10_000, 'refused at once, not after CONNECT_TIMEOUT_SECONDS of retrying');
  assert.equal(listQueues(prefix, 'type').get(n.tasks)?.[0], 'classic', 'the old queue is left as it was');

  // The same through the command: exit 2 and one error line; then ttg reset, and a worker sweeps exactly.
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10_000)!;
  const cmdEnv = testEnv({ ...env(prefix, { TOTAL_PARAMS: 10_000, CHUNK_SIZE: 1000 }), LOG_FORMAT: 'text' });
  const refused = await runTtg(['worker'], cmdEnv, 60_000);
  assert.equal(refused.code, 2, refused.stderr);
  const errorLines = refused.stderr.split('\n').filter((l) => l.includes('ttg reset'));
  assert.equal(errorLines.length, 1, refused.stderr);
  assert.match(errorLines[0]!, new RegExp(`^ttg worker: RabbitMQ at amqp://127\\.0\\.0\\.1:5672/ already has a queue ${n.tasks}`));
  assert.equal(lastJsonLine(refused.stdout)['status'], 'interrupted');

  const reset = await runTtg(['reset', '--yes'], cmdEnv, 60_000);
  assert.equal(reset.code, 0, reset.stderr);
  const worker = await runTtg(['worker'], { ...cmdEnv, IDLE_TIMEOUT_SECONDS: '5' }, 90_000);
  assert.equal(worker.code, 0, worker.stderr);
  assert.equal(listQueues(prefix, 'type').get(n.tasks)?.[0], 'quorum');
  const report = lastJsonLine((await runTtg(['aggregate', '--json'], cmdEnv, 60_000)).stdout);
  assert.equal(report['grand_sum'], ref.sum);
  assert.equal(report['total_params'], 10_000);
  assert.deepEqual(report['missing_chunks'], []);
});

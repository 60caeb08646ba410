/**
 * RabbitMQ queues that exist but do not run (yet) after a broker restart, against a private
 * node (faults/private-brokers.ts, never the machine's shared broker).
 *
 * A stream says "home node ... is down or inaccessible" (a 404) while it starts after a
 * restart. ttg used to read that as "no such queue": the sweep's settings "missing or
 * unreadable" (a worker reconnecting at that moment gave up for good, exit 1), and the
 * results empty (`ttg aggregate` reporting every chunk missing). Now such a queue is waited
 * for like a broker that is not back yet, for CONNECT_TIMEOUT_SECONDS at most, then the
 * error names the queue. The transient case is a fraction of a second; to see it for sure
 * this test uses a node whose streams stay down after a SIGKILL (RabbitMQ 3.10 killed
 * within minutes of declaring its first stream forgets its stream coordinator, see
 * faults/scenarios/broker-restart.ts), and checks that premise first.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect } from 'amqplib';
import { loadConfig } from '../engine/config.js';
import { backendOptions } from '../engine/backend.js';
import { BrokerUnavailableError } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import { RabbitBackend, rabbitNames } from '../backends/rabbitmq/backend.js';
import type { SweepSettings } from '../backends/types.js';
import { PrivateRabbit } from '../faults/private-brokers.js';
import { randomPrefix, rangeResult } from './helpers.js';

const PORT = 7216;
const SETTINGS: SweepSettings = { totalParams: 300, chunkSize: 100, kernel: 'placeholder' };
const opened: RabbitBackend[] = [];
let node: PrivateRabbit | null = null;

after(async () => {
  for (const b of opened) await b.close().catch(() => {});
  await node?.dispose();
});

function open(prefix: string, workerId: string, connectTimeoutSeconds: number): RabbitBackend {
  const env = {
    USE_QUEUE: 'true', QUEUE_BACKEND: 'rabbitmq', RABBITMQ_HOST: '127.0.0.1', RABBITMQ_PORT: String(PORT), QUEUE_PREFIX: prefix,
    TOTAL_PARAMS: '300', CHUNK_SIZE: '100', PREFETCH: '1', CONNECT_TIMEOUT_SECONDS: String(connectTimeoutSeconds), WORKER_ID: workerId,
  };
  const backend = new RabbitBackend(backendOptions(loadConfig(env), 'rabbitmq', workerId, silentLogger));
  opened.push(backend);
  return backend;
}

/** What the private node says of `queue` now: `ok <messages>`, or its error. */
async function queueState(queue: string): Promise<string> {
  const raw = await connect(`amqp://guest:guest@127.0.0.1:${PORT}/`);
  try {
    const ch = await raw.createChannel();
    ch.on('error', () => {});
    return await ch.checkQueue(queue).then((ok) => `ok ${ok.messageCount}`, (err: Error) => err.message);
  } finally {
    await raw.close().catch(() => {});
  }
}

/**
 * Fails (within `bound` ms) with BrokerUnavailableError naming a queue that is not running, after waiting about
 * `atLeast` ms. Only if the node brought its streams back meanwhile (the 3.10 quirk the premise relies on does
 * not always hold on a loaded machine) may the call succeed instead, and then with the sweep as it is (`asItIs`),
 * never as if it were gone.
 */
async function waitsThenNamesTheQueue<T>(
  what: string, prefix: string, call: Promise<T>, atLeast: number, bound: number, asItIs: (value: T) => void,
): Promise<void> {
  const started = Date.now();
  const outcome = await call.then((value) => ({ value }), (error: unknown) => ({ error }));
  if ('value' in outcome) {
    assert.match(await queueState(rabbitNames(prefix).meta), /^ok /, `${what}: resolved with ${JSON.stringify(outcome.value)?.slice(0, 200)} while the streams were down`);
    asItIs(outcome.value);
    return;
  }
  const err = outcome.error;
  assert.ok(err instanceof BrokerUnavailableError, `${what}: ${String(err)}`);
  assert.match(err.message, /the queue \S+ is not running on the broker/, what);
  assert.match(err.message, /127\.0\.0\.1:7216/, what);
  const waited = Date.now() - started;
  assert.ok(waited >= atLeast && waited < bound, `${what}: waited ${waited} ms, expected CONNECT_TIMEOUT_SECONDS of retrying`);
}

test('a sweep whose streams do not run after a restart: readers and workers wait for them, then name the queue, never take the sweep for gone', { timeout: 180_000 }, async () => {
  if (!existsSync('/usr/lib/rabbitmq/bin/rabbitmq-server')) {
    throw new Error('this test starts a private RabbitMQ node and needs /usr/lib/rabbitmq/bin/rabbitmq-server (Debian: apt-get install rabbitmq-server)');
  }
  node = new PrivateRabbit({ port: PORT, name: 'ttgrestarttest' });
  await node.start();
  const prefix = randomPrefix('rq-restart');
  // Long enough to outlast the restart itself, which takes seconds (its reconnection is timed from the loss).
  const worker = open(prefix, 'w', 25);
  await worker.init(SETTINGS);
  const [first] = await worker.take(1, 10_000);
  assert.equal(await worker.complete(first!, rangeResult(first!)), true);
  const [held] = await worker.take(1, 10_000);
  assert.ok(held, 'a second chunk in hand when the broker dies');

  await node.kill();
  await node.start();
  // The premise: this node's streams stay down (a 404 saying so), its quorum queues run.
  const n = rabbitNames(prefix);
  assert.match(await queueState(n.meta), /is down or inaccessible/, 'premise: the restarted node does not run the streams');
  assert.match(await queueState(n.tasks), /^ok /, 'premise: the quorum task queue runs');

  // Before: settings "missing or unreadable" at once, results [] (every chunk missing), the worker gone for good.
  const readers = [open(prefix, 'reader-1', 3), open(prefix, 'reader-2', 3)];
  await Promise.all([
    waitsThenNamesTheQueue('readSettings', prefix, readers[0]!.readSettings(), 2500, 20_000, (settings) => {
      assert.deepEqual(settings && { totalParams: settings.totalParams, chunkSize: settings.chunkSize, kernel: settings.kernel }, SETTINGS);
    }),
    waitsThenNamesTheQueue('readResults', prefix, readers[1]!.readResults(), 2500, 20_000, (results) => {
      assert.deepEqual(results.map((r) => r.chunkId), [first!.chunkId], 'the result committed before the restart');
    }),
    waitsThenNamesTheQueue('the worker\'s next take', prefix, worker.take(1, 60_000), 1000, 40_000, (deliveries) => {
      assert.ok(Array.isArray(deliveries));
    }),
  ]);
});

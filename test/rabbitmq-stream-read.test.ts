/**
 * Reading a RabbitMQ stream to its end (backends/rabbitmq/stream-read.ts) when the caller has what it
 * needs before the end: a poll settled by the results stops its read of the dead letters, which an empty
 * stream would otherwise hold for EMPTY_STREAM_MS. What such a read leaves must be exact: the next read
 * goes on from where it stopped, and every entry is read once.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type ChannelModel } from 'amqplib';
import { silentLogger } from '../core/log.js';
import { STREAM } from '../backends/rabbitmq/names.js';
import { RabbitSession } from '../backends/rabbitmq/session.js';
import { readStream } from '../backends/rabbitmq/stream-read.js';
import { RABBIT_HOST, RABBIT_PORT, randomPrefix, requireRabbit } from './helpers.js';

const URL = `amqp://guest:guest@${RABBIT_HOST}:${RABBIT_PORT}/`;
const streams: string[] = [];
let raw: ChannelModel | null = null;
let session: RabbitSession | null = null;

async function streamOf(bodies: string[]): Promise<string> {
  raw ??= await connect(URL);
  const queue = `${randomPrefix('rb-read')}.s`;
  streams.push(queue);
  const ch = await raw.createConfirmChannel();
  await ch.assertQueue(queue, STREAM);
  for (const body of bodies) ch.sendToQueue(queue, Buffer.from(body), { persistent: true });
  await ch.waitForConfirms();
  await ch.close();
  return queue;
}

function openSession(): RabbitSession {
  session ??= new RabbitSession({
    url: URL, address: `amqp://${RABBIT_HOST}:${RABBIT_PORT}/`, connectTimeoutSeconds: 10, connectionName: () => 'ttg test stream-read', log: silentLogger,
  });
  return session;
}

after(async () => {
  if (raw) {
    const ch = await raw.createChannel();
    for (const queue of streams) await ch.deleteQueue(queue).catch(() => {});
    await raw.close().catch(() => {});
  }
  await session?.close(async () => {});
});

test('a read told it has enough stops at once, and the next read from the offset it returns gets the rest: every entry once', async () => {
  await requireRabbit();
  const bodies = Array.from({ length: 12 }, (_, i) => `entry ${i}`);
  const queue = await streamOf(bodies);
  const s = openSession();
  const link = await s.ensure();

  // Told by its own caller after the 5th entry (as poll()'s results read tells the dead-letter read).
  const enough = new AbortController();
  const first: string[] = [];
  const next = await readStream(s, link, queue, 0, 'end', (msg) => {
    first.push(msg.content.toString());
    if (first.length === 5) enough.abort();
  }, enough.signal);
  assert.deepEqual(first, bodies.slice(0, 5), 'nothing is read past the point it was told');
  assert.equal(next, 5, 'the offset to go on from is the first entry not read');

  const rest: string[] = [];
  const end = await readStream(s, link, queue, next!, 'end', (msg) => void rest.push(msg.content.toString()));
  assert.deepEqual(rest, bodies.slice(5), 'the next read gets exactly the entries the first one left');
  assert.equal(end, bodies.length);

  // Told before it began: nothing is read, and it goes on from where it was asked to start.
  const told = new AbortController();
  told.abort();
  const none: string[] = [];
  assert.equal(await readStream(s, link, queue, 3, 'end', (msg) => void none.push(msg.content.toString()), told.signal), 3);
  assert.deepEqual(none, []);
});

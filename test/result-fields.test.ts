/**
 * The optional result fields `recovered` and `attempts` (core/sweep.ts
 * ChunkResult): written by a worker only when they say something, carried by
 * every backend, read back as they were, and absent from results that never
 * had them (older workers), which still parse as before.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../engine/config.js';
import { createBackend } from '../engine/backend.js';
import { silentLogger } from '../core/log.js';
import { parseResultFields, resultFields } from '../backends/messages.js';
import { toChunkStats } from '../engine/stats.js';
import type { ChunkResult, Delivery, QueueBackend } from '../backends/types.js';
import { RABBIT_HOST, RABBIT_PORT, randomPrefix, REDIS_HOST, REDIS_PORT, requireRabbit, requireRedis } from './helpers.js';

const opened: QueueBackend[] = [];
after(async () => {
  for (const b of opened) {
    await b.reset().catch(() => {});
    await b.close().catch(() => {});
  }
});

function resultOf(d: Delivery, extra: Partial<ChunkResult>): ChunkResult {
  const t = d.task!;
  const n = t.endParam - t.startParam;
  return {
    chunkId: t.chunkId, workerId: '7', status: 'completed', durationSeconds: 0.5, completedAt: new Date().toISOString(),
    stats: toChunkStats({ count: n, min: 1, max: 2, argmin: t.startParam, argmax: t.startParam, partials: [n * 1.5] }),
    ...extra,
  };
}

const servers = { memory: async () => {}, redis: requireRedis, rabbitmq: requireRabbit } as const;

for (const kind of ['memory', 'redis', 'rabbitmq'] as const) {
  test(`${kind}: recovered and attempts travel with the result, and a result without them has neither`, async () => {
    await servers[kind]();
    const config = loadConfig({
      USE_QUEUE: 'true', QUEUE_BACKEND: kind, QUEUE_PREFIX: randomPrefix(`fields-${kind}`), REDIS_HOST, REDIS_PORT: String(REDIS_PORT),
      RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: String(RABBIT_PORT), THREADS: '1', CONNECT_TIMEOUT_SECONDS: '5',
    });
    const backend = await createBackend({ config, workerId: '7', log: silentLogger });
    opened.push(backend);
    await backend.init({ totalParams: 300, chunkSize: 100, kernel: 'placeholder' });
    const got: Delivery[] = [];
    const deadline = Date.now() + 10_000;
    while (got.length < 3) {
      assert.ok(Date.now() < deadline, 'three deliveries');
      got.push(...(await backend.take(3 - got.length, 500)));
    }
    const [a, b, c] = got.sort((x, y) => x.chunkId.localeCompare(y.chunkId)) as [Delivery, Delivery, Delivery];
    assert.equal(await backend.complete(a, resultOf(a, { recovered: true, attempts: 2 })), true);
    assert.equal(await backend.complete(b, resultOf(b, {})), true);
    assert.equal(await backend.complete(c, resultOf(c, { recovered: false, attempts: 0 })), true);
    const read = new Map((await backend.readResults()).map((r) => [r.chunkId, r]));
    assert.equal(read.get(a.chunkId)!.recovered, true);
    assert.equal(read.get(a.chunkId)!.attempts, 2);
    assert.equal('recovered' in read.get(b.chunkId)!, false, 'no recovered field in a result that had none');
    assert.equal('attempts' in read.get(b.chunkId)!, false, 'no attempts field in a result that had none');
    // Said as false and 0: read back as saying nothing (brokers drop them on the wire; memory keeps the object).
    assert.notEqual(read.get(c.chunkId)!.recovered, true);
    assert.ok(!read.get(c.chunkId)!.attempts);
    assert.equal(read.get(a.chunkId)!.stats.count, 100, 'and the rest of the result is as it was');
  });
}

test('on the wire: the fields only when they say something; an older result parses; a bad attempts value is ignored', () => {
  const base: ChunkResult = {
    chunkId: '00001', workerId: '3', status: 'completed', durationSeconds: 1, completedAt: '2026-11-30T10:00:00.000Z',
    stats: toChunkStats({ count: 1, min: 1, max: 1, argmin: 100, argmax: 100, partials: [1] }),
  };
  assert.deepEqual(Object.keys(resultFields(base)).filter((k) => k === 'recovered' || k === 'attempts'), []);
  const fields = resultFields({ ...base, recovered: true, attempts: 3 });
  assert.equal(fields['recovered'], 'true');
  assert.equal(fields['attempts'], '3');
  assert.deepEqual(parseResultFields(fields), { ...base, recovered: true, attempts: 3 });
  // As an older worker wrote it (no optional field): the same result, without them.
  assert.deepEqual(parseResultFields(resultFields(base)), base);
  // As RabbitMQ carries it (JSON): the same.
  assert.deepEqual(parseResultFields(JSON.parse(JSON.stringify(fields))), { ...base, recovered: true, attempts: 3 });
  for (const bad of ['-1', 'many', '1e9', '']) {
    const parsed = parseResultFields({ ...resultFields(base), attempts: bad });
    assert.ok(parsed !== null && !('attempts' in parsed), `attempts=${JSON.stringify(bad)} is ignored, the result kept`);
  }
  assert.equal('recovered' in parseResultFields({ ...resultFields(base), recovered: 'false' })!, false);
});

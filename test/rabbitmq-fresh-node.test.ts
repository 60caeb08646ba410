/**
 * The first sweep on a RabbitMQ node that has just started, against a private node
 * (faults/private-brokers.ts, never the machine's shared broker).
 *
 * RabbitMQ 3.10 starts its stream coordinator with the first stream declared: a stream's
 * declaration is answered before the coordinator knows it, and for a while a publish to it
 * (506 "Stream not found") or a consumer of it (541, the channel crashing on
 * stream_not_found) makes the broker close the whole connection. The creator used to publish
 * at once: it lost its connection, its chunks in hand and its task publishing (taken over by
 * the other worker), and most chunks were computed twice (counted once). Caught by the
 * security fault scenario, which also starts fresh nodes. Now the creator waits on a
 * connection apart until the streams take a consumer (backends/rabbitmq/stream-read.ts).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { PrivateRabbit } from '../faults/private-brokers.js';
import { goldenPlaceholder } from '../faults/scenarios/security-kit.js';
import { lastJsonLine, randomPrefix, runTtg, testEnv } from './helpers.js';

const PORT = 7217;
let node: PrivateRabbit | null = null;

after(async () => {
  await node?.dispose();
});

test('the first sweep on a RabbitMQ node just started: no worker loses its connection, no chunk is computed twice', { timeout: 180_000 }, async (t) => {
  if (!existsSync('/usr/lib/rabbitmq/bin/rabbitmq-server')) {
    throw new Error('this test starts a private RabbitMQ node and needs /usr/lib/rabbitmq/bin/rabbitmq-server (Debian: apt-get install rabbitmq-server)');
  }
  node = new PrivateRabbit({ port: PORT, name: 'ttgfreshtest' });
  await node.start();
  const env = testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'rabbitmq', RABBITMQ_HOST: '127.0.0.1', RABBITMQ_PORT: PORT, QUEUE_PREFIX: randomPrefix('rq-fresh'),
    TOTAL_PARAMS: 10_000, CHUNK_SIZE: 500, IDLE_TIMEOUT_SECONDS: 20,
  });
  const workers = await Promise.all(['0', '1'].map((id) => runTtg(['worker'], { ...env, WORKER_ID: id }, 90_000)));
  for (const w of workers) {
    assert.equal(w.code, 0, w.stderr.slice(-1500));
    // Once a worker has joined (or created) the sweep, it holds chunks, or its creator publishes tasks: a lost
    // connection there is what made chunks be computed twice. (One lost while joining is tried again at no
    // cost, and was seen once in CI before the creation, cause unknown; it is shown, not failed.)
    const joined = w.stderr.search(/(created the sweep's tasks|joined the sweep) backend=/);
    assert.ok(joined >= 0, `the worker joined the sweep: ${w.stderr.slice(-1500)}`);
    assert.doesNotMatch(w.stderr.slice(joined), /lost the connection/, 'a worker lost its connection to the new node after joining');
    const early = (w.stderr.slice(0, joined).match(/lost the connection/g) ?? []).length;
    if (early > 0) t.diagnostic(`a worker lost its connection ${early} time(s) while joining, and joined on a new one`);
  }
  const report = lastJsonLine((await runTtg(['aggregate', '--json'], env)).stdout);
  // The placeholder over [0, 10,000) against the golden figures (test/fixtures/golden.json).
  const g = goldenPlaceholder(10_000);
  assert.equal(report['total_params'], g.count);
  assert.equal(report['grand_sum'], g.sum);
  assert.deepEqual(report['missing_chunks'], []);
  assert.equal(report['duplicate_results'], 0, 'no chunk was computed twice');
  assert.equal(workers.reduce((a, w) => a + Number(lastJsonLine(w.stdout)['chunks_processed']), 0), 20, 'the workers computed 20 chunks between them');
});

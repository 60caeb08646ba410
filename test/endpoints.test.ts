/**
 * The worker's HTTP endpoints (docs/design.md "HTTP endpoints"): /healthz, /readyz
 * that follows the broker connection, and /metrics whose counts agree with
 * what the sweep itself recorded. Real `ttg worker` processes against the
 * real brokers (through a relay the test takes down and brings back), plus
 * an in-process sweep whose metrics are checked against the backend's own
 * results and dead letters.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { loadConfig } from '../engine/config.js';
import { silentLogger } from '../core/log.js';
import { KernelPool } from '../engine/pool.js';
import { QueueWorker } from '../engine/queue-worker.js';
import { WorkerMetrics } from '../engine/metrics.js';
import { WorkerEndpoints } from '../engine/http.js';
import { createBackend } from '../engine/backend.js';
import {
  golden, lastJsonLine, RABBIT_HOST, RABBIT_PORT, random, randomPrefix, REDIS_HOST, REDIS_PORT, requireRabbit, requireRedis,
  runTtg, startTtg, testEnv, waitFor,
} from './helpers.js';
import { freePort, TcpRelay } from './relay.js';

/** GET on 127.0.0.1; status 0 when nothing answers. */
async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: string; type: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.text(), type: res.headers.get('content-type') ?? '' };
  } catch {
    return { status: 0, body: '', type: '' };
  }
}

/** Polls `probe` (as the kubelet would) until it holds; fails naming `what` after `timeoutMs`. */
async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  await waitFor(what, probe, timeoutMs, 25);
}

/** The value of one series in Prometheus text, or undefined when absent. */
function series(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups) await c().catch(() => {});
});

for (const kind of ['redis', 'rabbitmq'] as const) {
  test(`${kind}: /readyz is 503 until the broker answers, 503 while it is away, 200 once back; the sweep stays exact`, async () => {
    await (kind === 'redis' ? requireRedis() : requireRabbit());
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
    const relay = new TcpRelay(kind === 'redis' ? REDIS_HOST : RABBIT_HOST, kind === 'redis' ? REDIS_PORT : RABBIT_PORT);
    await relay.up(); // picks the port ...
    await relay.down(); // ... and the broker starts out of reach
    cleanups.push(() => relay.down());
    const prefix = randomPrefix(`ep-${kind}`);
    const port = await freePort();
    const env = testEnv({
      USE_QUEUE: 'true', QUEUE_BACKEND: kind, QUEUE_PREFIX: prefix, METRICS_PORT: port,
      [kind === 'redis' ? 'REDIS_PORT' : 'RABBITMQ_PORT']: relay.port, CONNECT_TIMEOUT_SECONDS: 30,
      TOTAL_PARAMS: 10000, CHUNK_SIZE: 100, SIMULATE_WORK_MS: 1, PREFETCH: 2, IDLE_TIMEOUT_SECONDS: 20,
    });
    cleanups.push(() => runTtg(['reset'], { ...env, REDIS_PORT: String(REDIS_PORT), RABBITMQ_PORT: String(RABBIT_PORT) }, 20_000));
    const w = startTtg(['worker'], env);
    cleanups.push(async () => w.child.kill('SIGKILL'));

    await until('/healthz answers 200 while the broker is unreachable', async () => (await get(port, '/healthz')).status === 200);
    const notYet = await get(port, '/readyz');
    assert.equal(notYet.status, 503, 'not ready before the broker answers');
    assert.match(notYet.body, /^not ok: (starting|joining the sweep)/);

    await relay.up();
    await until('/readyz 200 once connected and the sweep initialized', async () => (await get(port, '/readyz')).status === 200);
    assert.match(w.stderr(), /created the sweep|joined the sweep/);
    await until('some chunks committed', async () => (series((await get(port, '/metrics')).body, 'ttg_chunks_completed_total') ?? 0) >= 3);

    await relay.down();
    await until('/readyz 503 while the connection is lost', async () => (await get(port, '/readyz')).status === 503);
    assert.match((await get(port, '/readyz')).body, /reconnecting/);
    assert.equal((await get(port, '/healthz')).status, 200, 'a worker retrying its broker is alive: the kubelet must not restart it');

    await relay.up();
    await until('/readyz 200 again after the broker came back', async () => (await get(port, '/readyz')).status === 200);
    const metrics = (await get(port, '/metrics')).body;
    assert.ok((series(metrics, 'ttg_broker_reconnects_total') ?? 0) >= 1, `the reconnection is counted; worker log:\n${w.stderr()}`);
    assert.match(w.stderr(), /lost the connection to (Redis|RabbitMQ)/, 'the loss is logged');

    assert.equal(await w.exited, 0, w.stderr());
    const summary = lastJsonLine(w.stdout());
    assert.equal(summary['status'], 'completed');
    const report = lastJsonLine((await runTtg(['aggregate', '--json'], { ...env, [kind === 'redis' ? 'REDIS_PORT' : 'RABBITMQ_PORT']: String(relay.port) })).stdout);
    assert.equal(report['grand_sum'], ref.sum);
    assert.deepEqual(report['missing_chunks'], []);
    assert.equal(await get(port, '/healthz').then((r) => r.status), 0, 'the endpoints close with the worker');
  });
}

test('metrics of an in-process sweep agree with its results and dead letters; endpoints answer what they serve', async () => {
  const prefix = randomPrefix('ep-mem');
  const config = loadConfig({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'memory', QUEUE_PREFIX: prefix, THREADS: '1', TOTAL_PARAMS: '20000', CHUNK_SIZE: '200',
    SIMULATE_FAULT_RATE: '0.3', RABBITMQ_MAX_RETRIES: '2', RABBITMQ_RETRY_DELAY_MS: '0', IDLE_TIMEOUT_SECONDS: '5',
  });
  const pool = new KernelPool({ threads: 1, kernel: 'placeholder', impl: 'wasm' });
  const backend = await createBackend({ config, workerId: '0', log: silentLogger });
  const metrics = new WorkerMetrics({ mode: 'queue', backend: 'memory', kernel: 'placeholder', impl: 'wasm', threads: 1, version: 'test' });
  const worker = new QueueWorker({ config, backend, pool, log: silentLogger, metrics, random: random(42) });
  const endpoints = new WorkerEndpoints({
    port: 0, host: '127.0.0.1', metrics, log: silentLogger, health: () => worker.health(), readiness: () => worker.readiness(),
  });
  await endpoints.start();
  try {
    assert.equal((await get(endpoints.port!, '/readyz')).status, 503, 'not ready before init');
    const summary = await worker.run();
    assert.equal((await get(endpoints.port!, '/readyz')).status, 200);
    const results = await backend.readResults();
    const dead = await backend.readDeadLetters();
    assert.ok(dead.length > 0, 'a 30% fault rate over 100 chunks dead-letters some');

    const res = await get(endpoints.port!, '/metrics');
    assert.equal(res.status, 200);
    assert.match(res.type, /^text\/plain; version=0\.0\.4/);
    const text = res.body;
    const w = { worker: summary.consumer };
    assert.equal(series(text, 'ttg_chunks_completed_total', w), results.length);
    assert.equal(series(text, 'ttg_chunks_completed_total', w), 100 - dead.length);
    assert.equal(series(text, 'ttg_params_processed_total', w), results.reduce((a, r) => a + r.stats.count, 0));
    assert.equal(series(text, 'ttg_chunk_duration_seconds_count', w), results.length);
    assert.equal(series(text, 'ttg_chunk_failures_total', { ...w, outcome: 'dead-lettered' }), dead.length);
    const retried = series(text, 'ttg_chunk_failures_total', { ...w, outcome: 'retried' }) ?? 0;
    assert.equal(retried + dead.length, summary.failed_attempts, 'every failed attempt is counted once, by its outcome');
    assert.equal(summary.chunks_dead_lettered, dead.length, 'a one-worker sweep: its dead-lettered chunks are all the dead letters');
    assert.equal(series(text, 'ttg_chunks_in_hand', w), 0);
    assert.equal(series(text, 'ttg_threads'), 1);
    assert.equal(series(text, 'ttg_info', { mode: 'queue', backend: 'memory', kernel: 'placeholder' }), 1);
    assert.ok(series(text, 'ttg_process_cpu_seconds_total') !== undefined, 'default process metrics are there');
    const names = new Set(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => /^[\w:]+/.exec(l)![0]));
    for (const name of names) assert.ok(name.startsWith('ttg_'), `${name} is prefixed ttg_`);

    assert.equal((await get(endpoints.port!, '/nowhere')).status, 404);
    assert.equal((await get(endpoints.port!, '/metrics', 'POST')).status, 405);
  } finally {
    await endpoints.close();
    await backend.reset();
    await backend.close();
    await pool.close();
  }
});

test('static mode serves the endpoints too, and an Indexed Job\'s JOB_COMPLETION_INDEX picks the share', async () => {
  const port = await freePort();
  const w = startTtg(['worker'], testEnv({
    USE_QUEUE: 'false', JOB_COMPLETION_INDEX: 1, TOTAL_WORKERS: 2, TOTAL_PARAMS: 4000, CHUNK_SIZE: 100,
    SIMULATE_WORK_MS: 1, METRICS_PORT: port,
  }));
  cleanups.push(async () => w.child.kill('SIGKILL'));
  await until('/readyz 200 in static mode', async () => (await get(port, '/readyz')).status === 200);
  assert.equal((await get(port, '/healthz')).status, 200);
  await until('parameters counted while the share runs', async () =>
    (series((await get(port, '/metrics')).body, 'ttg_params_processed_total', { worker: 'worker-1' }) ?? 0) > 0);
  assert.equal(series((await get(port, '/metrics')).body, 'ttg_info', { mode: 'static' }), 1);
  assert.equal(await w.exited, 0, w.stderr());
  const summary = lastJsonLine(w.stdout());
  assert.equal(summary['worker_id'], '1');
  assert.deepEqual([summary['range_start'], summary['range_end']], [2000, 4000], 'the second half of 4000 params');
});

test('a METRICS_PORT in use is said once and the worker still does its work', async () => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const r = await runTtg(['worker'], testEnv({ USE_QUEUE: 'false', TOTAL_WORKERS: 1, TOTAL_PARAMS: 1000, METRICS_PORT: port }));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.split('\n').filter((l) => l.includes(`METRICS_PORT ${port} is in use`)).length, 1, r.stderr);
    assert.equal((lastJsonLine(r.stdout)['aggregates'] as { count: number }).count, 1000);
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
});

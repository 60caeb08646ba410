/**
 * /metrics of several `ttg worker` processes sharing one sweep on Redis,
 * scraped during the sweep and after the work is done, against what the
 * sweep itself recorded (its results, as `ttg aggregate` reads them).
 *
 * So that "after" can be scraped (a worker leaves as soon as the sweep is
 * settled), the test holds two chunks itself, as a worker would, before the
 * workers start: they do everything else, then wait for the held chunks.
 * It then stops refreshing one of them, as a crashed worker would: a worker
 * recovers it and /metrics says which. Then the other, and the sweep ends.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../engine/config.js';
import { silentLogger } from '../core/log.js';
import { buildReport } from '../engine/aggregate.js';
import { createBackend } from '../engine/backend.js';
import type { Delivery, QueueBackend } from '../backends/types.js';
import { golden, lastJsonLine, randomPrefix, requireRedis, runTtg, startTtg, testEnv, type TtgProcess } from './helpers.js';
import { freePort } from './relay.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

type Samples = Map<string, number>;

/** Parses Prometheus text into `name{label="v",...}` → value (labels sorted), comments skipped. */
function parseMetrics(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    const key = line.slice(0, space);
    const brace = key.indexOf('{');
    const name = brace < 0 ? key : key.slice(0, brace);
    const labels = brace < 0 ? [] : key.slice(brace + 1, -1).split(/,(?=\w+=")/).filter(Boolean).sort();
    out.set(labels.length ? `${name}{${labels.join(',')}}` : name, Number(line.slice(space + 1)));
  }
  return out;
}

async function scrape(port: number): Promise<Samples | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? parseMetrics(await res.text()) : null;
  } catch {
    return null; // not listening yet, or gone
  }
}

const value = (s: Samples, name: string, worker: string, extra = '') =>
  s.get(`${name}{${[`worker="${worker}"`, ...(extra ? [extra] : [])].sort().join(',')}}`) ?? 0;

test('counters of three workers add up to the aggregate during and after the sweep; a recovered chunk is counted where it was recovered', async () => {
  await requireRedis();
  const total = 10000;
  const chunk = 250;
  const chunks = total / chunk;
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === total)!;
  const env = testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: randomPrefix('metrics'), TOTAL_PARAMS: total, CHUNK_SIZE: chunk,
    SIMULATE_WORK_MS: 0.2, PREFETCH: 1, IDLE_TIMEOUT_SECONDS: 60, STALE_THRESHOLD_MS: 1000, STALE_CHECK_INTERVAL_SECONDS: 1,
  });
  cleanups.push(() => runTtg(['reset'], env, 20_000));

  // The test's own consumer creates the sweep and holds two chunks, refreshing them as a live worker does.
  const config = loadConfig(env as Record<string, string>);
  const holder: QueueBackend = await createBackend({ config, workerId: 'test-holder', log: silentLogger });
  cleanups.push(() => holder.close());
  await holder.init({ totalParams: total, chunkSize: chunk, kernel: 'placeholder' });
  const held: Delivery[] = await holder.take(2, 1000);
  assert.equal(held.length, 2);
  let refreshed = [...held];
  const heartbeat = setInterval(() => void holder.heartbeat(refreshed).catch(() => {}), 200);
  cleanups.push(async () => clearInterval(heartbeat));

  const ports = [await freePort(), await freePort(), await freePort()];
  const workers: TtgProcess[] = ports.map((port, id) => startTtg(['worker'], { ...env, WORKER_ID: String(id), METRICS_PORT: String(port) }));
  for (const w of workers) cleanups.push(async () => w.child.kill('SIGKILL'));
  const names = [0, 1, 2].map((id) => `worker-${id}`);

  // During: every scrape is consistent, and counters never go back.
  const last = new Map<string, Samples>();
  const check = (name: string, s: Samples) => {
    const done = value(s, 'ttg_chunks_completed_total', name);
    assert.equal(value(s, 'ttg_params_processed_total', name), done * chunk, `${name}: params = chunks × CHUNK_SIZE`);
    assert.equal(value(s, 'ttg_chunk_duration_seconds_count', name), done, `${name}: one duration per committed chunk`);
    assert.ok(value(s, 'ttg_chunks_in_hand', name) <= 1, `${name}: never more in hand than PREFETCH`);
    const before = last.get(name);
    if (before) {
      for (const metric of ['ttg_chunks_completed_total', 'ttg_params_processed_total', 'ttg_chunks_recovered_total']) {
        assert.ok(value(s, metric, name) >= value(before, metric, name), `${name}: ${metric} never decreases`);
      }
    }
    last.set(name, s);
  };
  const scrapeAll = async () => {
    const all = await Promise.all(ports.map(scrape));
    all.forEach((s, i) => s && check(names[i]!, s));
    return all;
  };
  const sum = (all: Array<Samples | null>, metric: string) => all.reduce((a, s, i) => a + (s ? value(s, metric, names[i]!) : 0), 0);
  const until = async (what: string, cond: (all: Array<Samples | null>) => boolean, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const all = await scrapeAll();
      if (all.every(Boolean) && cond(all)) return all;
      assert.ok(Date.now() < deadline, `timed out waiting for ${what}; ${workers.map((w) => w.stderr().slice(-400)).join('\n')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  let sawPartial = false;
  await until('every chunk but the two held', (all) => {
    const done = sum(all, 'ttg_chunks_completed_total');
    if (done > 0 && done < chunks - 2) sawPartial = true;
    return done === chunks - 2;
  });
  assert.ok(sawPartial, 'scraped while the sweep was under way');

  // After the work: what the metrics say per worker is what the results say per worker.
  const resultsOf = async () => buildReport(await holder.readSettings(), await holder.readResults(), await holder.readDeadLetters());
  let all = await until('every worker idle', (a) => sum(a, 'ttg_chunks_in_hand') === 0);
  let report = await resultsOf();
  for (const [i, name] of names.entries()) {
    assert.equal(value(all[i]!, 'ttg_chunks_completed_total', name), report.worker_distribution[String(i)] ?? 0, `${name}'s chunks`);
  }
  assert.equal(sum(all, 'ttg_params_processed_total'), report.total_params);
  assert.equal(report.total_params, total - 2 * chunk);
  assert.equal(sum(all, 'ttg_chunks_recovered_total'), 0, 'nothing recovered yet');
  assert.equal(sum(all, 'ttg_chunk_failures_total'), 0);

  // The holder "crashes" on the first held chunk: it is no longer refreshed, and a worker takes it over.
  const [first, second] = held as [Delivery, Delivery];
  refreshed = [second];
  all = await until('the first held chunk recovered', (a) => sum(a, 'ttg_chunks_completed_total') === chunks - 1 && sum(a, 'ttg_chunks_in_hand') === 0);
  report = await resultsOf();
  const rescuer = names.findIndex((name, i) => value(all[i]!, 'ttg_chunks_recovered_total', name) === 1);
  assert.ok(rescuer >= 0, 'one worker counts the recovery');
  assert.equal(sum(all, 'ttg_chunks_recovered_total'), 1, 'and only one');
  assert.match(workers[rescuer]!.stderr(), new RegExp(`FAULT RECOVERY: claimed chunk ${first.chunkId}`), 'its log says which chunk');
  const recovered = (await holder.readResults()).find((r) => r.chunkId === first.chunkId)!;
  assert.equal(recovered.workerId, String(rescuer), 'the result of the recovered chunk is the rescuer\'s');
  // Parameters over all workers = the aggregate's (duplicates, if any, are work done again).
  assert.equal(sum(all, 'ttg_params_processed_total'), report.total_params + report.duplicate_results * chunk);
  assert.equal(report.total_params, total - chunk);

  // Then the second: the sweep ends, every worker leaves, and the aggregate is exact.
  refreshed = [];
  for (const w of workers) assert.equal(await w.exited, 0, w.stderr());
  report = await resultsOf();
  assert.deepEqual(report.missing_chunks, []);
  assert.equal(report.duplicate_results, 0);
  assert.equal(report.grand_sum, ref.sum, 'the independent reference\'s sum, exactly');
  const summaries = workers.map((w) => lastJsonLine(w.stdout()));
  assert.equal(summaries.reduce((a, s) => a + Number(s['params_processed']), 0), total, 'every parameter was committed once');
  assert.equal(summaries.reduce((a, s) => a + Number(s['chunks_recovered']), 0), 2, 'both held chunks were recovered');
});

/**
 * The fault suite's quick versions (faults/scenarios/, issue 9): real worker
 * processes on the real brokers, killed, frozen, cut off, slowed down and fed
 * poison, each ending in an exact aggregate. `npm run faults` runs the full
 * versions; see README, "Fault suite". Two scenarios run at a time (much of
 * each is waiting: on a stale threshold, a heartbeat timeout, a slow chunk).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkAggregate, chunkEvent, closeSharedAccess, parseLogLines, placeholderReference, secretLeaks, staleTiming, TAKEOVER_MARGIN_MS } from '../faults/harness.js';
import { golden } from './helpers.js';
import { RABBIT_DEAD_PEER_FLOOR_MS } from '../faults/scenarios/isolation.js';
import { SCENARIOS } from '../faults/scenarios/index.js';
import type { FaultScenarioResult } from '../faults/types.js';

after(() => closeSharedAccess());

/** Faults each quick scenario must inject at least. */
const MIN_FAULTS: Record<string, Record<string, number>> = {
  'kill-storm': { redis: 2, rabbitmq: 2 },
  partition: { redis: 1, rabbitmq: 1 },
  frozen: { redis: 1, rabbitmq: 1 },
  'slow-alive': { redis: 1, rabbitmq: 1 },
  // Five malformed entries and one chunk added twice; RabbitMQ also two bodies that are not JSON objects.
  'poison-duplicates': { redis: 7, rabbitmq: 9 },
};

/**
 * A loose ceiling on any takeover, beside the scenario's own (tighter) check: the stale threshold plus one
 * check interval (at least 3 s on RabbitMQ: whole-second AMQP heartbeats; nothing for a kill there, the
 * broker requeues at once), plus the margin and 3 s.
 */
function takeoverCeilingMs(r: FaultScenarioResult): number {
  const { staleThresholdMs, staleCheckIntervalSeconds } = staleTiming(true);
  const stale = staleThresholdMs + staleCheckIntervalSeconds * 1000;
  const bound = r.backend === 'redis' ? stale : r.scenario === 'kill-storm' ? 0 : Math.max(stale, RABBIT_DEAD_PEER_FLOOR_MS);
  return bound + TAKEOVER_MARGIN_MS + 3000;
}

const lines: string[] = [];
const log = (line: string) => lines.push(line);

describe('fault harness checks', () => {
  // A report as `ttg aggregate --json --verbose` gives it, for a sweep of 1000 params in chunks of 300 (the last one short).
  const report = (chunks: Array<[string, number]>, extra: Record<string, unknown> = {}) => ({
    chunks: chunks.map(([chunk_id, count]) => ({ chunk_id, count })),
    grand_sum: placeholderReference(1000).sum, total_params: 1000,
    global_min: placeholderReference(1000).min, global_max: placeholderReference(1000).max, ...extra,
  });

  it('finds parameters lost, double-counted and a wrong sum in an aggregate', () => {
    const whole = checkAggregate(report([['00000', 300], ['00001', 300], ['00002', 300], ['00003', 100]]), 1000, 300);
    assert.deepEqual(whole, { paramsLost: 0, paramsDoubleCounted: 0, failures: [] });
    const holes = checkAggregate(report([['00000', 300], ['00002', 300], ['00003', 100], ['00003', 100]]), 1000, 300);
    assert.equal(holes.paramsLost, 300);
    assert.equal(holes.paramsDoubleCounted, 100);
    const stray = checkAggregate(report([['00000', 300], ['00001', 300], ['00002', 300], ['00003', 100], ['00004', 300]]), 1000, 300);
    assert.equal(stray.paramsDoubleCounted, 300, 'a chunk id beyond the sweep counts as double');
    const off = checkAggregate(report([['00000', 300], ['00001', 300], ['00002', 300], ['00003', 100]], { grand_sum: 1 }), 1000, 300);
    assert.match(off.failures.join(), /grand_sum 1 is not the reference/);
  });

  it('takes its reference sums from golden.json, or computes them the same way', () => {
    const g = golden().placeholder.find((r) => r.start === 0 && r.end === 10_000)!;
    assert.equal(placeholderReference(10_000).sum, g.sum);
    // Over 0..999 each residue mod 1000 of 7p+13 appears once (7 is prime to 1000): 499500, plus the fractions.
    const fractions = Array.from({ length: 1000 }, (_, p) => (p % 100 < 10 ? (p % 100) / 10 : (p % 100) / 100)).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(placeholderReference(1000).sum - (499_500 + fractions)) < 1e-6);
  });

  it('reads chunk events and secrets from worker log lines', () => {
    const text = [
      '{"ts":"2026-01-01T00:00:00.000Z","level":"debug","msg":"chunk 00007 started"}',
      '{"ts":"2026-01-01T00:00:00.100Z","level":"warn","msg":"FAULT RECOVERY: claimed chunk 00009 from a worker that stopped answering"}',
      '{"ts":"2026-01-01T00:00:00.200Z","level":"warn","msg":"chunk 00007 is no longer this worker\'s (taken over, or its connection was lost); ..."}',
      'EXIT-SPY: not json',
    ].join('\n');
    const parsed = parseLogLines(text);
    assert.deepEqual(parsed.map(chunkEvent), [
      { chunk: '00007', event: 'start' }, { chunk: '00009', event: 'pickup' }, { chunk: '00007', event: 'refused' }, null,
    ]);
    assert.equal(parsed[1]!.ts, Date.parse('2026-01-01T00:00:00.100Z'));
    assert.equal(secretLeaks([text, 'a line with ttgsecret42 in it\nand one without'], ['ttgsecret42']), 1);
  });
});

describe('fault scenarios, quick', { concurrency: 2 }, () => {
  // Redis and RabbitMQ of one scenario side by side.
  for (const s of SCENARIOS.filter((x) => x.name in MIN_FAULTS)) {
    it(`${s.name} on ${s.backend}: exact aggregate, nothing lost or double-counted, takeover in bound`, { timeout: 240_000 }, async () => {
      const r = await s.run({ quick: true, log });
      const why = `\n${JSON.stringify(r, null, 2)}`;
      assert.equal(r.scenario, s.name);
      assert.equal(r.backend, s.backend);
      assert.equal(r.params_lost, 0, `parameters lost${why}`);
      assert.equal(r.params_double_counted, 0, `parameters double-counted${why}`);
      assert.equal(r.secret_leaks, 0, `a password in a log line${why}`);
      assert.ok(r.faults_injected >= MIN_FAULTS[s.name]![s.backend]!, `faults injected: ${r.faults_injected}${why}`);
      for (const t of r.takeover_ms) assert.ok(t >= 0 && t <= takeoverCeilingMs(r), `takeover ${t} ms${why}`);
      if (s.name === 'partition' || s.name === 'frozen') assert.equal(r.takeover_ms.length, 1, `the takeover was timed${why}`);
      if (s.name === 'slow-alive') assert.equal(r.chunks_redone, 0, `nobody stole the slow chunk${why}`);
      if (s.backend === 'redis' && s.name !== 'poison-duplicates') assert.equal(r.duplicate_results, 0, `no duplicate on Redis${why}`);
      // Killed workers end with SIGKILL; every other one exits 0.
      for (const w of r.workers) assert.ok(w.exit_code === 0 || w.signal === 'SIGKILL', `a worker ended ${JSON.stringify(w)}${why}`);
      if (s.name !== 'kill-storm') assert.ok(r.workers.every((w) => w.exit_code === 0), `every worker exits 0${why}`);
      assert.ok(r.ok, `the scenario's own expectations:${why}`);
    });
  }
});

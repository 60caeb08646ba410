/** Slicing, exact merging, static shares and the aggregator, without servers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sliceRange, mergeSlices, toChunkStats, mergeChunkStats } from '../engine/stats.js';
import { staticShare, batchSize } from '../engine/static-worker.js';
import { buildReport, formatReport } from '../engine/aggregate.js';
import { addExact } from '../kernel/exact-sum.js';
import type { SliceStats } from '../kernel/types.js';
import type { ChunkResult } from '../backends/types.js';
import { parseTaskFields, parseTaskJson } from '../backends/messages.js';
import { chunkIdOf, sweepTasks } from '../core/sweep.js';

/** Placeholder values computed here, independently of kernel/. */
function placeholder(p: number): number {
  const m = p % 100;
  return ((p * 7 + 13) % 1000) + (m < 10 ? m / 10 : m / 100);
}

/** Statistics of `values`, those of parameters first, first+1, ..., computed here the plain way. */
function statsOf(values: number[], first = 0): SliceStats {
  const s: SliceStats = { count: 0, min: Infinity, max: -Infinity, argmin: -1, argmax: -1, partials: [] };
  for (const v of values) {
    if (v < s.min) s.argmin = first + s.count;
    if (v > s.max) s.argmax = first + s.count;
    s.count++;
    s.min = Math.min(s.min, v);
    s.max = Math.max(s.max, v);
    addExact(s.partials, v);
  }
  return s;
}

test('sliceRange covers the range exactly once in at most `parts` near-equal slices', () => {
  for (const [start, end, parts] of [[0, 100, 4], [5, 6, 8], [0, 7, 3], [1000, 1003, 2], [0, 1, 1], [17, 1017, 7], [0, 2 ** 40 + 3, 5]] as const) {
    const slices = sliceRange(start, end, parts);
    assert.ok(slices.length >= 1 && slices.length <= parts);
    assert.equal(slices.length, Math.min(parts, end - start));
    assert.equal(slices[0]!.start, start);
    assert.equal(slices.at(-1)!.end, end);
    for (let i = 1; i < slices.length; i++) assert.equal(slices[i]!.start, slices[i - 1]!.end);
    const sizes = slices.map((s) => s.end - s.start);
    assert.ok(Math.min(...sizes) >= 1);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1);
  }
  assert.deepEqual(sliceRange(5, 5, 3), []);
});

test('merging slices is exact and independent of how the range was cut', () => {
  const values = Array.from({ length: 10000 }, (_, p) => placeholder(p));
  const whole = toChunkStats(statsOf(values));
  assert.equal(whole.sum, 5000355); // docs/design.md's figure for TOTAL_PARAMS=10000
  for (const parts of [2, 3, 7, 64]) {
    const slices = sliceRange(0, values.length, parts).map((s) => statsOf(values.slice(s.start, s.end), s.start));
    const forward = toChunkStats(mergeSlices(slices));
    const backward = toChunkStats(mergeSlices([...slices].reverse()));
    for (const merged of [forward, backward]) {
      assert.equal(merged.count, 10000);
      assert.ok(Object.is(merged.sum, whole.sum));
      assert.equal(merged.min, 0.41);
      assert.equal(merged.max, 999.98);
      // 0.41 needs 7p+13 ≡ 0 (mod 1000) and p ≡ 41 (mod 100): p = 141; 999.98 needs 7p+13 ≡ 999 and p ≡ 98: p = 998.
      assert.equal(merged.argmin, 141);
      assert.equal(merged.argmax, 998);
      assert.equal(merged.avg, merged.sum / 10000);
    }
  }
  // Naive left-to-right addition drifts here; the merged sum does not.
  const naive = values.reduce((a, b) => a + b, 0);
  assert.notEqual(naive, 5000355, 'the test data really needs exact summation');
});

test('merged chunk stats keep a sum that naive merging of rounded sums would lose', () => {
  const a = toChunkStats(statsOf([1e16, 1]));
  const b = toChunkStats(statsOf([-1e16, 1]));
  assert.equal(a.sum + b.sum, 0, 'rounded chunk sums alone lose the 1s');
  assert.equal(mergeChunkStats([a, b]).sum, 2);
});

test('static shares cover [0, TOTAL_PARAMS) exactly once; the last takes the remainder', () => {
  for (const [total, workers] of [[10000, 3], [10, 3], [7, 7], [2, 5], [1_000_001, 4]] as const) {
    let next = 0;
    for (let i = 0; i < workers; i++) {
      const { start, end } = staticShare(total, workers, i);
      assert.equal(start, next);
      assert.ok(end >= start);
      next = end;
      if (i < workers - 1) assert.equal(end - start, Math.floor(total / workers));
    }
    assert.equal(next, total);
  }
  assert.equal(batchSize(1000, 100), 100);
  assert.equal(batchSize(1_000_000, 100), 10000);
});

test('sweep tasks: zero-padded ids, exclusive ends, the last chunk short', () => {
  const tasks = [...sweepTasks({ totalParams: 1050, chunkSize: 100, kernel: 'placeholder' })];
  assert.equal(tasks.length, 11);
  assert.deepEqual(tasks[0], { chunkId: '00000', startParam: 0, endParam: 100, totalParams: 1050 });
  assert.deepEqual(tasks[10], { chunkId: '00010', startParam: 1000, endParam: 1050, totalParams: 1050 });
  assert.equal(chunkIdOf(42, 100), '00042');
  assert.equal(chunkIdOf(42, 1_000_000), '000042');
});

test('malformed task messages are named, not thrown', () => {
  const s = { totalParams: 1000, chunkSize: 100, kernel: 'placeholder' as const };
  const bad = (fields: Record<string, unknown>) => {
    const r = parseTaskFields(fields, s);
    assert.equal(r.ok, false);
    return r.ok ? '' : r.reason;
  };
  assert.match(bad({ start_param: '0', end_param: '10', total_params: '1000' }), /missing field chunk_id/);
  assert.match(bad({ chunk_id: '1', end_param: '10', total_params: '1000' }), /missing field start_param/);
  assert.match(bad({ chunk_id: '1', start_param: 'x', end_param: '10', total_params: '1000' }), /start_param must be a non-negative integer/);
  assert.match(bad({ chunk_id: '1', start_param: '10', end_param: '5', total_params: '1000' }), /end_param \(5\) must be greater than start_param \(10\)/);
  assert.match(bad({ chunk_id: '1', start_param: '990', end_param: '1010', total_params: '1000' }), /beyond total_params/);
  assert.match(bad({ chunk_id: '1', start_param: '0', end_param: '10', total_params: '2000' }), /differs from the sweep's 1000/);
  const notJson = parseTaskJson('{oops', s);
  assert.ok(!notJson.ok && /not JSON/.test(notJson.reason));
  const arr = parseTaskJson('[1,2]', s);
  assert.ok(!arr.ok && /not a JSON object/.test(arr.reason));
  const good = parseTaskJson('{"chunk_id":"00001","start_param":100,"end_param":"200","total_params":1000}', s);
  assert.deepEqual(good, { ok: true, task: { chunkId: '00001', startParam: 100, endParam: 200, totalParams: 1000 } });
});

function result(chunk: number, worker: string, values: number[], completedAt: string, duration = 0.5): ChunkResult {
  return { chunkId: chunkIdOf(chunk, 4), workerId: worker, status: 'completed', durationSeconds: duration, completedAt, stats: toChunkStats(statsOf(values, chunk * 10)) };
}

test('the aggregator counts each chunk once, lists missing and dead-lettered chunks', () => {
  const settings = { totalParams: 40, chunkSize: 10, kernel: 'placeholder' as const };
  const chunk = (i: number) => Array.from({ length: 10 }, (_, k) => placeholder(i * 10 + k));
  const results = [
    result(0, '0', chunk(0), '2026-01-01T00:00:01.000Z'),
    result(1, '1', chunk(1), '2026-01-01T00:00:02.000Z'),
    result(0, '2', chunk(0), '2026-01-01T00:00:03.000Z'), // redelivered duplicate
  ];
  const r = buildReport(settings, results, [{ chunkId: '00003', reason: 'boom', attempts: 3, workerId: '1', task: null }]);
  assert.equal(r.total_chunks, 2);
  assert.equal(r.expected_chunks, 4);
  assert.equal(r.duplicate_results, 1);
  assert.deepEqual(r.missing_chunks, ['00002', '00003']);
  assert.deepEqual(r.dead_lettered_chunks, [{ chunk_id: '00003', reason: 'boom', attempts: 3, worker_id: '1' }]);
  assert.equal(r.total_params, 20);
  const reference = statsOf([...chunk(0), ...chunk(1)]);
  assert.equal(r.grand_sum, toChunkStats(reference).sum);
  assert.equal(r.global_min, reference.min);
  assert.equal(r.global_max, reference.max);
  assert.equal(r.argmin, reference.argmin);
  assert.equal(r.argmax, reference.argmax);
  assert.deepEqual([r.argmin, r.argmax], [0, 19], 'placeholder values rise over 0..19');
  assert.deepEqual(r.worker_distribution, { '0': 1, '1': 1 });
  assert.equal(r.total_processing_time, 1);
  assert.equal(r.wall_clock_time, 1.5); // 00:00:00.5 → 00:00:02
  assert.equal(r.complete, false);
  const text = formatReport(r);
  assert.match(text, /Missing chunks\s+: 2 \(00002, 00003\)/);
  assert.match(text, /Duplicate results\s+: 1/);
  assert.match(text, /INCOMPLETE/);
});

test('the aggregate is the same whatever the order results arrive in', () => {
  const settings = { totalParams: 40, chunkSize: 10, kernel: 'placeholder' as const };
  const results = [0, 1, 2, 3].map((i) =>
    result(i, String(i % 2), Array.from({ length: 10 }, (_, k) => placeholder(i * 10 + k) * 1e10 + (k % 3 ? 1e-7 : -3)), `2026-01-01T00:00:0${i + 1}.000Z`));
  const a = buildReport(settings, results);
  const b = buildReport(settings, [...results].reverse());
  assert.ok(Object.is(a.grand_sum, b.grand_sum));
  assert.equal(a.complete, true);
  assert.match(formatReport(a), /Sweep complete/);
});

test('where two slices reach the same extreme, the merge keeps the smaller parameter, in any order', () => {
  // Values repeat with period 3: min 0 at 0, 3, 6, ...; max 2 at 2, 5, 8, ...
  const values = Array.from({ length: 30 }, (_, p) => p % 3);
  const slices = [statsOf(values.slice(0, 10), 0), statsOf(values.slice(10, 20), 10), statsOf(values.slice(20), 20)];
  for (const order of [slices, [...slices].reverse(), [slices[1]!, slices[2]!, slices[0]!]]) {
    const m = mergeSlices(order);
    assert.deepEqual([m.min, m.argmin, m.max, m.argmax], [0, 0, 2, 2]);
  }
  const empty = mergeSlices([]);
  assert.deepEqual([empty.argmin, empty.argmax], [-1, -1]);
});

/** Static mode and `ttg run` through the real command, no broker needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergePartials, roundPartials } from '../kernel/exact-sum.js';
import { golden, lastJsonLine, runTtg, testEnv } from './helpers.js';

async function staticSweep(kernel: string, total: number, workers: number, extra: Record<string, string | number> = {}) {
  const runs = await Promise.all(
    Array.from({ length: workers }, (_, id) =>
      runTtg(['worker'], testEnv({ USE_QUEUE: 'false', KERNEL: kernel, TOTAL_PARAMS: total, TOTAL_WORKERS: workers, WORKER_ID: id, ...extra }))),
  );
  return runs.map((r, id) => {
    assert.equal(r.code, 0, `static worker ${id}: ${r.stderr}`);
    return { summary: lastJsonLine(r.stdout), stderr: r.stderr };
  });
}

test('static mode: the workers\' shares cover the range exactly once and the merged sums are exact', async () => {
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100000)!;
  const out = await staticSweep('placeholder', 100000, 3, { CHUNK_SIZE: 1000 });
  const ranges = out.map((o) => [Number(o.summary['range_start']), Number(o.summary['range_end'])] as const).sort((a, b) => a[0] - b[0]);
  assert.deepEqual(ranges, [[0, 33333], [33333, 66666], [66666, 100000]]);
  const partials: number[] = [];
  let count = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const { summary, stderr } of out) {
    assert.equal(summary['mode'], 'static');
    assert.equal(summary['status'], 'completed');
    const agg = summary['aggregates'] as { count: number; sum: number; partials: number[]; min: number; max: number; avg: number };
    assert.equal(agg.count, Number(summary['range_end']) - Number(summary['range_start']));
    assert.equal(summary['params_processed'], agg.count);
    assert.equal(agg.avg, agg.sum / agg.count);
    assert.equal(roundPartials(agg.partials), agg.sum);
    mergePartials(partials, agg.partials);
    count += agg.count;
    min = Math.min(min, agg.min);
    max = Math.max(max, agg.max);
    assert.match(stderr, /batch 1\/\d+ done/, 'progress is logged per batch on stderr');
    assert.ok(typeof summary['params_per_second'] === 'number' && typeof summary['duration_seconds'] === 'number');
  }
  assert.equal(count, ref.count);
  assert.equal(roundPartials(partials), ref.sum);
  assert.equal(min, ref.min);
  assert.equal(max, ref.max);
});

test('static mode with mandelbrot and the JS kernel matches the reference', async () => {
  const ref = golden().mandelbrot.find((g) => g.start === 0 && g.end === 250000)!;
  const out = await staticSweep('mandelbrot', 250000, 2, { KERNEL_IMPL: 'js', THREADS: 2 });
  const partials: number[] = [];
  for (const { summary } of out) mergePartials(partials, (summary['aggregates'] as { partials: number[] }).partials);
  assert.equal(roundPartials(partials), ref.sum);
});

test('ttg run sweeps on the embedded queue and prints the report', async () => {
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
  const json = await runTtg(['run', '--json', '--workers', '3'], testEnv({ THREADS: 2, TOTAL_PARAMS: 10000 }));
  assert.equal(json.code, 0, json.stderr);
  const report = lastJsonLine(json.stdout);
  assert.equal(report['grand_sum'], ref.sum);
  assert.equal(report['global_min'], ref.min);
  assert.equal(report['global_max'], ref.max);
  assert.deepEqual([report['argmin'], report['argmax']], [141, 998], 'first parameters of 0.41 and 999.98');
  assert.equal(report['overall_avg'], ref.avg);
  assert.equal(report['total_chunks'], 100);
  assert.deepEqual(report['missing_chunks'], []);
  assert.equal(Object.values(report['worker_distribution'] as Record<string, number>).reduce((a, b) => a + b, 0), 100);

  const text = await runTtg(['run'], testEnv({ THREADS: 2, TOTAL_PARAMS: 5000, CHUNK_SIZE: 50 }));
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /Grand sum\s+: \d/);
  assert.match(text.stdout, /Minimum\s+: 0\.41 at parameter 141\n/);
  assert.match(text.stdout, /Params\/s over span/);
  assert.match(text.stdout, /Params\/s per thread/);
  assert.match(text.stdout, /Busy threads \(avg\)/);
  // The command's own time covers the sweep's span and more (start-up, settling).
  const span = Number(/Sweep span\s+: ([\d.]+) s/.exec(text.stdout)?.[1]);
  const command = Number(/Command time\s+: ([\d.]+) s/.exec(text.stdout)?.[1]);
  assert.ok(span > 0 && command > span, `command ${command} s > span ${span} s`);
  // A row per consumer (worker process): ttg run's three in-process workers are worker-0 … worker-2.
  assert.match(text.stdout, /Chunks per worker\n(  worker-[0-2]\s+\d+\s+[\d.]+% #*\n){3}/);
});

test('ttg: unknown commands and flags are usage errors (exit 2)', async () => {
  const a = await runTtg(['frobnicate'], testEnv({}));
  assert.equal(a.code, 2);
  assert.match(a.stderr, /unknown command "frobnicate"/);
  const b = await runTtg(['run', '--workers', 'many'], testEnv({}));
  assert.equal(b.code, 2);
  assert.match(b.stderr, /--workers must be a positive integer, got "many"/);
  const c = await runTtg(['aggregate', '--jsn'], testEnv({}));
  assert.equal(c.code, 2);
  assert.match(c.stderr, /unknown argument "--jsn"/);
});

test('ttg run with no sweep named (npm start) runs a demo worth watching: 20 mandelbrot grids, with a live progress line', async () => {
  // 20 passes over the 1000x1000 grid: 20 times the reference sum of one grid.
  const grid = golden().mandelbrot.find((g) => g.start === 0 && g.end === 1_000_000)!;
  const r = await runTtg(['run'], testEnv({ THREADS: 2 }), 120_000);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ttg sweep report \(kernel mandelbrot\)/);
  assert.match(r.stdout, /Parameters processed : 20,000,000 of 20,000,000/);
  assert.match(r.stdout, new RegExp(`Grand sum\\s+: ${(20 * grid.sum).toLocaleString('en-US')}\n`));
  // Piped, the progress line is plain stamped lines on stderr, the last one at 100%.
  const lines = r.stderr.split('\n').filter((l) => /\d+\/200 chunks/.test(l));
  assert.ok(lines.length >= 1, r.stderr);
  assert.match(lines.at(-1)!, /100\.0% 200\/200 chunks/);
  assert.doesNotMatch(r.stderr, /\x1b\[/, 'no escape codes when piped');
  // ttg worker keeps the 10,000-parameter defaults.
  const worker = await runTtg(['worker'], testEnv({ USE_QUEUE: 'false', TOTAL_WORKERS: 1 }));
  assert.equal(lastJsonLine(worker.stdout)['params_processed'], 10000);
});

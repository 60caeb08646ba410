/**
 * The benchmark chart (bench/chart.ts): from a results file as bench/run.ts
 * writes it, an SVG whose bars are as long as their figures say (relative to
 * the panel's largest), with every section that ran, a label per bar, the
 * quick-run warning when it was one, and well-formed markup.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchPanels, CHART, renderBenchChart, shortNumber, type BenchResults } from '../bench/chart.js';

const results: BenchResults = {
  started: '2026-11-30T10:00:00.000Z', quick: false, machine: { cpus: 2, model: 'Test CPU', node: 'v20.0.0' },
  kernels: [
    { kernel: 'placeholder', impl: 'wasm', paramsPerSecond: 200e6 },
    { kernel: 'placeholder', impl: 'js', paramsPerSecond: 50e6 },
    { kernel: 'mandelbrot', impl: 'wasm', paramsPerSecond: 4e6 },
    { kernel: 'mandelbrot', impl: 'js', paramsPerSecond: 2e6 },
  ],
  engine: [
    { backend: 'memory', kernel: 'mandelbrot', threads: 1, chunkSize: 10000, paramsPerSecond: 3e6 },
    { backend: 'memory', kernel: 'mandelbrot', threads: 2, chunkSize: 10000, paramsPerSecond: 5.5e6 },
    { backend: 'memory', kernel: 'mandelbrot', threads: 2, chunkSize: 50000, paramsPerSecond: NaN, error: 'boom' },
  ],
  brokers: [{ backend: 'redis', kernel: 'placeholder', threads: 1, chunkSize: 100, paramsPerSecond: 1e6 }],
  queue: {
    rows: [
      { system: 'ttg-redis', totalParams: 1e6, chunkSize: 100, runs: 5, paramsPerSecond: { median: 2e6, min: 1.5e6, max: 2.5e6 } },
      { system: 'bullmq', totalParams: 1e6, chunkSize: 100, runs: 0, paramsPerSecond: { median: NaN, min: NaN, max: NaN } },
    ],
  },
};

/** Checks that every element opened is closed, in order (the SVG has no text that looks like a tag). */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)([^>]*?)(\/?)>/g)) {
    const [, closing, name, , selfClosing] = m;
    if (selfClosing) continue;
    if (closing) assert.equal(stack.pop(), name, `</${name}> closes what was opened`);
    else stack.push(name!);
  }
  assert.deepEqual(stack, [], 'every element is closed');
}

test('one panel per section that ran; failed rows and systems without runs are left out', () => {
  const panels = benchPanels(results);
  assert.deepEqual(panels.map((p) => p.bars.length), [2, 2, 2, 1, 1]);
  assert.match(panels[0]!.title, /placeholder, one thread: WASM vs JS/);
  assert.match(panels[1]!.title, /mandelbrot, one thread: WASM vs JS/);
  assert.match(panels[2]!.title, /THREADS/);
  assert.deepEqual(panels[4]!.bars.map((b) => b.label), ['ttg-redis, chunk 100']);
  assert.deepEqual(benchPanels({ kernels: [], queue: { rows: [] } }), []);
});

test('bar lengths are proportional to the figures, and the range whisker spans min to max', () => {
  const svg = renderBenchChart(results);
  assertWellFormed(svg);
  const bars = [...svg.matchAll(/<rect x="(\d+)" y="[\d.]+" width="([\d.]+)" height="\d+" fill="[^"]+" data-value="([^"]+)">/g)]
    .map((m) => ({ x: Number(m[1]), width: Number(m[2]), value: Number(m[3]) }));
  assert.equal(bars.length, 8);
  // A kernel's panel: its largest (placeholder wasm, 200 M) fills the bar space; 50 M is a quarter of it.
  assert.equal(bars[0]!.width, CHART.barSpace);
  assert.ok(Math.abs(bars[1]!.width - CHART.barSpace / 4) < 0.01);
  // mandelbrot has a panel of its own: 4 M fills it, 2 M is half.
  assert.equal(bars[2]!.width, CHART.barSpace);
  assert.ok(Math.abs(bars[3]!.width - CHART.barSpace / 2) < 0.01);
  // Engine panel is scaled on its own largest (5.5 M).
  assert.ok(Math.abs(bars[4]!.width / bars[5]!.width - 3 / 5.5) < 1e-3);
  // Queue panel: the whisker's ends sit at min and max of a scale whose top is the max (2.5 M).
  const whisker = /<path d="M([\d.]+) [\d.]+H([\d.]+)/.exec(svg)!;
  assert.ok(Math.abs(Number(whisker[1]) - (CHART.labelWidth + CHART.barSpace * (1.5 / 2.5))) < 0.01);
  assert.ok(Math.abs(Number(whisker[2]) - (CHART.labelWidth + CHART.barSpace)) < 0.01);
  for (const label of ['placeholder wasm', 'mandelbrot js', 'THREADS=2, chunk 10,000', 'redis, chunk 100', 'ttg-redis, chunk 100']) {
    assert.ok(svg.includes(`>${label}</text>`), `a label for ${label}`);
  }
  assert.ok(svg.includes('200.00 M params/s') && svg.includes('2 CPUs (Test CPU)'));
  assert.ok(!svg.includes('QUICK'));
});

test('a quick run says it is one, and an empty file still gives a readable picture', () => {
  assert.match(renderBenchChart({ ...results, quick: true }), /QUICK run: a smoke test, not figures to quote/);
  const empty = renderBenchChart({});
  assertWellFormed(empty);
  assert.match(empty, /no figures in this results file/);
  assert.equal(shortNumber(1_234_567), '1.23 M');
  assert.equal(shortNumber(950), '950');
});

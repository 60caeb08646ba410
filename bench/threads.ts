/**
 * THREADS=2 against THREADS=1 on a mandelbrot sweep (`ttg run --workers 1
 * --json`, embedded queue, the sweep's span from the report), interleaved
 * run by run. Beside each pair, what the machine gives two threads at that
 * moment for this very kernel: the same parameters swept by one plain
 * thread, then split between two (no pool, no queue), so that on a shared
 * (and virtual) machine the pool's speed-up can be read against the
 * speed-up the machine allows. Each run also shows the share of the span its
 * threads spent outside the kernel (1 - thread time / (span x threads)):
 * waiting for their next task, or starting.
 *
 *   node dist/bench/threads.js [--reps=5] [--params=3000000] [--chunk=20000]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { WasmKernelRunner } from '../kernel/wasm.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../engine/cli.js');

function arg(name: string, def: string): string {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : def;
}

/** A sweep's span, and the share of it its threads spent outside the kernel (waiting for tasks, starting). */
interface Sweep {
  span: number;
  idle: number;
}

function sweep(threads: number, params: string, chunk: string): Sweep {
  const out = spawnSync(process.execPath, [CLI, 'run', '--workers', '1', '--json'], {
    env: {
      PATH: process.env['PATH'], HOME: process.env['HOME'], KERNEL: 'mandelbrot', TOTAL_PARAMS: params, CHUNK_SIZE: chunk,
      THREADS: String(threads), METRICS_PORT: '0', LOG_LEVEL: 'warn',
    },
    encoding: 'utf8',
  });
  if (out.status !== 0) throw new Error(`ttg run exited ${out.status}: ${out.stderr}`);
  const report = JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { wall_clock_time: number; total_processing_time: number };
  return { span: report.wall_clock_time, idle: 1 - report.total_processing_time / (report.wall_clock_time * threads) };
}

/** Seconds for `n` plain threads to sweep mandelbrot over [0, params), split evenly (kernel only). */
async function plainThreads(n: number, params: number): Promise<number> {
  const t0 = performance.now();
  const per = Math.ceil(params / n);
  await Promise.all(Array.from({ length: n }, (_, i) => new Promise<void>((resolve, reject) => {
    new Worker(new URL(import.meta.url), { workerData: { start: i * per, end: Math.min(params, (i + 1) * per), total: params } })
      .once('message', () => resolve()).once('error', reject);
  })));
  return (performance.now() - t0) / 1000;
}

if (!isMainThread) {
  const { start, end, total } = workerData as { start: number; end: number; total: number };
  new WasmKernelRunner().sweep('mandelbrot', start, end, total);
  parentPort!.postMessage('done');
} else {
  await main();
}

async function main(): Promise<void> {
const reps = Number(arg('reps', '5'));
const params = arg('params', '3000000');
const chunk = arg('chunk', '20000');
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
process.stdout.write(`mandelbrot, ${params} params in chunks of ${chunk}, ttg run --workers 1; load ${load()}\n`);
const speedups: number[] = [];
const allowed: number[] = [];
const idle: Record<1 | 2, number[]> = { 1: [], 2: [] };
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
for (let rep = 0; rep < reps; rep++) {
  const one = sweep(1, params, chunk);
  const two = sweep(2, params, chunk);
  const machine = (await plainThreads(1, Number(params))) / (await plainThreads(2, Number(params)));
  speedups.push(one.span / two.span);
  allowed.push(machine);
  idle[1].push(one.idle);
  idle[2].push(two.idle);
  process.stdout.write(`  rep ${rep + 1}: THREADS=1 ${one.span.toFixed(3)} s, THREADS=2 ${two.span.toFixed(3)} s: ${(one.span / two.span).toFixed(2)}x; ` +
    `two plain threads: ${machine.toFixed(2)}x one; threads outside the kernel ${pct(one.idle)} / ${pct(two.idle)} of the span\n`);
}
process.stdout.write(`  median: THREADS=2 ${median(speedups).toFixed(2)}x THREADS=1, while two plain threads got ${median(allowed).toFixed(2)}x one; ` +
  `threads outside the kernel ${pct(median(idle[1]))} (THREADS=1), ${pct(median(idle[2]))} (THREADS=2) of the span; load ${load()}\n`);
}

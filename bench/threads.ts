/**
 * THREADS=2 against THREADS=1 on a mandelbrot sweep (`ttg run --workers 1
 * --json`, embedded queue, the sweep's span from the report), interleaved
 * run by run. Beside each pair, what the machine gives two threads at that
 * moment: one and then two plain threads spinning for the same time, so
 * that on a shared machine the pool's speed-up can be read against the
 * speed-up the machine allows.
 *
 *   node dist/bench/threads.js [--reps=5] [--params=3000000] [--chunk=20000]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../engine/cli.js');

function arg(name: string, def: string): string {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : def;
}

function sweep(threads: number, params: string, chunk: string): number {
  const out = spawnSync(process.execPath, ['--max-semi-space-size=2', CLI, 'run', '--workers', '1', '--json'], {
    env: {
      PATH: process.env['PATH'], HOME: process.env['HOME'], KERNEL: 'mandelbrot', TOTAL_PARAMS: params, CHUNK_SIZE: chunk,
      THREADS: String(threads), METRICS_PORT: '0', LOG_LEVEL: 'warn',
    },
    encoding: 'utf8',
  });
  if (out.status !== 0) throw new Error(`ttg run exited ${out.status}: ${out.stderr}`);
  return (JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { wall_clock_time: number }).wall_clock_time;
}

/** Iterations of `n` threads spinning for `ms`, summed. */
async function spin(n: number, ms: number): Promise<number> {
  const code = `const t = Date.now(); let x = 0; while (Date.now() - t < ${ms}) x++; require('node:worker_threads').parentPort.postMessage(x);`;
  const counts = await Promise.all(Array.from({ length: n }, () => new Promise<number>((resolve, reject) => {
    new Worker(code, { eval: true }).once('message', resolve).once('error', reject);
  })));
  return counts.reduce((a, b) => a + b, 0);
}

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
for (let rep = 0; rep < reps; rep++) {
  const one = sweep(1, params, chunk);
  const two = sweep(2, params, chunk);
  const machine = (await spin(2, 500)) / (await spin(1, 500));
  speedups.push(one / two);
  allowed.push(machine);
  process.stdout.write(`  rep ${rep + 1}: THREADS=1 ${one.toFixed(3)} s, THREADS=2 ${two.toFixed(3)} s: ${(one / two).toFixed(2)}x; ` +
    `two spinning threads did ${machine.toFixed(2)}x one\n`);
}
process.stdout.write(`  median: THREADS=2 ${median(speedups).toFixed(2)}x THREADS=1, while two plain threads got ${median(allowed).toFixed(2)}x one; load ${load()}\n`);

/**
 * Peak resident memory of one `ttg worker` (Redis, THREADS=1, METRICS_PORT=0)
 * over sweeps of different sizes in chunks of 10,000, started as `./ttg`
 * starts it (plain `node`): is a worker's memory flat in the length of its sweep? The sizes
 * alternate run by run (the machine is shared); prints each run's peak RSS
 * (VmHWM, Linux) and the medians.
 *
 *   node dist/bench/memory.js [--reps=3] [--sizes=10000000,100000000] [--chunk=10000]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../engine/cli.js');
/** As ./ttg starts node: no flags (engine/heap.ts bounds the heap at run time). */
const NODE_FLAGS: string[] = [];

function arg(name: string, def: string): string {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : def;
}

function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024;
}

async function run(total: number, chunk: number, n: number): Promise<number> {
  const env = {
    PATH: process.env['PATH'], HOME: process.env['HOME'], USE_QUEUE: 'true', QUEUE_BACKEND: 'redis',
    QUEUE_PREFIX: `ttgbench-mem-${process.pid}-${n}`, REDIS_HOST: process.env['REDIS_HOST'] ?? '127.0.0.1',
    REDIS_PORT: process.env['REDIS_PORT'] ?? '6379', TOTAL_PARAMS: String(total), CHUNK_SIZE: String(chunk),
    THREADS: '1', METRICS_PORT: '0', LOG_LEVEL: 'warn', IDLE_TIMEOUT_SECONDS: '5',
  };
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, 'worker'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  let peak = 0;
  // VmHWM is the high-water mark: the last reading before the exit is the peak.
  const sample = setInterval(() => {
    try {
      peak = peakRss(child.pid!);
    } catch {
      // exited between two readings
    }
  }, 20);
  const code = await new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? -1)));
  clearInterval(sample);
  if (code !== 0) throw new Error(`worker exited ${code}`);
  const reset = spawn(process.execPath, [CLI, 'reset', '--yes'], { env, stdio: 'ignore' });
  await new Promise((resolve) => reset.on('exit', resolve));
  return peak;
}

const reps = Number(arg('reps', '3'));
const sizes = arg('sizes', '10000000,100000000').split(',').map(Number);
const chunk = Number(arg('chunk', '10000'));
const peaks = new Map<number, number[]>(sizes.map((s) => [s, []]));
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
process.stdout.write(`peak RSS of one Redis worker (THREADS=1, node ${NODE_FLAGS.join(' ')}), chunks of ${chunk}; load ${load()}\n`);
let n = 0;
for (let rep = 0; rep < reps; rep++) {
  for (const size of sizes) {
    const mb = await run(size, chunk, n++);
    peaks.get(size)!.push(mb);
    process.stdout.write(`  ${String(size).padStart(10)} params: ${mb.toFixed(1)} MB\n`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
for (const size of sizes) {
  const xs = peaks.get(size)!;
  process.stdout.write(`  median ${String(size).padStart(10)} params: ${median(xs).toFixed(1)} MB (${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)})\n`);
}
process.stdout.write(`  load after: ${load()}\n`);

/**
 * Interleaved A/B runs of ttg builds, for a change too small for the queue bench's noise:
 * `node dist/bench/ab.js <redis|rabbitmq> <params> <chunk> <runs> <dir> [<dir> ...]`, each <dir> a
 * checkout (or a copy of its dist/, build/, package.json and backends/redis/*.lua, node_modules
 * linked) of the build to compare. Each run is the queue bench's (bench/queue.ts, ttgRun): WORKERS
 * (default 2) `ttg worker` processes of that build on a fresh QUEUE_PREFIX, THREADS=1, placeholder
 * kernel, every chunk and the exact sum checked; spawn → all exited, spawn → first chunk started and
 * last result → all exited from the results' own timestamps, and each worker's CPU time (user + system:
 * bench/cpu-at-exit.ts, preloaded into every worker of every build alike). The builds take turns, in
 * alternating order. Prints medians (min–max) per build.
 */
import path from 'node:path';
import { summarize, ttgRun, type QueueRun } from './queue.js';

const [backend, params, chunk, runs, ...dirs] = process.argv.slice(2);
if ((backend !== 'redis' && backend !== 'rabbitmq') || !params || !chunk || !runs || dirs.length === 0) {
  process.stderr.write('usage: node dist/bench/ab.js <redis|rabbitmq> <params> <chunk> <runs> <dir> [<dir> ...]\n');
  process.exit(2);
}
const workers = Number(process.env['WORKERS'] ?? 2);

const got = new Map<string, QueueRun[]>(dirs.map((d) => [d, []]));
for (let r = 0; r < Number(runs); r++) {
  for (const dir of r % 2 ? [...dirs].reverse() : dirs) {
    const run = await ttgRun(backend, Number(params), Number(chunk), workers, path.join(dir, 'dist/engine/cli.js'), true);
    if (run.error) throw new Error(`${dir}: ${run.error}`);
    got.get(dir)!.push(run);
  }
}
const ms = (rs: QueueRun[], value: (r: QueueRun) => number) => {
  const s = summarize(rs.map((r) => Math.round(value(r) * 1000)));
  return `${s.median} (${s.min}–${s.max})`;
};
for (const [dir, rs] of got) {
  const cpu = summarize(rs.flatMap((r) => r.workerCpuMs!));
  process.stdout.write(`${dir}\n  spawn → exited ${ms(rs, (r) => r.seconds)} ms, → first chunk ${ms(rs, (r) => r.toFirstChunk!)} ms, ` +
    `last result → exited ${ms(rs, (r) => r.exitAfterLastResult!)} ms\n  CPU per worker ${cpu.median} (${cpu.min}–${cpu.max}) ms\n`);
}

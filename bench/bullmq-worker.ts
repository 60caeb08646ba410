/**
 * A BullMQ worker process for the queue benchmark (bench/queue.ts): what a
 * user would write instead of ttg — a Worker with concurrency 4 whose
 * processor evaluates the job's parameter range with the same WASM kernel
 * ttg runs, and returns the chunk's count, sum, min and max.
 *
 *   node dist/bench/bullmq-worker.js <queue name>   (REDIS_HOST/REDIS_PORT)
 *
 * Sends 'ready' to its parent (IPC) once it is listening for jobs, and
 * closes on SIGTERM.
 */
import { Worker, type Job } from 'bullmq';
import { createKernelRunner } from '../kernel/index.js';
import { roundPartials } from '../kernel/exact-sum.js';

const queueName = process.argv[2];
if (!queueName) {
  process.stderr.write('usage: bullmq-worker.js <queue name>\n');
  process.exit(2);
}
const runner = createKernelRunner('wasm');
const connection = { host: process.env['REDIS_HOST'] ?? '127.0.0.1', port: Number(process.env['REDIS_PORT'] ?? 6379) };

const worker = new Worker(
  queueName,
  async (job: Job<{ start: number; end: number; total: number }>) => {
    const s = runner.sweep('placeholder', job.data.start, job.data.end, job.data.total);
    return { count: s.count, sum: roundPartials(s.partials), min: s.min, max: s.max };
  },
  { connection, concurrency: 4 },
);
await worker.waitUntilReady();
process.send?.('ready');
process.on('SIGTERM', () => {
  void worker.close().then(() => process.exit(0));
});

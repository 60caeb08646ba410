/**
 * The queue path as a user runs it: real `ttg worker` processes (2 × THREADS=1)
 * against Redis and RabbitMQ, timed from spawn to the last exit and, from
 * the results' own timestamps, spawn → first chunk started and spawn → last
 * result; beside them BullMQ, the tool a user would pick instead, doing the
 * same sweep as jobs on the same Redis (2 worker processes, concurrency 4,
 * the same WASM kernel, started beforehand and not timed: its clock runs from
 * adding the jobs to the last one completed). Systems are interleaved run by
 * run, and each figure is the median with the min–max over the runs, since
 * the machine is shared and noisy. Every ttg sweep is checked: no chunk
 * missing and the grand sum equal to the placeholder's closed form.
 */
import { spawn, fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Queue, QueueEvents } from 'bullmq';
import { CPU_LINE } from './cpu-at-exit.js';
import { loadConfig } from '../engine/config.js';
import { silentLogger } from '../core/log.js';
import { createBackend } from '../engine/backend.js';

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(DIST, 'engine/cli.js');
const REDIS_HOST = process.env['REDIS_HOST'] ?? '127.0.0.1';
const REDIS_PORT = process.env['REDIS_PORT'] ?? '6379';
const RABBITMQ_HOST = process.env['RABBITMQ_HOST'] ?? '127.0.0.1';

export type QueueSystem = 'ttg-redis' | 'ttg-rabbitmq' | 'bullmq';

export interface QueueRun {
  system: QueueSystem;
  totalParams: number;
  chunkSize: number;
  /** Spawn (BullMQ: adding the jobs) → the last worker exited (BullMQ: the last job completed). */
  seconds: number;
  /** Spawn → the last result committed (BullMQ: the same as `seconds`). */
  toLastResult: number;
  /** Spawn → the first chunk handed to a thread (ttg only). */
  toFirstChunk?: number;
  /** The last result → every worker exited (ttg only). */
  exitAfterLastResult?: number;
  /** Each worker's CPU time in ms (ttg, when asked for: ttgRun's `cpu`). */
  workerCpuMs?: number[];
  error?: string;
}

export interface QueueRow {
  system: QueueSystem;
  totalParams: number;
  chunkSize: number;
  runs: number;
  /** Median and range of params/s, spawn → exited. */
  paramsPerSecond: Summary;
  chunksPerSecond: Summary;
  toLastResultSeconds: Summary;
  toFirstChunkMs?: Summary;
  exitAfterLastResultMs?: Summary;
  errors: string[];
}

export interface Summary {
  median: number;
  min: number;
  max: number;
}

export function summarize(xs: number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s.at(-1)! };
}

/** The placeholder's exact sum over [0, total) when total is a multiple of its period (1000). */
function placeholderSum(total: number): number {
  // Over one period of 1000: sum of (7p+13) mod 1000 is 0+…+999 = 499500, and each block of 100
  // adds f(0..99) = (0+…+9)/10 + (10+…+99)/100 = 4.5 + 49.05; ten blocks: 535.5.
  return (total / 1000) * (499_500 + 535.5);
}

let runNo = 0;

function exited(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.on('close', (code) => resolve(code ?? -1)));
}

/**
 * One ttg sweep: `workers` worker processes of the build whose command is `cli` (this one's by default),
 * checked. With `cpu`, each worker also reports its CPU time (bench/cpu-at-exit.ts, preloaded).
 */
export async function ttgRun(
  backend: 'redis' | 'rabbitmq', totalParams: number, chunkSize: number, workers: number, cli = CLI, cpu = false,
): Promise<QueueRun> {
  const prefix = `ttgbench-q-${process.pid}-${runNo++}`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'], HOME: process.env['HOME'],
    USE_QUEUE: 'true', QUEUE_BACKEND: backend, QUEUE_PREFIX: prefix, REDIS_HOST, REDIS_PORT, RABBITMQ_HOST,
    TOTAL_PARAMS: String(totalParams), CHUNK_SIZE: String(chunkSize), THREADS: '1', METRICS_PORT: '0',
    LOG_LEVEL: 'warn', IDLE_TIMEOUT_SECONDS: '10',
  };
  if (cpu) env['TTG_BENCH_CPU'] = '1';
  const args = cpu ? ['--import', pathToFileURL(path.join(DIST, 'bench/cpu-at-exit.js')).href, cli, 'worker'] : [cli, 'worker'];
  const run: QueueRun = { system: `ttg-${backend}`, totalParams, chunkSize, seconds: NaN, toLastResult: NaN };
  const t0 = Date.now();
  const children = Array.from({ length: workers }, (_, i) =>
    spawn(process.execPath, args, { env: { ...env, WORKER_ID: String(i) }, stdio: ['ignore', 'ignore', 'pipe'] }));
  const stderr: string[] = children.map(() => '');
  children.forEach((c, i) => c.stderr!.on('data', (b: Buffer) => (stderr[i] += b.toString())));
  const codes = await Promise.all(children.map(exited));
  const tEnd = Date.now();
  const config = loadConfig({ ...env, WORKER_ID: 'bench' });
  const reader = await createBackend({ config, workerId: 'bench', log: silentLogger });
  try {
    if (codes.some((c) => c !== 0)) throw new Error(`worker exit codes ${codes.join(',')}: ${stderr.join(' | ').slice(0, 300)}`);
    const results = await reader.readResults();
    const firstByChunk = new Map<string, (typeof results)[number]>();
    for (const r of results) if (!firstByChunk.has(r.chunkId)) firstByChunk.set(r.chunkId, r);
    const expectedChunks = Math.ceil(totalParams / chunkSize);
    if (firstByChunk.size !== expectedChunks) throw new Error(`${firstByChunk.size} of ${expectedChunks} chunks have results`);
    const { mergePartials, roundPartials } = await import('../kernel/exact-sum.js');
    const partials: number[] = [];
    for (const r of firstByChunk.values()) mergePartials(partials, r.stats.partials);
    if (totalParams % 1000 === 0 && roundPartials(partials) !== placeholderSum(totalParams)) {
      throw new Error(`grand sum ${roundPartials(partials)} is not ${placeholderSum(totalParams)}`);
    }
    const lastResult = Math.max(...results.map((r) => Date.parse(r.completedAt)));
    const firstStart = Math.min(...results.map((r) => Date.parse(r.startedAt ?? r.completedAt)));
    run.seconds = (tEnd - t0) / 1000;
    run.toLastResult = (lastResult - t0) / 1000;
    run.toFirstChunk = (firstStart - t0) / 1000;
    run.exitAfterLastResult = (tEnd - lastResult) / 1000;
    if (cpu) {
      run.workerCpuMs = stderr.map((text, i) => {
        const line = new RegExp(`^${CPU_LINE} (\\d+)$`, 'm').exec(text);
        if (!line) throw new Error(`worker ${i} reported no CPU time (${CPU_LINE})`);
        return Number(line[1]);
      });
    }
  } catch (err) {
    run.error = err instanceof Error ? err.message : String(err);
  } finally {
    await reader.reset().catch(() => {});
    await reader.close().catch(() => {});
  }
  return run;
}

/** Two BullMQ worker processes (concurrency 4), started and ready before the clock starts. */
async function startBullWorkers(queueName: string, workers: number): Promise<ChildProcess[]> {
  const script = path.join(DIST, 'bench/bullmq-worker.js');
  const children = Array.from({ length: workers }, () =>
    fork(script, [queueName], { env: { ...process.env, REDIS_HOST, REDIS_PORT }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  await Promise.all(children.map((c) => new Promise<void>((resolve, reject) => {
    c.once('message', () => resolve());
    c.once('exit', (code) => reject(new Error(`BullMQ worker exited ${code} before it was ready`)));
  })));
  return children;
}

async function bullRun(totalParams: number, chunkSize: number, workers: number): Promise<QueueRun> {
  const name = `ttgbench-bull-${process.pid}-${runNo++}`;
  const connection = { host: REDIS_HOST, port: Number(REDIS_PORT) };
  const run: QueueRun = { system: 'bullmq', totalParams, chunkSize, seconds: NaN, toLastResult: NaN };
  const queue = new Queue(name, { connection });
  const events = new QueueEvents(name, { connection });
  const children = await startBullWorkers(name, workers);
  try {
    await events.waitUntilReady();
    const chunks = Math.ceil(totalParams / chunkSize);
    let completed = 0;
    let failed = 0;
    const done = new Promise<void>((resolve) => {
      events.on('completed', () => {
        if (++completed === chunks) resolve();
      });
      events.on('failed', () => {
        failed++;
      });
    });
    const t0 = Date.now();
    for (let first = 0; first < chunks; first += 1000) {
      const jobs = [];
      for (let c = first; c < Math.min(chunks, first + 1000); c++) {
        const start = c * chunkSize;
        jobs.push({ name: 'chunk', data: { start, end: Math.min(totalParams, start + chunkSize), total: totalParams } });
      }
      await queue.addBulk(jobs);
    }
    await done;
    run.seconds = run.toLastResult = (Date.now() - t0) / 1000;
    if (failed > 0) run.error = `${failed} jobs failed`;
  } catch (err) {
    run.error = err instanceof Error ? err.message : String(err);
  } finally {
    await Promise.all(children.map((c) => {
      const gone = exited(c);
      c.kill('SIGTERM');
      return gone;
    }));
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    await events.close();
  }
  return run;
}

export interface QueueBenchOptions {
  quick?: boolean;
  /** Which systems (all by default). */
  systems?: QueueSystem[];
  /** Which sweeps (`--sweeps=1000000/100,10000000/1000`; the issue's set by default). */
  sweeps?: Array<{ totalParams: number; chunkSize: number }>;
  /** Runs of each system per sweep (`--reps=N`). */
  reps?: number;
}

/** The sweeps: 10,000 chunks each at chunk 10/100/1000 (1,000 at 10,000), as the goals of the queue-path issue. */
function sweeps(quick: boolean): Array<{ totalParams: number; chunkSize: number }> {
  if (quick) return [{ totalParams: 100_000, chunkSize: 100 }, { totalParams: 1_000_000, chunkSize: 1000 }];
  return [
    { totalParams: 100_000, chunkSize: 10 },
    { totalParams: 1_000_000, chunkSize: 100 },
    { totalParams: 10_000_000, chunkSize: 1000 },
    { totalParams: 10_000_000, chunkSize: 10_000 },
  ];
}

/** Spawn → exit of `node -e 0`, in ms: the floor under a worker's first chunk on this machine at this moment. */
async function nodeStartMs(): Promise<number> {
  const t0 = performance.now();
  await exited(spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' }));
  return performance.now() - t0;
}

export async function benchQueue(
  opts: QueueBenchOptions = {}, progress: (line: string) => void = () => {},
): Promise<{ runs: QueueRun[]; rows: QueueRow[]; nodeStartMs: Summary }> {
  const reps = opts.reps ?? (opts.quick ? 2 : 5);
  const systems = opts.systems ?? ['ttg-redis', 'bullmq', 'ttg-rabbitmq'];
  const chosen = opts.sweeps ?? sweeps(Boolean(opts.quick));
  const runs: QueueRun[] = [];
  const nodeStarts: number[] = [];
  for (const { totalParams, chunkSize } of chosen) {
    for (let rep = 0; rep < reps; rep++) {
      nodeStarts.push(await nodeStartMs());
      // Interleaved: one run of each system per round, so drift in the machine's load hits all alike.
      for (const system of systems) {
        const r = system === 'bullmq' ? await bullRun(totalParams, chunkSize, 2)
          : await ttgRun(system === 'ttg-redis' ? 'redis' : 'rabbitmq', totalParams, chunkSize, 2);
        runs.push(r);
        progress(`  ${system.padEnd(13)} ${String(totalParams).padStart(9)} params, chunk ${String(chunkSize).padStart(5)}: ` +
          (r.error ? `failed: ${r.error}` : `${r.seconds.toFixed(3)} s`));
      }
    }
  }
  const rows: QueueRow[] = [];
  for (const { totalParams, chunkSize } of chosen) {
    for (const system of systems) {
      const mine = runs.filter((r) => r.system === system && r.totalParams === totalParams && r.chunkSize === chunkSize);
      const ok = mine.filter((r) => !r.error);
      if (ok.length === 0) {
        rows.push({
          system, totalParams, chunkSize, runs: 0, errors: mine.map((r) => r.error!),
          paramsPerSecond: { median: NaN, min: NaN, max: NaN }, chunksPerSecond: { median: NaN, min: NaN, max: NaN },
          toLastResultSeconds: { median: NaN, min: NaN, max: NaN },
        });
        continue;
      }
      const chunks = Math.ceil(totalParams / chunkSize);
      rows.push({
        system, totalParams, chunkSize, runs: ok.length, errors: mine.filter((r) => r.error).map((r) => r.error!),
        paramsPerSecond: summarize(ok.map((r) => totalParams / r.seconds)),
        chunksPerSecond: summarize(ok.map((r) => chunks / r.seconds)),
        toLastResultSeconds: summarize(ok.map((r) => r.toLastResult)),
        ...(system !== 'bullmq' ? {
          toFirstChunkMs: summarize(ok.map((r) => r.toFirstChunk! * 1000)),
          exitAfterLastResultMs: summarize(ok.map((r) => r.exitAfterLastResult! * 1000)),
        } : {}),
      });
    }
  }
  return { runs, rows, nodeStartMs: summarize(nodeStarts) };
}

const range = (s: Summary, f: (x: number) => string) => `${f(s.median)} (${f(s.min)}–${f(s.max)})`;

export function queueTable(rows: QueueRow[], nodeStart?: Summary): string {
  const lines = [
    'Queue path (2 workers × THREADS=1, placeholder; ttg: spawn → all exited; BullMQ: jobs added → last completed, workers started beforehand)',
    '  system        params     chunk   params/s median (min–max)      chunks/s median (min–max)   first chunk ms   exit after last ms',
  ];
  for (const r of rows) {
    if (r.runs === 0) {
      lines.push(`  ${r.system.padEnd(13)} ${String(r.totalParams).padStart(9)} ${String(r.chunkSize).padStart(6)}   failed: ${r.errors[0] ?? '?'}`);
      continue;
    }
    lines.push(
      `  ${r.system.padEnd(13)} ${String(r.totalParams).padStart(9)} ${String(r.chunkSize).padStart(6)}   ` +
      `${range(r.paramsPerSecond, (x) => `${(x / 1e6).toFixed(2)}M`).padEnd(30)} ${range(r.chunksPerSecond, (x) => x.toFixed(0)).padEnd(27)} ` +
      `${r.toFirstChunkMs ? range(r.toFirstChunkMs, (x) => x.toFixed(0)).padEnd(16) : '-'.padEnd(16)} ` +
      `${r.exitAfterLastResultMs ? range(r.exitAfterLastResultMs, (x) => x.toFixed(0)) : '-'}` +
      (r.errors.length ? `  (${r.errors.length} failed runs)` : ''),
    );
  }
  // The first chunk cannot come before node itself has started: its floor, measured in the same rounds.
  if (nodeStart) lines.push(`  node's own start (spawn → exit of node -e 0), once a round: ${range(nodeStart, (x) => x.toFixed(0))} ms`);
  const sizes = [...new Set(rows.map((r) => `${r.totalParams}/${r.chunkSize}`))];
  for (const key of sizes) {
    const ttg = rows.find((r) => `${r.totalParams}/${r.chunkSize}` === key && r.system === 'ttg-redis');
    const bull = rows.find((r) => `${r.totalParams}/${r.chunkSize}` === key && r.system === 'bullmq');
    if (ttg?.runs && bull?.runs) {
      lines.push(`  ${key}: ttg-redis / BullMQ = ${(ttg.paramsPerSecond.median / bull.paramsPerSecond.median).toFixed(2)}x (medians)`);
    }
  }
  return lines.join('\n');
}

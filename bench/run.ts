/**
 * `npm run bench` / `ttg bench`: kernel throughput (WASM vs JS, per thread),
 * engine scaling over THREADS, and broker round trips. Prints tables and
 * writes the figures to bench/results/latest.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchKernels } from './kernels.js';
import { benchBrokers, benchEngine, type SweepBenchRow } from './engine.js';
import { renderBenchChart } from './chart.js';

export const BENCH_SECTIONS = ['kernels', 'user', 'engine', 'brokers', 'queue'] as const;
export type BenchSection = (typeof BENCH_SECTIONS)[number];

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const mps = (x: number) => (Number.isFinite(x) ? `${(x / 1e6).toFixed(2)} M` : '-');

function sweepTable(title: string, rows: SweepBenchRow[]): string {
  const lines = [title, '  backend   kernel       threads  chunk   params     seconds   params/s     chunks/s'];
  for (const r of rows) {
    lines.push(
      `  ${r.backend.padEnd(9)} ${r.kernel.padEnd(12)} ${String(r.threads).padStart(7)} ${String(r.chunkSize).padStart(6)} ` +
        `${String(r.totalParams).padStart(8)} ${Number.isFinite(r.seconds) ? r.seconds.toFixed(3).padStart(9) : '        -'} ` +
        `${mps(r.paramsPerSecond).padStart(10)} ${Number.isFinite(r.chunksPerSecond) ? String(r.chunksPerSecond).padStart(10) : '         -'}` +
        (r.error ? `  (failed: ${r.error})` : ''),
    );
  }
  return lines.join('\n');
}

/**
 * `kernels` (ttg bench --kernel): user kernel sources to benchmark in the `user` section instead of
 * the examples; given alone, only that section runs.
 */
export async function runBenchmarks(opts: {
  quick?: boolean; only?: BenchSection[]; kernels?: string[];
  /** The queue section's sweeps, systems and runs (bench/queue.ts), when not its defaults. */
  queue?: import('./queue.js').QueueBenchOptions;
} = {}): Promise<void> {
  const started = new Date().toISOString();
  if (opts.quick) {
    process.stdout.write('--quick: every section runs briefly, to check that the bench works. These figures are a smoke test:\n' +
      'too short to quote or to compare (run without --quick for figures).\n\n');
  }
  const want = (s: BenchSection) => (opts.only ? opts.only.includes(s) : !opts.kernels || s === 'user');
  const kernels = want('kernels') ? await benchKernels(opts) : [];
  const kernelLines = ['Kernels (one thread, parameters [0, 1,000,000): the engine rows\' sweep)', '  kernel       impl   slice      params/s'];
  for (const k of kernels) kernelLines.push(`  ${k.kernel.padEnd(12)} ${k.impl.padEnd(6)} ${String(k.sliceSize).padStart(8)} ${mps(k.paramsPerSecond).padStart(12)}`);
  for (const kernel of new Set(kernels.map((k) => k.kernel))) {
    const w = kernels.find((k) => k.kernel === kernel && k.impl === 'wasm');
    const j = kernels.find((k) => k.kernel === kernel && k.impl === 'js');
    if (w && j) kernelLines.push(`  ${kernel}: wasm/js = ${(w.paramsPerSecond / j.paramsPerSecond).toFixed(2)}x`);
  }
  if (kernels.length) process.stdout.write(kernelLines.join('\n') + '\n\n');

  // Loaded only when asked for: it loads the AssemblyScript compiler to build the kernels.
  let userKernels: Awaited<ReturnType<typeof import('./user-kernels.js').benchUserKernels>> = { rows: [], builtInComparison: null };
  if (want('user')) {
    const { benchUserKernels, userKernelTable } = await import('./user-kernels.js');
    userKernels = await benchUserKernels({ quick: Boolean(opts.quick), ...(opts.kernels ? { sources: opts.kernels } : {}) });
    if (userKernels.rows.length) process.stdout.write(userKernelTable(userKernels) + '\n\n');
  }

  const engine = want('engine') ? await benchEngine(opts) : [];
  const engineLines = [sweepTable('Engine (embedded queue, whole sweeps of mandelbrot over [0, 1,000,000): the kernel rows\' parameters)', engine)];
  for (const r of engine) {
    const one = engine.find((o) => o.threads === 1 && o.chunkSize === r.chunkSize);
    if (one && r !== one) {
      engineLines.push(`  THREADS=${r.threads}, CHUNK_SIZE=${r.chunkSize}: ${(r.paramsPerSecond / one.paramsPerSecond).toFixed(2)}x THREADS=1`);
    }
  }
  if (engine.length) process.stdout.write(engineLines.join('\n') + '\n\n');

  const brokers = want('brokers') ? await benchBrokers(opts) : [];
  if (brokers.length) process.stdout.write(sweepTable('Brokers (placeholder kernel, one worker, in-process)', brokers) + '\n\n');

  // Loaded only when asked for: it needs BullMQ, a dev dependency the worker image does not have.
  let queue: Awaited<ReturnType<typeof import('./queue.js').benchQueue>> | { runs: []; rows: [] } = { runs: [], rows: [] };
  if (want('queue')) {
    const { benchQueue, queueTable } = await import('./queue.js');
    queue = await benchQueue({ ...opts.queue, quick: Boolean(opts.quick) }, (line) => process.stderr.write(line + '\n'));
    process.stdout.write(queueTable(queue.rows, queue.nodeStartMs) + '\n');
  }

  const out = path.join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  const file = path.join(out, 'latest.json');
  const results = {
    started, finished: new Date().toISOString(), quick: Boolean(opts.quick),
    machine: { cpus: os.availableParallelism(), model: os.cpus()[0]?.model ?? '?', node: process.version },
    kernels, userKernels, engine, brokers, queue,
  };
  writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  // The same figures as a picture, beside them (the README shows a copy).
  const chart = path.join(out, 'latest.svg');
  writeFileSync(chart, renderBenchChart(results));
  process.stdout.write(`\nfigures written to ${path.relative(process.cwd(), file) || file}, chart to ${path.relative(process.cwd(), chart) || chart}\n`);
}

// `node dist/bench/run.js [--quick]`
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',') as BenchSection[] | undefined;
  const unknown = only?.filter((s) => !(BENCH_SECTIONS as readonly string[]).includes(s)) ?? [];
  if (unknown.length) {
    process.stderr.write(`--only takes ${BENCH_SECTIONS.join(', ')}; got ${unknown.join(', ')}\n`);
    process.exit(2);
  }
  // Queue section only: --sweeps=1000000/100,10000000/1000 --systems=ttg-redis,bullmq --reps=3
  const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const sweepsArg = arg('sweeps')?.split(',').map((pair) => {
    const [totalParams, chunkSize] = pair.split('/').map(Number);
    return { totalParams: totalParams!, chunkSize: chunkSize! };
  });
  const queue = {
    ...(sweepsArg ? { sweeps: sweepsArg } : {}),
    ...(arg('systems') ? { systems: arg('systems')!.split(',') as import('./queue.js').QueueSystem[] } : {}),
    ...(arg('reps') ? { reps: Number(arg('reps')) } : {}),
  };
  runBenchmarks({ quick: process.argv.includes('--quick'), ...(only ? { only } : {}), queue }).catch((err) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}

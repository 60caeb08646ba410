/**
 * Kernel throughput per thread: both kernels × both implementations, one
 * `sweep` call over a slice per tinybench iteration, in the calling thread.
 * The figure is parameters per second of one thread, exact sums included.
 */
import { Bench } from 'tinybench';
import { createKernelRunner, KERNEL_IMPLS, type KernelImpl, type KernelName, type SliceStats } from '../kernel/index.js';

export interface KernelBenchRow {
  kernel: string;
  impl: string;
  /** Median over the iterations, of parameters per second in one thread. */
  paramsPerSecond: number;
  /** Parameters per sweep call. */
  sliceSize: number;
}

/**
 * The slices measured: [0, 1,000,000) for both kernels, the very parameters
 * the engine rows sweep (bench/engine.ts), so a kernel row and an engine row
 * can be compared. The mandelbrot cost ranges from 1 to 1000 iterations per
 * point across the grid, so a part of it would not stand for the whole.
 */
export const KERNEL_BENCH_RANGE = { start: 0, size: 1_000_000 };
const SLICES: Record<KernelName, { start: number; size: number }> = {
  placeholder: KERNEL_BENCH_RANGE,
  mandelbrot: KERNEL_BENCH_RANGE,
};

/** Keeps the results alive so no engine can drop the calls. */
let sink: SliceStats | undefined;

export async function benchKernels(opts: { quick?: boolean } = {}): Promise<KernelBenchRow[]> {
  const bench = new Bench({
    name: 'kernels',
    time: opts.quick ? 150 : 1000,
    iterations: opts.quick ? 3 : 10,
    warmupTime: opts.quick ? 50 : 250,
    warmupIterations: opts.quick ? 2 : 5,
    throws: true,
  });
  const cases: Array<{ name: string; kernel: KernelName; impl: KernelImpl; size: number }> = [];
  for (const kernel of Object.keys(SLICES) as KernelName[]) {
    for (const impl of KERNEL_IMPLS) {
      // One runner per case, made before timing: instantiation is per thread, not per slice.
      const runner = createKernelRunner(impl);
      const { start, size } = SLICES[kernel];
      const name = `${kernel} ${impl}`;
      cases.push({ name, kernel, impl, size });
      bench.add(name, () => {
        sink = runner.sweep(kernel, start, start + size, 1_000_000);
      });
    }
  }
  await bench.run();
  if (sink === undefined) throw new Error('benchmark did not run');
  return cases.map(({ name, kernel, impl, size }) => {
    const result = bench.getTask(name)?.result;
    if (!result || result.state !== 'completed') {
      throw new Error(`kernel benchmark ${name} did not complete (${result?.state ?? 'missing'})`);
    }
    // Median latency in ms: robust to a stray GC pause or descheduling.
    return { kernel, impl, paramsPerSecond: size / (result.latency.p50 / 1000), sliceSize: size };
  });
}

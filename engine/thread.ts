/**
 * Piscina thread entry: evaluates one slice of a chunk. The kernel module is
 * compiled and instantiated once per thread (the maps below), not once per
 * task; the logic lives in kernel/. A user kernel's module (or its JS twin)
 * is loaded on the thread's first slice and kept: a kernel that traps or
 * returns NaN fails that slice with an error naming the parameter, and the
 * runner replaces its own instance, so the thread goes on. The user-kernel
 * loaders (and node:crypto, for the module's hash) are imported only by a
 * thread that runs one: a built-in kernel's thread starts without them.
 */
import { createKernelRunner } from '../kernel/index.js';
import type { KernelChoice, KernelImpl, KernelRunner, SliceStats, UserKernelSpec } from '../kernel/types.js';
import type { UserKernelRunner } from '../kernel/user-wasm.js';
import { BatchPacker, type BatchOutcome, type SliceOutcome } from './batch-outcome.js';
import { workerData } from 'node:worker_threads';
import { boundHeap } from './heap.js';

export type { BatchOutcome, SliceOutcome } from './batch-outcome.js';

/** What every thread of a pool is given at its start (Piscina's workerData). */
export interface ThreadData {
  boundHeap: boolean;
}

// After this thread's heap was set up, which put V8's growth factor back (engine/heap.ts).
if ((workerData as ThreadData | undefined)?.boundHeap) boundHeap();

export interface SliceTask {
  kernel: KernelChoice;
  impl: KernelImpl;
  start: number;
  end: number;
  total: number;
  /** Busy work per parameter, in milliseconds (SIMULATE_WORK_MS). */
  simulateWorkMs: number;
}

const runners = new Map<KernelImpl, KernelRunner>();

function runnerFor(impl: KernelImpl): KernelRunner {
  let runner = runners.get(impl);
  if (!runner) {
    runner = createKernelRunner(impl);
    runners.set(impl, runner);
  }
  return runner;
}

/** User kernel runners of this thread, by impl and file. A failed load is not kept: the next slice tries again. */
const userRunners = new Map<string, Promise<UserKernelRunner>>();

function userRunnerFor(impl: KernelImpl, spec: UserKernelSpec): Promise<UserKernelRunner> {
  const key = impl === 'wasm' ? `wasm:${spec.wasmPath}` : `js:${spec.jsPath}`;
  let runner = userRunners.get(key);
  if (!runner) {
    runner = loadUserRunner(impl, spec);
    userRunners.set(key, runner);
    runner.catch(() => userRunners.delete(key));
  }
  return runner;
}

async function loadUserRunner(impl: KernelImpl, spec: UserKernelSpec): Promise<UserKernelRunner> {
  if (impl === 'js') {
    if (spec.jsPath === null) throw new Error(`kernel ${spec.name}: KERNEL_IMPL=js needs the kernel's JS twin (KERNEL_JS)`);
    const { UserJsKernel } = await import('../kernel/user-js.js');
    return UserJsKernel.fromFile(spec.jsPath, spec.name);
  }
  const { UserWasmKernel } = await import('../kernel/user-wasm.js');
  const kernel = UserWasmKernel.fromFile(spec.wasmPath, spec.name);
  // The sweep's settings hold the hash this worker checked; a file replaced since then is another kernel.
  if (kernel.sha256 !== spec.sha256) {
    throw new Error(`kernel ${spec.name}: ${spec.wasmPath} changed while the worker ran (sha-256 ${kernel.sha256}, the sweep's is ${spec.sha256})`);
  }
  return kernel;
}

/** Spins (really uses the CPU, as a heavier kernel would) for `ms` milliseconds. */
function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

function finish(task: SliceTask, t0: number, stats: SliceStats): SliceOutcome {
  if (task.simulateWorkMs > 0) busyWait(task.simulateWorkMs * (task.end - task.start));
  return { ...stats, seconds: (performance.now() - t0) / 1000 };
}

/** Several slices in one task (engine/pool.ts batches small chunks so a thread task pays for its round trip). */
export interface SliceBatch extends Omit<SliceTask, 'start' | 'end'> {
  /** Flat [start, end, start, end, ...] of the slices, each evaluated on its own. */
  ranges: ArrayLike<number>;
}

export function runSlices(batch: SliceBatch): BatchOutcome | Promise<BatchOutcome> {
  const { kernel } = batch;
  // A built-in kernel runs synchronously: no await (a microtask) per slice. A user kernel waits for its load once.
  if (typeof kernel === 'string') {
    const runner = runnerFor(batch.impl);
    return packSlices(batch, (start, end) => runner.sweep(kernel, start, end, batch.total));
  }
  return userRunnerFor(batch.impl, kernel).then(
    (runner) => packSlices(batch, (start, end) => runner.sweep(start, end, batch.total)),
    (err: unknown) => packSlices(batch, () => {
      throw err;
    }),
  );
}

function packSlices(batch: SliceBatch, sweep: (start: number, end: number) => SliceStats): BatchOutcome {
  const slices = batch.ranges.length >> 1;
  const packer = new BatchPacker(slices);
  for (let i = 0; i < slices; i++) {
    const start = batch.ranges[2 * i]!;
    const end = batch.ranges[2 * i + 1]!;
    const t0 = performance.now();
    let stats: SliceStats;
    try {
      stats = sweep(start, end);
      if (batch.simulateWorkMs > 0) busyWait(batch.simulateWorkMs * (end - start));
    } catch (err) {
      packer.failed(err instanceof Error ? err.message : String(err));
      continue;
    }
    packer.add(stats, (performance.now() - t0) / 1000);
  }
  return packer.finish();
}

/**
 * The thread's one handler: a slice, or a batch of slices. One handler (not a named second one):
 * Piscina loads each handler name separately, and two loads of this module racing at a thread's
 * start (one by require(), one by import()) trip an internal assertion of Node 20
 * (ERR_INTERNAL_ASSERTION "imported again after being required").
 */
export default function runTask(task: SliceTask | SliceBatch): SliceOutcome | Promise<SliceOutcome> | BatchOutcome | Promise<BatchOutcome> {
  return 'ranges' in task ? runSlices(task) : runSlice(task);
}

function runSlice(task: SliceTask): SliceOutcome | Promise<SliceOutcome> {
  const t0 = performance.now();
  const { kernel } = task;
  if (typeof kernel === 'string') return finish(task, t0, runnerFor(task.impl).sweep(kernel, task.start, task.end, task.total));
  // Only the first slice of a thread waits for the load; the sweep itself is synchronous.
  return userRunnerFor(task.impl, kernel).then((runner) => finish(task, t0, runner.sweep(task.start, task.end, task.total)));
}

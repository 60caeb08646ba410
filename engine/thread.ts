/**
 * Piscina thread entry: evaluates one slice of a chunk. The kernel module is
 * compiled and instantiated once per thread (the maps below), not once per
 * task; the logic lives in kernel/. A user kernel's module (or its JS twin)
 * is loaded on the thread's first slice and kept: a kernel that traps or
 * returns NaN fails that slice with an error naming the parameter, and the
 * runner replaces its own instance, so the thread goes on.
 */
import { createKernelRunner } from '../kernel/index.js';
import type { KernelChoice, KernelImpl, KernelRunner, SliceStats, UserKernelSpec } from '../kernel/types.js';
import { UserJsKernel } from '../kernel/user-js.js';
import { UserWasmKernel, type UserKernelRunner } from '../kernel/user-wasm.js';

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
    return UserJsKernel.fromFile(spec.jsPath, spec.name);
  }
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

/** A slice's statistics and the thread time it took (seconds). */
export interface SliceOutcome extends SliceStats {
  seconds: number;
}

function finish(task: SliceTask, t0: number, stats: SliceStats): SliceOutcome {
  if (task.simulateWorkMs > 0) busyWait(task.simulateWorkMs * (task.end - task.start));
  return { ...stats, seconds: (performance.now() - t0) / 1000 };
}

/** Several slices in one task (engine/pool.ts batches small chunks so a thread task pays for its round trip). */
export interface SliceBatch extends Omit<SliceTask, 'start' | 'end'> {
  /** Flat [start, end, start, end, ...] of the slices, each evaluated on its own. */
  ranges: number[];
}

/** Per slice, its outcome or why it failed: one kernel error fails that slice only, not its batch neighbours. */
export type BatchOutcome = Array<SliceOutcome | { error: string }>;

export async function runSlices(batch: SliceBatch): Promise<BatchOutcome> {
  const out: BatchOutcome = [];
  for (let i = 0; i + 1 < batch.ranges.length; i += 2) {
    try {
      out.push(await runSlice({ ...batch, start: batch.ranges[i]!, end: batch.ranges[i + 1]! }));
    } catch (err) {
      out.push({ error: err instanceof Error ? err.message : String(err) });
    }
  }
  return out;
}

/**
 * The thread's one handler: a slice, or a batch of slices. One handler (not a named second one):
 * Piscina loads each handler name separately, and two loads of this module racing at a thread's
 * start (one by require(), one by import()) trip an internal assertion of Node 20
 * (ERR_INTERNAL_ASSERTION "imported again after being required").
 */
export default function runTask(task: SliceTask | SliceBatch): SliceOutcome | Promise<SliceOutcome> | Promise<BatchOutcome> {
  return 'ranges' in task ? runSlices(task) : runSlice(task);
}

function runSlice(task: SliceTask): SliceOutcome | Promise<SliceOutcome> {
  const t0 = performance.now();
  const { kernel } = task;
  if (typeof kernel === 'string') return finish(task, t0, runnerFor(task.impl).sweep(kernel, task.start, task.end, task.total));
  // Only the first slice of a thread waits for the load; the sweep itself is synchronous.
  return userRunnerFor(task.impl, kernel).then((runner) => finish(task, t0, runner.sweep(task.start, task.end, task.total)));
}

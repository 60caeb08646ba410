/**
 * Piscina thread entry: evaluates one slice of a chunk. The kernel module is
 * compiled and instantiated once per thread (module scope below), not once
 * per task; the logic lives in kernel/.
 */
import { createKernelRunner } from '../kernel/index.js';
import type { KernelImpl, KernelName, KernelRunner, SliceStats } from '../kernel/types.js';

export interface SliceTask {
  kernel: KernelName;
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

export default function runSlice(task: SliceTask): SliceOutcome {
  const t0 = performance.now();
  const stats = runnerFor(task.impl).sweep(task.kernel, task.start, task.end, task.total);
  if (task.simulateWorkMs > 0) busyWait(task.simulateWorkMs * (task.end - task.start));
  return { ...stats, seconds: (performance.now() - t0) / 1000 };
}

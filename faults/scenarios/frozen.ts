/**
 * Frozen worker: w0 is stopped with SIGSTOP while it holds chunks, for
 * longer than STALE_THRESHOLD_MS (its heartbeats stop with it), then
 * continued with SIGCONT. Expectations: see isolation.ts.
 */
import { FaultSweep, staleTiming } from '../harness.js';
import type { FaultBackend, FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';
import { isolateOneWorker } from './isolation.js';

async function frozen(backend: FaultBackend, { quick, log }: FaultRunOptions): Promise<FaultScenarioResult> {
  const sweep = await FaultSweep.open({
    scenario: 'frozen', backend, log, ...staleTiming(quick), variant: 'SIGSTOP',
    // ~50 ms chunks (w0's: 500 ms, see isolation.ts): the others must not finish the sweep while w0 is stopped,
    // so that it has work when it is back.
    totalParams: quick ? 15_000 : 60_000, chunkSize: 100, env: { SIMULATE_WORK_MS: 0.5 },
  });
  return sweep.run(() => isolateOneWorker(sweep, 'frozen', quick ? 2 : 3, {
    start: (i, extra) => sweep.start(String(i), extra),
    isolate: async (w) => w.signal('SIGSTOP'),
    restore: async (w) => w.signal('SIGCONT'),
  }));
}

export const frozenScenarios: FaultScenario[] = (['redis', 'rabbitmq'] as const).map((backend) => ({
  name: 'frozen', backend, run: (options: FaultRunOptions) => frozen(backend, options),
}));

/**
 * Network partition: every worker is a host of its own (a network
 * namespace, faults/netns.ts); w0's host is cut off from the broker while it
 * holds chunks, for longer than STALE_THRESHOLD_MS, and then reconnected.
 * Where namespaces cannot be made, each worker goes through a TCP relay
 * that is taken down instead, and the result's variant says 'relay' (with
 * the reason in the notes). Expectations: see isolation.ts.
 */
import { FaultSweep, staleTiming } from '../harness.js';
import { hostNetwork } from '../netns.js';
import type { FaultBackend, FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';
import { isolateOneWorker } from './isolation.js';

async function partition(backend: FaultBackend, { quick, log }: FaultRunOptions): Promise<FaultScenarioResult> {
  const sweep = await FaultSweep.open({
    scenario: 'partition', backend, log, ...staleTiming(quick),
    // ~50 ms chunks (w0's: 500 ms, see isolation.ts): the others must not finish the sweep while w0 is cut off,
    // so that it has work when it is back.
    totalParams: quick ? 15_000 : 60_000, chunkSize: 100, env: { SIMULATE_WORK_MS: 0.5 },
  });
  return sweep.run(async () => {
    const hosts = quick ? 2 : 3;
    const net = await hostNetwork(hosts, sweep.access.address);
    sweep.defer(() => net.close());
    sweep.variant = net.variant;
    if (net.fallbackReason) sweep.log(`partition/${backend}: relay variant: ${net.fallbackReason}`);
    const hostOf = new Map<string, number>();
    const result = await isolateOneWorker(sweep, 'partition', hosts, {
      start: (i, extra) => {
        const w = sweep.start(String(i), extra, { via: net.via(i), wrap: net.wrap(i) });
        hostOf.set(w.label, i);
        return w;
      },
      isolate: (w) => net.cut(hostOf.get(w.label)!),
      restore: (w) => net.heal(hostOf.get(w.label)!),
    });
    if (net.fallbackReason) result.notes.push(`relay variant: ${net.fallbackReason}`);
    return result;
  });
}

export const partitionScenarios: FaultScenario[] = (['redis', 'rabbitmq'] as const).map((backend) => ({
  name: 'partition', backend, run: (options: FaultRunOptions) => partition(backend, options),
}));

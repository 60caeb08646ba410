/**
 * Slow but alive: w0 (PREFETCH=1) works with SIMULATE_WORK_MS such that its
 * one chunk lasts five times STALE_THRESHOLD_MS; w1, fast, does the rest of
 * the sweep and then waits for that chunk, checking for stale chunks every
 * STALE_CHECK_INTERVAL_SECONDS all the while. Nobody may steal it: no chunk
 * is started twice, no `FAULT RECOVERY` line anywhere, and its result is
 * w0's.
 *
 * On Redis the heartbeat is what keeps it: the scenario reads the chunk's
 * idle time in the consumer group (XPENDING) while it runs, and it must stay
 * below the threshold although the chunk has been in w0's hands for several
 * thresholds. On RabbitMQ a delivery stays with its consumer while the
 * connection lives (AMQP heartbeats from the worker's main thread, which the
 * busy kernel thread does not block): nothing could steal it.
 */
import { waitFor } from '../../test/helpers.js';
import { redisAdmin } from '../access.js';
import { chunksRedone, FaultSweep, staleTiming } from '../harness.js';
import type { FaultBackend, FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';

const CHUNK_SIZE = 100;
/** The slow chunk lasts this many stale thresholds. */
const SLOWNESS = 5;

async function slowAlive(backend: FaultBackend, { quick, log }: FaultRunOptions): Promise<FaultScenarioResult> {
  const timing = staleTiming(quick);
  const slowChunkMs = SLOWNESS * timing.staleThresholdMs;
  const sweep = await FaultSweep.open({
    scenario: 'slow-alive', backend, log, ...timing, variant: `chunk ${SLOWNESS}× threshold`,
    totalParams: 10_000, chunkSize: CHUNK_SIZE,
  });
  return sweep.run(async () => {
    const slow = sweep.start('0', { SIMULATE_WORK_MS: slowChunkMs / CHUNK_SIZE, PREFETCH: 1 });
    const started = await sweep.waitForLog(slow, /^chunk \S+ started$/);
    const chunk = started.msg.split(' ')[1]!;
    const consumer = String(slow.lines().find((l) => 'consumer' in l.fields)?.fields['consumer'] ?? 'worker-0');
    sweep.start('1');
    const failures: string[] = [];
    const notes = [`${slow.label} held chunk ${chunk} for ${slowChunkMs} ms of simulated work (STALE_THRESHOLD_MS=${timing.staleThresholdMs})`];

    if (backend === 'redis') {
      // The chunk's idle time in the group, read while it runs: refreshed by the heartbeat, never near the threshold.
      const admin = await redisAdmin();
      let maxIdle = 0;
      let samplesOld = 0;
      try {
        await waitFor(`${slow.label} to finish chunk ${chunk}`, async () => {
          if (!slow.running || slow.lines().some((l) => l.msg === `chunk ${chunk} done`)) return true;
          const pending = (await admin.call('XPENDING', `${sweep.prefix}:tasks`, `${sweep.prefix}-workers`, '-', '+', 10, consumer)) as
            Array<[string, string, number, number]>;
          const age = Date.now() - started.ts;
          for (const [, , idle] of pending) {
            maxIdle = Math.max(maxIdle, idle);
            if (age > 2 * timing.staleThresholdMs) samplesOld++;
          }
          return false;
        }, slowChunkMs * 4 + 60_000, 100);
      } finally {
        admin.disconnect();
      }
      notes.push(`its idle time in the group stayed ≤ ${maxIdle} ms (${samplesOld} readings taken after it had been held for over ${2 * timing.staleThresholdMs} ms)`);
      if (maxIdle >= timing.staleThresholdMs) failures.push(`chunk ${chunk} was idle ${maxIdle} ms in the group: the heartbeat did not keep it fresh`);
      if (samplesOld === 0) failures.push(`no reading of chunk ${chunk}'s idle time while it was older than twice the threshold`);
    }

    return sweep.conclude({
      faults: [], faultsInjected: 1, failures, notes, duplicates: 0,
      // Nobody stole it: started once in all, no recovery anywhere, and the counted result is the slow worker's, as slow as asked.
      check: (report, note) => {
        const found: string[] = [];
        const redone = chunksRedone(sweep.workers);
        if (redone !== 0) found.push(`${redone} chunks were started more than once`);
        const recoveries = sweep.workers.flatMap((w) => w.lines()).filter((l) => l.msg.startsWith('FAULT RECOVERY')).length;
        if (recoveries) found.push(`${recoveries} FAULT RECOVERY lines: a live worker's chunk was taken`);
        const counted = (report['chunks'] as Array<{ chunk_id: string; worker_id: string; duration_seconds: number }> | undefined)
          ?.find((c) => c.chunk_id === chunk);
        if (!counted || counted.worker_id !== '0') found.push(`chunk ${chunk}'s counted result is not ${slow.label}'s (${JSON.stringify(counted)})`);
        else if (counted.duration_seconds * 1000 < slowChunkMs) found.push(`chunk ${chunk} took ${counted.duration_seconds} s, less than the ${slowChunkMs} ms asked`);
        else note(`chunk ${chunk} took ${counted.duration_seconds} s in ${slow.label}, started once, never recovered`);
        return found;
      },
    });
  });
}

export const slowAliveScenarios: FaultScenario[] = (['redis', 'rabbitmq'] as const).map((backend) => ({
  name: 'slow-alive', backend, run: (options: FaultRunOptions) => slowAlive(backend, options),
}));

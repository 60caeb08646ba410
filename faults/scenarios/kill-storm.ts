/**
 * Kill storm: three workers; one of them is killed with SIGKILL 1–2 s after
 * each (re)start has joined the sweep, and started again under the same
 * WORKER_ID, for the whole sweep (at least 10 kills in the full run, 2 in the
 * quick one). The two others take its chunks over; the aggregate must be
 * exact.
 *
 * Takeover bound: on Redis the stale threshold plus one check interval (the
 * dead worker's entries stay pending until they are idle that long); on
 * RabbitMQ nothing (the kernel closes the dead process's socket, and the
 * broker requeues its unacknowledged chunks at once).
 */
import { random } from '../../kernel/user-check.js';
import { FaultSweep, staleTiming, type Fault, type FaultWorker } from '../harness.js';
import { waitFor } from '../../test/helpers.js';
import type { FaultBackend, FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';

async function killStorm(backend: FaultBackend, { quick, log }: FaultRunOptions): Promise<FaultScenarioResult> {
  const minKills = quick ? 2 : 10;
  const seed = Date.now() % 1_000_000;
  const rand = random(seed);
  const sweep = await FaultSweep.open({
    scenario: 'kill-storm', backend, log, ...staleTiming(quick),
    // ~30 ms of work per chunk: quick ~12 CPU-s, full ~90 CPU-s, so that the storm (a kill every 2–3 s with the
    // restart) reaches its kills even on two idle cores.
    totalParams: quick ? 40_000 : 300_000, chunkSize: 100, env: { SIMULATE_WORK_MS: 0.3 },
    workerTimeoutMs: quick ? 120_000 : 300_000,
  });
  return sweep.run(async () => {
    const survivors = [sweep.start('0'), sweep.start('1')];
    let victim = sweep.start('2');
    const faults: Fault[] = [];
    sweep.log(`kill-storm/${backend}: killing w2 every 1–2 s (seed ${seed}) until the sweep settles`);
    // The survivors leave when the sweep has settled: the storm lasts as long as they run.
    const settled = Promise.race(survivors.map((w) => w.ended));
    let over = false;
    void settled.then(() => (over = true));
    while (!over) {
      // 1–2 s of work after each (re)start has joined the sweep (a start takes a while on a busy machine:
      // counted from the spawn, many kills would land before the worker holds anything).
      const joined = waitFor('the victim to join', () => over || !victim.running || joinedAt(victim), 60_000, 20);
      await joined;
      const since = joinedAt(victim);
      const waitMs = since ? since + 1000 + Math.round(rand() * 1000) - Date.now() : 0;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([settled, new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, waitMs))))]).finally(() => clearTimeout(timer));
      if (over || !victim.running) break;
      victim.signal('SIGKILL');
      faults.push(sweep.fault('SIGKILL', victim));
      await victim.ended;
      victim = sweep.start('2');
    }
    sweep.log(`kill-storm/${backend}: ${faults.length} kills`);
    const failures = faults.length < minKills
      ? [`only ${faults.length} kills before the sweep settled (at least ${minKills} expected): make the sweep longer`]
      : [];
    return sweep.conclude({
      faults,
      failures,
      notes: [`kill every 1–2 s, seed ${seed}; killed worker restarted under the same WORKER_ID`],
      // Redis completes (publish + ack) in one script, only while owning the entry: never a duplicate. A RabbitMQ
      // worker killed between the confirmed publish and the ack leaves one (the chunk is redone, counted once).
      duplicates: backend === 'redis' ? 0 : { min: 0, max: 'redone' },
      takeoverBoundMs: backend === 'redis' ? sweep.staleBoundMs : 0,
    });
  });
}

/** When `w` joined the sweep (its `created`/`joined the sweep` line), or null. */
function joinedAt(w: FaultWorker): number | null {
  const line = w.lines().find((l) => /^(created the sweep's tasks|joined the sweep)$/.test(l.msg));
  return line ? line.ts : null;
}

export const killStormScenarios: FaultScenario[] = (['redis', 'rabbitmq'] as const).map((backend) => ({
  name: 'kill-storm', backend, run: (options: FaultRunOptions) => killStorm(backend, options),
}));

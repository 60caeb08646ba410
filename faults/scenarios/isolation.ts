/**
 * What the partition and frozen scenarios share: one worker (w0) is cut off
 * from the broker while it holds chunks, for longer than STALE_THRESHOLD_MS,
 * and then comes back. Expected:
 * - its chunks are taken over: every chunk it held is picked up by another
 *   worker while it is away (the scenario waits for that before it heals);
 * - its late completions are refused by ownership (it logs `chunk X is no
 *   longer this worker's` and nothing of it reaches the aggregate twice);
 * - it rejoins and keeps working (commits a chunk after it came back);
 * - the aggregate is exact, and every worker exits 0.
 *
 * Takeover bound: the stale threshold plus one check interval. On RabbitMQ,
 * which redelivers by itself, that is how fast the broker must notice the
 * silent connection (missed AMQP heartbeats: ttg asks for a third of the
 * threshold), with a floor of 3 s: heartbeats are whole seconds, and the
 * broker closes a connection after two to three silent ones.
 */
import { waitFor } from '../../test/helpers.js';
import type { FaultSweep, FaultWorker } from '../harness.js';
import type { FaultScenarioResult } from '../types.js';

/** The least a RabbitMQ takeover can take: two to three silent AMQP heartbeats of at least 1 s. */
export const RABBIT_DEAD_PEER_FLOOR_MS = 3000;

/** The takeover bound of a frozen or cut-off worker (see the file comment). */
export function isolationBoundMs(sweep: FaultSweep): number {
  return sweep.spec.backend === 'redis' ? sweep.staleBoundMs : Math.max(sweep.staleBoundMs, RABBIT_DEAD_PEER_FLOOR_MS);
}

/**
 * The isolated worker's chunks last 10× the others' (SIMULATE_WORK_MS 5 instead of 0.5 per parameter, 500 ms
 * chunks of 100): the fault must land while it holds one, and cutting it off (an `ip` command on a busy machine)
 * takes a while.
 */
const VICTIM_WORK_MS = 5;

export interface Isolation {
  /** Starts worker `i` with `extra` variables (w0 is the one isolated). */
  start(i: number, extra: Record<string, string | number>): FaultWorker;
  /** Cuts `w` off (network down, SIGSTOP). */
  isolate(w: FaultWorker): Promise<void>;
  /** Brings it back. */
  restore(w: FaultWorker): Promise<void>;
}

export async function isolateOneWorker(sweep: FaultSweep, kind: string, workers: number, how: Isolation): Promise<FaultScenarioResult> {
  const { backend, staleThresholdMs } = sweep.spec;
  const tag = `${kind}/${backend}`;
  const all = Array.from({ length: workers }, (_, i) => how.start(i, i === 0 ? { SIMULATE_WORK_MS: VICTIM_WORK_MS } : {}));
  const victim = all[0]!;
  const others = all.slice(1);
  // Steady state first: the victim has committed two chunks and has just taken another.
  await waitFor(`${victim.label} to take a chunk after committing two`, () => {
    if (!victim.running) throw new Error(`${victim.label} ended before the fault: ${victim.process.stderr().slice(-500)}`);
    const lastStart = victim.lines().filter((l) => / started$/.test(l.msg)).at(-1);
    return victim.doneAfter(0).length >= 2 && victim.inHandAt(Date.now()).length > 0 && lastStart !== undefined && Date.now() - lastStart.ts < 150;
  }, 60_000, 5);
  await how.isolate(victim);
  const fault = sweep.fault(kind, victim);
  const held = victim.inHandAt(fault.at);
  sweep.log(`${tag}: ${victim.label} cut off holding ${held.join(', ') || 'nothing'}`);

  // Away until every chunk it held has been picked up elsewhere (or has a result: a commit that reached the
  // broker just before the cut, its reply lost), and for longer than the threshold.
  const pickedUp = (chunk: string) => others.some((w) => w.lines().some((l) =>
    l.ts > fault.at && (l.msg === `chunk ${chunk} started` || l.msg.startsWith(`FAULT RECOVERY: claimed chunk ${chunk} `) ||
      l.msg.startsWith(`FAULT RECOVERY: chunk ${chunk} `))));
  const minAwayMs = Math.max(staleThresholdMs, isolationBoundMs(sweep));
  const withResult = new Set<string>();
  let lastLook = 0;
  await waitFor(`the chunks ${victim.label} held (${held.join(', ')}) to be picked up by another worker`, async () => {
    if (others.every((w) => !w.running)) return true; // the sweep settled: conclude() says what that means
    if (Date.now() - fault.at <= minAwayMs) return false;
    // Asked again at each poll: lines the victim wrote just before the fault may reach us later.
    const waiting = victim.inHandAt(fault.at).filter((c) => !pickedUp(c) && !withResult.has(c));
    if (waiting.length === 0) return true;
    if (Date.now() - lastLook > 1000) {
      lastLook = Date.now();
      const chunks = ((await sweep.aggregate(true)).report['chunks'] ?? []) as Array<{ chunk_id: string }>;
      for (const c of chunks) withResult.add(c.chunk_id);
    }
    return false;
  }, 120_000, 20);
  await how.restore(victim);
  fault.until = Date.now();
  sweep.log(`${tag}: ${victim.label} back after ${fault.until - fault.at} ms`);

  // It rejoins: a chunk committed after it came back (or the sweep settled first, which is a failure).
  await waitFor(`${victim.label} to commit a chunk after coming back`, () => !victim.running || victim.doneAfter(fault.until!).length > 0, 120_000, 20);

  const failures: string[] = [];
  const refused = victim.refused();
  if (victim.doneAfter(fault.until).length === 0) failures.push(`${victim.label} committed no chunk after coming back (the sweep ended first: make it longer)`);
  return sweep.conclude({
    faults: [fault],
    failures,
    notes: [
      `${victim.label} away ${fault.until - fault.at} ms (STALE_THRESHOLD_MS=${staleThresholdMs}); late completions refused: ${refused.join(', ') || 'none'}; ` +
        `committed ${victim.doneAfter(fault.until).length} chunks after coming back`,
    ],
    // Redis: a refused completion publishes nothing. RabbitMQ: a result published in the instant before the cut
    // whose ack was lost comes back as a duplicate (counted once).
    duplicates: backend === 'redis' ? 0 : { min: 0, max: 'redone' },
    takeoverBoundMs: isolationBoundMs(sweep),
    // Taken over: the chunks it held are counted from other workers, and it was refused each one it finished late.
    check: (report) => {
      const counted = new Map(((report['chunks'] ?? []) as Array<{ chunk_id: string; worker_id: string }>).map((c) => [c.chunk_id, c.worker_id]));
      const takenOver = (fault.chunks ?? []).filter((c) => counted.has(c) && counted.get(c) !== victim.id);
      if (takenOver.length === 0) return [`none of the chunks ${victim.label} held (${(fault.chunks ?? []).join(', ') || 'none'}) was taken over`];
      const notRefused = takenOver.filter((c) => !refused.includes(c));
      return notRefused.length ? [`${victim.label}'s late completions of ${notRefused.join(', ')}, taken over meanwhile, were not refused`] : [];
    },
  });
}

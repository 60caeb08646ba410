/**
 * Poison and duplicates: as soon as the sweep's tasks exist, hand-made
 * entries are added to its task queue (Redis: XADD to `<p>:tasks`;
 * RabbitMQ: published to `<p>.tasks`): tasks that are not chunks of the
 * sweep (an id that is no chunk id, fields missing, a real chunk id with
 * a wrong range or a wrong total, a chunk id beyond the sweep; on RabbitMQ
 * also a body that is not JSON and one that is not an object), and the
 * exact task of a real chunk, twice. Expected:
 * - the aggregate exact (the malformed ones add nothing, settle nothing);
 * - every malformed entry dead-lettered with a reason (read back from the
 *   sweep's dead letters);
 * - the duplicate not double-counted: duplicate_results equals the number
 *   of duplicate results the workers committed (each `chunk X done` beyond
 *   the first for a chunk), and every hand-made entry was consumed;
 * - every worker exits 0.
 */
import { connect } from 'amqplib';
import { createLogger } from '../../core/log.js';
import { createBackend } from '../../engine/backend.js';
import { loadConfig } from '../../engine/config.js';
import { redisAdmin } from '../access.js';
import { FaultSweep, staleTiming } from '../harness.js';
import type { FaultBackend, FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';

const TOTAL = 10_000;
const CHUNK = 200;
/** The real chunk whose task is added twice by hand. */
const DUPLICATED = { chunk_id: '00007', start_param: '1400', end_param: '1600', total_params: String(TOTAL) };

/** Task entries that are not chunks of the sweep (the sweep has 50 chunks of 200). */
const MALFORMED: Record<string, string>[] = [
  { chunk_id: 'not-a-chunk', start_param: '0', end_param: '200', total_params: String(TOTAL) },
  { foo: 'bar' },
  { chunk_id: '00003', start_param: '0', end_param: '999999', total_params: String(TOTAL) },
  { chunk_id: '00004', start_param: '800', end_param: '1000', total_params: String(2 * TOTAL) },
  { chunk_id: '00999', start_param: '9800', end_param: '10000', total_params: String(TOTAL) },
];
/** RabbitMQ only: bodies that are not a JSON object. */
const UNREADABLE = ['this is not json', '[1, 2, 3]'];

async function inject(sweep: FaultSweep, backend: FaultBackend): Promise<number> {
  const entries = [...MALFORMED, DUPLICATED, DUPLICATED];
  if (backend === 'redis') {
    const admin = await redisAdmin();
    try {
      for (const e of entries) await admin.xadd(`${sweep.prefix}:tasks`, '*', ...Object.entries(e).flat());
    } finally {
      admin.disconnect();
    }
    return entries.length;
  }
  const conn = await connect(sweep.access.env()['AMQP_URL']!);
  try {
    const ch = await conn.createConfirmChannel();
    for (const body of [...entries.map((e) => JSON.stringify(e)), ...UNREADABLE]) {
      ch.sendToQueue(`${sweep.prefix}.tasks`, Buffer.from(body), { persistent: true });
    }
    await ch.waitForConfirms();
  } finally {
    await conn.close();
  }
  return entries.length + UNREADABLE.length;
}

/** The sweep's dead letters and what is left in its task queue, read through the backend (as `ttg aggregate` would). */
async function leftovers(sweep: FaultSweep, backend: FaultBackend): Promise<{ dead: Array<{ chunkId: string; reason: string }>; unconsumed: number }> {
  const env = sweep.env() as Record<string, string | undefined>;
  const log = createLogger({ level: 'error', write: (line) => sweep.log(line) });
  const queue = await createBackend({ config: loadConfig(env), workerId: 'fault-check', log });
  try {
    const dead = (await queue.readDeadLetters()).map((d) => ({ chunkId: d.chunkId, reason: d.reason }));
    const stats = await queue.stats();
    return { dead, unconsumed: stats.ready + (backend === 'redis' ? stats.inFlight : 0) };
  } finally {
    await queue.close();
  }
}

async function poisonDuplicates(backend: FaultBackend, { quick, log }: FaultRunOptions): Promise<FaultScenarioResult> {
  const sweep = await FaultSweep.open({
    scenario: 'poison-duplicates', backend, log, ...staleTiming(quick),
    // ~50 ms chunks, so the hand-made entries (behind the sweep's own in the queue) are read before it settles.
    totalParams: TOTAL, chunkSize: CHUNK, env: { SIMULATE_WORK_MS: 0.25 },
  });
  return sweep.run(async () => {
    const first = sweep.start('0');
    await sweep.waitForLog(first, /^created the sweep's tasks$/);
    const injected = await inject(sweep, backend);
    sweep.log(`poison-duplicates/${backend}: added ${injected} entries by hand (chunk ${DUPLICATED.chunk_id} twice)`);
    sweep.start('1');
    const malformed = injected - 2;
    return sweep.conclude({
      faults: [], faultsInjected: injected,
      duplicates: { min: 0, max: Number.MAX_SAFE_INTEGER }, // checked exactly below
      check: async (report, note) => {
        const found: string[] = [];
        // Duplicates: exactly the results committed beyond the first of their chunk.
        const commits = new Map<string, number>();
        for (const w of sweep.workers) {
          for (const l of w.lines()) {
            const m = /^chunk (\S+) done$/.exec(l.msg);
            if (m) commits.set(m[1]!, (commits.get(m[1]!) ?? 0) + 1);
          }
        }
        const extra = [...commits.values()].reduce((a, n) => a + n - 1, 0);
        if (report['duplicate_results'] !== extra) {
          found.push(`duplicate_results is ${report['duplicate_results']}, but the workers committed ${extra} results beyond the first of their chunk`);
        }
        note(`chunk ${DUPLICATED.chunk_id} committed ${commits.get(DUPLICATED.chunk_id) ?? 0} times, counted once; duplicate_results ${report['duplicate_results']}`);
        // The hand-made entries: each malformed one dead-lettered with a reason, and none left in the queue.
        const { dead, unconsumed } = await leftovers(sweep, backend);
        if (dead.length !== malformed) found.push(`${dead.length} dead letters for ${malformed} malformed entries`);
        const reasonless = dead.filter((d) => !d.reason.trim());
        if (reasonless.length) found.push(`${reasonless.length} dead letters without a reason`);
        if (unconsumed) found.push(`${unconsumed} entries left unconsumed in the task queue`);
        note(`dead letters: ${dead.map((d) => `${d.chunkId}: ${d.reason}`).join('; ')}`);
        return found;
      },
    });
  });
}

export const poisonDuplicatesScenarios: FaultScenario[] = (['redis', 'rabbitmq'] as const).map((backend) => ({
  name: 'poison-duplicates', backend, run: (options: FaultRunOptions) => poisonDuplicates(backend, options),
}));

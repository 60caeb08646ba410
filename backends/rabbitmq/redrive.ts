/**
 * Re-driving dead letters on RabbitMQ (`ttg retry-dead`), and the record of
 * who joined the sweep.
 *
 * The dead letters live in a stream, which is append-only: a re-drive
 * publishes the chunk's task afresh (no attempts header: fresh attempts) to
 * the task queue, then a record to the stream `<p>.redrives` naming the
 * chunk and the dead-letter stream's length at that moment (progress.ts
 * says how readers use it). Tasks first: a re-drive cut short between the
 * two leaves a task whose result settles the chunk, never a chunk that
 * counts as pending with no task anywhere. Re-drives are made under an
 * exclusive queue (`<p>.redrive-lock`), the broker's mutex (as init-lock.ts
 * does for creating the sweep), so two at once never queue a chunk twice:
 * the second reads the first one's records and finds the chunk no longer dead.
 *
 * Who joined: each worker process writes one entry to the stream
 * `<p>.joined` when it joins (its consumer name, WORKER_ID, host, time).
 */
import { TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { chunkIndexOf, chunkTaskOf, chunkCount } from '../../core/sweep.js';
import { taskFields } from '../messages.js';
import type { ConsumerRecord, RedriveOutcome } from '../types.js';
import { jsonObject, JSON_TYPE, STREAM, type Names } from './names.js';
import { redriveBody } from './progress.js';
import type { Link, RabbitSession } from './session.js';
import type { StreamReader } from './stream-reader.js';

/** How long a re-drive waits for another one to finish before it gives up. */
const LOCK_WAIT_MS = 60_000;
const LOCK_RETRY_MS = 50;

export async function redriveDead(
  session: RabbitSession, reader: StreamReader, names: Names, log: Logger, chunkIds: readonly string[] | null,
): Promise<RedriveOutcome> {
  // Not withLink: a re-drive cut short by a lost connection is not run again behind the caller's back.
  const s = await session.ensure();
  const settings = await reader.settings(s);
  if (settings === null) return { redriven: [] };
  const deadline = Date.now() + LOCK_WAIT_MS;
  while (!(await session.tryExclusiveQueue(s, names.redriveLock))) {
    if (Date.now() > deadline) {
      throw new TtgError(`another ttg retry-dead has held ${names.redriveLock} for ${LOCK_WAIT_MS / 1000}s; try again once it is done`);
    }
    await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
  }
  try {
    await session.probe(s, (ch) => ch.assertQueue(names.redrives, STREAM));
    const { letters, end } = await reader.deadLettersAndEnd(s, settings);
    const done = new Set<string>();
    for (const r of await reader.results(s, log)) done.add(r.chunkId);
    // Dead now: a genuine dead letter that no re-drive covers, and no result.
    const dead = new Set(letters.filter((d) => d.task && !d.redriven && !done.has(d.task.chunkId)).map((d) => d.task!.chunkId));
    const total = chunkCount(settings);
    for (const chunkId of chunkIds ?? []) {
      if (chunkIndexOf(chunkId, total) === null) return { refused: { chunkId, why: 'not-a-chunk' } };
      if (done.has(chunkId)) return { refused: { chunkId, why: 'completed' } };
      if (!dead.has(chunkId)) return { refused: { chunkId, why: 'not-dead' } };
    }
    const redriven = chunkIds ? [...new Set(chunkIds)] : [...dead].sort();
    await Promise.all(redriven.map((chunkId) => session.publish(s, names.exchange, names.tasks,
      Buffer.from(JSON.stringify(taskFields(chunkTaskOf(settings, chunkId)!))), { persistent: true, contentType: JSON_TYPE })));
    const redrivenAt = new Date().toISOString();
    await Promise.all(redriven.map((chunkId) => session.publish(s, '', names.redrives,
      redriveBody({ chunkId, deadBefore: end, redrivenAt }), { persistent: true, contentType: JSON_TYPE })));
    return { redriven };
  } finally {
    await session.probe(s, (ch) => ch.deleteQueue(names.redriveLock)).catch(() => {});
  }
}

/** Per chunk, how often it was re-driven. */
export async function redriveCounts(session: RabbitSession, reader: StreamReader): Promise<Record<string, number>> {
  const redrives = await session.withLink((s) => reader.redrives(s));
  return Object.fromEntries([...redrives].map(([chunkId, r]) => [chunkId, r.count]));
}

export async function recordJoin(session: RabbitSession, s: Link, names: Names, record: ConsumerRecord): Promise<void> {
  // The stream is declared with the topology (names.ts), before any worker joins.
  await session.publish(s, '', names.joined, Buffer.from(JSON.stringify({
    consumer: record.consumer, worker_id: record.workerId, host: record.host, joined_at: record.joinedAt,
  })), { persistent: true, contentType: JSON_TYPE });
}

export function readJoined(session: RabbitSession, reader: StreamReader, names: Names): Promise<ConsumerRecord[]> {
  return session.withLink(async (s) => {
    const out: ConsumerRecord[] = [];
    await reader.read(s, names.joined, 0, 'end', (msg) => {
      const f = jsonObject(msg.content);
      if (f && typeof f['consumer'] === 'string') {
        out.push({ consumer: f['consumer'], workerId: String(f['worker_id'] ?? '?'), host: String(f['host'] ?? '?'), joinedAt: String(f['joined_at'] ?? '') });
      }
    });
    return out;
  });
}

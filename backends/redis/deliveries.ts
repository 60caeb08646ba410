/**
 * Deliveries both ways, in batches: stream entries read or claimed become
 * deliveries with one pipelined lookup for all of them, and completions
 * that are ready together go to Redis in one complete-5.lua call, where each
 * is still checked for ownership and settled on its own.
 */
import type { Logger } from '../../core/log.js';
import type { ChunkResult, SweepSettings } from '../../core/sweep.js';
import { parseTaskFields, resultFieldList } from '../messages.js';
import type { Delivery } from '../types.js';
import type { RedisLinks } from './connection.js';
import type { Keys } from './keys.js';
import type { Fields, StreamEntry } from './replies.js';
import { outcomeOf } from './scripts.js';
import { SweepGoneError, sweepGoneMessage } from '../../core/errors.js';

/** Most completions in one complete-5.lua call (a few ms of Redis time at most). */
export const COMPLETIONS_PER_CALL = 500;

/** Broker bookkeeping of a delivery: opaque to the engine. */
export interface RedisHandle {
  readonly entryId: string;
  /** The entry's fields as read, kept for dead letters of malformed entries. */
  readonly fields: Fields;
}

/** A chunk's completion waiting for its batch. */
export interface Completion {
  entryId: string;
  chunkId: string;
  result: ChunkResult;
}

/**
 * Parses entries into deliveries, with each chunk's failure count. Entries
 * of chunks that already have a result (a recovered duplicate) are
 * acknowledged and dropped: nobody needs to compute them again.
 */
export async function toDeliveries(
  links: RedisLinks, k: Keys, log: Logger, settings: SweepSettings, entries: StreamEntry[], recovered: boolean,
): Promise<Delivery[]> {
  if (!entries.length) return [];
  const link = await links.commands();
  const parsed = entries.map((entry) => ({ entry, parsed: parseTaskFields(entry.fields!, settings) }));
  const ids = parsed.map(({ parsed: p }) => (p.ok ? p.task.chunkId : p.chunkId));
  const [attempts, done] = await links.run(link, (c) => Promise.all([c.hmget(k.attempts, ...ids), c.hmget(k.done, ...ids)]));
  const deliveries: Delivery[] = [];
  const settled: string[] = [];
  parsed.forEach(({ entry, parsed: p }, i) => {
    if (p.ok && done[i] !== null) {
      settled.push(entry.id);
      return;
    }
    const handle: RedisHandle = { entryId: entry.id, fields: entry.fields! };
    const attempt = p.ok ? Number(attempts[i] ?? 0) : 0;
    deliveries.push(p.ok
      ? { task: p.task, chunkId: p.task.chunkId, attempt, recovered, handle }
      : { task: null, malformed: p.reason, chunkId: p.chunkId, attempt, recovered, handle });
  });
  if (settled.length) {
    await links.run(link, (c) => c.xack(k.tasks, k.group, ...settled));
    // Rare (duplicates only), and maybe after the sweep settled: trim now rather than leave them behind.
    await links.script(link, 'trim', [k.tasks], [k.group]);
    log.debug(`acknowledged ${settled.length} entries of chunks that already have a result`);
  }
  return deliveries;
}

/** One complete-5.lua call for a batch of completions; true for each chunk published (first result or duplicate). */
export async function sendCompletions(
  links: RedisLinks, k: Keys, consumer: string, prefix: string, log: Logger, items: Completion[],
): Promise<boolean[]> {
  const chunks = items.map(({ entryId, chunkId, result }) => [entryId, chunkId, resultFieldList(result)]);
  const link = await links.commands();
  const codes = (await links.script(link, 'complete', [k.tasks, k.results, k.done, k.deadChunks, k.meta],
    [k.group, consumer, k.events, JSON.stringify(chunks)])) as unknown[];
  const outcomes = items.map((_, i) => outcomeOf('complete', codes[i], { prefix }));
  // Reset under a running worker: one error that ends it, not a line per chunk in hand.
  if (outcomes.includes('sweep-gone')) throw new SweepGoneError(sweepGoneMessage(prefix));
  return items.map(({ chunkId }, i) => {
    if (outcomes[i] === 'duplicate') log.debug('chunk already had a result; published a duplicate', { chunk: chunkId });
    return outcomes[i] === 'published' || outcomes[i] === 'duplicate';
  });
}

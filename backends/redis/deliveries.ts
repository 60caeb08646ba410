/**
 * Deliveries both ways, in batches: stream entries read or claimed become
 * deliveries with one pipelined lookup for all of them, and completions
 * that are ready together go to Redis in one complete-5.lua call, where each
 * is still checked for ownership and settled on its own.
 */
import type { Logger } from '../../core/log.js';
import { chunkCount, chunkIdWidth, type ChunkResult, type ChunkTask, type SweepSettings } from '../../core/sweep.js';
import { parseTaskFields } from '../messages.js';
import type { Delivery } from '../types.js';
import type { Link, RedisLinks } from './connection.js';
import type { Keys } from './keys.js';
import { entriesOf, type Fields, type StreamEntry } from './replies.js';
import { outcomeOf } from './scripts.js';
import { SweepGoneError, sweepGoneMessage } from '../../core/errors.js';

/** Most completions in one complete-5.lua call (a few ms of Redis time at most). */
export const COMPLETIONS_PER_CALL = 500;

/** Broker bookkeeping of a delivery: opaque to the engine. */
export interface RedisHandle {
  readonly entryId: string;
  /** The entry's fields as read, kept for dead letters of malformed entries (a task's are rebuilt from it). */
  readonly fields?: Fields;
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
  if (settled.length) await acknowledgeSettled(links, k, log, settled);
  return deliveries;
}

/**
 * Up to `max` new entries for `consumer` as deliveries, read with read-3.lua
 * in one round trip: entries of the usual shape come as one line each with
 * their failure count and whether the chunk has a result (no nested reply to
 * decode), any other entry the long way (toDeliveries).
 */
export async function readDeliveries(
  links: RedisLinks, k: Keys, log: Logger, settings: SweepSettings, consumer: string, max: number,
): Promise<Delivery[]> {
  const link = await links.commands();
  const [lines, others] = (await links.script(link, 'read', [k.tasks, k.attempts, k.done], [k.group, consumer, max])) as [string, unknown];
  const { inOrder, settled } = readLines(lines, settings);
  if (settled.length) await acknowledgeSettled(links, k, log, settled);
  const rest = entriesOf(others);
  if (!rest.length) return inOrder as Delivery[];
  const read = new Map((await toDeliveries(links, k, log, settings, rest, false)).map((d) => [(d.handle as RedisHandle).entryId, d]));
  return inOrder.flatMap((d) => (typeof d !== 'string' ? [d] : read.has(d) ? [read.get(d)!] : []));
}

/**
 * read-3.lua's lines as deliveries, in stream order, an entry of another shape as its id (read the
 * long way, in its place); and the entries of chunks that already have a result. A function of its
 * own, not a loop inside readDeliveries: V8 optimises a hot loop with the whole function around it,
 * and compiling the async function with ioredis's calls inlined cost more CPU than a short sweep's
 * reads themselves (--trace-opt: ~35 ms, twice, per worker).
 */
function readLines(lines: string, settings: SweepSettings): { inOrder: Array<Delivery | string>; settled: string[] } {
  const inOrder: Array<Delivery | string> = [];
  const settled: string[] = [];
  const chunks = chunkCount(settings);
  const width = chunkIdWidth(chunks);
  let at = 0;
  while (at < lines.length) {
    const end = lines.indexOf('\n', at);
    const line = lines.slice(at, end);
    at = end + 1;
    if (!line.includes(' ')) {
      inOrder.push(line);
      continue;
    }
    const [entryId, chunkId, start, stop, total, failures, done] = line.split(' ') as [string, string, string, string, string, string, string];
    const task = plainTask(chunkId, Number(start), Number(stop), Number(total), settings, chunks, width);
    if (task !== null) {
      if (done === '1') settled.push(entryId);
      else inOrder.push({ task, chunkId, attempt: Number(failures), recovered: false, handle: { entryId } satisfies RedisHandle });
      continue;
    }
    // Not exactly a chunk of this sweep: parseTaskFields says why (or accepts it after all).
    const fields: Fields = { chunk_id: chunkId, start_param: start, end_param: stop, total_params: total };
    const parsed = parseTaskFields(fields, settings);
    if (parsed.ok && done === '1') {
      settled.push(entryId);
      continue;
    }
    const handle: RedisHandle = { entryId, fields };
    inOrder.push(parsed.ok
      ? { task: parsed.task, chunkId, attempt: Number(failures), recovered: false, handle }
      : { task: null, malformed: parsed.reason, chunkId: parsed.chunkId, attempt: 0, recovered: false, handle });
  }
  return { inOrder, settled };
}

/**
 * The task when it is exactly a chunk of the sweep (what notAChunkOf accepts), else null. The values
 * are decimal digits already (read-3.lua checked them), so a chunk id is canonical when it has the
 * sweep's width and is below its chunk count, and no regular expression or padded copy is needed.
 */
function plainTask(
  chunkId: string, startParam: number, endParam: number, totalParams: number, settings: SweepSettings, chunks: number, width: number,
): ChunkTask | null {
  if (chunkId.length !== width || totalParams !== settings.totalParams) return null;
  const index = Number(chunkId);
  if (!(index < chunks)) return null;
  const first = index * settings.chunkSize;
  if (startParam !== first || endParam !== Math.min(settings.totalParams, first + settings.chunkSize)) return null;
  return { chunkId, startParam, endParam, totalParams };
}

/** Entries of chunks that already have a result (a recovered duplicate): acknowledged, nobody computes them again. */
async function acknowledgeSettled(links: RedisLinks, k: Keys, log: Logger, entryIds: string[]): Promise<void> {
  const link = await links.commands();
  await links.run(link, (c) => c.xack(k.tasks, k.group, ...entryIds));
  // Rare (duplicates only), and maybe after the sweep settled: trim now rather than leave them behind.
  await links.script(link, 'trim', [k.tasks], [k.group]);
  log.debug(`acknowledged ${entryIds.length} entries of chunks that already have a result`);
}

/** complete-5.lua's letters as the codes outcomeOf() reads (an unknown letter: the whole reply, named in the error). */
const COMPLETE_CODES: Record<string, number> = { 1: 1, 2: 2, n: -1, g: -3 };

/** A tab, a newline or a backslash in a free-text value of complete-5.lua's lines. */
const SEPARATORS = /[\t\n\\]/;

/** A free-text value escaped as complete-5.lua unescapes it (only timestamps could hold a separator, and never do). */
function text(value: string): string {
  return SEPARATORS.test(value) ? value.replace(/[\t\n\\]/g, (c) => (c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\\\')) : value;
}

/**
 * One complete-5.lua call for a batch of completions; true for each chunk
 * published (first result or duplicate). The fields every result of a worker
 * shares (worker_id, status, consumer) go once per call; should a batch mix
 * several, each kind goes in a call of its own.
 */
export async function sendCompletions(
  links: RedisLinks, k: Keys, consumer: string, prefix: string, log: Logger, items: Completion[],
): Promise<boolean[]> {
  const first = items[0]!.result;
  const shared = ({ result: r }: Completion) =>
    r.workerId === first.workerId && r.status === first.status && (r.consumer ?? '') === (first.consumer ?? '');
  if (!items.every(shared)) {
    const [alike, rest] = [items.filter(shared), items.filter((item) => !shared(item))];
    const [alikeAnswers, restAnswers] = await Promise.all([
      sendCompletions(links, k, consumer, prefix, log, alike), sendCompletions(links, k, consumer, prefix, log, rest)]);
    const answers = new Map<Completion, boolean>([...alike.map((c, i) => [c, alikeAnswers[i]!] as const),
      ...rest.map((c, i) => [c, restAnswers[i]!] as const)]);
    return items.map((item) => answers.get(item)!);
  }
  const lines = completionLines(items);
  const link = await links.commands();
  const codes = String(await links.script(link, 'complete', [k.tasks, k.results, k.done, k.deadChunks, k.meta],
    [k.group, consumer, k.events, first.workerId, first.status, first.consumer ?? '', lines]));
  const outcomes = items.map((_, i) => (codes[i] === '1' ? 'published' : outcomeOf('complete', COMPLETE_CODES[codes[i]!] ?? codes, { prefix })));
  // Reset under a running worker: one error that ends it, not a line per chunk in hand.
  if (outcomes.includes('sweep-gone')) throw new SweepGoneError(sweepGoneMessage(prefix));
  return items.map(({ chunkId }, i) => {
    if (outcomes[i] === 'duplicate') log.debug('chunk already had a result; published a duplicate', { chunk: chunkId });
    return outcomes[i] === 'published' || outcomes[i] === 'duplicate';
  });
}

/**
 * complete-5.lua's lines for a batch. A function of its own for the reason readLines is: the loop
 * made V8 optimise all of sendCompletions, ioredis's calls inlined (~30 ms of compiling, twice).
 */
function completionLines(items: Completion[]): Buffer {
  // Entry ids come from Redis and chunk ids are canonical (complete() checks them): neither holds a separator.
  // Pieces joined once (a string grown piece by piece is a rope that writing it must flatten), and
  // sent as bytes: a string argument is copied once more on the heap into the command's text.
  const parts = new Array<string | number>(items.length * 16);
  let at = 0;
  for (const { entryId, chunkId, result: r } of items) {
    parts[at] = entryId;
    parts[at + 2] = chunkId;
    parts[at + 4] = r.durationSeconds;
    parts[at + 6] = text(r.completedAt);
    parts[at + 8] = r.startedAt ? text(r.startedAt) : '';
    parts[at + 10] = r.recovered ? 'true' : '';
    parts[at + 12] = r.attempts ? r.attempts : '';
    parts[at + 14] = JSON.stringify(r.stats);
    for (let i = 1; i < 15; i += 2) parts[at + i] = '\t';
    parts[at + 15] = '\n';
    at += 16;
  }
  return Buffer.from(parts.join(''), 'utf8');
}

/**
 * Past this many deliveries without a result, a chunk that is claimed again is dead-lettered instead:
 * every worker that took it stopped answering (a chunk that crashes or hangs its worker would otherwise
 * go round the workers for ever). The limit RabbitMQ's task queue has (x-delivery-limit).
 */
export const DELIVERY_LIMIT = 100;

/** Why such a chunk was dead-lettered: the reason its dead letter carries. */
export function deliveryLimitReason(deliveries: number): string {
  return `handed out ${deliveries} times without a result (more than ${DELIVERY_LIMIT}): each worker that took it ` +
    'stopped answering before finishing it (does computing it crash or hang the worker?)';
}

/** Of chunks just claimed by `consumer`, those delivered more than DELIVERY_LIMIT times, with their delivery counts. */
export async function overDelivered(
  links: RedisLinks, k: Keys, consumer: string, deliveries: Delivery[],
): Promise<Map<Delivery, number>> {
  const over = new Map<Delivery, number>();
  const chunks = deliveries.filter((d) => d.task !== null);
  if (!chunks.length) return over;
  const link = await links.commands();
  // Claims are rare (a worker went away): one XPENDING an entry, sent together, is cheap enough.
  const replies = await links.run(link, (c) => Promise.all(chunks.map((d) => {
    const id = (d.handle as RedisHandle).entryId;
    return c.call('XPENDING', k.tasks, k.group, id, id, 1, consumer) as Promise<Array<[string, string, number, number]>>;
  })));
  chunks.forEach((d, i) => {
    const count = Number(replies[i]?.[0]?.[3] ?? 0);
    if (count > DELIVERY_LIMIT) over.set(d, count);
  });
  return over;
}

/**
 * Claims for `consumer` up to `max` entries idle for `thresholdMs`, scanning the pending list from `cursor`.
 * One XAUTOCLAIM looks at no more than 10 × COUNT pending entries: go on until `max` are found or the scan
 * has reached the end of the list. Returns them with where the next scan starts.
 */
export async function autoclaim(
  links: RedisLinks, link: Link, k: Keys, consumer: string, thresholdMs: number, cursor: string, max: number,
): Promise<{ claimed: StreamEntry[]; cursor: string }> {
  const claimed: StreamEntry[] = [];
  do {
    const reply = await links.run(link, (c) =>
      c.call('XAUTOCLAIM', k.tasks, k.group, consumer, Math.max(0, Math.floor(thresholdMs)), cursor, 'COUNT', max - claimed.length));
    const [next, entries] = reply as [unknown, unknown];
    cursor = String(next);
    // Entries deleted from the stream come back without fields (Redis 6.2) or in a third list (7+); skip them.
    claimed.push(...entriesOf(entries).filter((entry) => entry.fields !== null));
  } while (claimed.length < max && cursor !== '0-0');
  return { claimed, cursor };
}

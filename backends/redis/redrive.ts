/**
 * Re-driving dead letters on Redis (`ttg retry-dead`, redrive-7.lua), and
 * the record of who joined the sweep (`<p>:joined`, for the report's chunks
 * per worker). The dead-letter stream `<p>:dead` is append-only: a re-drive
 * is kept beside it in `<p>:redrives` (chunk id → its count and the dead
 * stream's last entry id when it was made), and a dead letter at or before
 * that id is `redriven`.
 */
import { TtgError } from '../../core/errors.js';
import type { ConsumerRecord, RedriveOutcome } from '../types.js';
import type { Link, RedisLinks } from './connection.js';
import type { Keys } from './keys.js';

/** Per chunk: times re-driven, and the dead stream's last entry id when it last was. */
export type Redrives = Map<string, { count: number; after: string }>;

const REFUSALS = ['not-a-chunk', 'completed', 'not-dead'] as const;

export async function redriveDead(links: RedisLinks, keys: Keys, chunkIds: readonly string[] | null): Promise<RedriveOutcome> {
  const link = await links.commands();
  const reply = (await links.script(link, 'redrive',
    [keys.meta, keys.tasks, keys.deadChunks, keys.attempts, keys.done, keys.dead, keys.redrives],
    [new Date().toISOString(), ...(chunkIds ?? [])])) as unknown[];
  const code = Number(reply[0]);
  if (code === 1) return { redriven: reply.slice(1).map(String) };
  if (code === -3) return { redriven: [] };
  const why = String(reply[2]) as (typeof REFUSALS)[number];
  if (code === -4 && REFUSALS.includes(why)) return { refused: { chunkId: String(reply[1]), why } };
  throw new TtgError(`unexpected reply from the Redis script redrive: ${JSON.stringify(reply)}`);
}

export async function readRedrives(links: RedisLinks, keys: Keys): Promise<Redrives> {
  const link = await links.commands();
  const raw = await links.run(link, (c) => c.hgetall(keys.redrives));
  const out: Redrives = new Map();
  for (const [chunkId, json] of Object.entries(raw)) {
    try {
      const { count, after } = JSON.parse(json) as { count?: unknown; after?: unknown };
      if (typeof count === 'number' && typeof after === 'string') out.set(chunkId, { count, after });
    } catch {
      // not a record of ours: ignored
    }
  }
  return out;
}

/** True when stream id `a` is at or before `b` (`<ms>-<seq>`). */
export function streamIdAtMost(a: string, b: string): boolean {
  const [am, as] = a.split('-').map((x) => BigInt(x || '0'));
  const [bm, bs] = b.split('-').map((x) => BigInt(x || '0'));
  return am! < bm! || (am === bm && as! <= bs!);
}

/** Records that this worker process joined the sweep (one field per consumer name: a restarted process of the same name is one row). */
export async function recordJoin(links: RedisLinks, link: Link, keys: Keys, record: ConsumerRecord): Promise<void> {
  await links.run(link, (c) => c.hset(keys.joined, record.consumer, JSON.stringify({
    worker_id: record.workerId, host: record.host, joined_at: record.joinedAt,
  })));
}

export async function readJoined(links: RedisLinks, keys: Keys): Promise<ConsumerRecord[]> {
  const link = await links.commands();
  const raw = await links.run(link, (c) => c.hgetall(keys.joined));
  const out: ConsumerRecord[] = [];
  for (const [consumer, json] of Object.entries(raw)) {
    try {
      const f = JSON.parse(json) as Record<string, unknown>;
      out.push({ consumer, workerId: String(f['worker_id'] ?? '?'), host: String(f['host'] ?? '?'), joinedAt: String(f['joined_at'] ?? '') });
    } catch {
      out.push({ consumer, workerId: '?', host: '?', joinedAt: '' });
    }
  }
  return out.sort((a, b) => (a.joinedAt < b.joinedAt ? -1 : a.joinedAt > b.joinedAt ? 1 : 0));
}

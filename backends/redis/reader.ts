/**
 * Reading a sweep's state from Redis without changing it: its settings,
 * results and dead letters (page by page, consuming nothing, so the
 * aggregate can be made again and again), and the group's pending and
 * ready counts, and the figures of stats().
 */
import { SweepGoneError, TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { settingsFromRecord, unreadableSettingsMessage, type ChunkResult, type DeadLetter, type SweepSettings } from '../../core/sweep.js';
import { parseResultFields, parseTaskFields } from '../messages.js';
import type { Redis } from 'ioredis';
import type { QueueStats } from '../types.js';
import type { Link, RedisLinks } from './connection.js';
import type { Keys } from './keys.js';
import { entriesOf, fieldsOfLoose, isRedisError, pendingSummary, readGroupEntries, type StreamEntry } from './replies.js';

/** Entries per XRANGE page when reading results and dead letters. */
const PAGE = 1000;

export class RedisReader {
  readonly #links: RedisLinks;
  readonly #keys: Keys;
  readonly #prefix: string;
  readonly #log: Logger;

  constructor(links: RedisLinks, keys: Keys, prefix: string, log: Logger) {
    this.#links = links;
    this.#keys = keys;
    this.#prefix = prefix;
    this.#log = log;
  }

  async settings(): Promise<SweepSettings | null> {
    const link = await this.#links.commands();
    const [totalParams, chunkSize, kernel] = await this.#links.run(link, (c) =>
      c.hmget(this.#keys.meta, 'total_params', 'chunk_size', 'kernel'));
    if (totalParams === null && chunkSize === null && kernel === null) return null;
    const settings = settingsFromRecord({ total_params: totalParams, chunk_size: chunkSize, kernel });
    if (settings === null) throw new TtgError(unreadableSettingsMessage(this.#keys.meta, this.#prefix));
    return settings;
  }

  async results(): Promise<ChunkResult[]> {
    const results: ChunkResult[] = [];
    let unreadable = 0;
    for await (const entry of this.range(this.#keys.results)) {
      const result = parseResultFields(entry.fields ?? {});
      if (result) results.push(result);
      else unreadable++;
    }
    if (unreadable) this.#log.warn(`ignored ${unreadable} result entries that are not well-formed`, { stream: this.#keys.results });
    return results;
  }

  /** `redriven(entryId, chunkId)`: whether a re-drive (redrive.ts) came after this dead letter. */
  async deadLetters(redriven: (entryId: string, chunkId: string) => boolean = () => false): Promise<DeadLetter[]> {
    const letters: DeadLetter[] = [];
    for await (const entry of this.range(this.#keys.dead)) {
      const fields = entry.fields ?? {};
      const parsed = parseTaskFields(fields, null);
      letters.push({
        chunkId: fields['chunk_id'] ?? '?',
        reason: fields['reason'] ?? '',
        attempts: Number(fields['attempts'] ?? 0),
        workerId: fields['worker_id'] ?? '?',
        task: parsed.ok ? parsed.task : null,
        ...(parsed.ok && redriven(entry.id, parsed.task.chunkId) ? { redriven: true } : {}),
      });
    }
    return letters;
  }

  /** XPENDING summary; an absent group (no sweep) holds nothing. */
  /** The sweep's figures, in chunks (never entries): one read of each key, all at once. */
  async stats(link: Link): Promise<QueueStats> {
    const k = this.#keys;
    const run = <T>(f: (c: Redis) => Promise<T>) => this.#links.run(link, f);
    const [settings, total, completed, dead, results, pending, ready, retrying] = await Promise.all([
      this.settings(),
      run((c) => c.hget(k.meta, 'total_chunks')),
      run((c) => c.hlen(k.done)),
      run((c) => c.hlen(k.deadChunks)),
      run((c) => c.xlen(k.results)),
      this.pending(link),
      this.ready(link),
      run((c) => c.zcard(k.delayed)),
    ]);
    return {
      settings,
      totalChunks: total === null ? 0 : Number(total),
      completedChunks: completed,
      deadLettered: dead,
      settledChunks: completed + dead,
      ready,
      inFlight: pending.count,
      retrying,
      results,
      consumers: pending.consumers,
    };
  }

  async pending(link: Link): Promise<{ count: number; consumers: Record<string, number> }> {
    try {
      return pendingSummary(await this.#links.run(link, (c) => c.call('XPENDING', this.#keys.tasks, this.#keys.group)));
    } catch (err) {
      if (isRedisError(err, 'NOGROUP') || err instanceof SweepGoneError) return { count: 0, consumers: {} };
      throw err;
    }
  }

  /** Entries not yet delivered to any consumer: the group's `lag`, counted by hand where Redis cannot tell. */
  async ready(link: Link): Promise<number> {
    const k = this.#keys;
    let groups: unknown;
    try {
      groups = await this.#links.run(link, (c) => c.call('XINFO', 'GROUPS', k.tasks));
    } catch (err) {
      if (isRedisError(err, 'no such key')) return 0;
      throw err;
    }
    const group = (groups as unknown[]).map(fieldsOfLoose).find((g) => g['name'] === k.group);
    if (!group) return 0;
    if (group['lag'] !== undefined && group['lag'] !== null) return Number(group['lag']);
    // lag is nil after deletions in the middle of the stream (and absent before Redis 7): count past last-delivered-id.
    let count = 0;
    for await (const _ of this.range(k.tasks, `(${String(group['last-delivered-id'])}`)) count++;
    return count;
  }

  /** Every entry of a stream from `start`, page by page, without consuming anything. */
  async *range(stream: string, start = '-'): AsyncGenerator<StreamEntry> {
    const link = await this.#links.commands();
    let from = start;
    for (;;) {
      const page = entriesOf(await this.#links.run(link, (c) => c.call('XRANGE', stream, from, '+', 'COUNT', PAGE)));
      yield* page;
      if (page.length < PAGE) return;
      from = `(${page[page.length - 1]!.id}`;
    }
  }

  /**
   * Entries pending under this consumer name when this process took it: an
   * earlier process of the same name (a restarted worker) left them, and
   * they were its own, so it finishes them first. Read once, at init(),
   * with XREADGROUP from id 0 (pending entries, no waiting), so entries this
   * process claims later are never handed out twice.
   */
  async ownPending(link: Link, consumer: string): Promise<StreamEntry[]> {
    const k = this.#keys;
    const entries: StreamEntry[] = [];
    let from = '0';
    for (;;) {
      const page = readGroupEntries(await this.#links.run(link, (c) =>
        c.call('XREADGROUP', 'GROUP', k.group, consumer, 'COUNT', PAGE, 'STREAMS', k.tasks, from)));
      entries.push(...page);
      if (page.length < PAGE) break;
      from = page[page.length - 1]!.id;
    }
    // Entries deleted from the stream while pending come back without fields: nothing to resume.
    const deleted = entries.filter((entry) => entry.fields === null).map((entry) => entry.id);
    if (deleted.length) await this.#links.run(link, (c) => c.xack(k.tasks, k.group, ...deleted));
    const resumable = entries.filter((entry) => entry.fields !== null);
    if (resumable.length) {
      this.#log.info(`resuming ${resumable.length} chunks this consumer name left pending before a restart`, { consumer });
    }
    return resumable;
  }

}

/**
 * What the RabbitMQ streams say about a sweep's progress, entry by entry:
 * results, dead letters and re-drives, read incrementally (stream-reader.ts)
 * into one Progress.
 *
 * A chunk is settled when it has a result, or when it has a dead letter of
 * its genuine task that no re-drive covers. A re-drive (`ttg retry-dead`,
 * redrive.ts) is an entry of the stream `<p>.redrives` naming the chunk and
 * the dead-letter stream's length when the chunk was put back on the queue
 * (`dead_before`): the chunk's dead letters below that offset are re-driven,
 * and a later one means it died again. Positions, not counts, so the order in
 * which the two streams are read does not matter.
 */
import type { ConsumeMessage } from 'amqplib';
import { chunkIndexOf, type DeadLetter, type SweepSettings } from '../../core/sweep.js';
import { parseResultFields, parseTaskJson } from '../messages.js';
import { brokerDeadLetterReason, clip, headerCount, headersOf, headerText, jsonObject, RABBIT_HEADERS, streamOffset } from './names.js';

export interface Progress {
  /** The connection it was read on: a new one may follow a reset, so reading starts over. */
  gen: number;
  resultsNext: number;
  deadNext: number;
  redrivesNext: number;
  /** Result entries read, duplicates included. */
  results: number;
  /** Chunks of this sweep with a result. */
  done: Set<string>;
  /** Per chunk of this sweep: the offset of its last genuine dead letter. */
  lastDead: Map<string, number>;
  /** Per chunk: its dead letters below this offset were re-driven. */
  redrivenBelow: Map<string, number>;
  /** Chunks of this sweep with a result, or a dead letter no re-drive covers. */
  settled: Set<string>;
}

export function freshProgress(gen: number): Progress {
  return {
    gen, resultsNext: 0, deadNext: 0, redrivesNext: 0, results: 0, done: new Set(), lastDead: new Map(),
    redrivenBelow: new Map(), settled: new Set(),
  };
}

/** Is this chunk dead now: a dead letter at or past its last re-drive? */
export function deadNow(lastDead: number | undefined, redrivenBelow: number | undefined): boolean {
  return lastDead !== undefined && lastDead >= (redrivenBelow ?? 0);
}

function resettle(p: Progress, chunkId: string): void {
  if (p.done.has(chunkId) || deadNow(p.lastDead.get(chunkId), p.redrivenBelow.get(chunkId))) p.settled.add(chunkId);
  else p.settled.delete(chunkId);
}

/** A dead-letter stream entry: its headers, and its body parsed with the sweep's settings (task null if not a chunk). */
export function deadLetterOf(msg: ConsumeMessage, settings: SweepSettings | null): DeadLetter {
  const headers = headersOf(msg);
  const parsed = parseTaskJson(msg.content.toString('utf8'), settings);
  // Moved here by the broker (past the task queue's delivery limit): the x-ttg-* headers, if any, are an earlier failure's.
  const byBroker = brokerDeadLetterReason(headers);
  return {
    chunkId: headerText(headers[RABBIT_HEADERS.chunkId]) ?? (parsed.ok ? parsed.task.chunkId : clip(parsed.chunkId)),
    reason: byBroker ?? headerText(headers[RABBIT_HEADERS.reason]) ?? (parsed.ok ? 'unknown' : parsed.reason),
    attempts: headerCount(headers[RABBIT_HEADERS.attempts]) ?? 0,
    workerId: byBroker ? '?' : headerText(headers[RABBIT_HEADERS.worker]) ?? '?',
    task: parsed.ok ? parsed.task : null,
  };
}

/** A result entry: counted, and its chunk done, if it is a well-formed result of a chunk of the sweep. */
export function countResult(p: Progress, msg: ConsumeMessage, total: number): void {
  const fields = jsonObject(msg.content);
  const result = fields ? parseResultFields(fields) : null;
  if (!result) return;
  p.results++;
  if (chunkIndexOf(result.chunkId, total) !== null) {
    p.done.add(result.chunkId);
    p.settled.add(result.chunkId);
  }
}

/** A result this session published (a well-formed result of a chunk it computed): counted by the chunk id in its correlation-id. */
export function countOwnResult(p: Progress, msg: ConsumeMessage, total: number): void {
  p.results++;
  const id: unknown = msg.properties.correlationId;
  const chunkId = typeof id === 'string' ? id : undefined;
  if (chunkId !== undefined && chunkIndexOf(chunkId, total) !== null) {
    p.done.add(chunkId);
    p.settled.add(chunkId);
  }
}

/**
 * Only a dead letter of the chunk's genuine task settles it: deadLetterOf parses with the sweep's
 * settings, so a task that is not exactly a chunk comes back null.
 */
export function countDeadLetter(p: Progress, msg: ConsumeMessage, settings: SweepSettings): void {
  const dead = deadLetterOf(msg, settings);
  const offset = streamOffset(msg);
  if (!dead.task || offset === null) return;
  p.lastDead.set(dead.task.chunkId, Math.max(offset, p.lastDead.get(dead.task.chunkId) ?? -1));
  resettle(p, dead.task.chunkId);
}

export function countRedrive(p: Progress, msg: ConsumeMessage, total: number): void {
  const record = redriveRecordOf(msg);
  if (!record || chunkIndexOf(record.chunkId, total) === null) return;
  p.redrivenBelow.set(record.chunkId, Math.max(record.deadBefore, p.redrivenBelow.get(record.chunkId) ?? 0));
  resettle(p, record.chunkId);
}

/** A re-drive record as it travels in `<p>.redrives`. */
export interface RedriveRecord {
  chunkId: string;
  /** The dead-letter stream's length when the chunk was put back: its dead letters below this offset are re-driven. */
  deadBefore: number;
  redrivenAt: string;
}

export function redriveBody(record: RedriveRecord): Buffer {
  return Buffer.from(JSON.stringify({ chunk_id: record.chunkId, dead_before: record.deadBefore, redriven_at: record.redrivenAt }));
}

export function redriveRecordOf(msg: ConsumeMessage): RedriveRecord | null {
  const fields = jsonObject(msg.content);
  const chunkId = fields?.['chunk_id'];
  const deadBefore = fields?.['dead_before'];
  if (typeof chunkId !== 'string' || typeof deadBefore !== 'number' || !Number.isSafeInteger(deadBefore) || deadBefore < 0) return null;
  return { chunkId, deadBefore, redrivenAt: String(fields?.['redriven_at'] ?? '') };
}

/**
 * The RabbitMQ backend's names, headers and topology (see backend.ts for
 * what each queue is for), and small helpers for messages and errors.
 */
import type { Channel, ConsumeMessage, Options } from 'amqplib';
import { redact } from '../../core/log.js';
import type { RabbitConnection } from './options.js';

/** Every queue and exchange name of a sweep, built in one place. */
export function rabbitNames(prefix: string) {
  return {
    exchange: `${prefix}.exchange`,
    tasks: `${prefix}.tasks`,
    retry: `${prefix}.tasks.retry`,
    dlq: `${prefix}.tasks.dlq`,
    results: `${prefix}.results`,
    meta: `${prefix}.meta`,
    ready: `${prefix}.meta.ready`,
    initLock: `${prefix}.init-lock`,
    consumer: (name: string) => `${prefix}.consumers.${name}`,
  };
}
export type Names = ReturnType<typeof rabbitNames>;

/** Headers this backend sets (and reads back). */
export const RABBIT_HEADERS = {
  /** Failed attempts so far (on retry copies and dead letters). */
  attempts: 'x-ttg-attempts',
  /** Why the last attempt failed. */
  reason: 'x-ttg-reason',
  /** WORKER_ID of the worker that failed it last. */
  worker: 'x-ttg-worker',
  chunkId: 'x-ttg-chunk-id',
  failedAt: 'x-ttg-failed-at',
  /** End-of-read marker in a stream (see the file comment). */
  marker: 'x-ttg-marker',
} as const;

export const STREAM: Options.AssertQueue = { durable: true, arguments: { 'x-queue-type': 'stream' } };
export const JSON_TYPE = 'application/json';
/** Longest AMQP heartbeat asked for (seconds), and the one asked for when no stale threshold is given. */
const MAX_HEARTBEAT_SECONDS = 15;
/** Reasons and ids travel in headers, which must stay small (amqplib refuses tables over 64 KiB). */
const MAX_HEADER_TEXT = 1000;

/**
 * Declares the sweep's exchange and queues, idempotently (every worker, on
 * every connection). The retry queue dead-letters back to the task queue;
 * its delay is a per-message expiration, because RabbitMQ refuses to
 * redeclare a queue with other arguments (x-message-ttl would tie every
 * worker to one RETRY_DELAY_MS).
 */
export async function declareTopology(ch: Channel, n: Names): Promise<void> {
  await ch.assertExchange(n.exchange, 'direct', { durable: true });
  await ch.assertQueue(n.tasks, { durable: true });
  await ch.assertQueue(n.retry, { durable: true, deadLetterExchange: n.exchange, deadLetterRoutingKey: n.tasks });
  await ch.assertQueue(n.dlq, STREAM);
  await ch.assertQueue(n.results, STREAM);
  await ch.assertQueue(n.meta, STREAM);
  for (const queue of [n.tasks, n.retry, n.dlq, n.results]) await ch.bindQueue(queue, n.exchange, queue);
}

export function errorCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}

export function describe(err: unknown): string {
  return redact(err instanceof Error ? err.message : String(err));
}

export function clip(text: string): string {
  return text.length > MAX_HEADER_TEXT ? `${text.slice(0, MAX_HEADER_TEXT)}…` : text;
}

export function headerText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number') return String(value);
  return undefined;
}

export function headerCount(value: unknown): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

export function headersOf(msg: ConsumeMessage): Record<string, unknown> {
  return (msg.properties.headers ?? {}) as Record<string, unknown>;
}

/** Failed attempts recorded on a message (0 for a first delivery, or for a header nobody should trust). */
export function attemptsOf(msg: ConsumeMessage): number {
  return Math.min(headerCount(headersOf(msg)[RABBIT_HEADERS.attempts]) ?? 0, 1_000_000);
}

export function streamOffset(msg: ConsumeMessage): number | null {
  const v = headersOf(msg)['x-stream-offset'];
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : null;
}

export function jsonObject(content: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(content.toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * The AMQP heartbeat (seconds) for STALE_THRESHOLD_MS: the broker closes a silent connection after two
 * to three heartbeats and requeues its chunks, so a third of the threshold (whole seconds, 1 to 15) makes
 * a frozen or cut-off worker's chunks come back within the threshold, as Redis's stale recovery does.
 */
export function heartbeatSeconds(staleThresholdMs: number | undefined): number {
  if (staleThresholdMs === undefined) return MAX_HEARTBEAT_SECONDS;
  return Math.min(MAX_HEARTBEAT_SECONDS, Math.max(1, Math.floor(staleThresholdMs / 3000)));
}

/** The URL amqplib gets: AMQP_URL or the RABBITMQ_* parts, with a heartbeat (heartbeatSeconds) unless it names one. */
export function connectionUrl(connection: RabbitConnection, staleThresholdMs?: number): string {
  try {
    const url = new URL(connection.url);
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(heartbeatSeconds(staleThresholdMs)));
    return url.toString();
  } catch {
    return connection.url;
  }
}


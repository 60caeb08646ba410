/**
 * The RabbitMQ backend's names, headers and topology (see backend.ts for
 * what each queue is for), and small helpers for messages and errors.
 */
import type { Channel, ConsumeMessage, Options } from 'amqplib';
import { QueueLayoutError } from '../../core/errors.js';
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
    /** Exchange used as a flag: a creator began writing `meta` (init-lock.ts, #start). */
    begun: `${prefix}.meta.begun`,
    initLock: `${prefix}.init-lock`,
    consumer: (name: string) => `${prefix}.consumers.${name}`,
    /** Stream: one entry per chunk put back on the queue by `ttg retry-dead` (redrive.ts). */
    redrives: `${prefix}.redrives`,
    /** Exclusive queue: the mutex of re-driving, so two `ttg retry-dead` never queue a chunk twice. */
    redriveLock: `${prefix}.redrive-lock`,
    /** Stream: one entry per worker process that joined the sweep (joined.ts). */
    joined: `${prefix}.joined`,
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
  /** The chunk, on retry copies and dead letters (a result carries it in its correlation-id). */
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
 * The task queue hands a chunk out at most this many times more without an
 * acknowledgement (a worker crashing, cut off or handing it back with it in
 * hand); then the broker moves it to the dead-letter stream instead of
 * looping for ever on a chunk that kills every worker taking it. Set
 * explicitly, because RabbitMQ 4 would otherwise impose a default of 20 (and
 * 3.x none), and high, because kill storms, broker restarts and shutdowns
 * each return every chunk a worker holds (quorum queues count those too).
 */
export const TASK_DELIVERY_LIMIT = 100;

/**
 * Quorum queues with at-least-once dead-lettering: a message the queue
 * dead-letters (a retry whose delay ran out, a task past its delivery limit)
 * stays in it until the target queue has confirmed the copy, so a broker
 * dying at that instant loses nothing (classic queues dead-letter at most
 * once). RabbitMQ applies the strategy only with `x-overflow:
 * reject-publish` (with drop-head it silently falls back to at-most-once);
 * there is no length limit, so nothing is ever rejected.
 */
const QUORUM_AT_LEAST_ONCE = {
  'x-queue-type': 'quorum',
  'x-dead-letter-strategy': 'at-least-once',
  'x-overflow': 'reject-publish',
} as const;

/** `p.tasks`: the chunks; past TASK_DELIVERY_LIMIT deliveries a chunk goes to `p.tasks.dlq`. */
export function taskQueueOptions(n: Names): Options.AssertQueue {
  return {
    durable: true,
    arguments: {
      ...QUORUM_AT_LEAST_ONCE, 'x-dead-letter-exchange': n.exchange, 'x-dead-letter-routing-key': n.dlq,
      'x-delivery-limit': TASK_DELIVERY_LIMIT,
    },
  };
}

/**
 * `p.tasks.retry`: a failed chunk waits out its delay (a per-message
 * expiration, which quorum queues honour from RabbitMQ 3.10 on), then the
 * broker dead-letters it back to `p.tasks`. Per message rather than
 * x-message-ttl, because a queue cannot be redeclared with other arguments
 * (x-message-ttl would tie every worker to one RETRY_DELAY_MS).
 */
export function retryQueueOptions(n: Names): Options.AssertQueue {
  return {
    durable: true,
    arguments: { ...QUORUM_AT_LEAST_ONCE, 'x-dead-letter-exchange': n.exchange, 'x-dead-letter-routing-key': n.tasks },
  };
}

/** Where a sweep lives, for error messages. */
export interface TopologyContext {
  address: string;
  prefix: string;
}

/** Runs fn on a channel of its own (RabbitSession.probe). */
export type Probe = <T>(fn: (ch: Channel) => Promise<T>) => Promise<T>;

/**
 * Declares the sweep's exchange and queues, idempotently (every worker, on
 * every connection). A queue of the same name declared with other arguments
 * (the classic queues an older ttg made) makes the broker refuse
 * (PRECONDITION_FAILED): that becomes one error saying to run `ttg reset`,
 * raised before anything is consumed, since waiting cannot fix it. Each
 * queue is declared, then bound, on a channel of its own, all at once: a
 * round trip or two in all rather than one per declaration (the broker
 * creates quorum queues and streams in tens of milliseconds each); the error
 * thrown is the first in the order of the list, whichever came back first.
 */
export async function declareTopology(probe: Probe, n: Names, where: TopologyContext): Promise<void> {
  const exchange = probe((ch) => ch.assertExchange(n.exchange, 'direct', { durable: true }));
  const queues: Array<[string, Options.AssertQueue, boolean]> = [
    [n.tasks, taskQueueOptions(n), true], [n.retry, retryQueueOptions(n), true], [n.dlq, STREAM, true], [n.results, STREAM, true],
    [n.meta, STREAM, false], [n.joined, STREAM, false],
  ];
  const declared = queues.map(([queue, options, bound]) => probe(async (ch) => {
    try {
      await ch.assertQueue(queue, options);
    } catch (err) {
      if (errorCode(err) === 406) throw new QueueLayoutError(layoutMessage(queue, options, where, err), { cause: err });
      throw err;
    }
    if (!bound) return;
    await exchange;
    await ch.bindQueue(queue, n.exchange, queue);
  }));
  for (const outcome of await Promise.allSettled([exchange, ...declared])) {
    if (outcome.status === 'rejected') throw outcome.reason;
  }
}

function layoutMessage(queue: string, options: Options.AssertQueue, where: TopologyContext, err: unknown): string {
  const type = String(options.arguments?.['x-queue-type'] ?? 'classic');
  const text = describe(err);
  const broker = /PRECONDITION_FAILED - ([^"]+)/.exec(text)?.[1] ?? text;
  return `RabbitMQ at ${where.address} already has a queue ${queue} that is not the ${type} queue this ttg declares ` +
    `(the broker says: ${broker}): it is left from a sweep made by an older ttg, which used classic queues. ` +
    `Run 'ttg reset' with QUEUE_PREFIX=${where.prefix} to delete that sweep ('ttg aggregate' still reads it first, ` +
    'if its results matter), then start the workers again';
}

export function errorCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}

/**
 * A 404 for a queue that exists but is not running on the broker ("home node
 * ... is down or inaccessible"), as streams say for a moment while they start
 * after a broker restart: not "no such queue", and waiting is the answer.
 */
export function isQueueDown(err: unknown): boolean {
  return errorCode(err) === 404 && /is down or inaccessible/.test(describe(err));
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

/**
 * Why the broker itself dead-lettered a message into the dead-letter stream,
 * or undefined for ttg's own dead letters (published with a fresh header
 * table, so without the broker's x-first-death-* headers). The only such
 * route is the task queue's delivery limit (ttg never rejects without
 * requeue); the x-death list that would name it does not survive a stream,
 * and x-first-death-reason may name an earlier hop (the retry delay).
 */
export function brokerDeadLetterReason(headers: Record<string, unknown>): string | undefined {
  const first = headerText(headers['x-first-death-reason']);
  if (first === undefined) return undefined;
  const queue = headerText(headers['x-first-death-queue']) ?? 'the task queue';
  if (first === 'rejected' && !queue.endsWith('.retry')) return `rejected without requeue by a consumer of ${queue}`;
  return `handed out more than ${TASK_DELIVERY_LIMIT} times without ever being acknowledged (the task queue's ` +
    'x-delivery-limit): each worker holding it crashed, was cut off or handed it back; the broker dead-lettered it';
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


/**
 * Reading the RabbitMQ streams (results, dead letters, the sweep's
 * settings) without consuming them.
 *
 * A stream consumer reads from an offset and removes nothing, so `ttg
 * aggregate` can run again and again, alongside workers and other readers,
 * and sees the entries in the order they were written. Where a stream ends
 * AMQP 0-9-1 does not tell (RabbitMQ 3.x reports 0 messages for a stream in
 * queue.declare-ok). Readers that must see everything (readResults,
 * readDeadLetters) attach a consumer, then publish a marker message with a
 * random id (confirmed) and read until that marker: every entry confirmed
 * before the read began lies before it. Markers are skipped by every reader
 * and counted nowhere. Polling readers (isSettled, stats, every few
 * seconds) write nothing: they read on from a cached offset until the
 * stream is quiet for a moment, so they may lag but never over-count. A
 * worker waiting for tasks follows the streams instead (follow()): its
 * progress is then current without a quiet spell, and it is told the
 * moment the last chunk settles, so it leaves at once.
 */
import { randomUUID } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import { TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import {
  chunkCount, chunkIndexOf, settingsFromRecord, unreadableSettingsMessage, type ChunkResult, type DeadLetter, type SweepSettings,
} from '../../core/sweep.js';
import { parseResultFields, parseTaskJson } from '../messages.js';
import {
  clip, errorCode, headerCount, headersOf, headerText, jsonObject, RABBIT_HEADERS, streamOffset, type Names,
} from './names.js';
import { SessionLostError, type Link, type RabbitSession } from './session.js';

const MARKER_BODY = Buffer.from('{"ttg_marker":"end-of-read marker written by a reader; neither a task nor a result"}');
/** Stream consumers need a prefetch (credit); acks give it back. */
const STREAM_PREFETCH = 1000;
/** A follower acknowledges its stream entries this many at a time (well below STREAM_PREFETCH). */
const FOLLOW_ACK_EVERY = 100;
/** A polling read stops once its stream has been quiet this long. */
const POLL_QUIET_MS = 200;
/** A read that must reach its end gives up after this long without any message. */
const READ_STALL_MS = 30_000;

/** Where a read ends: at this reader's own marker, at the first entry, or after a quiet spell. */
export type StreamEnd = 'marker' | 'first-entry' | { quietMs: number };

/** Polling progress, read incrementally from the results and dead-letter streams. */
export interface Progress {
  /** The connection it was read on: a new one may follow a reset, so reading starts over. */
  gen: number;
  resultsNext: number;
  deadNext: number;
  /** Result entries read, duplicates included. */
  results: number;
  /** Chunks of this sweep with a result. */
  done: Set<string>;
  /** Chunks of this sweep with a result or a dead letter of the genuine task. */
  settled: Set<string>;
}

function freshProgress(gen: number): Progress {
  return { gen, resultsNext: 0, deadNext: 0, results: 0, done: new Set(), settled: new Set() };
}

/** A dead-letter stream entry: its headers, and its body parsed with the sweep's settings (task null if not a chunk). */
export function deadLetterOf(msg: ConsumeMessage, settings: SweepSettings | null): DeadLetter {
  const headers = headersOf(msg);
  const parsed = parseTaskJson(msg.content.toString('utf8'), settings);
  return {
    chunkId: headerText(headers[RABBIT_HEADERS.chunkId]) ?? (parsed.ok ? parsed.task.chunkId : clip(parsed.chunkId)),
    reason: headerText(headers[RABBIT_HEADERS.reason]) ?? (parsed.ok ? 'unknown' : parsed.reason),
    attempts: headerCount(headers[RABBIT_HEADERS.attempts]) ?? 0,
    workerId: headerText(headers[RABBIT_HEADERS.worker]) ?? '?',
    task: parsed.ok ? parsed.task : null,
  };
}

/** A result entry: counted, and its chunk done, if it is a well-formed result of a chunk of the sweep. */
function countResult(p: Progress, msg: ConsumeMessage, total: number): void {
  const fields = jsonObject(msg.content);
  const result = fields ? parseResultFields(fields) : null;
  if (!result) return;
  p.results++;
  if (chunkIndexOf(result.chunkId, total) !== null) {
    p.done.add(result.chunkId);
    p.settled.add(result.chunkId);
  }
}

/** A result this session published (a well-formed result of a chunk it computed): counted from its header. */
function countOwnResult(p: Progress, msg: ConsumeMessage, total: number): void {
  p.results++;
  const chunkId = headerText(headersOf(msg)[RABBIT_HEADERS.chunkId]);
  if (chunkId !== undefined && chunkIndexOf(chunkId, total) !== null) {
    p.done.add(chunkId);
    p.settled.add(chunkId);
  }
}

/**
 * Only a dead letter of the chunk's genuine task settles it: deadLetterOf parses with the sweep's
 * settings, so a task that is not exactly a chunk comes back null.
 */
function countDeadLetter(p: Progress, msg: ConsumeMessage, settings: SweepSettings): void {
  const dead = deadLetterOf(msg, settings);
  if (dead.task) p.settled.add(dead.task.chunkId);
}

export class StreamReader {
  readonly #session: RabbitSession;
  readonly #names: Names;
  readonly #prefix: string;
  #progress: Progress = freshProgress(0);
  #progressChain: Promise<unknown> = Promise.resolve();
  /** The channel following the streams on connection `gen`, if any (see follow()). */
  #following: { gen: number; closing: () => void; committed: (chunkId: string) => void } | null = null;

  constructor(session: RabbitSession, names: Names, prefix: string) {
    this.#session = session;
    this.#names = names;
    this.#prefix = prefix;
  }

  /** Forgets what was polled (after a reset). */
  forget(): void {
    this.#following?.closing();
    this.#following = null;
    this.#progress = freshProgress(-1);
  }

  /**
   * Follows the results and dead letters from where the last poll stopped,
   * keeping the progress current (poll() then answers at once), and calls
   * `onSettled` when every chunk is accounted for. Ends with its connection.
   */
  follow(s: Link, settings: SweepSettings, onSettled: () => void): Promise<void> {
    if (this.#following?.gen === s.gen) return Promise.resolve();
    const total = chunkCount(settings);
    const own = this.#session.messageIdPrefix;
    const run = async (): Promise<void> => {
      if (this.#following?.gen === s.gen || s.lost) return;
      if (this.#progress.gen !== s.gen) this.#progress = freshProgress(s.gen);
      const p = this.#progress;
      const ch = await this.#session.openChannel(s);
      const settledNow = () => {
        if (p.settled.size >= total) onSettled();
      };
      const committed = (chunkId: string) => {
        if (chunkIndexOf(chunkId, total) === null) return;
        p.done.add(chunkId);
        p.settled.add(chunkId);
        settledNow();
      };
      const following = { gen: s.gen, closing: () => void ch.close().catch(() => {}), committed };
      this.#following = following;
      ch.on('close', () => {
        if (this.#following === following) this.#following = null;
      });
      await ch.prefetch(STREAM_PREFETCH);
      // Acks give the stream its credit back: one for many (`allUpTo`, every entry here is read at
      // once), well within the prefetch, saves a frame and a socket write per result.
      let unacked = 0;
      // Never throw from here: amqplib would take the whole connection down.
      const onEntry = (stream: 'results' | 'dead') => (msg: ConsumeMessage | null) => {
        if (msg === null) return;
        try {
          if (++unacked >= FOLLOW_ACK_EVERY) {
            ch.ack(msg, true);
            unacked = 0;
          }
          const offset = streamOffset(msg);
          if (headersOf(msg)[RABBIT_HEADERS.marker] !== undefined) return;
          if (stream === 'results') {
            if (offset === null || offset < p.resultsNext) return;
            p.resultsNext = offset + 1;
            // This worker's own results need no reading: it wrote them, chunk id in the header.
            if (typeof msg.properties.messageId === 'string' && msg.properties.messageId.startsWith(own)) countOwnResult(p, msg, total);
            else countResult(p, msg, total);
          } else {
            if (offset === null || offset < p.deadNext) return;
            p.deadNext = offset + 1;
            countDeadLetter(p, msg, settings);
          }
          settledNow();
        } catch {
          // an entry we cannot read counts for nothing, as in poll()
        }
      };
      await ch.consume(this.#names.results, onEntry('results'), { arguments: { 'x-stream-offset': p.resultsNext } });
      await ch.consume(this.#names.dlq, onEntry('dead'), { arguments: { 'x-stream-offset': p.deadNext } });
      settledNow();
    };
    const next = this.#progressChain.then(run, run);
    this.#progressChain = next.catch(() => {});
    return next;
  }

  /**
   * A result this worker just had confirmed: counted at once while following, so the worker that
   * settles the last chunk knows it without waiting for the stream to bring its own result back.
   */
  noteCommitted(s: Link, chunkId: string): void {
    if (this.#following?.gen === s.gen) this.#following.committed(chunkId);
  }

  /** The sweep's settings, or null when there is no sweep (no ready flag). */
  async settings(s: Link): Promise<SweepSettings | null> {
    const n = this.#names;
    const flagged = await this.#session.probe(s, (ch) => ch.checkExchange(n.ready)).then(
      () => true,
      (err) => {
        if (errorCode(err) === 404) return false;
        throw err;
      },
    );
    if (!flagged) return null;
    let body: Buffer | null = null;
    const found = await this.read(s, n.meta, 0, 'first-entry', (msg) => {
      body = msg.content;
      return true;
    });
    const fields = body ? jsonObject(body) : null;
    const settings = fields ? settingsFromRecord(fields) : null;
    if (found === null || settings === null) throw new TtgError(unreadableSettingsMessage(n.meta, this.#prefix));
    return settings;
  }

  /**
   * Reads on from where the last poll stopped (serialized: concurrent polls
   * would count twice). `untilSettled`: stop as soon as every chunk is
   * accounted for (isSettled); otherwise read until quiet (stats).
   */
  poll(s: Link, settings: SweepSettings, untilSettled: boolean): Promise<Progress> {
    const total = chunkCount(settings);
    const run = async (): Promise<Progress> => {
      if (this.#progress.gen !== s.gen) this.#progress = freshProgress(s.gen);
      const p = this.#progress;
      const settled = () => untilSettled && p.settled.size >= total;
      // Followed: current already.
      if (settled() || this.#following?.gen === s.gen) return p;
      const quiet = { quietMs: POLL_QUIET_MS };
      const [resultsNext, deadNext] = await Promise.all([
        this.read(s, this.#names.results, p.resultsNext, quiet, (msg) => {
          countResult(p, msg, total);
          return settled();
        }),
        this.read(s, this.#names.dlq, p.deadNext, quiet, (msg) => {
          countDeadLetter(p, msg, settings);
          return settled();
        }),
      ]);
      if (resultsNext !== null) p.resultsNext = resultsNext;
      if (deadNext !== null) p.deadNext = deadNext;
      return p;
    };
    const next = this.#progressChain.then(run, run);
    this.#progressChain = next.catch(() => {});
    return next;
  }

  /**
   * Reads stream `queue` from offset `from`, calling onEntry for each entry
   * that is not a marker (onEntry returns true to stop). `end` says when the
   * read is over: at our own marker, at the first entry, or after a quiet
   * spell. Returns the offset to read on from, or null when there is no such stream.
   */
  async read(
    s: Link, queue: string, from: number, end: StreamEnd,
    onEntry: (msg: ConsumeMessage) => boolean | void,
  ): Promise<number | null> {
    const ch = await this.#session.openChannel(s);
    try {
      try {
        await ch.checkQueue(queue);
      } catch (err) {
        if (errorCode(err) === 404) return null;
        throw err;
      }
      await ch.prefetch(STREAM_PREFETCH);
      return await new Promise<number>((resolve, reject) => {
        const markerId = end === 'marker' ? randomUUID() : null;
        let next = from;
        let done = false;
        let timer: NodeJS.Timeout | undefined;
        const finish = (err?: unknown) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          ch.removeListener('close', onClose);
          if (err === undefined) resolve(next);
          else reject(err);
        };
        const arm = () => {
          clearTimeout(timer);
          timer = typeof end === 'object'
            ? setTimeout(() => finish(), end.quietMs)
            : setTimeout(() => finish(new TtgError(`reading ${queue} stalled: nothing came for ${READ_STALL_MS / 1000}s`)), READ_STALL_MS);
        };
        const onClose = () => finish(new SessionLostError(`the channel reading ${queue} closed`));
        ch.on('close', onClose);
        // Never throw from here: amqplib would take the whole connection down.
        const onMessage = (msg: ConsumeMessage | null) => {
          if (done) return;
          if (msg === null) {
            finish(new SessionLostError(`the broker cancelled the reader of ${queue} (deleted?)`));
            return;
          }
          try {
            ch.ack(msg);
            arm();
            const offset = streamOffset(msg);
            const marker = headersOf(msg)[RABBIT_HEADERS.marker];
            if (marker !== undefined) {
              if (markerId !== null && headerText(marker) === markerId) finish();
              return;
            }
            // A stream delivers whole chunks: entries before `from` may come first.
            if (offset === null || offset < next) return;
            next = offset + 1;
            if (onEntry(msg) === true) finish();
          } catch (err) {
            finish(err);
          }
        };
        arm();
        ch.consume(queue, onMessage, { noAck: false, arguments: { 'x-stream-offset': from } })
          .then(() => (markerId === null ? undefined : this.#session.publish(s, '', queue, MARKER_BODY, {
            headers: { [RABBIT_HEADERS.marker]: markerId },
          })))
          .catch((err: unknown) => finish(err));
      });
    } finally {
      ch.close().catch(() => {});
    }
  }

  /** Every result entry, duplicates included (entries that are not results are skipped, with a warning). */
  async results(s: Link, log: Logger): Promise<ChunkResult[]> {
    const out: ChunkResult[] = [];
    await this.read(s, this.#names.results, 0, 'marker', (msg) => {
      const fields = jsonObject(msg.content);
      const result = fields ? parseResultFields(fields) : null;
      if (result) out.push(result);
      else log.warn(`ignoring an entry of ${this.#names.results} that is not a chunk result`);
    });
    return out;
  }

  async deadLetters(s: Link, settings: SweepSettings | null): Promise<DeadLetter[]> {
    const out: DeadLetter[] = [];
    await this.read(s, this.#names.dlq, 0, 'marker', (msg) => {
      out.push(deadLetterOf(msg, settings));
    });
    return out;
  }

  async queueInfo(s: Link, queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    return this.#session.probe(s, (ch) => ch.checkQueue(queue)).catch((err: unknown) => {
      if (errorCode(err) === 404) return { messageCount: 0, consumerCount: 0 };
      throw err;
    });
  }

}

/**
 * Reading the RabbitMQ streams (results, dead letters, re-drives, who
 * joined, the sweep's settings) without consuming them and without writing
 * anything into them.
 *
 * A stream consumer reads from an offset and removes nothing, so `ttg
 * aggregate` can run again and again, alongside workers and other readers,
 * and sees the entries in the order they were written. Each read goes to
 * where the stream ended when it began (stream-read.ts says how that is
 * known). Polling readers (isSettled, stats) read on from a cached offset
 * (progress.ts keeps what they have seen). A worker waiting for tasks
 * follows the streams instead (follow()): its progress is then current
 * without reading anything again, and it is told the moment the last chunk
 * settles, so it leaves at once.
 */
import type { ConsumeMessage } from 'amqplib';
import { TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import {
  chunkCount, chunkIndexOf, settingsFromRecord, unreadableSettingsMessage, type ChunkResult, type DeadLetter, type SweepSettings,
} from '../../core/sweep.js';
import { parseResultFields } from '../messages.js';
import { describe, errorCode, headersOf, isQueueDown, jsonObject, RABBIT_HEADERS, STREAM, streamOffset, type Names } from './names.js';
import {
  countDeadLetter, countOwnResult, countRedrive, countResult, deadLetterOf, deadNow, freshProgress, redriveRecordOf, type Progress,
} from './progress.js';
import { SessionLostError, type Link, type RabbitSession } from './session.js';
import { consumeStream, readStream, STREAM_PREFETCH, type StreamEnd } from './stream-read.js';

export type { Progress } from './progress.js';

/** A follower acknowledges its stream entries this many at a time (well below STREAM_PREFETCH). */
const FOLLOW_ACK_EVERY = 100;
/** Longest a poll waits for the follower to bring back this session's own dead letters (then it answers as it stands). */
const OWN_DEAD_WAIT_MS = 2000;

/** Per chunk: how often it was re-driven, and below which dead-letter offset its letters are re-driven. */
export type RedriveSummary = Map<string, { count: number; deadBefore: number }>;

export class StreamReader {
  readonly #session: RabbitSession;
  readonly #names: Names;
  readonly #prefix: string;
  #progress: Progress = freshProgress(0);
  #progressChain: Promise<unknown> = Promise.resolve();
  /** The channel following the streams on connection `gen`, if any (see follow()). */
  #following: { gen: number; closing: () => void; committed: (chunkId: string) => void } | null = null;
  /** Message ids of dead letters this session published while following, not yet back through the follower. */
  #ownDead = new Set<string>();
  #ownDeadBack: Array<() => void> = [];

  constructor(session: RabbitSession, names: Names, prefix: string) {
    this.#session = session;
    this.#names = names;
    this.#prefix = prefix;
  }

  /**
   * First on every connection (a setup of the backend's): the sweep's queues that exist must be running.
   * Right after a broker restart they start one by one, and a read then would take the sweep for missing
   * (and a worker would give up for good); failing the connection attempt instead makes the session wait
   * and retry with backoff, for CONNECT_TIMEOUT_SECONDS at most.
   */
  async checkRunning(s: Link): Promise<void> {
    const n = this.#names;
    await Promise.all([n.meta, n.results, n.dlq, n.tasks, n.retry].map((queue) =>
      this.#session.probe(s, (ch) => ch.checkQueue(queue)).catch((err: unknown) => {
        if (isQueueDown(err)) throw new Error(`the queue ${queue} is not running on the broker yet (starting after a restart?): ${describe(err)}`);
        if (errorCode(err) !== 404) throw err;
      })));
  }

  /** A queue of the sweep went down under a read: drop the connection, so the call is made again on a new one, once it runs. */
  #queueDown(s: Link, queue: string): SessionLostError {
    const why = `the queue ${queue} is not running on the broker (restarting?)`;
    this.#session.lost(s, why);
    return new SessionLostError(why);
  }

  /**
   * A dead letter this session is about to publish under `messageId`: while following, a poll waits for the
   * follower to bring it back (this session reads its own writes). The function returned forgets it (not published).
   */
  expectOwnDeadLetter(s: Link, messageId: string): () => void {
    if (this.#following?.gen !== s.gen) return () => {};
    this.#ownDead.add(messageId);
    return () => this.#ownDeadSeen(messageId);
  }

  #ownDeadSeen(messageId: string | null): void {
    if (messageId === null) this.#ownDead.clear();
    else this.#ownDead.delete(messageId);
    if (this.#ownDead.size === 0) for (const back of this.#ownDeadBack.splice(0)) back();
  }

  /** Until the follower has brought back every dead letter of this session (OWN_DEAD_WAIT_MS at most). */
  #ownDeadIn(): Promise<void> {
    if (this.#ownDead.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, OWN_DEAD_WAIT_MS);
      this.#ownDeadBack.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Forgets what was polled (after a reset). */
  forget(): void {
    this.#following?.closing();
    this.#following = null;
    this.#progress = freshProgress(-1);
  }

  /**
   * Follows the results, dead letters and re-drives from where the last poll
   * stopped, keeping the progress current (poll() then answers at once), and
   * calls `onSettled` when every chunk is accounted for. Ends with its connection.
   */
  follow(s: Link, settings: SweepSettings, onSettled: () => void): Promise<void> {
    if (this.#following?.gen === s.gen) return Promise.resolve();
    const total = chunkCount(settings);
    const own = this.#session.messageIdPrefix;
    const run = async (): Promise<void> => {
      if (this.#following?.gen === s.gen || s.lost) return;
      if (this.#progress.gen !== s.gen) this.#progress = freshProgress(s.gen);
      const p = this.#progress;
      // The re-drive stream is made by the first `ttg retry-dead`: declared here, so a re-drive made
      // while this worker waits is followed too (a worker has joined the sweep: it declares its queues).
      await this.#session.probe(s, (c) => c.assertQueue(this.#names.redrives, STREAM));
      const ch = await this.#session.openChannel(s);
      let verifying = false;
      const settledNow = () => {
        if (p.settled.size < total || verifying) return;
        if (p.done.size >= total) return onSettled();
        verifying = true;
        this.#redrivesToEnd(s, p, total)
          .then(() => {
            if (p.settled.size >= total) onSettled();
          }, () => {})
          .finally(() => (verifying = false));
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
        if (this.#following !== following) return;
        this.#following = null;
        this.#ownDeadSeen(null);
      });
      await ch.prefetch(STREAM_PREFETCH);
      // Acks give the stream its credit back: one for many (`allUpTo`, every entry here is read at
      // once), well within the prefetch, saves a frame and a socket write per result.
      let unacked = 0;
      const position = { results: 'resultsNext', dead: 'deadNext', redrives: 'redrivesNext' } as const;
      // Never throw from here: amqplib would take the whole connection down.
      const onEntry = (stream: 'results' | 'dead' | 'redrives') => (msg: ConsumeMessage | null) => {
        if (msg === null) return;
        try {
          if (++unacked >= FOLLOW_ACK_EVERY) {
            ch.ack(msg, true);
            unacked = 0;
          }
          if (stream === 'dead' && typeof msg.properties.messageId === 'string') this.#ownDeadSeen(msg.properties.messageId);
          const offset = streamOffset(msg);
          if (headersOf(msg)[RABBIT_HEADERS.marker] !== undefined) return;
          if (offset === null || offset < p[position[stream]]) return;
          p[position[stream]] = offset + 1;
          if (stream === 'results') {
            // This worker's own results need no reading: it wrote them, chunk id in the header.
            if (typeof msg.properties.messageId === 'string' && msg.properties.messageId.startsWith(own)) countOwnResult(p, msg, total);
            else countResult(p, msg, total);
          } else if (stream === 'dead') countDeadLetter(p, msg, settings);
          else countRedrive(p, msg, total);
          settledNow();
        } catch {
          // an entry we cannot read counts for nothing, as in poll()
        }
      };
      await consumeStream(ch, this.#names.results, onEntry('results'), { arguments: { 'x-stream-offset': p.resultsNext } });
      await consumeStream(ch, this.#names.dlq, onEntry('dead'), { arguments: { 'x-stream-offset': p.deadNext } });
      await consumeStream(ch, this.#names.redrives, onEntry('redrives'), { arguments: { 'x-stream-offset': p.redrivesNext } });
      settledNow();
    };
    const next = this.#progressChain.then(run, run);
    this.#progressChain = next.catch(() => {});
    return next;
  }

  /**
   * Settled by a dead letter, as followed: the follower may have had the dead letter before the re-drive
   * that covers it (the three streams come in side by side, the re-drives' consumer attached last), so
   * the re-drives are read to their end before the sweep counts as settled.
   */
  async #redrivesToEnd(s: Link, p: Progress, total: number): Promise<void> {
    await readStream(this.#session, s, this.#names.redrives, p.redrivesNext, 'end', (msg) => countRedrive(p, msg, total));
  }

  /** Every chunk has a result, as read on this connection so far (results are final: no re-drive undoes one). */
  allDone(s: Link, total: number): boolean {
    return this.#progress.gen === s.gen && this.#progress.done.size >= total;
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
   * would count twice), to where each stream ended when the poll began.
   * `untilSettled`: stop as soon as every chunk has a result (isSettled).
   */
  poll(s: Link, settings: SweepSettings, untilSettled: boolean): Promise<Progress> {
    const total = chunkCount(settings);
    const run = async (): Promise<Progress> => {
      if (this.#progress.gen !== s.gen) this.#progress = freshProgress(s.gen);
      const p = this.#progress;
      // Results are final: once every chunk has one, the sweep is settled for good. A sweep settled by
      // dead letters is not (a re-drive may have put a chunk back since), so it is looked at again.
      const settled = () => untilSettled && p.done.size >= total;
      if (settled()) return p;
      // Followed: current already, once the follower has this session's own dead letters, and the
      // re-drives when a dead letter would settle the sweep.
      if (this.#following?.gen === s.gen) {
        await this.#ownDeadIn();
        if (untilSettled && p.settled.size >= total) await this.#redrivesToEnd(s, p, total);
        return p;
      }
      // Settled by the results, the other reads stop where they are (an empty stream would hold each for
      // EMPTY_STREAM_MS: a worker joining a finished sweep left 0.6 s after the last result).
      const enough = new AbortController();
      const counted = (): boolean => {
        if (!settled()) return false;
        enough.abort();
        return true;
      };
      const [resultsNext, deadNext] = await Promise.all([
        this.read(s, this.#names.results, p.resultsNext, 'end', (msg) => {
          countResult(p, msg, total);
          return counted();
        }),
        this.read(s, this.#names.dlq, p.deadNext, 'end', (msg) => {
          countDeadLetter(p, msg, settings);
          return counted();
        }, enough.signal),
      ]);
      // Re-drives after the dead letters: a re-drive only covers dead letters written before it, so one
      // made during this poll is seen with its dead letters, and the chunk counts as pending, never as dead.
      const redrivesNext = await this.read(s, this.#names.redrives, p.redrivesNext, 'end', (msg) => {
        countRedrive(p, msg, total);
      }, enough.signal);
      if (redrivesNext !== null) p.redrivesNext = redrivesNext;
      if (resultsNext !== null) p.resultsNext = resultsNext;
      if (deadNext !== null) p.deadNext = deadNext;
      return p;
    };
    const next = this.#progressChain.then(run, run);
    this.#progressChain = next.catch(() => {});
    return next;
  }

  /** Reads stream `queue` from `from` (stream-read.ts); the offset to read on from, or null when there is no such stream. */
  read(
    s: Link, queue: string, from: number, end: StreamEnd, onEntry: (msg: ConsumeMessage) => boolean | void, enough?: AbortSignal,
  ): Promise<number | null> {
    return readStream(this.#session, s, queue, from, end, onEntry, enough).catch((err: unknown) => {
      if (isQueueDown(err)) throw this.#queueDown(s, queue);
      throw err;
    });
  }

  /** Every result entry, duplicates included (entries that are not results are skipped, with a warning); up to `until`'s. */
  async results(s: Link, log: Logger, until?: (result: ChunkResult) => boolean): Promise<ChunkResult[]> {
    const out: ChunkResult[] = [];
    await this.read(s, this.#names.results, 0, 'end', (msg) => {
      const fields = jsonObject(msg.content);
      const result = fields ? parseResultFields(fields) : null;
      if (!result) {
        log.warn(`ignoring an entry of ${this.#names.results} that is not a chunk result`);
        return false;
      }
      out.push(result);
      return until?.(result) === true;
    });
    return out;
  }

  /** Per chunk, its re-drives (progress.ts). */
  async redrives(s: Link): Promise<RedriveSummary> {
    const out: RedriveSummary = new Map();
    await this.read(s, this.#names.redrives, 0, 'end', (msg) => {
      const record = redriveRecordOf(msg);
      if (!record) return;
      const seen = out.get(record.chunkId);
      out.set(record.chunkId, { count: (seen?.count ?? 0) + 1, deadBefore: Math.max(seen?.deadBefore ?? 0, record.deadBefore) });
    });
    return out;
  }

  /**
   * Every dead letter, in order, those a later re-drive put back on the queue marked `redriven`;
   * and the dead-letter stream's length (where a re-drive made now begins).
   */
  async deadLettersAndEnd(s: Link, settings: SweepSettings | null): Promise<{ letters: DeadLetter[]; end: number }> {
    const redrives = await this.redrives(s);
    const letters: DeadLetter[] = [];
    const end = await this.read(s, this.#names.dlq, 0, 'end', (msg) => {
      const letter = deadLetterOf(msg, settings);
      const offset = streamOffset(msg) ?? 0;
      const below = letter.task ? redrives.get(letter.task.chunkId)?.deadBefore : undefined;
      letters.push(below !== undefined && !deadNow(offset, below) ? { ...letter, redriven: true } : letter);
    });
    return { letters, end: end ?? 0 };
  }

  async deadLetters(s: Link, settings: SweepSettings | null): Promise<DeadLetter[]> {
    return (await this.deadLettersAndEnd(s, settings)).letters;
  }

  async queueInfo(s: Link, queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    return this.#session.probe(s, (ch) => ch.checkQueue(queue)).catch((err: unknown) => {
      if (isQueueDown(err)) throw this.#queueDown(s, queue);
      if (errorCode(err) === 404) return { messageCount: 0, consumerCount: 0 };
      throw err;
    });
  }

}

/**
 * Reading one RabbitMQ stream from an offset to where it ended when the
 * read began, without writing anything.
 *
 * AMQP 0-9-1 does not say where a stream ends: RabbitMQ 3.10's
 * queue.declare-ok gives a stream's message count only as its last
 * statistics tick saw it (every 5 s; 0 before the first tick), so it is a
 * hint, never the end. What is exact is the last chunk: a consumer
 * attached at `x-stream-offset: last` is sent the stream's last chunk at
 * once and whole (the broker reads a chunk in one piece and delivers every
 * entry of it, whatever the credit), so the first entry it gets is the
 * first offset of that chunk, and the rest of the chunk follows in the same
 * burst. A read therefore attaches two consumers on one channel: the reader
 * from `from`, and that probe. It is over once the reader has passed every
 * offset the probe has shown, and a short quiet spell of the probe has let
 * the rest of the last chunk's burst arrive (what the probe gets later was
 * written after the read began, and does not move its end). A stream that sends neither consumer
 * anything was empty when the read began.
 *
 * Entries carrying the `x-ttg-marker` header are skipped: older versions
 * of ttg wrote such end-of-read markers into the streams.
 */
import type { Channel, ChannelModel, ConsumeMessage, Options, Replies } from 'amqplib';
import type { Logger } from '../../core/log.js';
import { TtgError } from '../../core/errors.js';
import { describe, errorCode, headersOf, RABBIT_HEADERS, streamOffset } from './names.js';
import { SessionLostError, type Link, type RabbitSession } from './session.js';

/** Where a read ends: where the stream ended when the read began, or at its first entry. */
export type StreamEnd = 'end' | 'first-entry';

/** Stream consumers need a prefetch (credit); acks give it back. */
export const STREAM_PREFETCH = 1000;
/** Neither consumer got anything this long after attaching: the stream was empty. */
const EMPTY_STREAM_MS = 300;
/** Quiet on the probe after its last entry: the rest of the last chunk's burst is in. */
const TAIL_QUIET_MS = 50;
/**
 * The probe's entries count for this long after its first: later ones are chunks written since the read
 * began (a busy sweep writes results without pause), so a read of a live stream still ends.
 */
const PROBE_WINDOW_MS = 500;
/** A read that must reach its end gives up after this long without any message. */
const READ_STALL_MS = 30_000;

let consumerTags = 0;

/**
 * basic.consume on a stream, its handler registered before the broker
 * answers. A stream's consumer may be sent its first entries (or a cancel)
 * before basic.consume-ok, when the stream is busy starting; amqplib, which
 * registers a consumer only on consume-ok, then throws "Unknown consumer"
 * and closes the channel. With the tag chosen here and the handler already
 * in place, those entries reach it.
 */
export function consumeStream(
  ch: Channel, queue: string, onMessage: (msg: ConsumeMessage | null) => void, options: Options.Consume,
): Promise<Replies.Consume> {
  const consumerTag = `ttg-stream-${process.pid}-${++consumerTags}`;
  (ch as unknown as { registerConsumer?: (tag: string, cb: (msg: ConsumeMessage | null) => void) => void })
    .registerConsumer?.(consumerTag, onMessage);
  return ch.consume(queue, onMessage, { ...options, consumerTag });
}

/** How long a read waits for a stream that exists but does not run on this node yet (just declared). */
const STARTING_WAIT_MS = 10_000;

/**
 * Reads stream `queue` from offset `from`, calling onEntry for each entry
 * that is not a marker (onEntry returns true to stop). Returns the offset to
 * read on from, or null when there is no such stream.
 *
 * A stream declared a moment ago (by this worker or another) may refuse a
 * consumer with 406 "does not have a running replica on the local node"
 * until its replica has started: the read is tried again, on a new channel,
 * for STARTING_WAIT_MS. Nothing was read then, so nothing is read twice.
 */
export async function readStream(
  session: RabbitSession, s: Link, queue: string, from: number, end: StreamEnd,
  onEntry: (msg: ConsumeMessage) => boolean | void, enough?: AbortSignal,
): Promise<number | null> {
  const deadline = Date.now() + STARTING_WAIT_MS;
  for (let wait = 20; ; wait = Math.min(wait * 2, 500)) {
    let delivered = false;
    try {
      return await readOnce(session, s, queue, from, end, (msg) => {
        delivered = true;
        return onEntry(msg);
      }, enough);
    } catch (err) {
      if (delivered || s.lost || !isStreamStarting(err) || Date.now() + wait > deadline) throw err;
      await new Promise<void>((resolve) => setTimeout(resolve, wait));
    }
  }
}

/**
 * Resolves once each of `queues` (streams, just declared) takes a consumer. On a broker that has just
 * started, the first streams are declared before its stream coordinator is up: for a while, a publish to
 * one, or a consumer of it, makes the broker close the whole connection (506 "Stream not found", or 541
 * when it crashes the channel on `stream_not_found`). A creator that lost its connection so lost the
 * chunks in hand and its task publishing, which another worker took over: in a fault-suite run, 19 of 20
 * chunks were computed twice (and counted once). So the creator tries consumers on a connection apart
 * until every stream takes one, before anything is written to them. A safeguard only: when it cannot
 * tell (no second connection allowed, a refusal, STARTING_WAIT_MS gone by), it says why and resolves.
 */
export async function untilStreamsRun(session: RabbitSession, queues: string[], log: Logger): Promise<void> {
  const deadline = Date.now() + STARTING_WAIT_MS;
  for (let wait = 20; ; wait = Math.min(wait * 2, 500)) {
    let conn: ChannelModel | null = null;
    try {
      conn = await session.connectApart();
      conn.on('error', () => {});
      const apart = conn;
      await Promise.all(queues.map(async (queue) => {
        const ch = await apart.createChannel();
        ch.on('error', () => {});
        await ch.prefetch(1);
        await consumeStream(ch, queue, () => {}, { arguments: { 'x-stream-offset': 'next' } });
      }));
      return;
    } catch (err) {
      // Tried again: a stream not running yet (406), or not known yet (the connection closed: 541, and the
      // calls under way fail as "Channel ended"); not a refusal (403), which waiting would not change.
      if (conn === null || errorCode(err) === 403 || Date.now() + wait > deadline) {
        log.debug(`could not tell whether the sweep's streams run (${describe(err)}); going on`);
        return;
      }
    } finally {
      conn?.close().catch(() => {});
    }
    await new Promise<void>((resolve) => setTimeout(resolve, wait));
  }
}

/** The broker's answer to a consumer of a stream whose replica on this node has not started yet. */
function isStreamStarting(err: unknown): boolean {
  return err instanceof Error && /does not have a running replica/.test(err.message);
}

async function readOnce(
  session: RabbitSession, s: Link, queue: string, from: number, end: StreamEnd,
  onEntry: (msg: ConsumeMessage) => boolean | void, enough?: AbortSignal,
): Promise<number | null> {
  if (enough?.aborted) return from;
  const ch = await session.openChannel(s);
  try {
    let counted: number;
    try {
      // Only a hint (see above): whether the stream had entries at the broker's last statistics tick.
      counted = (await ch.checkQueue(queue)).messageCount;
    } catch (err) {
      if (errorCode(err) === 404) return null;
      throw err;
    }
    await ch.prefetch(STREAM_PREFETCH);
    return await consumeToEnd(ch, queue, from, end, counted, onEntry, enough);
  } finally {
    ch.close().catch(() => {});
  }
}

function consumeToEnd(
  ch: Channel, queue: string, from: number, end: StreamEnd, counted: number,
  onEntry: (msg: ConsumeMessage) => boolean | void, enough?: AbortSignal,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let next = from;
    // The highest offset the probe has shown: the last chunk's entries, as they were when the read began.
    let target = -1;
    let probeAnswered = false;
    let probeFirstAt = 0;
    let probeLastAt = 0;
    let heardAnything = false;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ch.removeListener('close', onClose);
      ch.removeListener('error', onError);
      enough?.removeEventListener('abort', onEnough);
      if (err === undefined) resolve(next);
      else reject(err);
    };
    // The caller has what it needs: the read ends where it is (`next`: the next read goes on from there).
    const onEnough = () => finish();
    const stalled = () => finish(new TtgError(`reading ${queue} stalled: nothing came for ${READ_STALL_MS / 1000}s`));
    // After every event: when the read may end, and what ends it.
    const schedule = () => {
      clearTimeout(timer);
      // Nothing from either consumer: an empty stream (waiting longer when it cannot be empty: the broker
      // counted entries, or earlier reads got entries below `from`; the probe's answer then comes, unless
      // the stream was deleted since).
      if (end === 'end' && !heardAnything) {
        timer = setTimeout(() => finish(), counted === 0 && from === 0 ? EMPTY_STREAM_MS : EMPTY_STREAM_MS * 10);
      } else if (end === 'end' && probeAnswered && next > target) {
        // Past the last chunk as the probe showed it: done once the probe has been quiet a moment (entries the
        // reader gets meanwhile were written since the read began; they are read, and do not hold it up).
        timer = setTimeout(() => finish(), Math.max(0, probeLastAt + TAIL_QUIET_MS - Date.now()));
      } else {
        timer = setTimeout(stalled, READ_STALL_MS);
      }
    };
    // The broker's reason, when it closed the channel (amqplib emits 'error' just before 'close').
    let closedBy = '';
    const onError = (err: Error) => { closedBy = `: ${err.message}`; };
    const onClose = () => finish(new SessionLostError(`the channel reading ${queue} closed${closedBy}`));
    ch.on('error', onError);
    ch.on('close', onClose);
    const cancelled = () => finish(new SessionLostError(`the broker cancelled the reader of ${queue} (deleted?)`));
    // Never throw from these: amqplib would take the whole connection down.
    const onMessage = (msg: ConsumeMessage | null) => {
      if (done) return;
      if (msg === null) return cancelled();
      try {
        ch.ack(msg);
        heardAnything = true;
        const offset = streamOffset(msg);
        // A stream delivers whole chunks: entries before `from` may come first.
        if (offset !== null && offset >= next && headersOf(msg)[RABBIT_HEADERS.marker] === undefined) {
          next = offset + 1;
          if (onEntry(msg) === true) return finish();
        } else if (offset !== null && offset >= next) {
          next = offset + 1;
        }
        if (!done) schedule(); // (onEntry may have told the read it had enough)
      } catch (err) {
        finish(err);
      }
    };
    const onProbe = (msg: ConsumeMessage | null) => {
      if (done) return;
      if (msg === null) return cancelled();
      try {
        ch.ack(msg);
        const now = Date.now();
        if (probeAnswered && now - probeFirstAt > PROBE_WINDOW_MS) return;
        if (!probeAnswered) probeFirstAt = now;
        heardAnything = true;
        probeAnswered = true;
        probeLastAt = now;
        target = Math.max(target, streamOffset(msg) ?? -1);
        schedule();
      } catch (err) {
        finish(err);
      }
    };
    if (enough?.aborted) return finish();
    enough?.addEventListener('abort', onEnough, { once: true });
    schedule();
    (async () => {
      await consumeStream(ch, queue, onMessage, { noAck: false, arguments: { 'x-stream-offset': from } });
      if (end !== 'end') return;
      await consumeStream(ch, queue, onProbe, { noAck: false, arguments: { 'x-stream-offset': 'last' } });
      // The empty-stream wait starts once both consumers are attached.
      if (!done) schedule();
    })().catch((err: unknown) => finish(err));
  });
}

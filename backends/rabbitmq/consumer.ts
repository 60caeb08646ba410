/**
 * The task consumer and the ownership of deliveries.
 *
 * Consuming starts with the first take(), with a prefetch of PREFETCH (more
 * only if a caller asks take() for more at once; the worker loop never
 * does), and starts again on every new connection. A delivery is ours only
 * while the connection it came on lives: after a loss the broker redelivers
 * it, so complete() and fail() answer false / 'not-owner' for it. release()
 * cancels the consumer before handing chunks back, or the broker would give
 * them straight back to this worker.
 *
 * Acknowledgements leave at most once per ACK_SPACING_MS (at the end of the
 * turn when none left for that long), not one frame per chunk: the
 * deliveries completed since the last flush that form a contiguous run
 * from the oldest unsettled one are acknowledged with one `multiple` ack of
 * the run's last tag; completed ones beyond a gap (a chunk still being
 * computed) are acknowledged one by one, so that no delivery is ever
 * acknowledged before its own result was confirmed and the prefetch window
 * never waits on a slow chunk.
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import type { Logger } from '../../core/log.js';
import { describe } from './names.js';
import { SessionLostError, type Link, type RabbitSession } from './session.js';

/**
 * Least time between two flushes of acknowledgements. RabbitMQ (3.10 at least) turns each ack frame on a
 * quorum queue into a Raft command of the channel; with 32 of them not yet applied the channel holds later
 * acks back, and a channel closed meanwhile hands those chunks back to the queue, done and counted as they
 * are (a sweep seen settled then had 337 tasks ready again; a plain amqplib client acking 3,000 deliveries
 * one frame each and closing its channel 20 ms later lost 2,966 of the acks). Spaced this far apart, the
 * frames stay well under that limit unless the queue takes 160 ms to apply one, and the broker's window
 * still gets its room back well within the time a worker holds chunks for (HOLD_SECONDS).
 */
export const ACK_SPACING_MS = 5;
/** Most single acks (completions past a chunk still in hand) a flush sends; the rest go with the next flush. */
export const SINGLE_ACKS = 16;

/** What Delivery.handle holds: the message and the connection it came on. */
export class TaskHandle {
  settled = false;
  /** Settled by an ack that has not been sent yet (see TaskConsumer#flushAcks). */
  ackDue = false;
  constructor(
    readonly owner: TaskConsumer,
    readonly gen: number,
    readonly msg: ConsumeMessage,
  ) {}
}

export class TaskConsumer {
  readonly #session: RabbitSession;
  readonly #queue: string;
  readonly #log: Logger;
  readonly #tag: (link: Link, prefetch: number) => string;
  /** Messages delivered and not yet handed out by take(). */
  #buffer: TaskHandle[] = [];
  /** Deliveries of the consumer channel not yet acknowledged to the broker, in delivery-tag order. */
  #unacked: { channel: Channel; handles: TaskHandle[] } | null = null;
  #flushScheduled = false;
  /** The flush waiting out ACK_SPACING_MS, if any. */
  #ackTimer: NodeJS.Timeout | null = null;
  #lastFlush = 0;
  /** Set by the first take(): (re)connections start the consumer. */
  wanted = false;
  /**
   * The consumer's prefetch: PREFETCH, or more for a caller that asks take()
   * for more at once.
   */
  prefetch: number;

  constructor(session: RabbitSession, queue: string, prefetch: number, log: Logger, tag: (link: Link, prefetch: number) => string) {
    this.#session = session;
    this.#queue = queue;
    this.prefetch = prefetch;
    this.#log = log;
    this.#tag = tag;
    // Deliveries of a lost connection are no longer ours.
    session.onLost((link) => {
      this.#buffer = this.#buffer.filter((h) => h.gen !== link.gen);
    });
    session.addReadyHook(async (link) => {
      if (this.wanted) await this.ensure(link);
    });
  }

  get buffered(): number {
    return this.#buffer.length;
  }

  /** Starts consuming on `link` now, ahead of the first take() (which waits for it); a failure is take()'s to see. */
  start(link: Link): void {
    this.wanted = true;
    this.ensure(link).catch(() => {});
  }

  /**
   * Opens the consumer's channel and sets its prefetch now, beside the sweep's creation, so that start()
   * has only basic.consume left to do (two round trips fewer on the way to the first chunk). A failure
   * is start()'s to see.
   */
  prepare(link: Link): void {
    const run = async (): Promise<void> => {
      if (link.lost || link.consumer) return;
      const channel = await this.#openChannel(link);
      await channel.prefetch(this.prefetch);
      link.consumerQos = this.prefetch;
    };
    void serially(link, run).catch(() => {});
  }

  /** The consumer's channel on `link`: lost with the connection, or the session told when it closes. */
  async #openChannel(link: Link): Promise<Channel> {
    const channel = await link.conn.createChannel();
    link.consumer = channel;
    link.consumerQos = 0; // a new channel's prefetch is unlimited until set
    channel.on('error', (err: Error) => this.#log.debug(`RabbitMQ task channel error: ${describe(err)}`));
    channel.on('close', () => {
      if (link.consumer === channel) this.#session.lost(link, 'the task channel closed');
    });
    return channel;
  }

  /** Up to `max` buffered messages, waiting at most until `deadline` for the first. */
  async take(max: number, deadline: number, closed: () => boolean): Promise<TaskHandle[]> {
    this.wanted = true;
    this.prefetch = Math.min(65535, Math.max(this.prefetch, Math.floor(max)));
    const link = this.#session.current;
    if (link?.consumerTag) {
      // Consuming already: a restart with a larger prefetch goes on behind, and what is buffered is returned now
      // (on a busy broker its two round trips would hold up the worker loop after its last chunk).
      this.ensure(link).catch((err: unknown) => this.#log.debug(`could not restart the task consumer (${describe(err)})`));
    } else if (link) {
      await this.ensure(link).catch((err: unknown) => {
        if (!link.lost) throw err;
      });
    } else {
      // Reconnecting: the new connection starts the consumer and wakes us; a failure past the bound is the session's.
      this.#session.ensure().catch(() => {});
    }
    while (this.#buffer.length === 0) {
      if (this.#session.failure) throw this.#session.failure;
      if (closed()) {
        // Let the socket in once: a caller taking in a loop (the sweep settled, then re-driven) gets what came.
        await new Promise<void>((resolve) => setImmediate(resolve));
        break;
      }
      const left = deadline - Date.now();
      if (left <= 0) return [];
      await this.#session.waitForSignal(left);
    }
    return this.#buffer.splice(0, Math.max(0, Math.floor(max)));
  }

  /**
   * Starts the consumer with the wanted prefetch, or restarts it with a
   * larger one: a new consumer on the same channel, the old one left
   * consuming (Link.retiredTags). Deliveries of the old one stay valid (same
   * channel). Their windows add up: the channel may hold more than the last
   * prefetch unacknowledged, which keeps the broker's deliveries flowing (a
   * window bounded to the last prefetch made a 1M/100 sweep 19% slower,
   * docs/bench/queue-path-log.md, entry 26).
   */
  ensure(link: Link): Promise<void> {
    const run = async (): Promise<void> => {
      if (link.lost) throw new SessionLostError('the connection is gone');
      const want = this.prefetch;
      if (link.consumer && link.consumerTag && link.consumerPrefetch >= want) return;
      const channel: Channel = link.consumer ?? (await this.#openChannel(link));
      if (link.consumerQos !== want) {
        await channel.prefetch(want);
        link.consumerQos = want;
      }
      const previous = link.consumerTag;
      const { consumerTag } = await channel.consume(this.#queue, (msg) => {
        if (msg === null) {
          // The broker cancels a consumer whose queue was deleted (client-side cancels never come here).
          if (link.consumer === channel) this.#session.lost(link, 'the broker cancelled the task consumer (queue deleted?)');
          return;
        }
        if (link.lost || link.consumer !== channel) return; // the broker redelivers it
        const handle = new TaskHandle(this, link.gen, msg);
        if (this.#unacked?.channel !== channel) this.#unacked = { channel, handles: [] };
        this.#unacked.handles.push(handle);
        this.#buffer.push(handle);
        this.#session.wake();
      }, { consumerTag: this.#tag(link, want) });
      link.consumerTag = consumerTag;
      link.consumerPrefetch = want;
      // The outgrown consumer keeps its few deliveries coming into the same buffer (see Link.retiredTags).
      if (previous) link.retiredTags.push(previous);
    };
    return serially(link, run);
  }

  /** The handle and its connection, while this consumer still owns the delivery. */
  owned(handle: unknown): { h: TaskHandle; link: Link } | null {
    if (!(handle instanceof TaskHandle) || handle.owner !== this || handle.settled) return null;
    const link = this.#session.current;
    if (!link || link.gen !== handle.gen || !link.consumer) return null;
    return { h: handle, link };
  }

  /** Acknowledges, or hands back to the queue; false when the delivery is no longer ours. */
  settle(h: TaskHandle, link: Link, how: 'ack' | 'requeue'): boolean {
    if (h.settled || link.lost || this.#session.current !== link || !link.consumer || link.gen !== h.gen) return false;
    try {
      if (how === 'ack') {
        h.ackDue = true;
        this.#scheduleAcks();
      } else {
        link.consumer.nack(h.msg, false, true);
      }
      h.settled = true;
      return true;
    } catch {
      return false;
    }
  }

  #scheduleAcks(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    const wait = this.#lastFlush + ACK_SPACING_MS - Date.now();
    // At the soonest after the current turn's microtasks: every completion confirmed in this turn shares the frame.
    if (wait <= 0) process.nextTick(() => this.#flushDue('turn'));
    else this.#ackTimer = setTimeout(() => this.#flushDue('timer'), wait);
  }

  /** Sends the acks due now: a scheduled flush, or ('close') every one of them, before a close or a hand-back. */
  #flushDue(from: 'turn' | 'timer' | 'close'): void {
    if (!this.#flushScheduled) return;
    // A timer counts from the loop's cached time, which can be a busy turn old: it may fire early.
    const left = from === 'timer' ? this.#lastFlush + ACK_SPACING_MS - Date.now() : 0;
    if (left > 0) {
      this.#ackTimer = setTimeout(() => this.#flushDue('timer'), left);
      return;
    }
    this.#flushScheduled = false;
    if (this.#ackTimer) clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    this.#lastFlush = Date.now();
    this.#flushAcks(from === 'close');
  }

  /** Sends the acks due: one `multiple` ack for the settled run at the front, single acks past its first gap. */
  #flushAcks(all: boolean): void {
    const state = this.#unacked;
    if (!state) return;
    const { channel, handles } = state;
    let last: TaskHandle | null = null;
    let n = 0;
    while (n < handles.length && handles[n]!.settled) {
      if (handles[n]!.ackDue) last = handles[n]!;
      n++;
    }
    // Past the gap one frame each: at most SINGLE_ACKS a flush (see ACK_SPACING_MS), the rest at the next one.
    const beyond: TaskHandle[] = [];
    const kept: TaskHandle[] = [];
    for (const h of handles.slice(n)) (h.ackDue && (all || beyond.length < SINGLE_ACKS) ? beyond : kept).push(h);
    state.handles = kept;
    if (beyond.length === SINGLE_ACKS && kept.some((h) => h.ackDue)) this.#scheduleAcks();
    try {
      // A multiple ack of tag T acknowledges every unacknowledged delivery up to T on the channel:
      // all of those are settled here (acked now, or nacked already), none is still being computed.
      if (last) channel.ack(last.msg, true);
      for (const h of beyond) channel.ack(h.msg);
    } catch (err) {
      // The channel is gone: the broker hands these chunks out again (their results are in: counted once).
      this.#log.debug(`could not acknowledge deliveries (${describe(err)}); the broker redelivers them`);
    }
  }

  /** Stops consuming and hands back what is buffered and the given handles (the next take() starts again). */
  async release(handles: unknown[]): Promise<void> {
    const link = this.#session.current;
    if (link && link.consumer && link.consumerTag) {
      const channel = link.consumer;
      const stop = async () => {
        const tags = [...link.retiredTags, link.consumerTag];
        link.consumerTag = null;
        link.retiredTags = [];
        link.consumerPrefetch = 0;
        for (const tag of tags) if (tag) await channel.cancel(tag).catch(() => {});
      };
      await serially(link, stop);
    }
    const back = this.#buffer.splice(0);
    for (const handle of handles) {
      const own = this.owned(handle);
      if (own) back.push(own.h);
    }
    if (link) this.#requeue(back, link);
  }

  /**
   * Hands deliveries back to the queue, the acks due first: after a run of returns the broker may hold
   * back what follows (ACK_SPACING_MS), and a channel closed then would lose those acks. When they are
   * every unsettled delivery of the channel, one `multiple` nack of the last does it; else one each.
   */
  #requeue(back: TaskHandle[], link: Link): void {
    const state = this.#unacked;
    if (state?.channel === link.consumer) this.#flushDue('close');
    const open = state?.channel === link.consumer ? state.handles.filter((h) => !h.settled) : [];
    const giving = new Set(back);
    const last = open.at(-1);
    if (last && open.length === giving.size && open.every((h) => giving.has(h)) && link.consumer && !link.lost) {
      try {
        link.consumer.nack(last.msg, true, true);
        for (const h of back) h.settled = true;
        return;
      } catch {
        return; // the channel is gone: the broker hands them back itself
      }
    }
    for (const h of back) this.settle(h, link, 'requeue');
  }

  /**
   * Stops consuming and hands back what is buffered or on its way (before the last look at the queue that
   * says a sweep is settled). When no delivery of the channel is in a caller's hands, closing the channel
   * does it in one round trip, however many consumers it has (cancelling is a round trip each; see stop()
   * for the acknowledgements); otherwise as release(). The next take() starts again.
   */
  async handBack(): Promise<void> {
    const link = this.#session.current;
    const close = async (): Promise<boolean> => {
      const state = this.#unacked;
      const inHand = state !== null && state.channel === link?.consumer && state.handles.some((h) => !h.settled && !this.#buffer.includes(h));
      if (!link?.consumer || inHand) return false;
      await this.stop(link);
      return true;
    };
    // After a consumer (re)start under way, as release() does.
    if (!(await (link ? serially(link, close) : false))) await this.release([]);
  }

  /**
   * Stops consuming on `link` for good (reset, close): closing the channel hands unacknowledged
   * chunks back at once. (Closing the connection alone would too, but its close frame may overtake
   * the acks still queued on this channel: those chunks would be handed out and computed again.)
   */
  async stop(link: Link | null): Promise<void> {
    this.wanted = false;
    this.#buffer = [];
    if (!link) return;
    const consumer = link.consumer;
    link.consumer = null;
    link.consumerTag = null;
    link.retiredTags = [];
    // Acks still due go out first (closing would hand those chunks back); frames leave in order.
    if (this.#unacked?.channel === consumer) this.#flushDue('close');
    if (consumer) await consumer.close().catch(() => {});
  }
}

/** Runs `step` after the consumer (re)starts and stops already queued on `link` (Link.consumerSetup), whatever their outcome. */
function serially<T>(link: Link, step: () => Promise<T>): Promise<T> {
  const run = link.consumerSetup.then(step, step);
  link.consumerSetup = run.then(() => {}, () => {});
  return run;
}

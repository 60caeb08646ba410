/**
 * Waking a worker blocked in XREADGROUP when the sweep settles. The
 * completion that settles the last chunk (complete-5.lua, or a dead letter)
 * publishes `settled` on `<p>:events`; each worker that waits for tasks is
 * subscribed there on a connection of its own and, on the message, cuts its
 * blocked read short with CLIENT UNBLOCK, so it leaves within a round trip
 * instead of after its poll. A settle that happened before the subscription
 * is seen by the check made right after subscribing.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../../core/log.js';
import type { Link, RedisLinks } from './connection.js';

/** A blocked read in progress: its connection's client id (asked for in the same write), and whether it returned. */
interface BlockedRead {
  id: Promise<unknown>;
  done: boolean;
}

export class SettleSignal {
  readonly #links: RedisLinks;
  readonly #channel: string;
  readonly #isSettled: () => Promise<boolean>;
  readonly #log: Logger;
  #armed: Promise<void> | null = null;
  /** A failed subscription was said once, at warn; later attempts failing go to debug. */
  #warned = false;
  #fired = false;
  #reading: BlockedRead | null = null;

  constructor(links: RedisLinks, channel: string, isSettled: () => Promise<boolean>, log: Logger) {
    this.#links = links;
    this.#channel = channel;
    this.#isSettled = isSettled;
    this.#log = log;
  }

  /** The sweep was seen to settle: a blocking read would wait for nothing. */
  get fired(): boolean {
    return this.#fired;
  }

  /** Subscribes, once (in the background: the first blocking read does not wait for it). */
  arm(): void {
    this.#armed ??= (async () => {
      const link = await this.#links.events();
      link.client.on('message', (channel: string) => {
        if (channel === this.#channel) this.fire();
      });
      await this.#links.run(link, (c) => c.subscribe(this.#channel));
      if (await this.#isSettled()) this.fire();
    })().catch((err: unknown) => {
      this.#armed = null;
      // The backend closed first (a short sweep: the worker is done before its subscription is): nothing lost.
      if (this.#links.closed) return;
      // Said once at warn (an ACL without the channel refuses it every time, and the worker still works,
      // only slower to leave): what it costs, and what to grant.
      const say = this.#warned ? this.#log.debug.bind(this.#log) : this.#log.warn.bind(this.#log);
      this.#warned = true;
      say(`could not subscribe to ${this.#channel} (${String(err)}): a worker waiting for tasks leaves only at its next poll ` +
        `(up to a second) once the sweep settles; if Redis refused it, grant the user the channel (ACL SETUSER <user> &${this.#channel})`);
    });
  }

  /** A new sweep under the prefix (reset, or created again): not settled until told again. */
  rearm(): void {
    this.#fired = false;
  }

  /** Runs a blocking read on `link`, which fire() cuts short; null when the sweep has settled already. */
  async blockingRead<T>(link: Link, read: (client: Redis) => Promise<T>): Promise<T | null> {
    if (this.#fired) return null; // callers read without blocking once fired; a settle between the two lands here
    // Sent before the read on the same connection, so its answer comes while the read blocks.
    const id = link.client.client('ID');
    id.catch(() => {});
    const reading: BlockedRead = { id, done: false };
    this.#reading = reading;
    try {
      return await this.#links.run(link, read);
    } finally {
      reading.done = true;
      if (this.#reading === reading) this.#reading = null;
    }
  }

  /** The sweep settled: unblock the read in progress (it may not have reached Redis yet: try until it returns). */
  fire(): void {
    if (this.#fired) return;
    this.#fired = true;
    const reading = this.#reading;
    if (reading) void this.#unblock(reading);
  }

  async #unblock(reading: BlockedRead): Promise<void> {
    try {
      const id = Number(await reading.id);
      const link = await this.#links.commands();
      while (!reading.done) {
        if (Number(await link.client.client('UNBLOCK', id)) === 1) return;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    } catch (err) {
      this.#log.debug('could not unblock the waiting read; it ends at its poll', { error: String(err) });
    }
  }
}

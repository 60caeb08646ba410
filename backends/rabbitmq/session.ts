/**
 * The RabbitMQ session: one AMQP connection at a time, reopened after a
 * loss, with one explicit state.
 *
 * amqplib does not reconnect by itself (its opt-in recovery would reopen
 * channels behind our back, but a delivery must be acknowledged on the
 * channel it came on). So on loss of the connection or of its publish
 * channel the whole link is dropped; a new one is opened with backoff
 * (core/backoff.ts) for CONNECT_TIMEOUT_SECONDS, through a single pending
 * connect that every caller shares, and the setup hooks the backend
 * registered once (addSetup, as amqp-connection-manager does) run again on
 * it: check the sweep, declare the topology, claim the consumer name, start
 * the consumer. Past the bound, or on an error that waiting cannot fix
 * (refused login, unknown vhost, the sweep reset under us), the session
 * fails for good and every call throws that error, naming the broker's
 * address, never the URL (which holds the password).
 */
import { randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, Message, Options } from 'amqplib';
import { backoffDelay } from '../../core/backoff.js';
import { BrokerUnavailableError, TtgError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { describe, errorCode } from './names.js';
import { coalesceWrites } from './coalesce.js';
import { openChannel, openPublisher, probe } from './channels.js';

/** The connection (or a channel the session depends on) went away during an operation. */
export class SessionLostError extends Error {}

/**
 * idle: never connected; connecting: the first connection is being opened;
 * ready: connected and set up; reconnecting: lost, a new one is being
 * opened; failed: gave up for good (see `failure`); closed: close() was called.
 */
export type SessionState = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'failed' | 'closed';

/** One AMQP connection and what lives on it. */
export interface Link {
  /** Which connection of the session this is (1, 2, ...): deliveries remember it. */
  readonly gen: number;
  readonly conn: ChannelModel;
  /** Every publish goes through this confirm channel. */
  readonly pub: ConfirmChannel;
  /** The task consumer's channel (acks must go on the channel a delivery came on). */
  consumer: Channel | null;
  consumerTag: string | null;
  /**
   * Earlier consumers of this channel, outgrown but not cancelled: cancelling a quorum-queue consumer
   * hands back the deliveries it had on the way, and they would come again flagged redelivered.
   */
  retiredTags: string[];
  /** The per-consumer prefetch the current consumer was started with. */
  consumerPrefetch: number;
  /** The prefetch last set on the consumer's channel (basic.qos; it applies to the consumers started after it). */
  consumerQos: number;
  /** Serializes consumer (re)starts. */
  consumerSetup: Promise<void>;
  /** The topology was declared on this connection. */
  declared: boolean;
  lost: boolean;
  /** messageIds the broker returned as unroutable; checked when their confirm arrives (a return precedes its ack). */
  readonly returned: Set<string>;
  /** Channels of probes that succeeded, open and clean, for the next probes (see probe()). */
  readonly spares: Channel[];
}

export interface SessionOptions {
  url: string;
  /** scheme://host:port/vhost, safe to print. */
  address: string;
  connectTimeoutSeconds: number;
  /** Shown in the broker's connection list (`rabbitmqctl list_connections client_properties`). */
  connectionName: () => string;
  log: Logger;
  /** For amqps://: the CA to trust (and SNI), passed to tls.connect. */
  tls?: { servername?: string; ca?: string };
  /** A refusal (login, vhost, permission, TLS certificate) as the error to stop with at once; null to retry. */
  refusal?: (err: unknown) => Error | null;
}

type Setup = (link: Link) => Promise<void>;

export class RabbitSession {
  readonly #opts: SessionOptions;
  #state: SessionState = 'idle';
  #link: Link | null = null;
  #connecting: Promise<Link> | null = null;
  #generation = 0;
  #reconnects = 0;
  /** A link has been ready before: the next one is a reconnection. */
  #wasReady = false;
  /** Sticky: once the broker stayed away past the bound (or refused us), every call throws this. */
  #failure: Error | null = null;
  readonly #setups: Setup[] = [];
  readonly #readyHooks: Setup[] = [];
  readonly #lostHandlers: Array<(link: Link) => void> = [];
  #waiters = new Set<() => void>();
  /** Message ids of this session: a random prefix and a counter. */
  readonly #idPrefix = `${randomUUID().slice(0, 8)}.`;

  /** What every message id this session publishes starts with (its own messages can be told apart). */
  get messageIdPrefix(): string {
    return this.#idPrefix;
  }
  #published = 0;
  /** Whether a lost connection is reopened at once (a consuming worker) or on the next call. */
  reconnectEagerly = () => false;

  constructor(opts: SessionOptions) {
    this.#opts = opts;
  }

  get state(): SessionState {
    return this.#state;
  }

  get failure(): Error | null {
    return this.#failure;
  }

  get reconnects(): number {
    return this.#reconnects;
  }

  get address(): string {
    return this.#opts.address;
  }

  /** The live link, if there is one (no connecting). */
  get current(): Link | null {
    return this.#link && !this.#link.lost ? this.#link : null;
  }

  /** Runs on every new connection, in order, before it becomes current. A throw abandons that connection. */
  addSetup(fn: Setup): void {
    this.#setups.push(fn);
  }

  /** Runs on every new connection once it is current (e.g. starting the consumer). */
  addReadyHook(fn: Setup): void {
    this.#readyHooks.push(fn);
  }

  /** Called when a link is lost (its deliveries are no longer ours). */
  onLost(fn: (link: Link) => void): void {
    this.#lostHandlers.push(fn);
  }

  /** A live link: the current one, or the (shared) connection being opened. */
  ensure(): Promise<Link> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#state === 'closed') return Promise.reject(new Error('the RabbitMQ backend is closed'));
    const link = this.current;
    if (link) return Promise.resolve(link);
    this.#connecting ??= this.#connectWithBackoff().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  /** Runs fn on a live link; a connection lost meanwhile is reopened and fn run again. */
  async withLink<T>(fn: (link: Link) => Promise<T>): Promise<T> {
    for (;;) {
      const link = await this.ensure();
      try {
        return await fn(link);
      } catch (err) {
        // A refusal (a permission, a certificate) is final even when it also cost us the link.
        const refused = this.#refused(err);
        if (refused !== null) throw refused;
        if (!link.lost || this.#state === 'closed') throw err;
        this.#opts.log.debug(`connection lost during a call; retrying on a new one (${describe(err)})`);
      }
    }
  }

  async close(beforeClose: (link: Link) => Promise<void>): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.wake();
    await this.#connecting?.catch(() => {});
    const link = this.#link;
    this.#link = null;
    if (!link || link.lost) return;
    link.lost = true;
    await beforeClose(link).catch(() => {});
    await link.conn.close().catch(() => {});
  }

  // ------------------------------------------------------------ channels and publishing

  openChannel(link: Link): Promise<Channel> {
    return openChannel(link, this.#opts.log);
  }

  /** A connection apart, as this session's, for a probe that may make the broker close it (stream-read.ts). */
  connectApart(): Promise<ChannelModel> {
    const name = `${this.#opts.connectionName()} (probe)`;
    return connect(this.#opts.url, { timeout: 10_000, noDelay: true, clientProperties: { connection_name: name }, ...this.#opts.tls });
  }

  /** Runs fn on a channel of its own: a failed probe (404, 405) closes only that channel (channels.ts). */
  probe<T>(link: Link, fn: (ch: Channel) => Promise<T>): Promise<T> {
    return probe(link, this.#opts.log, fn);
  }

  /** A confirm channel of its own for a long run of publishes (channels.ts); publish(..., via) uses it. */
  openPublisher(link: Link): Promise<ConfirmChannel> {
    return openPublisher(link, this.#opts.log, (err) => this.#refused(err));
  }

  /** Declares an exclusive queue; false when another connection holds it (405 RESOURCE_LOCKED). */
  async tryExclusiveQueue(link: Link, queue: string): Promise<boolean> {
    try {
      await this.probe(link, (ch) => ch.assertQueue(queue, { exclusive: true, durable: false }));
      return true;
    } catch (err) {
      if (errorCode(err) === 405) return false;
      throw err;
    }
  }

  /** Unique on this connection (returns come back on it): a counter, cheaper than a UUID per message. */
  newMessageId(link: Link): string {
    return `${this.#idPrefix}${link.gen}.${++this.#published}`;
  }

  /** Publishes on the confirm channel (or `via`); resolves once the broker has the message (routed and confirmed). */
  publish(link: Link, exchange: string, routingKey: string, body: Buffer, options: Options.Publish, via: ConfirmChannel = link.pub): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (link.lost) {
        reject(new SessionLostError('the connection is gone'));
        return;
      }
      const messageId = options.messageId ?? this.newMessageId(link);
      try {
        via.publish(exchange, routingKey, body, { ...options, mandatory: true, messageId }, (err: unknown) => {
          if (link.returned.delete(messageId)) reject(new Error(`no queue took the message for ${routingKey} (deleted?)`));
          // A refused publish closes the channel, which fails the confirms with a bare "channel closed": say the refusal.
          else if (err) reject(this.#refused(err) ?? this.#failure ?? (err instanceof Error ? err : new Error(String(err))));
          else resolve();
        });
      } catch (err) {
        reject(err);
      }
    });
  }

  // ------------------------------------------------------------ waiting

  /** Waits up to `ms`, or until wake() (a delivery, a new connection, a failure, close). */
  waitForSignal(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
    });
  }

  wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  // ------------------------------------------------------------ connecting

  async #connectWithBackoff(): Promise<Link> {
    const address = this.#opts.address;
    const limitMs = this.#opts.connectTimeoutSeconds * 1000;
    const started = Date.now();
    const reconnecting = this.#generation > 0;
    this.#state = reconnecting ? 'reconnecting' : 'connecting';
    let attempts = 0;
    for (;;) {
      if ((this.#state as SessionState) === 'closed') throw new Error('the RabbitMQ backend is closed');
      attempts++;
      const elapsed = Date.now() - started;
      try {
        const link = await this.#open(Math.max(1000, Math.min(10_000, limitMs - elapsed)));
        if (reconnecting || attempts > 1) this.#opts.log.info(`connected to RabbitMQ at ${address}`, { attempts });
        return link;
      } catch (err) {
        if (err instanceof TtgError) this.#fail(err); // not a matter of waiting: wrong credentials, a sweep reset or changed
        const waited = Date.now() - started;
        if (waited >= limitMs) {
          const what = reconnecting ? 'lost the connection to RabbitMQ at' : 'cannot reach RabbitMQ at';
          this.#fail(new BrokerUnavailableError(
            `${what} ${address} and gave up after ${(waited / 1000).toFixed(1)}s and ${attempts} attempts ` +
              `(last error: ${describe(err)}); check RABBITMQ_HOST/RABBITMQ_PORT (or AMQP_URL) and that the broker runs, ` +
              `or allow longer with CONNECT_TIMEOUT_SECONDS`,
            { cause: err },
          ));
        }
        this.#opts.log.warn(`RabbitMQ at ${address} not reachable (${describe(err)}); retrying for up to ${this.#opts.connectTimeoutSeconds} s in all`, { attempt: attempts });
        // Woken early by close().
        await this.waitForSignal(Math.min(backoffDelay(attempts, { initialMs: 100, maxMs: 5000, jitter: 0.2 }), limitMs - waited));
      }
    }
  }

  /**
   * When `err` is a refusal (login, vhost, permission, certificate), the session fails for good
   * with it (every later call throws it, no reconnection) and it is returned; otherwise null.
   */
  #refused(err: unknown): Error | null {
    const refused = this.#opts.refusal?.(err) ?? null;
    if (refused === null) return null;
    this.#failure ??= refused;
    if (this.#state !== 'closed') this.#state = 'failed';
    this.wake();
    return this.#failure;
  }

  #fail(err: Error): never {
    this.#failure = err;
    if (this.#state !== 'closed') this.#state = 'failed';
    this.wake();
    throw err;
  }

  /** One connection attempt: connection, confirm channel, then the setup hooks. */
  async #open(timeoutMs: number): Promise<Link> {
    let conn: ChannelModel;
    try {
      // noDelay: without it Nagle's algorithm holds small frames (acks, confirms, results) for up to
      // 40 ms waiting for the peer's delayed ACK, and a worker's round trips stall by that much.
      conn = await connect(this.#opts.url, {
        timeout: timeoutMs, noDelay: true, clientProperties: { connection_name: this.#opts.connectionName() }, ...this.#opts.tls,
      });
    } catch (err) {
      // The irrecoverable ones (login, vhost, certificate): retrying will not change the answer.
      throw this.#refused(err) ?? err;
    }
    coalesceWrites(conn);
    const log = this.#opts.log;
    // Unhandled 'error' events would crash the process: every emitter gets a handler.
    conn.on('error', (err: Error) => log.debug(`RabbitMQ connection error: ${describe(err)}`));
    conn.on('blocked', (reason: string) => log.warn(`RabbitMQ blocks publishing (${reason}); waiting`));
    conn.on('unblocked', () => log.info('RabbitMQ accepts publishing again'));
    let link: Link | null = null;
    try {
      const pub = await conn.createConfirmChannel();
      const made: Link = {
        gen: ++this.#generation, conn, pub, consumer: null, consumerTag: null, retiredTags: [], consumerPrefetch: 0, consumerQos: 0,
        consumerSetup: Promise.resolve(), declared: false, lost: false, returned: new Set(), spares: [],
      };
      link = made;
      pub.on('error', (err: Error) => {
        log.debug(`RabbitMQ publish channel error: ${describe(err)}`);
        this.#refused(err); // a publish refused (403): the channel closes next, and no reconnection would help
      });
      pub.on('return', (msg: Message) => {
        if (typeof msg.properties.messageId === 'string') made.returned.add(msg.properties.messageId);
      });
      pub.on('close', () => this.lost(made, 'the publish channel closed'));
      conn.on('close', (err?: Error) => this.lost(made, err ? describe(err) : 'the connection closed'));
      for (const setup of this.#setups) await setup(made);
      if (this.#state === 'closed') throw new Error('the RabbitMQ backend is closed');
      // Current before the ready hooks, so that the consumer's first deliveries are ours at once.
      this.#link = made;
      this.#state = 'ready';
      // Counted in the same step as the state turns ready, so nobody sees one without the other.
      if (this.#wasReady) this.#reconnects++;
      this.#wasReady = true;
      for (const hook of this.#readyHooks) await hook(made);
      this.wake();
      return made;
    } catch (err) {
      if (link) this.#drop(link);
      await conn.close().catch(() => {});
      throw this.#refused(err) ?? err;
    }
  }

  /** A link went away (its connection, publish channel or consumer channel): drop it, and reconnect if asked to. */
  lost(link: Link, why: string): void {
    if (link.lost) return;
    this.#drop(link);
    link.conn.close().catch(() => {});
    this.wake();
    if (this.#state === 'closed' || this.#failure !== null || this.#link !== link) return;
    this.#state = 'reconnecting';
    this.#opts.log.warn(`lost the connection to RabbitMQ at ${this.#opts.address} (${why}); reconnecting`);
    // A consuming worker reconnects at once so chunks flow again; others on their next call.
    if (this.reconnectEagerly()) this.ensure().catch(() => {});
  }

  #drop(link: Link): void {
    link.lost = true;
    for (const handler of this.#lostHandlers) handler(link);
  }
}

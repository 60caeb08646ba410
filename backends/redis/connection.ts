/**
 * The Redis backend's connections: one for commands and scripts, one for
 * blocking reads (so a worker waiting for tasks never delays its commits
 * and heartbeats), each opened on first use, with ioredis reconnecting on
 * loss under a bounded retry strategy, and every failure turned into an
 * error that names the address (never the password).
 */
import { Redis, type RedisOptions } from 'ioredis';
import { backoffDelay } from '../../core/backoff.js';
import { BrokerUnavailableError, SweepGoneError, sweepGoneMessage, TtgError, type BrokerRefusedError } from '../../core/errors.js';
import { redact, type Logger } from '../../core/log.js';
import { tlsOptions } from '../../core/tls.js';
import type { RedisConnection } from './options.js';
import { redisRefusal } from './refusals.js';
import { isRedisError } from './replies.js';
import { loadScripts, type ScriptName } from './scripts.js';

/** Reconnection delays: 100 ms doubling to 2 s (ioredis counts attempts from 1). */
const RECONNECT_BACKOFF = { initialMs: 100, maxMs: 2000 } as const;

/** One ioredis connection and what we know about its outage, if any. */
export interface Link {
  client: Redis;
  role: 'commands' | 'blocking' | 'events';
  /** When the connection went down (or started connecting); null while it is up. */
  downSince: number | null;
  lastError: Error | null;
  /** The retry strategy gave up: the connection is closed for good. */
  gaveUp: boolean;
  /** Redis refused us (password, ACL, TLS certificate): not retried, and what every call on this link throws. */
  refusal: BrokerRefusedError | null;
}

/** Host, port, credentials, database and TLS from REDIS_URL or REDIS_HOST/PORT/PASSWORD and REDIS_TLS_CA_FILE. */
export function connectionTarget(cfg: RedisConnection): RedisOptions {
  if (cfg.url === null) return { host: cfg.host, port: cfg.port, password: cfg.password ?? undefined };
  const url = new URL(cfg.url);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const password = url.password ? decodeURIComponent(url.password) : cfg.password ?? undefined;
  return {
    host,
    port: cfg.port,
    // A user name alone (no password) means nothing to AUTH.
    username: password !== undefined && url.username ? decodeURIComponent(url.username) : undefined,
    password,
    db: cfg.db,
    tls: cfg.tls ? tlsOptions(host, cfg.ca) : undefined,
  };
}

export interface RedisLinksOptions {
  connection: RedisConnection;
  connectTimeoutSeconds: number;
  workerId: string;
  log: Logger;
  /** Named in the error when the sweep's stream or group is gone. */
  keys: { tasks: string; group: string };
  queuePrefix: string;
}

export class RedisLinks {
  readonly #opts: RedisLinksOptions;
  #linkByRole: Partial<Record<Link['role'], Promise<Link>>> = {};
  #links: Link[] = [];
  #closed = false;
  #reconnects = 0;

  constructor(opts: RedisLinksOptions) {
    this.#opts = opts;
  }

  /** Connections re-established after a loss. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** True while some open connection is down and being retried. */
  get anyDown(): boolean {
    return this.#links.some((l) => l.downSince !== null);
  }

  /**
   * Closes every connection: `beforeQuit` runs on the command connection
   * while it still answers (to give a lease back); blocking reads are cut.
   */
  async close(beforeQuit: (link: Link) => Promise<void>): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const links = this.#links;
    this.#links = [];
    for (const link of links) {
      if (link.role === 'commands' && link.client.status === 'ready') {
        await beforeQuit(link).catch(() => {});
        await link.client.quit().catch(() => hangUp(link.client));
      } else {
        // A blocked XREADGROUP would hold quit() for up to its wait: cut the line.
        hangUp(link.client);
      }
    }
  }

  async script(link: Link, name: ScriptName, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    const script = loadScripts().get(name)!;
    if (keys.length !== script.numberOfKeys) throw new TtgError(`script ${name} takes ${script.numberOfKeys} keys, given ${keys.length}`);
    return this.run(link, (c) => {
      const command = (c as unknown as Record<string, (...a: (string | number | Buffer)[]) => Promise<unknown>>)[script.command]!;
      return command.call(c, ...keys, ...args);
    });
  }

  /** Runs commands on a link, turning connection and protocol failures into errors that say what to do. */
  async run<T>(link: Link, fn: (client: Redis) => Promise<T>): Promise<T> {
    try {
      return await fn(link.client);
    } catch (err) {
      throw this.#explain(link, err);
    }
  }

  #explain(link: Link, err: unknown): unknown {
    const address = this.#opts.connection.address;
    const cause = link.lastError ?? err;
    const detail = redact(cause instanceof Error ? cause.message : String(cause));
    // A refusal (password, ACL, certificate) first: retrying would only repeat it.
    const refusal = link.refusal ?? this.#refusal(err);
    if (refusal !== null) return refusal;
    if (link.gaveUp || (link.client.status === 'end' && !this.#closed)) {
      return new BrokerUnavailableError(
        `cannot reach Redis at ${address}: gave up after ${this.#opts.connectTimeoutSeconds} s of retrying (${detail}); ` +
        'check REDIS_HOST and REDIS_PORT (or REDIS_URL), that Redis runs, or raise CONNECT_TIMEOUT_SECONDS',
        { cause: err });
    }
    if (isRedisError(err, 'NOGROUP')) {
      return new SweepGoneError(
        `${sweepGoneMessage(this.#opts.queuePrefix)} (the task stream ${this.#opts.keys.tasks} or its group is gone from Redis at ${address})`,
        { cause: err });
    }
    return err;
  }

  #refusal(err: unknown): BrokerRefusedError | null {
    return redisRefusal(err, { connection: this.#opts.connection, queuePrefix: this.#opts.queuePrefix });
  }

  commands(): Promise<Link> {
    return this.#link('commands');
  }

  blocking(): Promise<Link> {
    return this.#link('blocking');
  }

  /** The pub/sub connection (subscribed to the sweep's events), opened on first use. */
  events(): Promise<Link> {
    return this.#link('events');
  }

  /** The connection for `role`, opened on first use; a failed open is forgotten so the next call retries. */
  #link(role: Link['role']): Promise<Link> {
    if (this.#closed) return Promise.reject(new TtgError('the Redis backend is closed'));
    this.#linkByRole[role] ??= this.#open(role).catch((err) => {
      delete this.#linkByRole[role];
      throw err;
    });
    return this.#linkByRole[role];
  }

  /**
   * Opens a connection and waits until it answers. ioredis reconnects with
   * backoff after every loss; past CONNECT_TIMEOUT_SECONDS without a working
   * connection the retry strategy gives up, queued commands fail, and
   * #explain() names the address (never the password). Commands wait
   * through an outage (no per-command retry limit), so the timeout is the
   * one bound. Blocking reads get a connection of their own, so a worker
   * waiting for tasks never delays its commits and heartbeats.
   */
  async #open(role: Link['role']): Promise<Link> {
    const timeoutMs = this.#opts.connectTimeoutSeconds * 1000;
    const options: RedisOptions = {
      ...connectionTarget(this.#opts.connection),
      // RESP2: raw replies of call() keep their classic shapes (under RESP3,
      // XREADGROUP's map would arrive flattened as [stream, entries]).
      protocol: 2,
      lazyConnect: true,
      maxRetriesPerRequest: null,
      connectTimeout: Math.min(10_000, Math.max(500, timeoutMs)),
      connectionName: `ttg-${role}-${this.#opts.workerId}`,
      retryStrategy: (attempt: number) => {
        if (link.refusal !== null) {
          link.gaveUp = true;
          return null;
        }
        const now = Date.now();
        link.downSince ??= now;
        const elapsed = now - link.downSince;
        if (elapsed >= timeoutMs) {
          link.gaveUp = true;
          return null;
        }
        return Math.max(1, Math.min(timeoutMs - elapsed, backoffDelay(attempt, RECONNECT_BACKOFF)));
      },
    };
    const link: Link = { client: new Redis(options), role, downSince: Date.now(), lastError: null, gaveUp: false, refusal: null };
    const address = this.#opts.connection.address;
    let lost = false;
    // ioredis emits status events on the next tick, after its retry strategy has already run (and set
    // downSince), so whether the link was up is kept here rather than read from downSince.
    let up = false;
    link.client.on('close', () => {
      // Down after having been up: say so once; connection attempts that fail at start-up stay quiet.
      if (up && !this.#closed) {
        up = false;
        lost = true;
        this.#opts.log.warn(`lost the connection to Redis at ${address}; retrying for up to ${this.#opts.connectTimeoutSeconds} s`, {
          connection: role,
        });
      }
      link.downSince ??= Date.now();
    });
    // Every failed attempt to (re)connect is said as it happens, so a wrong REDIS_HOST is seen at
    // once rather than after CONNECT_TIMEOUT_SECONDS of silence.
    let failedAttempts = 0;
    link.client.on('error', (err: Error) => {
      link.lastError = err;
      if (this.#closed) return;
      if (up) {
        this.#opts.log.debug('Redis connection error', { error: redact(err.message), connection: role });
        return;
      }
      // Refused (password, certificate): said once, by the error that ends the command, not as an attempt.
      link.refusal ??= this.#refusal(err);
      if (link.refusal !== null) return;
      failedAttempts++;
      this.#opts.log.warn(`Redis at ${address} not reachable (${redact(err.message)}); retrying for up to ` +
        `${this.#opts.connectTimeoutSeconds} s in all`, { attempt: failedAttempts, connection: role });
    });
    link.client.on('ready', () => {
      if (lost) {
        this.#reconnects++;
        this.#opts.log.info(`reconnected to Redis at ${address}`, { connection: role });
      }
      lost = false;
      up = true;
      failedAttempts = 0;
      link.downSince = null;
      link.lastError = null;
    });
    if (role === 'commands') {
      for (const script of loadScripts().values()) {
        link.client.defineCommand(script.command, { lua: script.lua, numberOfKeys: script.numberOfKeys });
      }
    }
    this.#links.push(link);
    link.client.connect().catch(() => {}); // failures surface through the ping below
    try {
      await this.run(link, (c) => c.ping());
    } catch (err) {
      this.#links = this.#links.filter((l) => l !== link);
      hangUp(link.client);
      throw err;
    }
    if (this.#closed) hangUp(link.client);
    return link;
  }
}

/**
 * Closes a connection unless it is closed already: ioredis's disconnect() on
 * an ended connection arms a 2 s timer that nothing clears, which keeps the
 * process alive for nothing.
 */
export function hangUp(client: Redis): void {
  if (client.status !== 'end') client.disconnect();
}



/**
 * The lease on a consumer name (`<p>:consumer:worker-<id>`, lease-1.lua):
 * held by one live process at a time and renewed while it lives, so two
 * processes never read as one consumer (they would complete each other's
 * entries), while a restarted worker gets its old name, and the entries it
 * left pending, back.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../core/log.js';
import type { Link, RedisLinks } from './connection.js';
import type { Keys } from './keys.js';
import { outcomeOf } from './scripts.js';

/** How long a consumer-name lease lives without renewal, and how often it is renewed. */
const LEASE_MS = 10_000;
const LEASE_RENEW_MS = 3_000;

/** Consumer names given this process when `worker-<id>` was taken (several backends may share a process in tests). */
let fallbackNames = 0;

export class ConsumerNameLease {
  readonly #links: RedisLinks;
  readonly #keys: Keys;
  readonly #prefix: string;
  readonly #log: Logger;
  /** Identifies this process as the holder. */
  readonly #nonce = randomBytes(12).toString('hex');
  /** The name this process holds, if it got one. */
  #held: string | null = null;
  #timer: NodeJS.Timeout | null = null;
  #renewing = false;
  #lostWarned = false;
  #stopped = false;

  constructor(links: RedisLinks, keys: Keys, prefix: string, log: Logger) {
    this.#links = links;
    this.#keys = keys;
    this.#prefix = prefix;
    this.#log = log;
  }

  /**
   * `base` (`worker-<id>`) when no live process uses it (its lease is free or
   * expired), else `worker-<id>-<host>-<pid>`: two processes never read as
   * one consumer, or they would complete each other's entries.
   */
  async chooseName(base: string, hostName: string): Promise<string> {
    if (await this.take(base)) return base;
    const n = fallbackNames++;
    const name = `${base}-${hostName.replace(/[^A-Za-z0-9_.-]/g, '_')}-${process.pid}${n ? `-${n + 1}` : ''}`;
    this.#log.info(`consumer name ${base} is in use by another live process; using ${name}`);
    return name;
  }

  /** Takes `name` if no live process holds it, and keeps renewing it; false when another holds it. */
  async take(name: string): Promise<boolean> {
    const link = await this.#links.commands();
    if (!(await this.#hold(link, name))) return false;
    this.#held = name;
    this.#timer = setInterval(() => void this.renew(), LEASE_RENEW_MS);
    this.#timer.unref();
    return true;
  }

  /** Renews the lease now (heartbeats call it too); warns once if another process took the name meanwhile. */
  async renew(): Promise<void> {
    if (!this.#held || this.#renewing || this.#stopped) return;
    this.#renewing = true;
    try {
      const link = await this.#links.commands();
      if (!(await this.#hold(link, this.#held)) && !this.#lostWarned) {
        this.#lostWarned = true;
        this.#log.warn(`another process took the consumer name ${this.#held} after this one stalled for over ${LEASE_MS / 1000} s; ` +
          'chunks both hold may be computed twice (the aggregate counts them once)');
      }
    } catch (err) {
      if (!this.#stopped) this.#log.debug('could not renew the consumer-name lease', { error: (err as Error).message });
    } finally {
      this.#renewing = false;
    }
  }

  /** Stops renewing (close). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Gives the name back at once, so a restarted worker need not wait for the lease to expire. */
  async drop(link: Link): Promise<void> {
    if (this.#held) await this.#links.script(link, 'lease', [this.#keys.lease(this.#held)], [this.#nonce, LEASE_MS, 'drop']);
  }

  async #hold(link: Link, name: string): Promise<boolean> {
    const reply = await this.#links.script(link, 'lease', [this.#keys.lease(name)], [this.#nonce, LEASE_MS, 'hold']);
    return outcomeOf('lease', reply, { prefix: this.#prefix }) === 'lease-held';
  }
}

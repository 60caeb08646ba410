/**
 * Creating the sweep once however many workers start together, and giving
 * each live worker a consumer name of its own.
 *
 * The mutex of creation is an exclusive queue (`<p>.init-lock`): the broker
 * lets one connection declare it, and deletes it when that connection dies,
 * so a creator that crashes half-way never blocks the others. The sweep
 * exists once the exchange `<p>.meta.ready` does (declared last, after every
 * task is confirmed and the settings are in `<p>.meta`); nobody consumes
 * before that, so a half-made sweep can be cleared and made again.
 */
import { randomUUID } from 'node:crypto';
import { SettingsMismatchError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { chunkCount, mismatchMessage, settingsDifference, settingsRecord, sweepTasks, type SweepSettings } from '../../core/sweep.js';
import { taskFields } from '../messages.js';
import { JSON_TYPE, STREAM, type Names } from './names.js';
import type { Link, RabbitSession } from './session.js';
import type { StreamReader } from './stream-reader.js';

/** Tasks published per batch of confirms when a sweep is created. */
const PUBLISH_BATCH = 10_000;

export class SweepCreation {
  readonly #session: RabbitSession;
  readonly #reader: StreamReader;
  readonly #names: Names;
  readonly #prefix: string;
  readonly #log: Logger;

  constructor(session: RabbitSession, reader: StreamReader, names: Names, prefix: string, log: Logger) {
    this.#session = session;
    this.#reader = reader;
    this.#names = names;
    this.#prefix = prefix;
    this.#log = log;
  }

  /** true: created here; false: joined an existing sweep; null: another worker holds the init lock. */
  async joinOrCreate(s: Link, settings: SweepSettings, creator: string): Promise<boolean | null> {
    const existing = await this.#reader.settings(s);
    if (existing) return this.#join(existing, settings);
    if (!(await this.#session.tryExclusiveQueue(s, this.#names.initLock))) return null;
    try {
      // Checked again under the lock: the previous holder may have finished in between.
      const again = await this.#reader.settings(s);
      if (again) return this.#join(again, settings);
      await this.#create(s, settings, creator);
      return true;
    } finally {
      await this.#session.probe(s, (ch) => ch.deleteQueue(this.#names.initLock)).catch(() => {});
    }
  }

  /** Throws SettingsMismatchError naming the difference, unless the sweep in the queue is this one. */
  check(theirs: SweepSettings | null, ours: SweepSettings): void {
    if (theirs === null) return;
    this.#join(theirs, ours);
  }

  /** Makes the consumer name unique among live workers: worker-<id>, then with host, pid, a random tag. */
  async claimConsumerName(s: Link, workerId: string, hostName: string): Promise<string> {
    const base = `worker-${workerId}`;
    const candidates = [base, `${base}-${hostName}`, `${base}-${hostName}-${process.pid}`, `${base}-${hostName}-${process.pid}-${randomUUID().slice(0, 8)}`];
    for (const name of candidates) {
      if (await this.#session.tryExclusiveQueue(s, this.#names.consumer(name))) return name;
    }
    return candidates.at(-1)!;
  }

  #join(theirs: SweepSettings, ours: SweepSettings): false {
    const diff = settingsDifference(theirs, ours);
    if (diff !== null) throw new SettingsMismatchError(mismatchMessage(diff, this.#prefix));
    return false;
  }

  /**
   * Called under the init lock with no ready flag: no worker has taken a task
   * yet (workers only consume once the flag exists), so whatever a creator
   * that died half-way left behind can be cleared and written again.
   */
  async #create(s: Link, settings: SweepSettings, creator: string): Promise<void> {
    const n = this.#names;
    await this.#session.probe(s, async (ch) => {
      await ch.deleteQueue(n.meta);
      await ch.assertQueue(n.meta, STREAM);
      await ch.purgeQueue(n.tasks);
      await ch.purgeQueue(n.retry);
    });
    const total = chunkCount(settings);
    let batch: Array<Promise<void>> = [];
    for (const task of sweepTasks(settings)) {
      const body = Buffer.from(JSON.stringify(taskFields(task)));
      batch.push(this.#session.publish(s, n.exchange, n.tasks, body, { persistent: true, contentType: JSON_TYPE }));
      if (batch.length >= PUBLISH_BATCH) {
        await Promise.all(batch);
        batch = [];
      }
    }
    await Promise.all(batch);
    const meta = { ...settingsRecord(settings), total_chunks: total, created_by: creator, created_at: new Date().toISOString() };
    await this.#session.publish(s, '', n.meta, Buffer.from(JSON.stringify(meta)), { persistent: true, contentType: JSON_TYPE });
    await this.#session.probe(s, (ch) => ch.assertExchange(n.ready, 'fanout', { durable: true }));
    this.#log.info(`created the sweep: ${total} tasks in ${n.tasks}`);
  }
}

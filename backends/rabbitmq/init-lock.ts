/**
 * Creating the sweep once however many workers start together, and giving
 * each live worker a consumer name of its own.
 *
 * The mutex of creation is an exclusive queue (`<p>.init-lock`): the broker
 * lets one connection declare it, and deletes it when that connection dies,
 * so a creator that crashes half-way never blocks the others.
 *
 * The sweep exists once the exchange `<p>.meta.ready` does: it is declared
 * right after the settings are in `<p>.meta`, before the tasks, so workers
 * start on the first chunks while the creator is still publishing the rest
 * (10,000 confirmed persistent tasks take the broker a second or more). The
 * creator publishes the tasks in chunk order, in batches, and after each
 * batch is confirmed appends `{"ttg_tasks_created": N}` to `<p>.meta`: tasks
 * [0, N) are in the queue. A creator that dies leaves the count where it
 * stopped and the lock free; whoever finds the count short of the total and
 * can take the lock (a worker joining, or one taking tasks, which looks
 * every half second until the count is complete) publishes the rest. Tasks of the batch the creator was confirming when it
 * died may then be enqueued twice: such a chunk is computed twice and
 * counted once, as any chunk delivered twice.
 *
 * Sweeps created before this scheme (settings without `tasks_follow`) were
 * flagged ready only once every task was in: they are complete.
 */
import { randomUUID } from 'node:crypto';
import { SettingsMismatchError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { chunkCount, mismatchMessage, settingsDifference, settingsRecord, sweepTasks, type SweepSettings } from '../../core/sweep.js';
import { taskFields } from '../messages.js';
import { describe, errorCode, jsonObject, JSON_TYPE, STREAM, type Names } from './names.js';
import { untilStreamsRun } from './stream-read.js';
import type { Link, RabbitSession } from './session.js';
import type { StreamReader } from './stream-reader.js';

/** Tasks in a creator's first batch: few, so that workers get their first chunks at once. */
const FIRST_BATCH = 100;
/** Tasks per later batch: each batch is confirmed, then counted in `<p>.meta`. */
const PUBLISH_BATCH = 2000;
/** The settings' field saying that the tasks follow the ready flag (and are counted in `<p>.meta`). */
const TASKS_FOLLOW = 'tasks_follow';
/** A `<p>.meta` entry: tasks [0, N) are confirmed in the task queue. */
const CREATED = 'ttg_tasks_created';
/** How often a worker looks whether a sweep's creation is finished, or was abandoned. */
const ABANDONED_CHECK_MS = 500;

export class SweepCreation {
  readonly #session: RabbitSession;
  readonly #reader: StreamReader;
  readonly #names: Names;
  readonly #prefix: string;
  readonly #log: Logger;
  /** Every task of the sweep is known to be in the queue. */
  #complete = false;
  /** Tasks this process is publishing in the background (holding the init lock), if any. */
  #running: Promise<void> | null = null;
  #nextCheck = 0;
  /** The init lock being given back after joinOrCreate took it for a sweep that was there. */
  #unlocking: Promise<void> = Promise.resolve();

  constructor(session: RabbitSession, reader: StreamReader, names: Names, prefix: string, log: Logger) {
    this.#session = session;
    this.#reader = reader;
    this.#names = names;
    this.#prefix = prefix;
    this.#log = log;
  }

  /** Tasks may still be added to the queue (by this process, by a live creator, or by whoever takes over). */
  get incomplete(): boolean {
    return !this.#complete;
  }

  /** This process is publishing the sweep's tasks: some are not in the queue yet, so the sweep is not settled. */
  get publishing(): boolean {
    return this.#running !== null;
  }

  /** A new sweep under the prefix (after a reset): nothing is known about its creation. */
  forget(): void {
    this.#complete = false;
  }

  /**
   * true: created here; false: joined an existing sweep; null: another worker
   * holds the init lock. `background`: publish the tasks after returning (the
   * caller consumes meanwhile); otherwise return once every task is in.
   */
  async joinOrCreate(s: Link, settings: SweepSettings, creator: string, background: boolean): Promise<boolean | null> {
    // The sweep looked for and the lock tried at once: a creator then only looks again under the lock.
    const lock = this.#session.tryExclusiveQueue(s, this.#names.initLock);
    let existing: SweepSettings | null;
    try {
      existing = await this.#reader.settings(s);
    } catch (err) {
      if (await lock.catch(() => false)) await this.#unlock(s);
      throw err;
    }
    if (existing) {
      // A lock taken for nothing is given back (a taker-over waits for that: #finishIfAbandoned).
      this.#unlocking = lock.then((held) => (held ? this.#unlock(s) : undefined), () => {});
      this.#join(existing, settings);
      // A caller that waits gets every task; one that consumes at once looks as it takes (takeOverIfAbandoned).
      if (!background) await this.#finishIfAbandoned(s, settings, false);
      return false;
    }
    if (!(await lock)) return null;
    let handedOver = false;
    try {
      // Checked again under the lock: the previous holder may have written the settings in between.
      const again = await this.#reader.settings(s);
      if (again) this.#join(again, settings);
      else await this.#start(s, settings, creator);
      handedOver = true;
      await this.#publishRest(s, settings, background, again === null ? 0 : undefined);
      return again === null;
    } finally {
      if (!handedOver) await this.#unlock(s);
    }
  }

  /**
   * For a worker taking tasks: at most every ABANDONED_CHECK_MS, if the
   * sweep's creation is not known complete, looks whether it is, and
   * publishes the tasks its creator left unpublished when the creator is
   * gone. Never throws.
   */
  async takeOverIfAbandoned(s: Link, settings: SweepSettings): Promise<void> {
    if (this.#complete || this.#running || Date.now() < this.#nextCheck) return;
    this.#nextCheck = Date.now() + ABANDONED_CHECK_MS;
    await this.#finishIfAbandoned(s, settings, true).catch((err: unknown) => {
      this.#log.debug(`could not check the sweep's creation (${describe(err)}); looking again later`);
    });
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

  /** Deletes every queue and exchange of the sweep (ttg reset), the ready flag first: without it nobody trusts what is left. */
  async deleteSweep(s: Link, consumerName: string): Promise<void> {
    const n = this.#names;
    // Gone already (404) is what was wanted. An exclusive queue of another live connection cannot be deleted
    // (405); it goes with that connection. Anything else (a refusal, a lost connection) is the caller's to hear.
    const gone = (err: unknown) => {
      if (errorCode(err) !== 404 && errorCode(err) !== 405) throw err;
    };
    await this.#session.probe(s, (ch) => ch.deleteExchange(n.ready)).catch(gone);
    await Promise.all([n.tasks, n.retry, n.dlq, n.results, n.meta, n.initLock, n.redrives, n.joined, n.consumer(consumerName)]
      .map((queue) => this.#session.probe(s, (ch) => ch.deleteQueue(queue)).catch(gone)));
    await Promise.all([n.exchange, n.begun].map((exchange) => this.#session.probe(s, (ch) => ch.deleteExchange(exchange)).catch(gone)));
  }

  #join(theirs: SweepSettings, ours: SweepSettings): false {
    const diff = settingsDifference(theirs, ours);
    if (diff !== null) throw new SettingsMismatchError(mismatchMessage(diff, this.#prefix));
    return false;
  }

  /** Creation is incomplete and nobody holds the lock: take it and publish the rest. */
  async #finishIfAbandoned(s: Link, settings: SweepSettings, background: boolean): Promise<void> {
    if (this.#complete || this.#running) return;
    if ((await this.#created(s, settings)) >= chunkCount(settings)) {
      this.#complete = true;
      return;
    }
    await this.#unlocking;
    if (!(await this.#session.tryExclusiveQueue(s, this.#names.initLock))) return; // its creator is at work
    await this.#publishRest(s, settings, background);
  }

  /**
   * Called under the init lock with no ready flag: no worker has taken a task
   * yet (workers only consume once the flag exists), so whatever a creator
   * that died before raising the flag left behind can be cleared. Writes the
   * settings and raises the flag; the tasks follow (#publishRest).
   *
   * `<p>.meta` must be empty for the settings to be its first entry. It can
   * only hold something if an earlier creator began writing it, and each
   * creator raises `<p>.meta.begun` before it does: only then is the stream
   * deleted and declared again (which cost every creator ~15 ms of its start).
   */
  async #start(s: Link, settings: SweepSettings, creator: string): Promise<void> {
    const n = this.#names;
    // Nothing is written to the sweep's streams before they run (stream-read.ts), which is looked at meanwhile.
    const [begun] = await Promise.all([
      this.#session.probe(s, (ch) => ch.checkExchange(n.begun)).then(() => true, (err: unknown) => {
        if (errorCode(err) === 404) return false;
        throw err;
      }),
      this.#session.probe(s, (ch) => ch.purgeQueue(n.tasks)),
      this.#session.probe(s, (ch) => ch.purgeQueue(n.retry)),
      untilStreamsRun(this.#session, [n.meta, n.results, n.dlq, n.joined], this.#log),
    ]);
    await this.#session.probe(s, async (ch) => {
      if (!begun) {
        await ch.assertExchange(n.begun, 'fanout', { durable: true });
        return;
      }
      await ch.deleteQueue(n.meta);
      await ch.assertQueue(n.meta, STREAM);
    });
    if (begun) await untilStreamsRun(this.#session, [n.meta], this.#log);
    const meta = {
      ...settingsRecord(settings), total_chunks: chunkCount(settings), created_by: creator, created_at: new Date().toISOString(),
      [TASKS_FOLLOW]: true,
    };
    await this.#session.publish(s, '', n.meta, Buffer.from(JSON.stringify(meta)), { persistent: true, contentType: JSON_TYPE });
    await this.#session.probe(s, (ch) => ch.assertExchange(n.ready, 'fanout', { durable: true }));
  }

  /** Under the init lock: publishes the tasks not yet counted in `<p>.meta` (from `known` on), then gives the lock back. */
  async #publishRest(s: Link, settings: SweepSettings, background: boolean, known?: number): Promise<void> {
    const work = (async () => {
      try {
        const from = known ?? (await this.#created(s, settings));
        await this.#publishTasks(s, settings, from);
        this.#complete = true;
      } finally {
        await this.#unlock(s);
      }
    })();
    if (!background) {
      await work;
      return;
    }
    this.#running = work.catch((err: unknown) => {
      // The lock went with the connection, or was given back: whoever runs out of tasks first takes it again.
      this.#log.warn(`publishing the sweep's tasks stopped (${describe(err)}); a worker that runs out of tasks takes over`);
    }).finally(() => {
      this.#running = null;
    });
  }

  async #publishTasks(s: Link, settings: SweepSettings, from: number): Promise<void> {
    const n = this.#names;
    const total = chunkCount(settings);
    if (from >= total) return;
    if (from > 0) this.#log.info(`taking over the sweep's creation: publishing tasks ${from} to ${total - 1}`);
    // On a channel of their own: this worker's results and join record do not wait behind thousands of tasks.
    const via = await this.#session.openPublisher(s);
    try {
      let batch: Array<Promise<void>> = [];
      let index = 0;
      let limit = from + FIRST_BATCH;
      for (const task of sweepTasks(settings)) {
        if (index++ < from) continue;
        const body = Buffer.from(JSON.stringify(taskFields(task)));
        batch.push(this.#session.publish(s, n.exchange, n.tasks, body, { persistent: true, contentType: JSON_TYPE }, via));
        if (index >= limit || index === total) {
          await Promise.all(batch);
          batch = [];
          // Counted only once confirmed: a taker-over never skips a task that is not in the queue.
          const record = Buffer.from(JSON.stringify({ [CREATED]: index }));
          await this.#session.publish(s, '', n.meta, record, { persistent: true, contentType: JSON_TYPE });
          limit = index + PUBLISH_BATCH;
        }
      }
    } finally {
      via.close().catch(() => {});
    }
    this.#log.info(`created the sweep: ${total} tasks in ${n.tasks}`);
  }

  /** Tasks [0, N) known to be in the queue: the last count in `<p>.meta` (all of them for a sweep made before counts). */
  async #created(s: Link, settings: SweepSettings): Promise<number> {
    let follow = false;
    let created = 0;
    let first = true;
    await this.#reader.read(s, this.#names.meta, 0, 'end', (msg) => {
      const entry = jsonObject(msg.content);
      if (first) follow = entry?.[TASKS_FOLLOW] === true;
      first = false;
      const count = entry?.[CREATED];
      if (typeof count === 'number' && Number.isSafeInteger(count)) created = Math.max(created, count);
    });
    return follow ? created : chunkCount(settings);
  }

  async #unlock(s: Link): Promise<void> {
    await this.#session.probe(s, (ch) => ch.deleteQueue(this.#names.initLock)).catch(() => {});
  }
}

/**
 * Creating or joining a sweep in Redis (init-7.lua), and adding its tasks.
 *
 * The first call adds only the first TASKS_PER_CALL tasks, so the workers take their first chunks
 * at once; the rest are added by TaskFiller, in calls of the same size, once the worker's first
 * take is answered, while the first chunks are computed. (All 10,000 tasks of a sweep in its first
 * call took ~18 ms of Redis time, and both workers waited for it before their first chunk; a call
 * of 2,000 takes ~4 ms, so reads and commits go in between.) Every worker fills: each call is
 * atomic and adds the next batch, so tasks are added once whoever is alive, and a sweep never
 * depends on its creator staying alive.
 */
import type { Logger } from '../../core/log.js';
import type { SweepSettings } from '../types.js';
import { chunkCount, chunkIdWidth, kernelField } from '../../core/sweep.js';
import type { RedisLinks } from './connection.js';
import type { Keys } from './keys.js';
import { outcomeOf } from './scripts.js';

/** Tasks one init-7.lua call adds: more than the workers' first takes, ~4 ms of Redis time (~1.8 us a task). */
export const TASKS_PER_CALL = 2000;

export interface InitCall {
  outcome: 'created' | 'joined' | 'sweep-gone';
  totalChunks: number;
  added: number;
}

/** One init-7.lua call: creates or joins the sweep (or, `joinOnly`, only joins) and adds up to `most` tasks. */
export async function initCall(
  links: RedisLinks, keys: Keys, prefix: string, settings: SweepSettings, most: number, joinOnly: boolean, createdAt = new Date().toISOString(),
): Promise<InitCall> {
  const totalChunks = chunkCount(settings);
  const link = await links.commands();
  const reply = await links.script(link, 'init', [keys.meta, keys.tasks, keys.results, keys.done, keys.dead, keys.deadChunks, keys.attempts], [
    keys.group, settings.totalParams, settings.chunkSize, kernelField(settings), totalChunks, chunkIdWidth(totalChunks),
    createdAt, most, joinOnly ? '1' : '0',
  ]);
  const outcome = outcomeOf('init', reply, { prefix, settings }) as InitCall['outcome'];
  const [, stored, added] = (reply as unknown[]).map(Number);
  return { outcome, totalChunks: stored!, added: added! };
}

/** Adds the tasks the first call left, once per worker, again after a failure when asked. */
export class TaskFiller {
  #done: boolean;
  #started = false;
  #running: Promise<void> | null = null;

  constructor(
    private readonly links: RedisLinks, private readonly keys: Keys, private readonly prefix: string,
    private readonly settings: SweepSettings, private readonly log: Logger, private readonly closed: () => boolean, done: boolean,
  ) {
    this.#done = done;
  }

  /** Whether every task of the sweep is in (or the sweep is gone: nothing left to add). */
  get done(): boolean {
    return this.#done;
  }

  /** Whether fill() was called once. */
  get started(): boolean {
    return this.#started;
  }

  /** Starts adding the rest unless that is done or under way; a failed run is started again by the next call. */
  fill(): void {
    if (this.#done || this.#running || this.closed()) return;
    this.#started = true;
    this.#running = this.#run().catch((err: unknown) => {
      if (!this.closed()) this.log.warn('adding the sweep\'s remaining tasks failed; trying again at the next read', { error: String(err) });
    }).finally(() => {
      this.#running = null;
    });
  }

  async #run(): Promise<void> {
    while (!this.closed()) {
      const call = await initCall(this.links, this.keys, this.prefix, this.settings, TASKS_PER_CALL, true);
      if (call.outcome === 'sweep-gone' || call.added >= call.totalChunks) {
        this.#done = true;
        return;
      }
    }
  }
}

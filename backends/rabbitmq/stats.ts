/**
 * The RabbitMQ backend's queue statistics (`ttg monitor`, the web page).
 *
 * Chunks settled come from the streams (progress.ts), ready and retrying
 * from the queues' counts; they are read at different moments while chunks
 * move on, so each figure is bounded by what the chunks of the sweep leave
 * for it: settled + ready + retrying + in flight never exceed the total.
 * The queues are counted after the streams are read: a chunk that settles
 * in between is then in neither count rather than in both.
 */
import { chunkCount, type SweepSettings } from '../../core/sweep.js';
import type { QueueStats } from '../types.js';
import type { Names } from './names.js';
import type { Link } from './session.js';
import type { StreamReader } from './stream-reader.js';

export async function sweepStats(reader: StreamReader, names: Names, s: Link, settings: SweepSettings | null): Promise<QueueStats> {
  if (!settings) {
    reader.forget();
    const retrying = (await reader.queueInfo(s, names.retry)).messageCount;
    const ready = (await reader.queueInfo(s, names.tasks)).messageCount;
    return {
      settings: null, totalChunks: 0, completedChunks: 0, deadLettered: 0, ready, inFlight: -1, retrying,
      settledChunks: 0, results: 0, consumers: {},
    };
  }
  const total = chunkCount(settings);
  const p = await reader.poll(s, settings, false);
  const settled = Math.min(total, p.settled.size);
  // Counted after the streams; tasks that are not chunks of the sweep (hand-made) cannot make them exceed it either.
  const retrying = Math.min(total - settled, (await reader.queueInfo(s, names.retry)).messageCount);
  const ready = Math.min(total - settled - retrying, (await reader.queueInfo(s, names.tasks)).messageCount);
  return {
    settings: { ...settings },
    totalChunks: total,
    completedChunks: Math.min(settled, p.done.size),
    // Chunks, not entries: a chunk dead-lettered and later completed, or re-driven, or a malformed message, is no dead chunk.
    deadLettered: settled - Math.min(settled, p.done.size),
    settledChunks: settled,
    ready,
    inFlight: total - settled - ready - retrying,
    retrying,
    results: p.results,
    // AMQP tells how many consumers a queue has, not what each one holds.
    consumers: {},
  };
}

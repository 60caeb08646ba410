/**
 * The sweep domain, shared by engine/ and every backend: what a sweep is
 * (its settings), its chunks (ids, count, ranges, and the check that a task
 * is exactly one of them), results and their statistics, and how two
 * sweeps' settings are compared. No I/O here.
 */
import { KERNEL_NAMES } from '../kernel/types.js';

/** What identifies a sweep; a worker whose settings differ refuses to join. */
export interface SweepSettings {
  totalParams: number;
  chunkSize: number;
  /** The kernel's name: a built-in kernel's, or a user kernel's (its file's base name). */
  kernel: string;
  /** A user kernel's module, by the sha-256 of its bytes (hex); absent for a built-in kernel. */
  kernelSha256?: string;
}

/** A user kernel's name as a sweep records it (its file's base name). */
const USER_KERNEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/**
 * The stored `kernel` field: a built-in kernel's name, or `NAME@sha256:HEX`
 * for a user kernel. One string, so every backend keeps and compares the
 * module's hash exactly as it keeps and compares the kernel's name.
 */
export function kernelField(settings: Pick<SweepSettings, 'kernel' | 'kernelSha256'>): string {
  return settings.kernelSha256 ? `${settings.kernel}@sha256:${settings.kernelSha256}` : settings.kernel;
}

/** The inverse of kernelField, or null when the field is neither a built-in kernel nor a user kernel's record. */
export function parseKernelField(field: string): Pick<SweepSettings, 'kernel' | 'kernelSha256'> | null {
  const user = /^(.+)@sha256:([0-9a-f]{64})$/.exec(field);
  if (user) return USER_KERNEL_NAME.test(user[1]!) ? { kernel: user[1]!, kernelSha256: user[2]! } : null;
  return (KERNEL_NAMES as readonly string[]).includes(field) ? { kernel: field } : null;
}

/** How a sweep's kernel is named in messages: its name, and a user kernel's module hash. */
export function describeKernel(settings: Pick<SweepSettings, 'kernel' | 'kernelSha256'>): string {
  return settings.kernelSha256 ? `${settings.kernel} (module sha-256 ${settings.kernelSha256})` : settings.kernel;
}

/** One task: the parameters [startParam, endParam) of a sweep of totalParams. */
export interface ChunkTask {
  /** Zero-padded decimal (`00042`), see chunkIdOf(). */
  chunkId: string;
  startParam: number;
  endParam: number;
  totalParams: number;
}

/** Statistics of a chunk as they travel in `result_data`. */
export interface ChunkStats {
  count: number;
  /** Correctly rounded sum of the chunk's values. */
  sum: number;
  min: number;
  max: number;
  /** The smallest parameter at which `min` (`max`) is reached; -1 for an empty chunk. */
  argmin: number;
  argmax: number;
  avg: number;
  /** The exact sum as non-overlapping f64s (kernel/exact-sum.ts). */
  partials: number[];
}

export interface ChunkResult {
  chunkId: string;
  workerId: string;
  status: 'completed';
  durationSeconds: number;
  /** ISO-8601 time the chunk was finished. */
  completedAt: string;
  /** ISO-8601 time the chunk was handed to the threads (wire field `started_at`, beyond docs/design.md's list). */
  startedAt?: string;
  /**
   * True when the worker took the chunk over from one that stopped answering
   * (wire field `recovered`, only when true; beyond docs/design.md's list, so
   * results of older workers simply lack it). The web monitor names, per
   * worker, the chunks it recovered.
   */
  recovered?: boolean;
  /** Failed attempts before this one (wire field `attempts`, only when above 0). */
  attempts?: number;
  /**
   * The consumer name of the worker process that completed it (wire field
   * `consumer`, beyond docs/design.md's list): unique per live process, where
   * workerId (WORKER_ID) may be shared. Absent in results of older workers.
   */
  consumer?: string;
  stats: ChunkStats;
}

export interface DeadLetter {
  chunkId: string;
  reason: string;
  attempts: number;
  workerId: string;
  /** The task, when it could be parsed. */
  task: ChunkTask | null;
  /**
   * True when `ttg retry-dead` put the chunk back on the queue after this
   * dead letter: it no longer settles the chunk (dead-letter records are
   * append-only; the backend keeps the re-drives beside them).
   */
  redriven?: boolean;
}

/** Width of zero-padded chunk ids: at least 5 digits (`00042`), more for sweeps of 100 000+ chunks. */
export function chunkIdWidth(totalChunks: number): number {
  return Math.max(5, String(Math.max(0, totalChunks - 1)).length);
}

export function chunkIdOf(index: number, totalChunks: number): string {
  return String(index).padStart(chunkIdWidth(totalChunks), '0');
}

/** How many chunks a sweep has. */
export function chunkCount(settings: Pick<SweepSettings, 'totalParams' | 'chunkSize'>): number {
  return Math.ceil(settings.totalParams / settings.chunkSize);
}

/** The index of a chunk id of a sweep of `totalChunks` chunks, or null when it is not one (canonical form only). */
export function chunkIndexOf(chunkId: string, totalChunks: number): number | null {
  if (!/^\d{1,16}$/.test(chunkId)) return null;
  const index = Number(chunkId);
  return index < totalChunks && chunkIdOf(index, totalChunks) === chunkId ? index : null;
}

/**
 * Is this task exactly a chunk of the sweep: a canonical chunk id, and the
 * very range [start, end) and total that chunk has? Returns why not, or null.
 * Every backend runs every task it hands out through this (via
 * parseTaskFields), so a hand-made task with a real chunk id and a wrong
 * range can never add a wrong first result for that chunk to the aggregate.
 */
export function notAChunkOf(task: ChunkTask, settings: SweepSettings): string | null {
  const total = chunkCount(settings);
  if (task.totalParams !== settings.totalParams) {
    return `total_params (${task.totalParams}) differs from the sweep's ${settings.totalParams}`;
  }
  const index = chunkIndexOf(task.chunkId, total);
  if (index === null) {
    return `chunk_id ${JSON.stringify(task.chunkId.slice(0, 40))} is not a chunk of this sweep ` +
      `(${chunkIdOf(0, total)} to ${chunkIdOf(total - 1, total)})`;
  }
  const start = index * settings.chunkSize;
  const end = Math.min(settings.totalParams, start + settings.chunkSize);
  if (task.startParam !== start || task.endParam !== end) {
    return `chunk ${task.chunkId} of this sweep is [${start}, ${end}) but the task says [${task.startParam}, ${task.endParam})`;
  }
  return null;
}

/** The task of chunk `chunkId` of the sweep, or null when it is not one of its chunks. */
export function chunkTaskOf(settings: SweepSettings, chunkId: string): ChunkTask | null {
  const index = chunkIndexOf(chunkId, chunkCount(settings));
  if (index === null) return null;
  const startParam = index * settings.chunkSize;
  return { chunkId, startParam, endParam: Math.min(settings.totalParams, startParam + settings.chunkSize), totalParams: settings.totalParams };
}

/** Every task of a sweep, in order. */
export function* sweepTasks(settings: SweepSettings): Generator<ChunkTask> {
  const total = chunkCount(settings);
  for (let i = 0; i < total; i++) {
    const startParam = i * settings.chunkSize;
    yield {
      chunkId: chunkIdOf(i, total),
      startParam,
      endParam: Math.min(settings.totalParams, startParam + settings.chunkSize),
      totalParams: settings.totalParams,
    };
  }
}

/**
 * Settings as a backend stored them (wire names: total_params, chunk_size,
 * kernel), or null when the record is not a readable sweep. One reading of
 * stored settings for every backend.
 */
export function settingsFromRecord(fields: Record<string, unknown>): SweepSettings | null {
  const totalParams = Number(fields['total_params']);
  const chunkSize = Number(fields['chunk_size']);
  const field = fields['kernel'];
  if (!Number.isSafeInteger(totalParams) || totalParams < 1 || !Number.isSafeInteger(chunkSize) || chunkSize < 1) return null;
  const kernel = typeof field === 'string' ? parseKernelField(field) : null;
  if (kernel === null) return null;
  return { totalParams, chunkSize, ...kernel };
}

/** Why a backend refuses stored settings that settingsFromRecord cannot read (the same words on every backend). */
export function unreadableSettingsMessage(where: string, prefix: string): string {
  return `the sweep settings in ${where} are missing or unreadable (written by another version, or edited by hand?); ` +
    `clear the sweep with 'ttg reset' (QUEUE_PREFIX=${prefix})`;
}

/** Settings as a backend stores them (the inverse of settingsFromRecord). */
export function settingsRecord(settings: SweepSettings): Record<string, string | number> {
  return { total_params: settings.totalParams, chunk_size: settings.chunkSize, kernel: kernelField(settings) };
}

/** Names the first setting that differs, or null when they match. */
export function settingsDifference(theirs: SweepSettings, ours: SweepSettings): string | null {
  const diffs: string[] = [];
  if (theirs.totalParams !== ours.totalParams) diffs.push(`TOTAL_PARAMS is ${ours.totalParams} here but ${theirs.totalParams} in the queue`);
  if (theirs.chunkSize !== ours.chunkSize) diffs.push(`CHUNK_SIZE is ${ours.chunkSize} here but ${theirs.chunkSize} in the queue`);
  if (kernelField(theirs) !== kernelField(ours)) {
    if (theirs.kernel === ours.kernel && theirs.kernelSha256 && ours.kernelSha256) {
      diffs.push(`KERNEL ${ours.kernel} is the module with sha-256 ${ours.kernelSha256} here but ${theirs.kernelSha256} in the queue`);
    } else {
      diffs.push(`KERNEL is ${describeKernel(ours)} here but ${describeKernel(theirs)} in the queue`);
    }
  }
  return diffs.length ? diffs.join('; ') : null;
}

export function mismatchMessage(diff: string, prefix: string): string {
  return `this worker's sweep differs from the one already in the queue (QUEUE_PREFIX=${prefix}): ${diff}. ` +
    `Use the same settings, another QUEUE_PREFIX, or clear the old sweep with 'ttg reset'`;
}

/**
 * Task and result messages: one encoding for every backend (docs/design.md,
 * "Queue contracts"). Redis stores the fields as stream entry fields,
 * RabbitMQ as a JSON object with the same names; both go through here, so a
 * malformed message gets the same wording whatever the broker.
 */
import { notAChunkOf, type ChunkResult, type ChunkStats, type ChunkTask, type SweepSettings } from '../core/sweep.js';

/** Wire fields of a task (strings, as Redis keeps them). */
export function taskFields(task: ChunkTask): Record<string, string> {
  return {
    chunk_id: task.chunkId,
    start_param: String(task.startParam),
    end_param: String(task.endParam),
    total_params: String(task.totalParams),
  };
}

export type ParsedTask = { ok: true; task: ChunkTask } | { ok: false; chunkId: string; reason: string };

function intField(fields: Record<string, unknown>, name: string): number | string {
  const v = fields[name];
  if (v === undefined || v === null || v === '') return `missing field ${name}`;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 0) return `field ${name} must be a non-negative integer, got ${JSON.stringify(v)}`;
  return n;
}

/**
 * Checks a task's fields: all present, integers, start < end <= total; and,
 * given the sweep's settings, that the task is exactly one of its chunks
 * (notAChunkOf). Without settings (reading dead letters of an unknown sweep)
 * only the fields are checked.
 */
export function parseTaskFields(fields: Record<string, unknown>, settings: SweepSettings | null): ParsedTask {
  const rawId = fields['chunk_id'];
  const chunkId = typeof rawId === 'string' && rawId !== '' ? rawId : typeof rawId === 'number' ? String(rawId) : '?';
  if (chunkId === '?') return { ok: false, chunkId, reason: 'missing field chunk_id' };
  const start = intField(fields, 'start_param');
  if (typeof start === 'string') return { ok: false, chunkId, reason: start };
  const end = intField(fields, 'end_param');
  if (typeof end === 'string') return { ok: false, chunkId, reason: end };
  const total = intField(fields, 'total_params');
  if (typeof total === 'string') return { ok: false, chunkId, reason: total };
  if (end <= start) return { ok: false, chunkId, reason: `end_param (${end}) must be greater than start_param (${start})` };
  if (end > total) return { ok: false, chunkId, reason: `end_param (${end}) is beyond total_params (${total})` };
  const task: ChunkTask = { chunkId, startParam: start, endParam: end, totalParams: total };
  const wrong = settings ? notAChunkOf(task, settings) : null;
  if (wrong !== null) return { ok: false, chunkId, reason: wrong };
  return { ok: true, task };
}

/** Parses a JSON task body (RabbitMQ); not-JSON and non-objects are malformed too. */
export function parseTaskJson(body: string, settings: SweepSettings | null): ParsedTask {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return { ok: false, chunkId: '?', reason: `message is not JSON: ${JSON.stringify(body.slice(0, 80))}` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, chunkId: '?', reason: 'message is not a JSON object' };
  }
  return parseTaskFields(value as Record<string, unknown>, settings);
}

/** Wire fields of a result (docs/design.md): result_data is JSON with sum, count, min, max, argmin, argmax, avg, partials. */
export function resultFields(result: ChunkResult): Record<string, string> {
  const list = resultFieldList(result);
  const fields: Record<string, string> = {};
  for (let i = 0; i < list.length; i += 2) fields[list[i]!] = list[i + 1]!;
  return fields;
}

/**
 * The same fields as a flat [name, value, name, value, ...] list, in the same
 * order: what a Redis stream entry takes, built without an object per result
 * on the hot path.
 */
export function resultFieldList(result: ChunkResult): string[] {
  const list = [
    'chunk_id', result.chunkId,
    'worker_id', result.workerId,
    'status', result.status,
    'duration_seconds', String(result.durationSeconds),
    'completed_at', result.completedAt,
  ];
  if (result.startedAt) list.push('started_at', result.startedAt);
  // Optional, so that readers of any age parse both kinds of result.
  if (result.recovered) list.push('recovered', 'true');
  if (result.attempts) list.push('attempts', String(result.attempts));
  if (result.consumer) list.push('consumer', result.consumer);
  list.push('result_data', JSON.stringify(result.stats));
  return list;
}

/** A result's `attempts` field as a count; 0 when absent or not a count (it is informative only). */
function attemptsOf(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,7}$/.test(value) ? Number(value) : 0;
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** Parses result fields; returns null for an entry that is not a well-formed result (it is then ignored and reported). */
export function parseResultFields(fields: Record<string, unknown>): ChunkResult | null {
  try {
    const chunkId = String(fields['chunk_id'] ?? '');
    const data = typeof fields['result_data'] === 'string' ? JSON.parse(fields['result_data']) : fields['result_data'];
    if (!chunkId || !data || typeof data !== 'object') return null;
    const stats = data as Partial<ChunkStats>;
    if (typeof stats.count !== 'number' || typeof stats.sum !== 'number' || !Array.isArray(stats.partials) ||
        typeof stats.min !== 'number' || typeof stats.max !== 'number' ||
        !Number.isInteger(stats.argmin) || !Number.isInteger(stats.argmax)) return null;
    return {
      chunkId,
      workerId: String(fields['worker_id'] ?? '?'),
      status: 'completed',
      durationSeconds: Number(fields['duration_seconds'] ?? 0),
      completedAt: String(fields['completed_at'] ?? ''),
      ...(typeof fields['started_at'] === 'string' ? { startedAt: fields['started_at'] } : {}),
      ...(fields['recovered'] === 'true' || fields['recovered'] === true ? { recovered: true } : {}),
      ...(attemptsOf(fields['attempts']) > 0 ? { attempts: attemptsOf(fields['attempts']) } : {}),
      ...(typeof fields['consumer'] === 'string' && fields['consumer'] !== '' ? { consumer: fields['consumer'] } : {}),
      stats: {
        count: stats.count, sum: stats.sum, min: stats.min, max: stats.max, argmin: stats.argmin!, argmax: stats.argmax!,
        avg: typeof stats.avg === 'number' ? stats.avg : stats.sum / stats.count,
        partials: stats.partials.map(Number),
      },
    };
  } catch {
    return null;
  }
}


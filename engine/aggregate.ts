/**
 * The aggregator: merges chunk results into the sweep's report. Each chunk
 * is counted once (its first result; later deliveries only raise
 * `duplicate_results`), sums are merged exactly from the partials, and the
 * chunks without a result are listed. Reading is non-consuming, so the
 * report is the same however often it is made.
 */
import { chunkCount, chunkIdOf, type ChunkResult, type DeadLetter, type SweepSettings } from '../core/sweep.js';
import { mergeChunkStats } from './stats.js';
import { staticShare, type StaticWorkerSummary } from './static-worker.js';
import { TtgError } from '../core/errors.js';

export interface AggregateReport {
  total_params: number;
  expected_params: number | null;
  total_chunks: number;
  expected_chunks: number | null;
  missing_chunks: string[];
  duplicate_results: number;
  /** Chunks whose last dead letter no re-drive covers and that have no result; `redriven`: times re-driven before (when any). */
  dead_lettered_chunks: Array<{ chunk_id: string; reason: string; attempts: number; worker_id: string; redriven?: number }>;
  /** Chunk id → times `ttg retry-dead` put it back on the queue (only chunks re-driven at least once), whatever became of it. */
  redriven_chunks: Record<string, number>;
  grand_sum: number;
  grand_sum_partials: number[];
  global_min: number | null;
  global_max: number | null;
  /** The smallest parameter at which global_min (global_max) is reached. */
  argmin: number | null;
  argmax: number | null;
  overall_avg: number | null;
  /** Thread seconds spent computing chunks, summed over chunks (counted results only). */
  total_processing_time: number;
  /** Parameters per second of thread time (CPU params/s: what one thread sustains). */
  throughput: number;
  /** Seconds from the first chunk's start to the last chunk's end. */
  wall_clock_time: number;
  /** Parameters per second of wall-clock time. */
  effective_throughput: number;
  /** total_processing_time / wall_clock_time: how many threads were busy at once, on average. */
  parallelism_factor: number;
  worker_distribution: Record<string, number>;
  /**
   * Consumer name (one per worker process) → chunks counted from it: every
   * consumer that joined the sweep, those with 0 chunks too. Results of
   * workers that did not record their consumer count as `worker-<id>`.
   */
  consumer_distribution: Record<string, number>;
  /** `ttg run` only: the command's own time, from process start to the report (start-up and settling included). */
  command_seconds?: number;
  complete: boolean;
  kernel: string | null;
  /** A user kernel's module sha-256, as the sweep's settings record it; null for a built-in kernel. */
  kernel_sha256: string | null;
  chunks?: Array<{ chunk_id: string; worker_id: string; consumer: string; count: number; sum: number; min: number; max: number; duration_seconds: number; completed_at: string }>;
}

export function buildReport(
  settings: SweepSettings | null,
  results: readonly ChunkResult[],
  deadLetters: readonly DeadLetter[] = [],
  opts: {
    verbose?: boolean; expectedChunkIds?: readonly string[];
    /** Chunk id → times re-driven (the backend's readRedrives()). */
    redrives?: Readonly<Record<string, number>>;
    /** Consumer names of every worker that joined (the backend's readConsumers()), listed even with 0 chunks. */
    joined?: readonly string[];
  } = {},
): AggregateReport {
  const firstByChunk = new Map<string, ChunkResult>();
  let duplicates = 0;
  for (const r of results) {
    if (firstByChunk.has(r.chunkId)) duplicates++;
    else firstByChunk.set(r.chunkId, r);
  }
  const counted = [...firstByChunk.values()].sort((a, b) => (a.chunkId < b.chunkId ? -1 : a.chunkId > b.chunkId ? 1 : 0));
  const merged = mergeChunkStats(counted.map((r) => r.stats));

  const sweepChunks = settings ? chunkCount(settings) : 0;
  const expectedIds = opts.expectedChunkIds ??
    (settings ? Array.from({ length: sweepChunks }, (_, i) => chunkIdOf(i, sweepChunks)) : null);
  const expectedChunks = expectedIds ? expectedIds.length : null;
  const missing = expectedIds ? expectedIds.filter((id) => !firstByChunk.has(id)) : [];

  // Last dead letter of each chunk that never got a result, unless a re-drive put the chunk back on the queue since.
  const deadByChunk = new Map<string, DeadLetter>();
  for (const d of deadLetters) if (!firstByChunk.has(d.chunkId) && !d.redriven) deadByChunk.set(d.chunkId, d);
  const redrives = opts.redrives ?? {};

  let processing = 0;
  let firstStart = Infinity;
  let lastEnd = -Infinity;
  const distribution: Record<string, number> = {};
  const byConsumer: Record<string, number> = Object.fromEntries((opts.joined ?? []).map((c) => [c, 0]));
  for (const r of counted) {
    processing += r.durationSeconds;
    const end = Date.parse(r.completedAt);
    if (Number.isFinite(end)) {
      const start = r.startedAt ? Date.parse(r.startedAt) : end - r.durationSeconds * 1000;
      firstStart = Math.min(firstStart, Number.isFinite(start) ? start : end);
      lastEnd = Math.max(lastEnd, end);
    }
    distribution[r.workerId] = (distribution[r.workerId] ?? 0) + 1;
    const consumer = consumerOf(r);
    byConsumer[consumer] = (byConsumer[consumer] ?? 0) + 1;
  }
  const wall = lastEnd > firstStart ? (lastEnd - firstStart) / 1000 : 0;
  const count = merged.count;

  const report: AggregateReport = {
    total_params: count,
    expected_params: settings ? settings.totalParams : null,
    total_chunks: counted.length,
    expected_chunks: expectedChunks,
    missing_chunks: missing,
    duplicate_results: duplicates,
    dead_lettered_chunks: [...deadByChunk.values()].map((d) => ({
      chunk_id: d.chunkId, reason: d.reason, attempts: d.attempts, worker_id: d.workerId,
      ...(redrives[d.chunkId] ? { redriven: redrives[d.chunkId] } : {}),
    })),
    redriven_chunks: Object.fromEntries(Object.entries(redrives).filter(([, n]) => n > 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    grand_sum: merged.sum,
    grand_sum_partials: merged.partials,
    global_min: count > 0 ? merged.min : null,
    global_max: count > 0 ? merged.max : null,
    argmin: count > 0 ? merged.argmin : null,
    argmax: count > 0 ? merged.argmax : null,
    overall_avg: count > 0 ? merged.sum / count : null,
    total_processing_time: round6(processing),
    throughput: processing > 0 ? Math.round(count / processing) : 0,
    wall_clock_time: round6(wall),
    effective_throughput: wall > 0 ? Math.round(count / wall) : 0,
    parallelism_factor: wall > 0 ? Math.round((processing / wall) * 100) / 100 : 0,
    worker_distribution: distribution,
    consumer_distribution: byConsumer,
    complete: expectedChunks !== null && missing.length === 0,
    kernel: settings ? settings.kernel : null,
    kernel_sha256: settings?.kernelSha256 ?? null,
  };
  if (opts.verbose) {
    report.chunks = counted.map((r) => ({
      chunk_id: r.chunkId, worker_id: r.workerId, consumer: consumerOf(r), count: r.stats.count, sum: r.stats.sum, min: r.stats.min,
      max: r.stats.max, duration_seconds: r.durationSeconds, completed_at: r.completedAt,
    }));
  }
  return report;
}

/**
 * The report of a static-mode sweep, from its workers' JSON summary lines
 * (`ttg aggregate --static`): each share counts as one chunk (id = worker id),
 * merged exactly from its partials; shares not there are missing, a share
 * given twice counts once. `sources` name where each summary came from, for
 * the errors. Throws TtgError when the summaries are not of one sweep.
 */
export function buildStaticReport(
  summaries: ReadonlyArray<{ summary: StaticWorkerSummary; source: string }>,
  opts: { verbose?: boolean } = {},
): AggregateReport {
  if (summaries.length === 0) throw new TtgError('no static worker summary found: pass the files holding the workers\' stdout (their last line), or pipe them in');
  const first = summaries[0]!;
  for (const { summary, source } of summaries) {
    for (const key of ['total_params', 'total_workers', 'kernel', 'kernel_sha256'] as const) {
      // (Summaries of workers from before user kernels have no kernel_sha256: a built-in's null.)
      if ((summary[key] ?? null) !== (first.summary[key] ?? null)) {
        throw new TtgError(`${source}: ${key} is ${summary[key]} but ${first.summary[key]} in ${first.source}: the summaries come from different sweeps`);
      }
    }
    const share = staticShare(summary.total_params, summary.total_workers, Number(summary.worker_id));
    if (summary.range_start !== share.start || summary.range_end !== share.end) {
      throw new TtgError(`${source}: worker ${summary.worker_id} covered ${summary.range_start}..${summary.range_end}, ` +
        `but its share of ${summary.total_params} params among ${summary.total_workers} workers is ${share.start}..${share.end}`);
    }
  }
  const { total_params: totalParams, total_workers: workers, kernel, kernel_sha256: kernelSha256 } = first.summary;
  const results: ChunkResult[] = summaries
    .filter(({ summary }) => summary.status === 'completed')
    .map(({ summary }) => ({
      chunkId: summary.worker_id, workerId: summary.worker_id, status: 'completed', durationSeconds: summary.thread_seconds,
      completedAt: summary.completed_at, startedAt: summary.started_at, stats: summary.aggregates,
    }));
  const report = buildReport(null, results, [], {
    ...opts, expectedChunkIds: Array.from({ length: workers }, (_, i) => String(i)),
  });
  // Static workers have no consumer names: the chunks per worker are by WORKER_ID.
  return { ...report, consumer_distribution: {}, expected_params: totalParams, kernel, kernel_sha256: kernelSha256 ?? null };
}

/** Finds the static summaries in the text of a file (or stdin): every JSON line with mode "static". */
export function staticSummariesIn(text: string, source: string): Array<{ summary: StaticWorkerSummary; source: string }> {
  const found: Array<{ summary: StaticWorkerSummary; source: string }> = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trimStart().startsWith('{')) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      return; // a log line that happens to start with a brace
    }
    const s = parsed as Partial<StaticWorkerSummary>;
    if (s.mode !== 'static') return;
    const at = `${source}:${i + 1}`;
    const ints = ['range_start', 'range_end', 'total_params', 'total_workers'] as const;
    const bad = ints.find((k) => !Number.isInteger(s[k])) ??
      (typeof s.worker_id !== 'string' || !/^\d+$/.test(s.worker_id) ? 'worker_id' : undefined) ??
      (!s.aggregates || !Array.isArray(s.aggregates.partials) || !Number.isInteger(s.aggregates.argmin) ? 'aggregates' : undefined);
    if (bad) throw new TtgError(`${at}: a static summary without a valid ${bad} (is it from an older ttg? run the workers again)`);
    found.push({ summary: s as StaticWorkerSummary, source: at });
  });
  return found;
}

/** The consumer a result came from; results of workers that did not say count under the default name `worker-<id>`. */
export function consumerOf(r: ChunkResult): string {
  return r.consumer ?? `worker-${r.workerId}`;
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 6 });

/** The human-readable report: summary, throughput analysis, distribution with bars. */
export function formatReport(r: AggregateReport): string {
  const lines: string[] = [];
  const rule = '='.repeat(60);
  const kernelNote = r.kernel ? ` (kernel ${r.kernel}${r.kernel_sha256 ? `, module sha-256 ${r.kernel_sha256.slice(0, 12)}…` : ''})` : '';
  lines.push(rule, 'ttg sweep report' + kernelNote, rule);
  lines.push('Summary');
  lines.push(`  Parameters processed : ${fmt(r.total_params)}${r.expected_params !== null ? ` of ${fmt(r.expected_params)}` : ''}`);
  lines.push(`  Chunks               : ${fmt(r.total_chunks)}${r.expected_chunks !== null ? ` of ${fmt(r.expected_chunks)}` : ''}`);
  // Grouped and rounded to 6 decimals for reading; --json keeps every digit.
  const num = (x: number | null) => (x === null ? '-' : fmt(x));
  lines.push(`  Grand sum            : ${fmt(r.grand_sum)}`);
  lines.push(`  Minimum              : ${num(r.global_min)}${r.argmin !== null ? ` at parameter ${fmt(r.argmin)}` : ''}`);
  lines.push(`  Maximum              : ${num(r.global_max)}${r.argmax !== null ? ` at parameter ${fmt(r.argmax)}` : ''}`);
  lines.push(`  Average              : ${num(r.overall_avg)}`);
  if (r.missing_chunks.length > 0) {
    const shown = r.missing_chunks.slice(0, 20).join(', ');
    const more = r.missing_chunks.length - 20;
    lines.push(`  Missing chunks       : ${r.missing_chunks.length} (${shown}${more > 0 ? `, ... ${more} more` : ''})`);
  }
  if (r.dead_lettered_chunks.length > 0) {
    lines.push(`  Dead-lettered chunks : ${r.dead_lettered_chunks.length}`);
    for (const d of r.dead_lettered_chunks.slice(0, 10)) {
      lines.push(`    ${d.chunk_id}: ${d.reason} (after ${d.attempts} attempts${d.redriven ? `; re-driven ${d.redriven} before` : ''})`);
    }
    const more = r.dead_lettered_chunks.length - 10;
    if (more > 0) lines.push(`    ... ${more} more (ttg aggregate --json lists them all)`);
  }
  const redriven = Object.entries(r.redriven_chunks);
  if (redriven.length > 0) {
    // What became of each: a result counts it (complete), a dead letter since the re-drive lists it above, else it waits.
    const dead = new Set(r.dead_lettered_chunks.map((d) => d.chunk_id));
    const missing = new Set(r.missing_chunks);
    lines.push(`  Re-driven chunks     : ${redriven.length} (put back on the queue by ttg retry-dead)`);
    for (const [id, n] of redriven.slice(0, 10)) {
      const state = !missing.has(id) ? 'completed' : dead.has(id) ? 'dead-lettered again' : 'pending';
      lines.push(`    ${id}: re-driven ${n}, ${state}`);
    }
    if (redriven.length > 10) lines.push(`    ... ${redriven.length - 10} more (ttg aggregate --json lists them all)`);
  }
  if (r.duplicate_results > 0) lines.push(`  Duplicate results    : ${r.duplicate_results} (not counted)`);
  // What each figure is, in its own words: the thread figures are wall time inside the kernel
  // threads (Node 20 gives no per-thread CPU clock), so with more threads than cores they
  // include time spent waiting for a core, and "busy threads" can exceed the core count.
  lines.push('', 'Throughput');
  lines.push(`  Sweep span           : ${r.wall_clock_time.toFixed(3)} s (first chunk started to last chunk committed)`);
  if (r.command_seconds !== undefined) {
    lines.push(`  Command time         : ${r.command_seconds.toFixed(3)} s (this command from start to report: start-up and settling included)`);
  }
  lines.push(`  Params/s over span   : ${fmt(r.effective_throughput)}`);
  lines.push(`  Thread busy time     : ${r.total_processing_time.toFixed(3)} s (wall time inside kernel threads, summed)`);
  lines.push(`  Params/s per thread  : ${fmt(r.throughput)} (per second of thread busy time)`);
  lines.push(`  Busy threads (avg)   : ${r.parallelism_factor.toFixed(2)} (busy time / span; above the core count, threads waited for cores)`);
  lines.push('', 'Chunks per worker');
  // By consumer (one per worker process, those that joined with 0 chunks too); a static sweep has only worker ids.
  const perWorker = Object.keys(r.consumer_distribution ?? {}).length > 0 ? r.consumer_distribution : r.worker_distribution;
  const entries = Object.entries(perWorker).sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }));
  const most = Math.max(1, ...entries.map(([, n]) => n));
  const width = Math.max(6, ...entries.map(([w]) => w.length));
  for (const [worker, n] of entries) {
    const bar = n > 0 ? '#'.repeat(Math.max(1, Math.round((n / most) * 40))) : '';
    const pct = r.total_chunks > 0 ? ((n / r.total_chunks) * 100).toFixed(1) : '0.0';
    lines.push(`  ${worker.padEnd(width)} ${String(n).padStart(7)} ${pct.padStart(5)}% ${bar}`);
  }
  if (r.chunks) {
    lines.push('', 'Chunks');
    for (const c of r.chunks) {
      lines.push(`  ${c.chunk_id}  worker ${c.worker_id}  count ${c.count}  sum ${c.sum}  min ${c.min}  max ${c.max}  ${c.duration_seconds}s`);
    }
  }
  lines.push(rule, r.complete ? 'Sweep complete.'
    : `Sweep INCOMPLETE: see missing chunks above.${r.dead_lettered_chunks.length > 0 ? ' ttg retry-dead puts the dead-lettered ones back on the queue.' : ''}`);
  return lines.join('\n');
}

/**
 * `ttg monitor --web`: a live page for the sweep on the configured backend,
 * served by the CLI itself (no build server, no CDN: the machine running it
 * may have no internet).
 *
 *   /              the page (engine/web/index.html, app.js, style.css)
 *   /vendor/…      uPlot, read from node_modules at run time (a runtime
 *                  dependency, so the image and `npm ci --omit=dev` have it)
 *   /events        server-sent events: one `snapshot` event per poll
 *   /snapshot.json the latest snapshot, for curl and scripts
 *
 * One poller reads the backend (settings, results, dead letters, queue
 * statistics) every interval and turns what it read into a snapshot with
 * `describeSweep`, a pure function: progress counts come from the same
 * `buildReport` that `ttg aggregate` uses, so they never exceed their
 * totals, and the final report is the aggregate's, to the digit.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ChunkResult, DeadLetter, QueueBackend, QueueStats, SweepSettings } from '../backends/types.js';
import { buildReport, consumerOf, formatReport, type AggregateReport } from './aggregate.js';
import { TtgError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

/** One row of the workers table: one worker process, as the report's chunks per consumer. */
export interface WorkerRow {
  /**
   * The process's consumer name (`worker-<id>`, or `worker-<id>-<host>-<pid>` when a second process
   * came with the same WORKER_ID), as its results and the broker carry it: the row's key.
   */
  consumer: string;
  /** Its WORKER_ID (`worker_id` of its results). */
  worker: string;
  /** Chunks counted for this worker (first result of each chunk). */
  chunks: number;
  params: number;
  /** Its parameters over its active span (first chunk started → last chunk finished). */
  params_per_second: number;
  /** Chunks in its hands now; null when the broker does not say (RabbitMQ). */
  in_hand: number | null;
  /** ISO time of its latest result; null before its first. */
  last_seen: string | null;
  /** Chunks it committed after taking them over from a worker that stopped answering. */
  recovered: string[];
  /** Its counted chunks that had failed attempts before succeeding. */
  retried: number;
}

export interface MonitorSnapshot {
  /** ISO time of the poll this snapshot comes from. */
  at: string;
  backend: string;
  queue_prefix: string;
  /** Whether the last poll reached the broker; the page says so plainly when not. */
  broker: { ok: true } | { ok: false; error: string; since: string };
  sweep: { kernel: string; total_params: number; chunk_size: number; total_chunks: number } | null;
  progress: {
    total_chunks: number;
    /** Chunks of the sweep with a result. */
    completed_chunks: number;
    /** Chunks of the sweep dead-lettered without a result. */
    dead_lettered_chunks: number;
    /** completed + dead-lettered: never above total_chunks. */
    settled_chunks: number;
    total_params: number;
    /** Parameters in counted results: never above total_params. */
    params_done: number;
    /** settled_chunks / total_chunks. */
    fraction: number;
    ready: number | null;
    in_flight: number | null;
    retrying: number | null;
    duplicate_results: number;
  } | null;
  /** Over the last RATE_WINDOW_MS of polls; null until two polls apart. */
  rate: { params_per_second: number; chunks_per_second: number } | null;
  eta_seconds: number | null;
  /** Parameters per second, bucketed by the results' completion times (x: unix seconds). */
  throughput: { bucket_seconds: number; t: number[]; total: number[]; workers: Record<string, number[]> };
  workers: WorkerRow[];
  failures: {
    /** Chunks waiting out a retry delay now (null where the broker does not say). */
    retrying_now: number | null;
    /** Failed attempts before success, summed over counted chunks (results that say so). */
    retried_attempts: number;
    dead_letters: Array<{ chunk_id: string; reason: string; attempts: number; worker_id: string }>;
    /** Dead letters beyond those listed. */
    dead_letters_more: number;
  };
  settled: boolean;
  /** When settled: the report, as `ttg aggregate --json` prints it, and its text as `ttg aggregate` prints it. */
  report: AggregateReport | null;
  report_text: string | null;
}

/** What one poll read, for describeSweep. */
export interface SweepReading {
  settings: SweepSettings | null;
  results: readonly ChunkResult[];
  deadLetters: readonly DeadLetter[];
  stats: QueueStats | null;
}

/** Earlier polls' progress, for the rate. */
export interface ProgressSample {
  at: number;
  params: number;
  chunks: number;
}

const RATE_WINDOW_MS = 15_000;
const MAX_BUCKETS = 240;
const MAX_LISTED = 50;

/** Turns one poll's reading into the page's snapshot. Pure: `now` and the earlier samples are given. */
export function describeSweep(
  reading: SweepReading,
  ctx: {
    now: number; backend: string; queuePrefix: string; samples: readonly ProgressSample[];
    /** False where the broker does not say who holds which chunks (RabbitMQ): the page shows "–", not 0. */
    inHandKnown?: boolean;
  },
): MonitorSnapshot {
  const { settings, results, deadLetters, stats } = reading;
  const base = {
    at: new Date(ctx.now).toISOString(), backend: ctx.backend, queue_prefix: ctx.queuePrefix, broker: { ok: true as const },
  };
  const emptyFailures = { retrying_now: null, retried_attempts: 0, dead_letters: [], dead_letters_more: 0 };
  if (settings === null) {
    return {
      ...base, sweep: null, progress: null, rate: null, eta_seconds: null,
      throughput: { bucket_seconds: 1, t: [], total: [], workers: {} }, workers: [], failures: emptyFailures,
      settled: false, report: null, report_text: null,
    };
  }
  const report = buildReport(settings, results, deadLetters);
  const totalChunks = report.expected_chunks ?? 0;
  const missing = new Set(report.missing_chunks);
  const completed = totalChunks - missing.size;
  // buildReport keeps one dead letter per chunk without a result; only the sweep's own chunks settle it.
  const deadSettling = report.dead_lettered_chunks.filter((d) => missing.has(d.chunk_id));
  const settledChunks = completed + deadSettling.length;
  const paramsDone = Math.min(settings.totalParams, report.total_params);
  const settled = totalChunks > 0 && settledChunks >= totalChunks;

  // The first result of each chunk is the one counted, as in the report.
  const counted = new Map<string, ChunkResult>();
  for (const r of results) if (!counted.has(r.chunkId)) counted.set(r.chunkId, r);

  const rows = new Map<string, WorkerRow & { firstStart: number; lastEnd: number }>();
  const rowOf = (consumer: string, worker: () => string) => {
    let row = rows.get(consumer);
    if (!row) {
      row = {
        consumer, worker: worker(), chunks: 0, params: 0, params_per_second: 0, in_hand: stats && ctx.inHandKnown !== false ? 0 : null,
        last_seen: null, recovered: [], retried: 0, firstStart: Infinity, lastEnd: -Infinity,
      };
      rows.set(consumer, row);
    }
    return row;
  };
  let retriedAttempts = 0;
  for (const r of counted.values()) {
    const row = rowOf(consumerOf(r), () => r.workerId);
    row.chunks++;
    row.params += r.stats.count;
    const end = Date.parse(r.completedAt);
    if (Number.isFinite(end)) {
      const start = r.startedAt ? Date.parse(r.startedAt) : end - r.durationSeconds * 1000;
      row.firstStart = Math.min(row.firstStart, Number.isFinite(start) ? start : end);
      row.lastEnd = Math.max(row.lastEnd, end);
    }
    // Optional result fields: results of older workers lack them, and count as neither.
    if (r.recovered === true) row.recovered.push(r.chunkId);
    if (typeof r.attempts === 'number' && r.attempts > 0) {
      row.retried++;
      retriedAttempts += r.attempts;
    }
  }
  // Chunks in hand, by the consumer names the broker knows. A process with none counted yet gets a row of its
  // own; its WORKER_ID is the longest known one its name starts with (`worker-<id>-<host>-<pid>`).
  if (stats) {
    const ids = [...new Set([...rows.values()].map((r) => r.worker))].sort((a, b) => b.length - a.length);
    for (const [consumer, n] of Object.entries(stats.consumers)) {
      const worker = () => ids.find((w) => consumer === `worker-${w}` || consumer.startsWith(`worker-${w}-`)) ?? consumer.replace(/^worker-/, '');
      const row = rowOf(consumer, worker);
      row.in_hand = (row.in_hand ?? 0) + n;
    }
  }
  const workers: WorkerRow[] = [...rows.values()]
    .sort((a, b) => a.consumer.localeCompare(b.consumer, 'en', { numeric: true }))
    .map(({ firstStart, lastEnd, ...row }) => ({
      ...row,
      recovered: row.recovered.sort().slice(0, MAX_LISTED),
      last_seen: Number.isFinite(lastEnd) ? new Date(lastEnd).toISOString() : null,
      params_per_second: lastEnd > firstStart ? Math.round(row.params / ((lastEnd - firstStart) / 1000)) : 0,
    }));

  // Rate from the monitor's own polls (its clock), so skewed worker clocks cannot bend it.
  const windowStart = ctx.now - RATE_WINDOW_MS;
  const oldest = ctx.samples.find((s) => s.at >= windowStart) ?? ctx.samples.at(-1);
  let rate: MonitorSnapshot['rate'] = null;
  if (oldest && ctx.now > oldest.at) {
    const dt = (ctx.now - oldest.at) / 1000;
    rate = {
      params_per_second: Math.max(0, (paramsDone - oldest.params) / dt),
      chunks_per_second: Math.max(0, (settledChunks - oldest.chunks) / dt),
    };
  }
  const left = settings.totalParams - paramsDone;
  const eta = settled ? 0 : rate && rate.params_per_second > 0 ? Math.ceil(left / rate.params_per_second) : null;

  const deadShown = report.dead_lettered_chunks.slice(0, MAX_LISTED);
  return {
    ...base,
    sweep: { kernel: settings.kernel, total_params: settings.totalParams, chunk_size: settings.chunkSize, total_chunks: totalChunks },
    progress: {
      total_chunks: totalChunks,
      completed_chunks: completed,
      dead_lettered_chunks: deadSettling.length,
      settled_chunks: settledChunks,
      total_params: settings.totalParams,
      params_done: paramsDone,
      fraction: totalChunks > 0 ? settledChunks / totalChunks : 0,
      ready: stats ? stats.ready : null,
      in_flight: stats && stats.inFlight >= 0 ? stats.inFlight : null,
      retrying: stats && stats.retrying >= 0 ? stats.retrying : null,
      duplicate_results: report.duplicate_results,
    },
    rate,
    eta_seconds: eta,
    throughput: throughputSeries([...counted.values()]),
    workers,
    failures: {
      retrying_now: stats && stats.retrying >= 0 ? stats.retrying : null,
      retried_attempts: retriedAttempts,
      dead_letters: deadShown,
      dead_letters_more: report.dead_lettered_chunks.length - deadShown.length,
    },
    settled,
    report: settled ? report : null,
    report_text: settled ? formatReport(report) : null,
  };
}

/**
 * Parameters per second over time, from the counted results, in total and per worker process: each chunk's
 * parameters spread evenly over its run (started → completed), in buckets
 * wide enough that a long sweep still draws at most MAX_BUCKETS points.
 */
export function throughputSeries(results: readonly ChunkResult[]): MonitorSnapshot['throughput'] {
  const spans = results.flatMap((r) => {
    const end = Date.parse(r.completedAt);
    if (!Number.isFinite(end)) return [];
    const started = r.startedAt ? Date.parse(r.startedAt) : NaN;
    const start = Number.isFinite(started) ? Math.min(started, end) : end - r.durationSeconds * 1000;
    return [{ worker: consumerOf(r), start, end, params: r.stats.count }];
  });
  if (spans.length === 0) return { bucket_seconds: 1, t: [], total: [], workers: {} };
  const first = Math.floor(Math.min(...spans.map((s) => s.start)) / 1000);
  // Up to the last completion, not past it: an empty bucket after the end would draw a false drop to 0.
  const last = Math.max(...spans.map((s) => s.end)) / 1000;
  const width = Math.max(1, Math.ceil((last - first) / MAX_BUCKETS));
  const n = Math.max(1, Math.ceil((last - first) / width));
  const total = new Array<number>(n).fill(0);
  const workers: Record<string, number[]> = {};
  for (const s of spans) {
    const series = (workers[s.worker] ??= new Array<number>(n).fill(0));
    const bucketOf = (ms: number) => Math.min(n - 1, Math.max(0, Math.floor((ms / 1000 - first) / width)));
    const add = (b: number, params: number) => {
      series[b]! += params / width;
      total[b]! += params / width;
    };
    if (s.end <= s.start) {
      add(bucketOf(s.end), s.params);
      continue;
    }
    // Share the chunk's parameters among the buckets its run overlaps, in proportion to the overlap.
    for (let b = bucketOf(s.start); b <= bucketOf(s.end); b++) {
      const lo = (first + b * width) * 1000;
      const overlap = Math.min(lo + width * 1000, s.end) - Math.max(lo, s.start);
      if (overlap > 0) add(b, (s.params * overlap) / (s.end - s.start));
    }
  }
  // The first and last buckets are only partly inside the sweep: rate over the part that is, not
  // over the whole bucket, or the chart would show a false ramp at both ends.
  const firstStart = Math.min(...spans.map((s) => s.start)) / 1000;
  for (const b of [0, n - 1]) {
    const lo = first + b * width;
    const inside = Math.min(lo + width, last) - Math.max(lo, firstStart);
    const scale = width / Math.max(inside, width / 4);
    if (scale <= 1) continue;
    total[b]! *= scale;
    for (const series of Object.values(workers)) series[b]! *= scale;
    if (n === 1) break;
  }
  const round = (a: number[]) => a.map((x) => Math.round(x));
  return {
    bucket_seconds: width,
    t: Array.from({ length: n }, (_, i) => first + i * width),
    total: round(total),
    workers: Object.fromEntries(Object.entries(workers).map(([w, a]) => [w, round(a)])),
  };
}

const WEB_DIR = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../engine/web');

interface Asset {
  type: string;
  file: string;
}

/** The page's files: its own, and uPlot's from node_modules (resolved where node resolves it). */
function assets(): Record<string, Asset> {
  const require = createRequire(import.meta.url);
  const uplotDist = path.join(path.dirname(require.resolve('uplot/package.json')), 'dist');
  return {
    '/': { type: 'text/html; charset=utf-8', file: path.join(WEB_DIR, 'index.html') },
    '/app.js': { type: 'text/javascript; charset=utf-8', file: path.join(WEB_DIR, 'app.js') },
    '/style.css': { type: 'text/css; charset=utf-8', file: path.join(WEB_DIR, 'style.css') },
    '/vendor/uPlot.iife.min.js': { type: 'text/javascript; charset=utf-8', file: path.join(uplotDist, 'uPlot.iife.min.js') },
    '/vendor/uPlot.min.css': { type: 'text/css; charset=utf-8', file: path.join(uplotDist, 'uPlot.min.css') },
  };
}

export interface WebMonitorOptions {
  /** The backend to read (borrowed: the caller closes it), as `ttg run` shares its embedded queue. */
  backend?: QueueBackend;
  /**
   * Or how to open one (owned: closed by close()). A connection that gave up
   * on a lost broker stays failed, so after a failed poll the monitor closes
   * it and opens a new one: the page recovers when the broker is back.
   */
  connect?: () => Promise<QueueBackend>;
  /** Which broker, for the page (the backend's kind). */
  kind: string;
  queuePrefix: string;
  port: number;
  /** Interface to listen on; every interface by default (a pod is reached through port-forward). */
  host?: string;
  intervalMs?: number;
  /** A poll that has not answered by then shows the broker as unreachable (it keeps waiting). */
  brokerTimeoutMs?: number;
  log: Logger;
}

/** The web monitor: one poller, one HTTP server, any number of pages listening. */
export class WebMonitor {
  readonly #opts: WebMonitorOptions;
  readonly #assets: Record<string, { type: string; body: Buffer }>;
  readonly #clients = new Set<ServerResponse>();
  readonly #samples: ProgressSample[] = [];
  #server: Server | null = null;
  #snapshot: MonitorSnapshot;
  #timer: NodeJS.Timeout | null = null;
  #keepAlive: NodeJS.Timeout | null = null;
  #polling = false;
  #stopped = false;
  #downSince: number | null = null;
  #settledListeners: Array<() => void> = [];
  #backend: QueueBackend | null;
  #broken = false;

  constructor(opts: WebMonitorOptions) {
    if (!opts.backend === !opts.connect) throw new TypeError('WebMonitor: give either backend or connect');
    this.#opts = opts;
    this.#backend = opts.backend ?? null;
    // Read once at start: a missing file (an image without engine/web) fails here, not on a user's first visit.
    this.#assets = Object.fromEntries(Object.entries(assets()).map(([url, a]) => {
      try {
        return [url, { type: a.type, body: readFileSync(a.file) }];
      } catch (err) {
        throw new TtgError(`the web monitor's file ${a.file} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); ` +
          'is this an incomplete install? (npm ci installs uplot; engine/web/ ships with the package)');
      }
    }));
    this.#snapshot = {
      ...describeSweep({ settings: null, results: [], deadLetters: [], stats: null },
        { now: Date.now(), backend: opts.kind, queuePrefix: opts.queuePrefix, samples: [] }),
      broker: { ok: false, error: 'not polled yet', since: new Date().toISOString() },
    };
  }

  /** The latest snapshot. */
  get snapshot(): MonitorSnapshot {
    return this.#snapshot;
  }

  get port(): number | null {
    const address = this.#server?.address();
    return address && typeof address === 'object' ? (address as AddressInfo).port : null;
  }

  /** Listens, then polls. Rejects with a TtgError naming the port when it cannot listen. */
  async start(): Promise<void> {
    const server = createServer((req, res) => this.#handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'is in use' : `cannot be opened (${err.message})`;
        reject(new TtgError(`port ${this.#opts.port} ${why}: choose another with --port`));
      });
      server.listen({ port: this.#opts.port, host: this.#opts.host }, () => resolve());
    });
    this.#server = server;
    // Proxies and port-forwards drop idle streams: a comment line every 15 s keeps them open.
    this.#keepAlive = setInterval(() => {
      for (const res of this.#clients) res.write(': keep-alive\n\n');
    }, 15_000);
    void this.#poll();
  }

  /** Resolves once a poll finds the sweep settled (every chunk has a result or is dead-lettered). */
  settled(): Promise<void> {
    if (this.#snapshot.settled) return Promise.resolve();
    return new Promise((resolve) => this.#settledListeners.push(resolve));
  }

  /** Polls now (and then on the usual schedule): `ttg run` calls it when its workers are done. */
  async refresh(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#poll();
  }

  async close(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#keepAlive) clearInterval(this.#keepAlive);
    for (const res of this.#clients) res.end();
    this.#clients.clear();
    if (this.#opts.connect) await this.#backend?.close().catch(() => {});
    const server = this.#server;
    this.#server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The backend to poll: the borrowed one, or an owned one (re)opened after a failure. */
  async #reader(): Promise<QueueBackend> {
    const { connect } = this.#opts;
    if (connect && (this.#backend === null || this.#broken)) {
      const old = this.#backend;
      this.#backend = null;
      this.#broken = false;
      await old?.close().catch(() => {});
      this.#backend = await connect();
    }
    return this.#backend!;
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#stopped) return;
    this.#polling = true;
    const { log } = this.#opts;
    const started = Date.now();
    // A broker that does not answer shows as unreachable while the poll keeps waiting for it.
    const slow = setTimeout(() => this.#brokerDown('no answer from the broker', started), this.#opts.brokerTimeoutMs ?? 5000);
    try {
      const backend = await this.#reader();
      // One read after another: a backend's reader may share one channel (RabbitMQ), and reads that
      // overlap there would step on each other.
      const settings = await backend.readSettings();
      const stats = await backend.stats();
      const results = await backend.readResults();
      const deadLetters = await backend.readDeadLetters();
      clearTimeout(slow);
      const now = Date.now();
      const snapshot = describeSweep({ settings, results, deadLetters, stats },
        {
          now, backend: this.#opts.kind, queuePrefix: this.#opts.queuePrefix, samples: this.#samples,
          inHandKnown: this.#opts.kind !== 'rabbitmq',
        });
      if (this.#downSince !== null) log.info('the broker answers again');
      this.#downSince = null;
      if (snapshot.progress) this.#samples.push({ at: now, params: snapshot.progress.params_done, chunks: snapshot.progress.settled_chunks });
      while (this.#samples.length > 2 && this.#samples[1]!.at < now - 2 * RATE_WINDOW_MS) this.#samples.shift();
      this.#publish(snapshot);
    } catch (err) {
      clearTimeout(slow);
      this.#broken = true;
      this.#brokerDown(err instanceof Error ? err.message : String(err), started);
    } finally {
      this.#polling = false;
      if (!this.#stopped) {
        // A sweep with many results takes a while to read: never poll more than half the time.
        const interval = Math.max(this.#opts.intervalMs ?? 1000, 2 * (Date.now() - started));
        this.#timer = setTimeout(() => void this.#poll(), interval);
      }
    }
  }

  #brokerDown(error: string, at: number): void {
    if (this.#downSince === null) {
      this.#downSince = at;
      this.#opts.log.warn(`the broker does not answer (${error}); the page says so and keeps trying`);
    }
    this.#publish({ ...this.#snapshot, at: new Date().toISOString(), broker: { ok: false, error, since: new Date(this.#downSince).toISOString() } });
  }

  #publish(snapshot: MonitorSnapshot): void {
    this.#snapshot = snapshot;
    const event = `event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`;
    for (const res of this.#clients) res.write(event);
    if (snapshot.settled) for (const resolve of this.#settledListeners.splice(0)) resolve();
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = (req.url ?? '/').split('?')[0]!;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      // The browser reconnects by itself after 2 s if the stream breaks (the monitor restarted).
      res.write(`retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(this.#snapshot)}\n\n`);
      this.#clients.add(res);
      req.on('close', () => this.#clients.delete(res));
      return;
    }
    if (url === '/snapshot.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache' }).end(JSON.stringify(this.#snapshot));
      return;
    }
    const asset = this.#assets[url === '/index.html' ? '/' : url];
    if (!asset) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the page is at /, its data at /events and /snapshot.json\n');
      return;
    }
    res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache' }).end(asset.body);
  }
}

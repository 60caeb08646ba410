#!/usr/bin/env node
/**
 * The `ttg` command (docs/design.md): worker, run, aggregate, monitor, reset, retry-dead, bench.
 * Exit codes: 0 success; 1 runtime failure; 2 invalid configuration or usage
 * (one line naming the variable or flag, printed before any connection).
 */
import { describeSettings, loadConfig, misspeltVariableWarnings, type Config, type QueueBackendName, QUEUE_BACKENDS } from './config.js';
import { ConfigError, TtgError } from '../core/errors.js';
import { createLogger, LOG_LEVELS, redact, type Logger, type LogLevel } from '../core/log.js';
import { KernelPool } from './pool.js';
import { deferOptimisingCompiler } from './jit.js';
import { QueueWorker } from './queue-worker.js';
import type { AggregateReport } from './aggregate.js';
import { withResolvedKernel } from './user-kernel.js';
import type { WebMonitor } from './web-monitor.js';
import { createBackend } from './backend.js';
import type { QueueBackend, SweepSettings } from '../backends/types.js';
import { chunkIdOf } from '../core/sweep.js';
import type { WorkerMetrics } from './metrics.js';
import type { Probe } from './http.js';
import { existsSync, readFileSync } from 'node:fs';

const VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

/** Exit status of `ttg aggregate` and `ttg run` when the sweep has chunks missing (README). */
const EXIT_INCOMPLETE = 3;

/**
 * What only some commands need is loaded when they run, so `ttg worker` starts
 * without the monitor, the aggregator, the help texts, the kernel compiler or
 * prom-client (when METRICS_PORT=0).
 */
const aggregate = () => import('./aggregate.js');
const help = () => import('./help.js');

/** Prints the report; its exit status says whether the sweep is complete. */
async function printReport(report: AggregateReport, json: boolean): Promise<number> {
  process.stdout.write((json ? JSON.stringify(report) : (await aggregate()).formatReport(report)) + '\n');
  return report.complete ? 0 : EXIT_INCOMPLETE;
}

interface Flags {
  [name: string]: string | boolean;
}

/** Parses `--name value` / `--name=value` / `--switch`; unknown flags are usage errors. */
function parseFlags(args: string[], known: Record<string, 'bool' | 'value'>): Flags {
  const flags: Flags = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m || !(m[1]! in known)) {
      throw new ConfigError(`unknown argument "${arg}"; known: ${Object.keys(known).map((k) => `--${k}`).join(', ') || 'none'}`);
    }
    const name = m[1]!;
    if (known[name] === 'bool') {
      if (m[2] !== undefined) throw new ConfigError(`--${name} takes no value`);
      flags[name] = true;
    } else {
      const value = m[2] ?? args[++i];
      if (value === undefined || value.startsWith('--')) throw new ConfigError(`--${name} needs a value`);
      flags[name] = value;
    }
  }
  return flags;
}

function positiveInt(flag: string, value: string | boolean | undefined, def: number): number {
  if (value === undefined) return def;
  if (typeof value !== 'string' || !/^\d+$/.test(value) || Number(value) < 1) {
    throw new ConfigError(`--${flag} must be a positive integer, got "${String(value)}"`);
  }
  return Number(value);
}

/** `--port`: the web monitor's port (docs/design.md: 8080 unless said otherwise). */
function webPort(value: string | boolean | undefined): number {
  if (value === undefined) return 8080;
  if (typeof value !== 'string' || !/^\d+$/.test(value) || Number(value) > 65535) {
    throw new ConfigError(`--port must be a port number (0-65535; 0 picks a free one), got "${String(value)}"`);
  }
  return Number(value);
}

/** Starts the web monitor and says its address (on stdout unless `announce` says where). */
async function startWebMonitor(opts: {
  source: { backend: QueueBackend } | { connect: () => Promise<QueueBackend> };
  config: Config; log: Logger; port: number; host?: string; intervalMs?: number; announce?: (line: string) => void;
}): Promise<WebMonitor> {
  const { source, config, log, port, host, intervalMs } = opts;
  const { WebMonitor } = await import('./web-monitor.js');
  const monitor = new WebMonitor({
    ...source, kind: config.queueBackend, queuePrefix: config.queuePrefix, port, log,
    ...(host ? { host } : {}), ...(intervalMs ? { intervalMs } : {}),
  });
  await monitor.start();
  const shown = host && host !== '0.0.0.0' && host !== '::' ? host : 'localhost';
  const announce = opts.announce ?? ((line: string) => process.stdout.write(line + '\n'));
  announce(`ttg monitor: the page for the sweep on ${config.queueBackend} (QUEUE_PREFIX=${config.queuePrefix}) ` +
    `is at http://${shown}:${monitor.port}/`);
  return monitor;
}

/** Resolves at the first SIGINT/SIGTERM; a second one exits at once. */
function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const off = onSignals(() => {
      resolve();
      // Keep the handler for a while: a second Ctrl-C during the close must not kill the process unannounced.
      setTimeout(off, 5000).unref();
    }, () => process.exit(1));
  });
}

function logger(config: Config, name?: string): Logger {
  return createLogger({ level: config.logLevel, format: config.logFormat, ...(name ? { name } : {}) });
}

/** Signals: the first asks for a graceful stop, the second aborts. */
function onSignals(first: () => void, second: () => void): () => void {
  let count = 0;
  const handler = () => {
    count++;
    if (count === 1) first();
    else second();
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}

/**
 * The HTTP endpoints of a worker process (METRICS_PORT; 0 turns them off). The
 * probes ask `probes()` at each request, so they can follow workers made later.
 */
async function serveEndpoints(config: Config, log: Logger, mode: 'static' | 'queue', probes: () => { health: Probe; ready: Probe }) {
  if (config.metricsPort === 0) return { metrics: undefined as WorkerMetrics | undefined, close: async () => {} };
  const [{ WorkerMetrics }, { WorkerEndpoints }] = await Promise.all([import('./metrics.js'), import('./http.js')]);
  const metrics: WorkerMetrics | undefined = new WorkerMetrics({
    mode, backend: mode === 'static' ? 'none' : config.queueBackend, kernel: config.kernel, impl: config.kernelImpl,
    threads: config.threads, version: VERSION,
  });
  const endpoints = new WorkerEndpoints({
    port: config.metricsPort, metrics, log, health: () => probes().health, readiness: () => probes().ready,
  });
  await endpoints.start();
  return { metrics, close: async () => endpoints.close() };
}

/** True when every chunk's result was in before `time` (ms): the sweep was settled before a worker joined it. */
function settledBefore(results: ReadonlyArray<{ completedAt: string }>, time: number): boolean {
  return results.length > 0 && results.every((r) => Date.parse(r.completedAt) < time);
}

/** `ttg run`'s sweep when the environment names none: about 3 s of mandelbrot on two cores (20 passes over the grid). */
const DEMO_SWEEP = { KERNEL: 'mandelbrot', TOTAL_PARAMS: '20000000', CHUNK_SIZE: '100000' };

const STARTING: Probe = { ok: false, detail: 'starting' };

async function cmdWorker(args: string[]): Promise<number> {
  parseFlags(args, {});
  // A user kernel's files are found (a .ts built) and checked here, before any connection.
  const { config, kernel } = await withResolvedKernel(loadConfig());
  const log = logger(config, `worker-${config.workerId}`);
  // Not with the JS kernel: its small chunks are computed on this thread, and need TurboFan from the start.
  if (config.kernelImpl !== 'js') {
    deferOptimisingCompiler();
    log.debug('V8\'s optimising compiler held back for the first 0.5 s (engine/jit.ts)');
  }
  for (const warning of misspeltVariableWarnings()) log.warn(warning);
  log.info(`starting: ${describeSettings(config)}`);
  const pool = new KernelPool({
    threads: config.threads, kernel, impl: config.kernelImpl, simulateWorkMs: config.simulateWorkMs, boundHeap: true, rangeSize: config.chunkSize,
  });
  let probes = () => ({ health: { ok: true, detail: 'starting' }, ready: STARTING });
  const { metrics, close: closeEndpoints } = await serveEndpoints(config, log, config.useQueue ? 'queue' : 'static', () => probes());
  try {
    if (!config.useQueue) {
      const { StaticWorker } = await import('./static-worker.js');
      const worker = new StaticWorker({ config, pool, log, metrics });
      const running: Probe = { ok: true, detail: `static share of worker ${config.workerId}` };
      probes = () => ({ health: running, ready: running });
      const off = onSignals(() => worker.stop(), () => process.exit(1));
      const summary = await worker.run();
      off();
      log.info(`static share done: ${summary.params_processed} params in ${summary.duration_seconds}s`);
      process.stdout.write(JSON.stringify(summary) + '\n');
      return 0;
    }
    const backend = await createBackend({ config, workerId: config.workerId, log });
    const worker = new QueueWorker({ config, backend, pool, log, metrics });
    probes = () => ({ health: worker.health(), ready: worker.readiness() });
    const off = onSignals(
      () => {
        log.info('stop requested: finishing the chunks in hand (signal again to abort)');
        worker.stop();
      },
      () => {
        // Give the unfinished chunks back and leave now: the threads are stopped mid-chunk and
        // nothing partial is committed.
        log.warn('abort: unfinished chunks are left for the other workers');
        void (async () => {
          const guard = setTimeout(() => process.exit(1), 5000);
          await worker.abort();
          await backend.close().catch(() => {});
          process.stdout.write(JSON.stringify(worker.summary('interrupted')) + '\n');
          clearTimeout(guard);
          process.exit(1);
        })();
      },
    );
    try {
      const startedAt = Date.now();
      const summary = await worker.run();
      log.info(`finished: ${summary.status}, ${summary.chunks_processed} chunks, ${summary.params_processed} params`);
      // Only a worker that found nothing to do reads the results, up to the first one after its start: a worker
      // started beside the one that settled a small sweep is not told off, and does not read them all.
      const after = (r: { completedAt: string }) => Date.parse(r.completedAt) >= startedAt;
      if (summary.status === 'completed' && worker.settledOnArrival && settledBefore(await backend.readResults(after), startedAt)) {
        log.warn(`nothing to do: the sweep under QUEUE_PREFIX=${config.queuePrefix} was already settled before this worker started; ` +
          'ttg reset (or another QUEUE_PREFIX) starts a new one');
      }
      process.stdout.write(JSON.stringify(summary) + '\n');
      return 0;
    } catch (err) {
      // The summary is the last stdout line whatever happens (a broker that stayed away, a refused
      // join): what was done before the failure, and why it stopped.
      const error = redact(err instanceof Error ? err.message : String(err));
      process.stdout.write(JSON.stringify({ ...worker.summary('interrupted'), error }) + '\n');
      throw err;
    } finally {
      off();
      // Everything closes at once: the last result is in, and the process ends when all of it is closed.
      await Promise.all([backend.close().catch(() => {}), closeEndpoints(), pool.close().catch(() => {})]);
    }
  } finally {
    await closeEndpoints();
    await pool.close().catch(() => {});
  }
}

async function cmdRun(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    workers: 'value', backend: 'value', fresh: 'bool', json: 'bool', verbose: 'bool', monitor: 'value', port: 'value',
  });
  if (flags['monitor'] !== undefined && flags['monitor'] !== 'web') {
    throw new ConfigError(`--monitor must be web (the live page), got "${String(flags['monitor'])}"`);
  }
  if (flags['port'] !== undefined && flags['monitor'] === undefined) throw new ConfigError('--port is the web monitor\'s port: give it with --monitor web');
  const port = webPort(flags['port']);
  // `ttg run` is self-contained: the embedded queue unless a backend is asked for.
  const env = { ...process.env };
  if (typeof flags['backend'] === 'string') {
    if (!(QUEUE_BACKENDS as readonly string[]).includes(flags['backend'])) {
      throw new ConfigError(`--backend must be one of ${QUEUE_BACKENDS.join(', ')}, got "${flags['backend']}"`);
    }
    env['QUEUE_BACKEND'] = flags['backend'];
  } else if (!env['QUEUE_BACKEND']) {
    env['QUEUE_BACKEND'] = 'memory' satisfies QueueBackendName;
  }
  env['USE_QUEUE'] = 'true';
  // With nothing said about the sweep, ttg run (npm start) shows one worth watching: a few seconds
  // of mandelbrot, whose cost varies across the grid. ttg worker keeps the 10,000-parameter defaults.
  const demo = ['TOTAL_PARAMS', 'TOTAL_PARAMETERS', 'CHUNK_SIZE', 'KERNEL'].every((name) => !env[name]?.trim());
  if (demo) Object.assign(env, DEMO_SWEEP);
  const { config: base, kernel } = await withResolvedKernel(loadConfig(env));
  const workers = positiveInt('workers', flags['workers'], base.totalWorkers);
  const log = logger(base, 'run');
  for (const warning of misspeltVariableWarnings()) log.warn(warning);
  log.info(`starting ${workers} workers: ${describeSettings(base)}`);

  const pool = new KernelPool({
    threads: base.threads, kernel, impl: base.kernelImpl, simulateWorkMs: base.simulateWorkMs, boundHeap: true, rangeSize: base.chunkSize,
  });
  let probes = () => ({ health: { ok: true, detail: 'starting' }, ready: STARTING });
  const { metrics, close: closeEndpoints } = await serveEndpoints(base, log, 'queue', () => probes());
  const reader = await createBackend({ config: base, workerId: 'run', log });
  let web: WebMonitor | null = null;
  try {
    if (flags['fresh'] || base.queueBackend === 'memory') await reader.reset();
    if (flags['monitor'] === 'web') web = await startWebMonitor({
      // stdout carries the report (one JSON object with --json): the address goes with the logs.
      source: { backend: reader }, config: base, log, port, announce: (line) => process.stderr.write(line + '\n'),
    });
    const loops = await Promise.all(
      Array.from({ length: workers }, async (_, i) => {
        const config: Config = { ...base, workerId: String(i) };
        const backend = await createBackend({ config, workerId: config.workerId, log: logger(base, `worker-${i}`) });
        return { backend, worker: new QueueWorker({ config, backend, pool, log: logger(base, `worker-${i}`), metrics }) };
      }),
    );
    // The process is as healthy, and as ready, as the least of its workers.
    probes = () => {
      const all = loops.map((l) => ({ health: l.worker.health(), ready: l.worker.readiness() }));
      return {
        health: all.find((p) => !p.health.ok)?.health ?? { ok: true, detail: `${loops.length} workers` },
        ready: all.find((p) => !p.ready.ok)?.ready ?? { ok: true, detail: `${loops.length} workers ready` },
      };
    };
    const off = onSignals(() => loops.forEach((l) => l.worker.stop()), () => process.exit(1));
    const startedAt = Date.now();
    let processed = 0;
    // The live line goes to stderr (stdout carries the report); --json asks for nothing but the object.
    const progress = flags['json'] ? null
      : new (await import('./run-progress.js')).RunProgress(loops.map((l) => l.worker), Math.ceil(base.totalParams / base.chunkSize));
    try {
      const summaries = await Promise.all(loops.map((l) => l.worker.run()));
      for (const s of summaries) log.debug('worker summary', { ...s });
      processed = summaries.reduce((n, s) => n + s.chunks_processed + s.failed_attempts, 0);
    } finally {
      progress?.stop();
      off();
      await Promise.all(loops.map((l) => l.backend.close().catch(() => {})));
    }
    const results = await reader.readResults();
    if (processed === 0 && settledBefore(results, startedAt)) {
      log.warn(`nothing ran: the sweep under QUEUE_PREFIX=${base.queuePrefix} on ${base.queueBackend} was already settled; ` +
        'this is its earlier report. ttg run --fresh starts it anew');
    }
    const report = await sweepReport(reader, await reader.readSettings(), Boolean(flags['verbose']));
    report.command_seconds = Math.round(process.uptime() * 1000) / 1000;
    const status = await printReport(report, Boolean(flags['json']));
    if (web) {
      // The page shows the final report too: keep serving it until the user is done looking.
      await web.refresh();
      log.info(`sweep done; the page stays at http://localhost:${web.port}/ until Ctrl-C`);
      await untilSignal();
    }
    return status;
  } finally {
    await web?.close();
    await closeEndpoints();
    await reader.close().catch(() => {});
    await pool.close().catch(() => {});
  }
}

/**
 * The report of the sweep on `backend`: its results, dead letters, re-drives and the consumers that joined,
 * read without consuming anything (at once: each read is its own round trip, or channel on RabbitMQ).
 */
async function sweepReport(backend: QueueBackend, settings: SweepSettings | null, verbose: boolean): Promise<AggregateReport> {
  const [results, deadLetters, redrives, joined] = await Promise.all([
    backend.readResults(), backend.readDeadLetters(), backend.readRedrives(), backend.readConsumers(),
  ]);
  return (await aggregate()).buildReport(settings, results, deadLetters, { verbose, redrives, joined: joined.map((c) => c.consumer) });
}

/** A connection for the read-only commands; sweep settings come from the queue, not the environment. */
async function readerBackend(name: string) {
  const config = loadConfig({ ...process.env, USE_QUEUE: 'true' });
  const log = logger(config, name);
  return { config, log, backend: await createBackend({ config, workerId: name, log }) };
}

async function cmdAggregate(args: string[]): Promise<number> {
  // With --static, the other words are files of static workers' summaries (none: stdin).
  const isStatic = args.includes('--static');
  const files = isStatic ? args.filter((a) => !a.startsWith('--')) : [];
  const flags = parseFlags(args.filter((a) => !files.includes(a)), { json: 'bool', verbose: 'bool', static: 'bool', port: 'value', host: 'value' });
  if (flags['port'] !== undefined || flags['host'] !== undefined) {
    throw new ConfigError('--host and --port are not flags of ttg: the broker\'s address comes from the environment ' +
      '(REDIS_HOST/REDIS_PORT or REDIS_URL; RABBITMQ_HOST/RABBITMQ_PORT or AMQP_URL), e.g. REDIS_PORT=6380 ttg aggregate');
  }
  if (isStatic) {
    const summaries = [];
    const { staticSummariesIn, buildStaticReport } = await aggregate();
    if (files.length === 0) {
      const { text: readStream } = await import('node:stream/consumers');
      summaries.push(...staticSummariesIn(await readStream(process.stdin), 'stdin'));
    }
    for (const file of files) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        throw new ConfigError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      const found = staticSummariesIn(text, file);
      if (found.length === 0) throw new TtgError(`${file} holds no static worker summary (a JSON line with "mode":"static")`);
      summaries.push(...found);
    }
    return printReport(buildStaticReport(summaries, { verbose: Boolean(flags['verbose']) }), Boolean(flags['json']));
  }
  const { config, backend } = await readerBackend('aggregate');
  try {
    const settings = await backend.readSettings();
    if (settings === null) {
      throw new TtgError(`no sweep found on ${config.queueBackend} under QUEUE_PREFIX=${config.queuePrefix}: start workers first, or check QUEUE_BACKEND / QUEUE_PREFIX`);
    }
    const report = await sweepReport(backend, settings, Boolean(flags['verbose']));
    return printReport(report, Boolean(flags['json']));
  } finally {
    await backend.close().catch(() => {});
  }
}

async function cmdMonitor(args: string[]): Promise<number> {
  const flags = parseFlags(args, { interval: 'value', once: 'bool', web: 'bool', port: 'value', host: 'value' });
  const interval = Number(flags['interval'] ?? (flags['web'] ? 1 : 2));
  if (!Number.isFinite(interval) || interval <= 0) throw new ConfigError(`--interval must be a positive number of seconds, got "${String(flags['interval'])}"`);
  if (!flags['web'] && (flags['port'] !== undefined || flags['host'] !== undefined)) {
    throw new ConfigError('--port and --host are the web page\'s address: give them with --web (the broker\'s address comes from the environment)');
  }
  if (flags['web'] && flags['once']) throw new ConfigError('--once and --web do not go together: the page is live');
  const port = webPort(flags['port']);
  if (flags['web']) {
    const config = loadConfig({ ...process.env, USE_QUEUE: 'true' });
    const log = logger(config, 'monitor');
    const web = await startWebMonitor({
      source: { connect: () => createBackend({ config, workerId: 'monitor', log }) },
      config, log, port, intervalMs: interval * 1000, ...(typeof flags['host'] === 'string' ? { host: flags['host'] } : {}),
    });
    await untilSignal();
    await web.close();
    return 0;
  }
  const { config, backend } = await readerBackend('monitor');
  let stop = false;
  let stopNow = () => {};
  const stopped = new Promise<void>((resolve) => (stopNow = resolve));
  const off = onSignals(() => {
    stop = true;
    stopNow();
  }, () => process.exit(1));
  try {
    const { runMonitor } = await import('./monitor.js');
    await runMonitor({ backend, config, intervalSeconds: interval, once: Boolean(flags['once']), shouldStop: () => stop, stopped });
    return 0;
  } finally {
    off();
    await backend.close().catch(() => {});
  }
}

/** Asks a yes/no question on the terminal; anything but y/yes is no. */
async function confirm(question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

async function cmdReset(args: string[]): Promise<number> {
  const flags = parseFlags(args, { yes: 'bool' });
  const { config, backend, log } = await readerBackend('reset');
  try {
    // At a terminal, a sweep's results are not deleted on a slip of the keyboard; scripts (no TTY) and --yes are not asked.
    if (!flags['yes'] && process.stdin.isTTY && process.stderr.isTTY) {
      const settings = await backend.readSettings();
      const what = settings === null ? 'whatever ttg state is there'
        : `a sweep of ${settings.totalParams.toLocaleString('en-US')} params (kernel ${settings.kernel}) with its results`;
      if (!(await confirm(`Delete ${what} under QUEUE_PREFIX=${config.queuePrefix} on ${config.queueBackend}? [y/N] `))) {
        log.info('nothing deleted');
        return 1;
      }
    }
    await backend.reset();
    log.info(`deleted the sweep's queue state on ${config.queueBackend} under QUEUE_PREFIX=${config.queuePrefix}`);
    return 0;
  } finally {
    await backend.close().catch(() => {});
  }
}

/** Why `ttg retry-dead --chunk` refuses a chunk (backends/types.ts, RedriveOutcome). */
const NOT_REDRIVABLE = {
  'not-a-chunk': 'is not a chunk of this sweep',
  completed: 'is not dead-lettered: it has a result',
  'not-dead': 'is not dead-lettered: it is still to be done, or was re-driven already and waits to be taken',
} as const;

/**
 * `ttg retry-dead [--chunk ID ...]`: puts dead-lettered chunks (all, or those named) back on the queue
 * with fresh attempts. A named chunk that is not dead-lettered changes nothing and exits 2.
 */
async function cmdRetryDead(args: string[]): Promise<number> {
  // --chunk takes one id or more: `--chunk 3 7`, `--chunk 3 --chunk 7`, `--chunk=3,7`.
  let named: string[] | null = null;
  const rest: string[] = [];
  let collecting = false;
  for (const arg of args) {
    const m = /^--chunk(?:=(.*))?$/.exec(arg);
    if (m) {
      named ??= [];
      if (m[1] !== undefined) named.push(...m[1].split(',').filter(Boolean));
      collecting = m[1] === undefined;
    } else if (collecting && !arg.startsWith('--')) {
      named!.push(...arg.split(',').filter(Boolean));
    } else {
      collecting = false;
      rest.push(arg);
    }
  }
  parseFlags(rest, { chunk: 'value' });
  if (named !== null && named.length === 0) throw new ConfigError('--chunk needs one chunk id or more (e.g. --chunk 00042 00043)');
  const notId = named?.find((id) => !/^\d{1,16}$/.test(id));
  if (notId !== undefined) throw new ConfigError(`--chunk takes chunk ids (digits, as ttg aggregate lists them, e.g. 00042), got "${notId}"`);
  const { config, backend, log } = await readerBackend('retry-dead');
  try {
    const settings = await backend.readSettings();
    if (settings === null) {
      throw new TtgError(`no sweep found on ${config.queueBackend} under QUEUE_PREFIX=${config.queuePrefix}: check QUEUE_BACKEND / QUEUE_PREFIX`);
    }
    // `--chunk 42` means chunk 00042: ids are zero-padded to the sweep's width.
    const total = Math.ceil(settings.totalParams / settings.chunkSize);
    const ids = named?.map((id) => (Number(id) < total ? chunkIdOf(Number(id), total) : id)) ?? null;
    const outcome = await backend.redriveDead(ids);
    if ('refused' in outcome) {
      const { chunkId, why } = outcome.refused;
      throw new ConfigError(`chunk ${chunkId} ${NOT_REDRIVABLE[why]}${why === 'not-a-chunk' ? ` (${chunkIdOf(0, total)} to ${chunkIdOf(total - 1, total)})` : ''}; nothing was re-driven`);
    }
    const where = `on ${config.queueBackend} under QUEUE_PREFIX=${config.queuePrefix}`;
    if (outcome.redriven.length === 0) {
      process.stdout.write(`no dead-lettered chunks ${where}: nothing to re-drive\n`);
      return 0;
    }
    const shown = outcome.redriven.slice(0, 20).join(', ') + (outcome.redriven.length > 20 ? `, ... ${outcome.redriven.length - 20} more` : '');
    process.stdout.write(`re-drove ${outcome.redriven.length} dead-lettered chunk${outcome.redriven.length === 1 ? '' : 's'} ${where}: ${shown}\n`);
    log.info('they are back on the queue with fresh attempts: running workers take them, or start one (ttg worker); ' +
      'ttg aggregate completes once they are done');
    return 0;
  } finally {
    await backend.close().catch(() => {});
  }
}

async function cmdBench(args: string[]): Promise<number> {
  const flags = parseFlags(args, { quick: 'bool', only: 'value', kernel: 'value' });
  const { runBenchmarks, BENCH_SECTIONS } = await import('../bench/run.js');
  const only = typeof flags['only'] === 'string' ? flags['only'].split(',') : undefined;
  const unknown = only?.filter((s) => !(BENCH_SECTIONS as readonly string[]).includes(s)) ?? [];
  if (unknown.length) throw new ConfigError(`--only takes a comma-separated list of ${BENCH_SECTIONS.join(', ')}, got "${unknown.join(',')}"`);
  const kernel = typeof flags['kernel'] === 'string' ? flags['kernel'] : undefined;
  if (kernel !== undefined && (!/\.(ts|wasm)$/.test(kernel) || !existsSync(kernel))) {
    throw new ConfigError(`--kernel takes a user kernel, NAME.ts or NAME.wasm (its twin NAME.js beside it), got "${kernel}"${/\.(ts|wasm)$/.test(kernel) ? ': no such file' : ''}`);
  }
  await runBenchmarks({
    quick: Boolean(flags['quick']),
    ...(only ? { only: only as typeof BENCH_SECTIONS[number][] } : {}),
    ...(kernel ? { kernels: [kernel] } : {}),
  });
  return 0;
}

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  worker: cmdWorker,
  run: cmdRun,
  aggregate: cmdAggregate,
  monitor: cmdMonitor,
  reset: cmdReset,
  'retry-dead': cmdRetryDead,
  bench: cmdBench,
  kernel: async (args) => (await import('./kernel-command.js')).cmdKernel(args, parseFlags),
};

/**
 * Client libraries that print on their own (ioredis: "[WARN] ... a password was supplied") go
 * through ttg's logger instead, so that LOG_FORMAT=json stays one JSON object per line and a
 * password in such a line would be redacted like any other. ttg itself never uses console.
 */
function routeConsoleThroughLogger(): void {
  const env = process.env;
  const level = (LOG_LEVELS as readonly string[]).includes(env['LOG_LEVEL']?.trim().toLowerCase() ?? '')
    ? (env['LOG_LEVEL']!.trim().toLowerCase() as LogLevel) : 'info';
  const format = env['LOG_FORMAT']?.trim().toLowerCase() === 'json' ? 'json' : 'text';
  const log = createLogger({ level, format, name: 'library' });
  const text = (args: unknown[]) => args.map((a) => (a instanceof Error ? a.message : typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
  console.warn = (...args: unknown[]) => log.warn(text(args).replace(/^\[WARN\]\s*/, ''));
  console.error = (...args: unknown[]) => log.error(text(args));
  console.info = (...args: unknown[]) => log.info(text(args));
  console.debug = (...args: unknown[]) => log.debug(text(args));
}

export async function main(argv: string[]): Promise<number> {
  routeConsoleThroughLogger();
  const [command, ...args] = argv;
  if (command === '--version' || command === '-V' || command === 'version') {
    process.stdout.write(`ttg ${VERSION}\n`);
    return 0;
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    const topic = command === 'help' ? args[0] : undefined;
    const { commandHelp, usage } = await help();
    if (topic !== undefined) {
      const text = commandHelp(topic);
      if (text === null) {
        process.stderr.write(`ttg help: unknown command "${topic}"\n${usage()}\n`);
        return 2;
      }
      process.stdout.write(text + '\n');
      return 0;
    }
    (command === undefined ? process.stderr : process.stdout).write(usage() + '\n');
    return command === undefined ? 2 : 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`ttg: unknown command "${command}"\n${(await help()).usage()}\n`);
    return 2;
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write((await help()).commandHelp(command)! + '\n');
    return 0;
  }
  try {
    return await run(args);
  } catch (err) {
    const code = err instanceof TtgError ? err.exitCode : 1;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`ttg ${command}: ${redact(message)}\n`);
    if (code === 1 && !(err instanceof TtgError) && err instanceof Error && err.stack && process.env['LOG_LEVEL'] === 'debug') {
      process.stderr.write(err.stack + '\n');
    }
    return code;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // No forced exit: every command closes its connections, pool and timers, so the process ends
    // by itself (the tests preload test/fixtures/exit-spy.mjs into every ttg they run, and fail if one
    // needed process.exit() because a leaked handle held it open).
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`ttg: ${String(err)}\n`);
    process.exit(1);
  },
);

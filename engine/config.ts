/**
 * Configuration from the environment (names and defaults of docs/design.md).
 * Every variable is checked at start-up; the first bad one raises a
 * ConfigError whose one-line message names it and what it accepts, before
 * any connection is made.
 */
import { hostname } from 'node:os';
import { ConfigError } from '../core/errors.js';
import { aliasedName, boolean, decimal, integer, nearMisses, oneOf, raw, type Env } from '../core/env.js';
import { BACKEND_VARIABLES, QUEUE_BACKENDS, readBackendEnv, type BackendConnections, type QueueBackendName } from '../backends/registry.js';
import { usableCpus } from './cpus.js';
import { KERNEL_IMPLS, KERNEL_NAMES, type KernelImpl } from '../kernel/types.js';
import { userKernelName } from '../kernel/user-build.js';
import { isUserKernelName, isUserKernelPath } from './user-kernel.js';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../core/log.js';

export { QUEUE_BACKENDS, type QueueBackendName } from '../backends/registry.js';

export interface Config {
  useQueue: boolean;
  queueBackend: QueueBackendName;
  /** Each backend's own connection settings, read through the registry (every backend's, checked at start-up). */
  backends: BackendConnections;
  /** Failed attempts before a chunk is dead-lettered (MAX_RETRIES, alias RABBITMQ_MAX_RETRIES). */
  maxRetries: number;
  /** Delay before a failed chunk is offered again (RETRY_DELAY_MS, alias RABBITMQ_RETRY_DELAY_MS). */
  retryDelayMs: number;
  totalParams: number;
  chunkSize: number;
  workerId: string;
  /** Host or pod name, added to the consumer name where several processes share a WORKER_ID. */
  hostName: string;
  queuePrefix: string;
  totalWorkers: number;
  idleTimeoutSeconds: number;
  staleCheckIntervalSeconds: number;
  staleThresholdMs: number;
  simulateWorkMs: number;
  /** The kernel's name: a built-in kernel's, or a user kernel's (the base name of KERNEL's file). */
  kernel: string;
  /** KERNEL when it names a user kernel: the path of its module (.wasm) or source (.ts, built on first use); null for a built-in. */
  kernelPath: string | null;
  /** KERNEL_JS: the user kernel's plain JS twin (for KERNEL_IMPL=js); null when unset. */
  kernelJs: string | null;
  /**
   * The user kernel's module sha-256, which the sweep's settings record: null from loadConfig,
   * set by engine/user-kernel.ts once the module is found (before any connection).
   */
  kernelSha256: string | null;
  kernelImpl: KernelImpl;
  threads: number;
  /** Chunks a worker holds at once: PREFETCH, or where it is unset the floor of what queue mode sizes by time. */
  prefetch: number;
  /** PREFETCH was unset: queue mode holds as many chunks as the threads compute in a short window (engine/queue-worker.ts). */
  prefetchAuto: boolean;
  simulateFaultRate: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** How long an unreachable broker is retried (with backoff) before giving up. */
  connectTimeoutSeconds: number;
  /** Port of /healthz, /readyz and /metrics; 0 turns them off. */
  metricsPort: number;
}

/**
 * Every environment variable ttg reads (the deployment tests check that the
 * manifests set nothing else). HOSTNAME is set by Kubernetes to the pod name;
 * JOB_COMPLETION_INDEX by an Indexed Job.
 */
export const ENV_VARIABLES = [
  'USE_QUEUE', 'QUEUE_BACKEND',
  ...BACKEND_VARIABLES,
  'MAX_RETRIES', 'RABBITMQ_MAX_RETRIES', 'RETRY_DELAY_MS', 'RABBITMQ_RETRY_DELAY_MS',
  'TOTAL_PARAMS', 'TOTAL_PARAMETERS', 'CHUNK_SIZE', 'WORKER_ID', 'JOB_COMPLETION_INDEX', 'HOSTNAME', 'QUEUE_PREFIX',
  'TOTAL_WORKERS', 'IDLE_TIMEOUT_SECONDS', 'STALE_CHECK_INTERVAL_SECONDS', 'STALE_THRESHOLD_MS',
  'SIMULATE_WORK_MS', 'KERNEL', 'KERNEL_IMPL', 'KERNEL_JS', 'THREADS', 'PREFETCH', 'SIMULATE_FAULT_RATE',
  'LOG_LEVEL', 'LOG_FORMAT', 'CONNECT_TIMEOUT_SECONDS', 'METRICS_PORT',
] as const;

/**
 * KERNEL (a built-in kernel's name, or the path of a user kernel: NAME.wasm, or NAME.ts built
 * on first use) and KERNEL_JS (the twin, .js or .mjs, for a user kernel only). Only the form
 * is checked here; engine/user-kernel.ts opens the files, still before any connection.
 */
function kernelSetting(env: Env): { kernel: string; kernelPath: string | null; kernelJs: string | null } {
  const value = raw(env, 'KERNEL') ?? 'placeholder';
  const kernelJs = raw(env, 'KERNEL_JS') ?? null;
  if ((KERNEL_NAMES as readonly string[]).includes(value.toLowerCase())) {
    if (kernelJs !== null) {
      throw new ConfigError(`KERNEL_JS names the JS twin of a user kernel, but KERNEL is the built-in ${value.toLowerCase()}: unset KERNEL_JS, or set KERNEL to the user kernel's path`);
    }
    return { kernel: value.toLowerCase(), kernelPath: null, kernelJs: null };
  }
  if (!isUserKernelPath(value)) {
    throw new ConfigError(`KERNEL must be placeholder, mandelbrot or the path of a user kernel (NAME.wasm, or NAME.ts built on first use), got "${value}"`);
  }
  const name = userKernelName(value);
  if (!isUserKernelName(name)) {
    throw new ConfigError(`KERNEL=${value}: a user kernel's file name must be letters, digits, '.', '_' or '-', got "${name}"`);
  }
  if (kernelJs !== null && !/\.m?js$/.test(kernelJs)) throw new ConfigError(`KERNEL_JS must be the path of an ES module (.js or .mjs), got "${kernelJs}"`);
  return { kernel: name, kernelPath: value, kernelJs };
}

export function defaultPrefetch(threads: number): number {
  return Math.max(2, threads * 2);
}

/** Parses and validates the environment. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const useQueue = boolean(env, 'USE_QUEUE', false);
  const queueBackend = oneOf(env, 'QUEUE_BACKEND', 'redis', QUEUE_BACKENDS);
  const backends = readBackendEnv(env);
  // The retry settings govern every backend; their RABBITMQ_ names stay as aliases. Messages name what the user set.
  const maxRetries = integer(env, aliasedName(env, ['MAX_RETRIES', 'RABBITMQ_MAX_RETRIES']), 3, 0, 1000);
  const retryDelayMs = integer(env, aliasedName(env, ['RETRY_DELAY_MS', 'RABBITMQ_RETRY_DELAY_MS']), 5000, 0, 86_400_000);

  const totalName = aliasedName(env, ['TOTAL_PARAMS', 'TOTAL_PARAMETERS']);
  // Parameters are f64-exact integers and chunk ids are decimal strings: 2^48 is far beyond any sweep.
  const totalParams = integer(env, totalName, 10000, 1, 2 ** 48);
  const chunkSize = integer(env, 'CHUNK_SIZE', 100, 1, 2 ** 32);

  // An Indexed Job gives each pod JOB_COMPLETION_INDEX (0, 1, ...): it is the worker's id unless WORKER_ID says otherwise.
  const jobIndex = raw(env, 'JOB_COMPLETION_INDEX');
  if (jobIndex !== undefined && !/^\d+$/.test(jobIndex)) {
    throw new ConfigError(`JOB_COMPLETION_INDEX must be a non-negative integer (Kubernetes sets it in an Indexed Job), got "${jobIndex}"`);
  }
  const workerId = raw(env, 'WORKER_ID') ?? jobIndex ?? '0';
  const workerIdFrom = raw(env, 'WORKER_ID') !== undefined || jobIndex === undefined ? 'WORKER_ID' : 'WORKER_ID (from JOB_COMPLETION_INDEX)';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(workerId)) {
    throw new ConfigError(`WORKER_ID must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit), got "${workerId}"`);
  }
  const queuePrefix = raw(env, 'QUEUE_PREFIX') ?? 'ttg';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/.test(queuePrefix)) {
    throw new ConfigError(`QUEUE_PREFIX must be 1-100 letters, digits, '.', '_', ':' or '-', got "${queuePrefix}"`);
  }
  const totalWorkers = integer(env, 'TOTAL_WORKERS', 3, 1, 1_000_000);
  if (!useQueue) {
    if (!/^\d+$/.test(workerId) || Number(workerId) >= totalWorkers) {
      throw new ConfigError(`${workerIdFrom} must be an integer from 0 to TOTAL_WORKERS-1 (${totalWorkers - 1}) in static mode (USE_QUEUE=false), got "${workerId}"`);
    }
  }
  const idleTimeoutSeconds = decimal(env, 'IDLE_TIMEOUT_SECONDS', 30, 0, 86_400 * 365);
  const staleCheckIntervalSeconds = decimal(env, 'STALE_CHECK_INTERVAL_SECONDS', 30, 0.05, 86_400);
  const staleThresholdMs = integer(env, 'STALE_THRESHOLD_MS', 60000, 100, 86_400_000 * 7);
  const simulateWorkMs = decimal(env, 'SIMULATE_WORK_MS', 0, 0, 60_000);
  const { kernel, kernelPath, kernelJs } = kernelSetting(env);
  const kernelImpl = oneOf(env, 'KERNEL_IMPL', 'wasm', KERNEL_IMPLS);
  if (kernelImpl === 'js' && kernelPath !== null && kernelJs === null) {
    throw new ConfigError(`KERNEL_IMPL=js with the user kernel ${kernelPath} needs its JS twin: set KERNEL_JS=./${kernel}.js`);
  }
  const threads = integer(env, 'THREADS', usableCpus(), 1, 1024);
  const prefetch = integer(env, 'PREFETCH', defaultPrefetch(threads), 1, 65535);
  const prefetchAuto = raw(env, 'PREFETCH') === undefined;
  const simulateFaultRate = decimal(env, 'SIMULATE_FAULT_RATE', 0, 0, 1);
  const logLevel = oneOf(env, 'LOG_LEVEL', 'info', LOG_LEVELS);
  const logFormat = oneOf(env, 'LOG_FORMAT', 'text', LOG_FORMATS);
  const connectTimeoutSeconds = decimal(env, 'CONNECT_TIMEOUT_SECONDS', 30, 0, 86_400);
  const hostName = raw(env, 'HOSTNAME') ?? hostname();
  const metricsPort = integer(env, 'METRICS_PORT', 9464, 0, 65535);

  return {
    useQueue, queueBackend, backends, maxRetries, retryDelayMs, totalParams, chunkSize,
    workerId, hostName, queuePrefix, totalWorkers, idleTimeoutSeconds, staleCheckIntervalSeconds,
    staleThresholdMs, simulateWorkMs, kernel, kernelPath, kernelJs, kernelSha256: null, kernelImpl, threads, prefetch, prefetchAuto, simulateFaultRate,
    logLevel, logFormat, connectTimeoutSeconds, metricsPort,
  };
}


/** One warning per variable that looks like a misspelt ttg variable (ttg would otherwise run its default). */
export function misspeltVariableWarnings(env: Env = process.env): string[] {
  return nearMisses(env, ENV_VARIABLES).map(({ name, meant }) =>
    `${name} is not a ttg variable and is ignored: did you mean ${meant}?${raw(env, meant) === undefined ? ` (${meant} is unset, so its default applies)` : ''}`);
}

/** The sweep's settings in one line, for the start-up log: no credentials (broker addresses never carry them). */
export function describeSettings(config: Config): string {
  // Grouped by hand: the first toLocaleString of a process loads ICU's data, ~15 ms of every worker's start.
  const n = (x: number) => String(x).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const where = config.useQueue
    ? `queue mode on ${config.queueBackend}${brokerAddress(config)}, QUEUE_PREFIX=${config.queuePrefix}`
    : `static mode, worker ${config.workerId} of ${config.totalWorkers}`;
  return `${where}: ${n(config.totalParams)} params in chunks of ${n(config.chunkSize)}, kernel ${config.kernel} (${config.kernelImpl}), ${config.threads} threads`;
}

function brokerAddress(config: Config): string {
  const connection = config.backends[config.queueBackend] as { address?: unknown };
  return typeof connection.address === 'string' ? ` at ${connection.address}` : '';
}

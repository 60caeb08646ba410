/**
 * Configuration from the environment (names and defaults of docs/design.md).
 * Every variable is checked at start-up; the first bad one raises a
 * ConfigError whose one-line message names it and what it accepts, before
 * any connection is made.
 */
import { hostname } from 'node:os';
import { ConfigError } from './errors.js';
import { usableCpus } from './cpus.js';
import { KERNEL_IMPLS, KERNEL_NAMES, type KernelImpl, type KernelName } from '../kernel/types.js';
import { LOG_FORMATS, LOG_LEVELS, redact, registerSecret, type LogFormat, type LogLevel } from './log.js';

export const QUEUE_BACKENDS = ['redis', 'rabbitmq', 'memory'] as const;
export type QueueBackendName = (typeof QUEUE_BACKENDS)[number];

export interface RedisConfig {
  /** Full connection URL when REDIS_URL is set (may hold a password). */
  url: string | null;
  host: string;
  port: number;
  password: string | null;
  /** host:port, safe to print. */
  address: string;
  /** The database number (REDIS_URL's path; 0 when absent). */
  db: number;
}

export interface RabbitConfig {
  /** Connection URL with credentials: never log it, log `address`. */
  url: string;
  /** scheme://host:port/vhost, safe to print. */
  address: string;
}

export interface Config {
  useQueue: boolean;
  queueBackend: QueueBackendName;
  redis: RedisConfig;
  rabbitmq: RabbitConfig;
  maxRetries: number;
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
  kernel: KernelName;
  kernelImpl: KernelImpl;
  threads: number;
  prefetch: number;
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
  'REDIS_HOST', 'REDIS_PORT', 'REDIS_URL', 'REDIS_PASSWORD',
  'RABBITMQ_HOST', 'RABBITMQ_PORT', 'RABBITMQ_USER', 'RABBITMQ_PASSWORD', 'RABBITMQ_VHOST', 'AMQP_URL',
  'RABBITMQ_MAX_RETRIES', 'RABBITMQ_RETRY_DELAY_MS',
  'TOTAL_PARAMS', 'TOTAL_PARAMETERS', 'CHUNK_SIZE', 'WORKER_ID', 'JOB_COMPLETION_INDEX', 'HOSTNAME', 'QUEUE_PREFIX',
  'TOTAL_WORKERS', 'IDLE_TIMEOUT_SECONDS', 'STALE_CHECK_INTERVAL_SECONDS', 'STALE_THRESHOLD_MS',
  'SIMULATE_WORK_MS', 'KERNEL', 'KERNEL_IMPL', 'THREADS', 'PREFETCH', 'SIMULATE_FAULT_RATE',
  'LOG_LEVEL', 'LOG_FORMAT', 'CONNECT_TIMEOUT_SECONDS', 'METRICS_PORT',
] as const;

type Env = Record<string, string | undefined>;

/** Reads one variable; an empty value counts as unset. */
function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function integer(env: Env, name: string, def: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^[+]?\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}..${max}`;
    throw new ConfigError(`${name} must be an integer ${range}, got "${v}"`);
  }
  return Number(v);
}

function decimal(env: Env, name: string, def: number, min: number, max: number): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!/^[+]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(v) || !Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be a number from ${min} to ${max}, got "${v}"`);
  }
  return n;
}

function oneOf<T extends string>(env: Env, name: string, def: T, allowed: readonly T[]): T {
  const v = raw(env, name);
  if (v === undefined) return def;
  const lower = v.toLowerCase() as T;
  if (!allowed.includes(lower)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${v}"`);
  }
  return lower;
}

function boolean(env: Env, name: string, def: boolean): boolean {
  const v = raw(env, name);
  if (v === undefined) return def;
  const lower = v.toLowerCase();
  if (['true', '1', 'yes'].includes(lower)) return true;
  if (['false', '0', 'no'].includes(lower)) return false;
  throw new ConfigError(`${name} must be true or false, got "${v}"`);
}

function parseRedis(env: Env): RedisConfig {
  const url = raw(env, 'REDIS_URL') ?? null;
  const password = env['REDIS_PASSWORD'] || null;
  registerSecret(password);
  if (url !== null) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`REDIS_URL must be a URL like redis://[:password@]host:6379[/db] or rediss://..., got "${redact(url)}"`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
      throw new ConfigError(`REDIS_URL must start with redis:// or rediss://, got "${redact(url)}"`);
    }
    registerSecret(parsed.password);
    // Checked here, with every other variable, so a bad database never gets as far as a connection.
    const dbText = parsed.pathname.replace(/^\//, '');
    if (dbText !== '' && !/^\d{1,5}$/.test(dbText)) {
      throw new ConfigError(`REDIS_URL's database (the path after the port) must be a number, got "${redact(dbText)}"`);
    }
    const port = parsed.port ? Number(parsed.port) : 6379;
    return { url, host: parsed.hostname, port, password, address: `${parsed.hostname}:${port}`, db: dbText === '' ? 0 : Number(dbText) };
  }
  const host = raw(env, 'REDIS_HOST') ?? 'ttg-redis';
  const port = integer(env, 'REDIS_PORT', 6379, 1, 65535);
  return { url: null, host, port, password, address: `${host}:${port}`, db: 0 };
}

function parseRabbit(env: Env): RabbitConfig {
  const url = raw(env, 'AMQP_URL');
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`AMQP_URL must be a URL like amqp://user:password@host:5672/vhost or amqps://..., got "${redact(url)}"`);
    }
    if (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:') {
      throw new ConfigError(`AMQP_URL must start with amqp:// or amqps://, got "${redact(url)}"`);
    }
    registerSecret(parsed.password);
    const port = parsed.port || (parsed.protocol === 'amqps:' ? '5671' : '5672');
    return { url, address: `${parsed.protocol}//${parsed.hostname}:${port}${parsed.pathname || '/'}` };
  }
  const host = raw(env, 'RABBITMQ_HOST') ?? 'ttg-rabbitmq';
  const port = integer(env, 'RABBITMQ_PORT', 5672, 1, 65535);
  const user = env['RABBITMQ_USER'] || 'guest';
  // The default guest password is no secret; one the user set is.
  registerSecret(env['RABBITMQ_PASSWORD']);
  const password = env['RABBITMQ_PASSWORD'] || 'guest';
  const vhost = env['RABBITMQ_VHOST'] || '/';
  return {
    url: `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(vhost)}`,
    address: `amqp://${host}:${port}/${vhost === '/' ? '' : vhost}`,
  };
}

export function defaultPrefetch(threads: number): number {
  return Math.max(2, threads * 2);
}

/** Parses and validates the environment. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const useQueue = boolean(env, 'USE_QUEUE', false);
  const queueBackend = oneOf(env, 'QUEUE_BACKEND', 'redis', QUEUE_BACKENDS);
  const redis = parseRedis(env);
  const rabbitmq = parseRabbit(env);
  const maxRetries = integer(env, 'RABBITMQ_MAX_RETRIES', 3, 0, 1000);
  const retryDelayMs = integer(env, 'RABBITMQ_RETRY_DELAY_MS', 5000, 0, 86_400_000);

  if (raw(env, 'TOTAL_PARAMS') !== undefined && raw(env, 'TOTAL_PARAMETERS') !== undefined &&
      raw(env, 'TOTAL_PARAMS') !== raw(env, 'TOTAL_PARAMETERS')) {
    throw new ConfigError(`TOTAL_PARAMS and TOTAL_PARAMETERS (its alias) are both set and differ: set only one`);
  }
  const totalName = raw(env, 'TOTAL_PARAMS') !== undefined ? 'TOTAL_PARAMS' : raw(env, 'TOTAL_PARAMETERS') !== undefined ? 'TOTAL_PARAMETERS' : 'TOTAL_PARAMS';
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
  const kernel = oneOf(env, 'KERNEL', 'placeholder', KERNEL_NAMES);
  const kernelImpl = oneOf(env, 'KERNEL_IMPL', 'wasm', KERNEL_IMPLS);
  const threads = integer(env, 'THREADS', usableCpus(), 1, 1024);
  const prefetch = integer(env, 'PREFETCH', defaultPrefetch(threads), 1, 65535);
  const simulateFaultRate = decimal(env, 'SIMULATE_FAULT_RATE', 0, 0, 1);
  const logLevel = oneOf(env, 'LOG_LEVEL', 'info', LOG_LEVELS);
  const logFormat = oneOf(env, 'LOG_FORMAT', 'text', LOG_FORMATS);
  const connectTimeoutSeconds = decimal(env, 'CONNECT_TIMEOUT_SECONDS', 30, 0, 86_400);
  const hostName = raw(env, 'HOSTNAME') ?? hostname();
  const metricsPort = integer(env, 'METRICS_PORT', 9464, 0, 65535);

  return {
    useQueue, queueBackend, redis, rabbitmq, maxRetries, retryDelayMs, totalParams, chunkSize,
    workerId, hostName, queuePrefix, totalWorkers, idleTimeoutSeconds, staleCheckIntervalSeconds,
    staleThresholdMs, simulateWorkMs, kernel, kernelImpl, threads, prefetch, simulateFaultRate,
    logLevel, logFormat, connectTimeoutSeconds, metricsPort,
  };
}

export function totalChunks(totalParams: number, chunkSize: number): number {
  return Math.ceil(totalParams / chunkSize);
}

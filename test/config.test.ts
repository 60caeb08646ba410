import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, defaultPrefetch, describeSettings, ENV_VARIABLES, misspeltVariableWarnings } from '../engine/config.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.js';
import { ConfigError } from '../core/errors.js';
import { cgroupCpuQuota } from '../engine/cpus.js';

function rejects(env: Record<string, string>, pattern: RegExp) {
  assert.throws(() => loadConfig(env), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

test('defaults are those of docs/design.md', () => {
  const c = loadConfig({ THREADS: '4' });
  assert.equal(c.useQueue, false);
  assert.equal(c.queueBackend, 'redis');
  assert.equal(c.backends.redis.host, 'ttg-redis');
  assert.equal(c.backends.redis.port, 6379);
  assert.equal(c.backends.rabbitmq.address, 'amqp://ttg-rabbitmq:5672/');
  assert.equal(c.maxRetries, 3);
  assert.equal(c.retryDelayMs, 5000);
  assert.equal(c.totalParams, 10000);
  assert.equal(c.chunkSize, 100);
  assert.equal(c.workerId, '0');
  assert.equal(c.queuePrefix, 'ttg');
  assert.equal(c.totalWorkers, 3);
  assert.equal(c.idleTimeoutSeconds, 30);
  assert.equal(c.staleCheckIntervalSeconds, 30);
  assert.equal(c.staleThresholdMs, 60000);
  assert.equal(c.simulateWorkMs, 0);
  assert.equal(c.kernel, 'placeholder');
  assert.equal(c.kernelImpl, 'wasm');
  assert.equal(c.threads, 4);
  assert.equal(c.prefetch, defaultPrefetch(4));
  assert.ok(c.prefetch >= 4, 'prefetch keeps every thread busy');
  assert.equal(c.simulateFaultRate, 0);
  assert.equal(c.logLevel, 'info');
  assert.equal(c.logFormat, 'text');
});

test('THREADS defaults to the usable CPUs, at least 1', () => {
  const c = loadConfig({});
  assert.ok(Number.isInteger(c.threads) && c.threads >= 1);
});

test('cgroup CPU quota: v2 limit, v2 unlimited, v1 limit, none', () => {
  const fs = (files: Record<string, string>) => (p: string) => files[p] ?? null;
  assert.equal(cgroupCpuQuota(fs({ '/sys/fs/cgroup/cpu.max': '200000 100000\n' })), 2);
  assert.equal(cgroupCpuQuota(fs({ '/sys/fs/cgroup/cpu.max': '150000 100000' })), 1.5);
  assert.equal(cgroupCpuQuota(fs({ '/sys/fs/cgroup/cpu.max': 'max 100000' })), null);
  assert.equal(cgroupCpuQuota(fs({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '300000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' })), 3);
  assert.equal(cgroupCpuQuota(fs({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' })), null);
  assert.equal(cgroupCpuQuota(fs({})), null);
});

test('values are read and normalised', () => {
  const c = loadConfig({
    USE_QUEUE: 'TRUE', QUEUE_BACKEND: 'RabbitMQ', TOTAL_PARAMETERS: '5000', CHUNK_SIZE: '7', WORKER_ID: 'pod-a.1',
    KERNEL: 'mandelbrot', KERNEL_IMPL: 'js', THREADS: '3', PREFETCH: '9', SIMULATE_FAULT_RATE: '0.25',
    LOG_FORMAT: 'json', STALE_CHECK_INTERVAL_SECONDS: '0.5', QUEUE_PREFIX: 'sweep-7',
  });
  assert.equal(c.useQueue, true);
  assert.equal(c.queueBackend, 'rabbitmq');
  assert.equal(c.totalParams, 5000);
  assert.equal(c.chunkSize, 7);
  assert.equal(c.workerId, 'pod-a.1');
  assert.equal(c.kernel, 'mandelbrot');
  assert.equal(c.kernelImpl, 'js');
  assert.equal(c.prefetch, 9);
  assert.equal(c.simulateFaultRate, 0.25);
  assert.equal(c.staleCheckIntervalSeconds, 0.5);
  assert.equal(c.queuePrefix, 'sweep-7');
  assert.deepEqual([c.kernelPath, c.kernelJs, c.kernelSha256], [null, null, null]);
});

test('KERNEL may name a user kernel by path: its name is the file\'s base name; the files are opened later, before connecting', () => {
  const c = loadConfig({ KERNEL: '/kernels/collatz.wasm', KERNEL_JS: './collatz.js', KERNEL_IMPL: 'js' });
  assert.deepEqual([c.kernel, c.kernelPath, c.kernelJs, c.kernelSha256, c.kernelImpl], ['collatz', '/kernels/collatz.wasm', './collatz.js', null, 'js']);
  const t = loadConfig({ KERNEL: 'examples/monte-carlo-pi.ts' });
  assert.deepEqual([t.kernel, t.kernelPath, t.kernelJs], ['monte-carlo-pi', 'examples/monte-carlo-pi.ts', null]);
  assert.equal(loadConfig({ KERNEL: 'Mandelbrot' }).kernel, 'mandelbrot');
});

test('REDIS_URL overrides host and port; the password never shows in the address', () => {
  const c = loadConfig({ REDIS_URL: 'rediss://:s3cret@cache.example:6380/2', REDIS_HOST: 'other' });
  assert.equal(c.backends.redis.url, 'rediss://:s3cret@cache.example:6380/2');
  assert.equal(c.backends.redis.address, 'cache.example:6380');
  assert.ok(!c.backends.redis.address.includes('s3cret'));
  assert.equal(loadConfig({ REDIS_PASSWORD: 'pw' }).backends.redis.password, 'pw');
});

test('AMQP_URL overrides the RabbitMQ variables; the address carries no credentials', () => {
  const c = loadConfig({ AMQP_URL: 'amqps://bob:pa55@mq.example/sweeps', RABBITMQ_HOST: 'ignored' });
  assert.equal(c.backends.rabbitmq.url, 'amqps://bob:pa55@mq.example/sweeps');
  assert.equal(c.backends.rabbitmq.address, 'amqps://mq.example:5671/sweeps');
  const d = loadConfig({ RABBITMQ_HOST: 'h', RABBITMQ_USER: 'u', RABBITMQ_PASSWORD: 'p@ss', RABBITMQ_VHOST: 'v' });
  assert.equal(d.backends.rabbitmq.url, 'amqp://u:p%40ss@h:5672/v');
  assert.ok(!d.backends.rabbitmq.address.includes('p@ss') && !d.backends.rabbitmq.address.includes('p%40ss'));
});

test('each bad variable gets one line naming it and what it accepts', () => {
  rejects({ USE_QUEUE: 'maybe' }, /^USE_QUEUE must be true or false, got "maybe"$/);
  rejects({ QUEUE_BACKEND: 'kafka' }, /^QUEUE_BACKEND must be one of redis, rabbitmq, memory, got "kafka"$/);
  rejects({ REDIS_PORT: '70000' }, /^REDIS_PORT must be an integer 1\.\.65535/);
  rejects({ REDIS_URL: 'http://x' }, /^REDIS_URL must start with redis:\/\/ or rediss:\/\//);
  rejects({ REDIS_URL: 'redis://:pw@' }, /^REDIS_URL must be a URL/);
  rejects({ RABBITMQ_PORT: 'abc' }, /^RABBITMQ_PORT must be an integer/);
  rejects({ AMQP_URL: 'mqtt://a' }, /^AMQP_URL must start with amqp:\/\/ or amqps:\/\//);
  rejects({ RABBITMQ_MAX_RETRIES: '-1' }, /^RABBITMQ_MAX_RETRIES must be an integer 0\.\.1000/);
  rejects({ RABBITMQ_RETRY_DELAY_MS: '1.5' }, /^RABBITMQ_RETRY_DELAY_MS must be an integer/);
  rejects({ TOTAL_PARAMS: '0' }, /^TOTAL_PARAMS must be an integer/);
  rejects({ TOTAL_PARAMS: '1e6' }, /^TOTAL_PARAMS must be an integer/);
  rejects({ TOTAL_PARAMETERS: 'ten' }, /^TOTAL_PARAMETERS must be an integer/);
  rejects({ TOTAL_PARAMS: '10', TOTAL_PARAMETERS: '20' }, /TOTAL_PARAMS and TOTAL_PARAMETERS/);
  rejects({ CHUNK_SIZE: '0' }, /^CHUNK_SIZE must be an integer/);
  rejects({ WORKER_ID: 'a b' }, /^WORKER_ID must be/);
  rejects({ WORKER_ID: '3', TOTAL_WORKERS: '3' }, /^WORKER_ID must be an integer from 0 to TOTAL_WORKERS-1 \(2\) in static mode/);
  rejects({ WORKER_ID: 'pod-a' }, /^WORKER_ID must be an integer from 0 to TOTAL_WORKERS-1/);
  rejects({ QUEUE_PREFIX: 'a b' }, /^QUEUE_PREFIX must be/);
  rejects({ TOTAL_WORKERS: '0' }, /^TOTAL_WORKERS must be an integer/);
  rejects({ IDLE_TIMEOUT_SECONDS: '-5' }, /^IDLE_TIMEOUT_SECONDS must be a number/);
  rejects({ STALE_CHECK_INTERVAL_SECONDS: '0' }, /^STALE_CHECK_INTERVAL_SECONDS must be a number/);
  rejects({ STALE_THRESHOLD_MS: '10' }, /^STALE_THRESHOLD_MS must be an integer/);
  rejects({ SIMULATE_WORK_MS: 'slow' }, /^SIMULATE_WORK_MS must be a number/);
  rejects({ KERNEL: 'fractal' }, /^KERNEL must be placeholder, mandelbrot or the path of a user kernel \(NAME\.wasm, or NAME\.ts built on first use\), got "fractal"$/);
  rejects({ KERNEL: './my kernel.wasm' }, /^KERNEL=\.\/my kernel\.wasm: a user kernel's file name must be letters, digits/);
  rejects({ KERNEL_JS: './k.js' }, /^KERNEL_JS names the JS twin of a user kernel, but KERNEL is the built-in placeholder/);
  rejects({ KERNEL: './k.wasm', KERNEL_JS: './k.ts' }, /^KERNEL_JS must be the path of an ES module \(\.js or \.mjs\), got "\.\/k\.ts"$/);
  rejects({ KERNEL: './k.wasm', KERNEL_IMPL: 'js' }, /^KERNEL_IMPL=js with the user kernel \.\/k\.wasm needs its JS twin: set KERNEL_JS=\.\/k\.js$/);
  rejects({ KERNEL_IMPL: 'native' }, /^KERNEL_IMPL must be one of wasm, js/);
  rejects({ THREADS: '0' }, /^THREADS must be an integer 1\.\.1024/);
  rejects({ PREFETCH: '2.5' }, /^PREFETCH must be an integer/);
  rejects({ SIMULATE_FAULT_RATE: '1.5' }, /^SIMULATE_FAULT_RATE must be a number from 0 to 1/);
  rejects({ LOG_LEVEL: 'verbose' }, /^LOG_LEVEL must be one of debug, info, warn, error/);
  rejects({ LOG_FORMAT: 'xml' }, /^LOG_FORMAT must be one of text, json/);
  rejects({ CONNECT_TIMEOUT_SECONDS: 'x' }, /^CONNECT_TIMEOUT_SECONDS must be a number/);
});

test('REDIS_URL\'s database is checked with the other variables, before any connection', () => {
  rejects({ REDIS_URL: 'redis://cache:6379/abc' }, /^REDIS_URL's database \(the path after the port\) must be a number, got "abc"$/);
  rejects({ REDIS_URL: 'redis://cache:6379/1/2' }, /^REDIS_URL's database/);
  assert.equal(loadConfig({ REDIS_URL: 'redis://cache:6379/3' }).backends.redis.db, 3);
  assert.equal(loadConfig({ REDIS_URL: 'redis://cache:6379' }).backends.redis.db, 0);
});

test('MAX_RETRIES and RETRY_DELAY_MS govern every backend; the RABBITMQ_ names stay as aliases', () => {
  assert.deepEqual([loadConfig({ MAX_RETRIES: '5', RETRY_DELAY_MS: '250' })].map((c) => [c.maxRetries, c.retryDelayMs]), [[5, 250]]);
  assert.deepEqual([loadConfig({ RABBITMQ_MAX_RETRIES: '6', RABBITMQ_RETRY_DELAY_MS: '260' })].map((c) => [c.maxRetries, c.retryDelayMs]), [[6, 260]]);
  assert.equal(loadConfig({ MAX_RETRIES: '4', RABBITMQ_MAX_RETRIES: '4' }).maxRetries, 4, 'both set and equal is fine');
  // Messages name the variable the user set.
  rejects({ MAX_RETRIES: 'x' }, /^MAX_RETRIES must be an integer 0\.\.1000, got "x"$/);
  rejects({ RABBITMQ_MAX_RETRIES: 'x' }, /^RABBITMQ_MAX_RETRIES must be an integer/);
  rejects({ RETRY_DELAY_MS: '-1' }, /^RETRY_DELAY_MS must be an integer/);
  rejects({ MAX_RETRIES: '2', RABBITMQ_MAX_RETRIES: '3' }, /^MAX_RETRIES and RABBITMQ_MAX_RETRIES \(its alias\) are both set and differ/);
  rejects({ RETRY_DELAY_MS: '2', RABBITMQ_RETRY_DELAY_MS: '3' }, /^RETRY_DELAY_MS and RABBITMQ_RETRY_DELAY_MS \(its alias\)/);
});

test('a password in a bad URL is not echoed', () => {
  rejects({ REDIS_URL: 'http://user:topsecret@x' }, /^(?!.*topsecret)/);
  rejects({ AMQP_URL: 'http://user:topsecret@x' }, /^(?!.*topsecret)/);
});

test('an Indexed Job\'s JOB_COMPLETION_INDEX is the worker id unless WORKER_ID is set', () => {
  assert.equal(loadConfig({ JOB_COMPLETION_INDEX: '2', TOTAL_WORKERS: '3' }).workerId, '2');
  assert.equal(loadConfig({ JOB_COMPLETION_INDEX: '2', WORKER_ID: '0', TOTAL_WORKERS: '3' }).workerId, '0');
  assert.equal(loadConfig({ JOB_COMPLETION_INDEX: '7', USE_QUEUE: 'true' }).workerId, '7');
  rejects({ JOB_COMPLETION_INDEX: 'x' }, /^JOB_COMPLETION_INDEX must be a non-negative integer .*got "x"$/);
  // An index past TOTAL_WORKERS-1 names where the id came from, so the Job's completions can be fixed.
  rejects({ JOB_COMPLETION_INDEX: '3', TOTAL_WORKERS: '3' }, /^WORKER_ID \(from JOB_COMPLETION_INDEX\) must be an integer from 0 to TOTAL_WORKERS-1 \(2\)/);
});

test('METRICS_PORT: 9464 by default, 0 turns the endpoints off, anything else outside 0..65535 is refused', () => {
  assert.equal(loadConfig({}).metricsPort, 9464);
  assert.equal(loadConfig({ METRICS_PORT: '0' }).metricsPort, 0);
  rejects({ METRICS_PORT: '70000' }, /^METRICS_PORT must be an integer 0\.\.65535, got "70000"$/);
  rejects({ METRICS_PORT: 'http' }, /^METRICS_PORT must be an integer/);
});

test('ENV_VARIABLES lists every variable the config reads (the manifests are checked against it)', () => {
  // The engine's variables, and each backend's own (read through the registry).
  const files = ['engine/config.ts', 'backends/redis/options.ts', 'backends/rabbitmq/options.ts'];
  const source = files.map((f) => readFileSync(path.join(ROOT, f), 'utf8')).join('\n');
  const read = new Set([...source.matchAll(/(?:raw|integer|decimal|oneOf|boolean)\(env, '([A-Z_]+)'|env\['([A-Z_]+)'\]|'([A-Z_]+)'(?=[,\]].*aliasedName|\]\))/g)].map((m) => m[1] ?? m[2] ?? m[3]));
  for (const name of ['MAX_RETRIES', 'RABBITMQ_MAX_RETRIES', 'RETRY_DELAY_MS', 'RABBITMQ_RETRY_DELAY_MS']) read.add(name);
  assert.ok(read.size >= 30, `found the reads (${read.size})`);
  assert.deepEqual([...read].filter((v) => !(ENV_VARIABLES as readonly string[]).includes(v!)), []);
});

test('misspelt variables are named with what was meant; other variables and Service links are left alone', () => {
  const warnings = misspeltVariableWarnings({
    TOTAL_PARAM: '2000', CHUNKSIZE: '500', TTG_THREADS: '2', THREAD: '4', IDLE_TIMEOUT_SECOND: '5', REDIS_HOTS: 'x',
    CHUNK_SIZE_: '1', TOTAL_PARAMS: '9000', STALE_THRESHOLD_MX: '1',
    // Too far from any ttg name (two edits from THREADS, whose limit is one; four from TOTAL_PARAMS).
    THREADXX: '1', TOTAL_PARAMETERS: '1',
    // Not typos: the system's own, ttg's own, and what the kubelet injects for a Service named ttg-redis.
    PATH: '/bin', HOME: '/root', HOSTNAME: 'pod-1', LANG: 'C', TERM: 'xterm', NODE_ENV: 'production',
    TTG_REDIS_PORT: 'tcp://10.0.0.1:6379', TTG_REDIS_SERVICE_HOST: '10.0.0.1', TTG_REDIS_PORT_6379_TCP_ADDR: '10.0.0.1',
  });
  const named = (w: string) => /^(\w+) is not a ttg variable/.exec(w)?.[1];
  assert.deepEqual(warnings.map(named).sort(), ['CHUNKSIZE', 'CHUNK_SIZE_', 'IDLE_TIMEOUT_SECOND', 'REDIS_HOTS', 'STALE_THRESHOLD_MX', 'THREAD', 'TOTAL_PARAM', 'TTG_THREADS']);
  assert.ok(warnings.includes('CHUNKSIZE is not a ttg variable and is ignored: did you mean CHUNK_SIZE? (CHUNK_SIZE is unset, so its default applies)'));
  assert.ok(warnings.includes('TOTAL_PARAM is not a ttg variable and is ignored: did you mean TOTAL_PARAMS?'), 'no default note when the real one is set');
  assert.ok(warnings.some((w) => w.startsWith('TTG_THREADS is not a ttg variable and is ignored: did you mean THREADS?')));
});

test('the start-up line gives the sweep\'s settings and the broker address, never a password', () => {
  const line = describeSettings(loadConfig({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_URL: 'redis://:s3cret@cache.example:6380/2', TOTAL_PARAMS: '1000000',
    CHUNK_SIZE: '1000', KERNEL: 'mandelbrot', THREADS: '2', QUEUE_PREFIX: 'exp1',
  }));
  assert.equal(line, 'queue mode on redis at cache.example:6380, QUEUE_PREFIX=exp1: 1,000,000 params in chunks of 1,000, kernel mandelbrot (wasm), 2 threads');
  assert.ok(!line.includes('s3cret'));
});

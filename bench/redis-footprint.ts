/**
 * What a sweep leaves in Redis (issue 9): for each sweep, the bytes of every
 * key under its QUEUE_PREFIX (MEMORY USAGE … SAMPLES 0: exact, per key) when
 * the sweep has just been created, when real `ttg worker` processes have
 * finished it, and after `ttg reset`; beside them the server's used_memory
 * from before the sweep, which is exact only on a private server (on a
 * shared one other clients' keys come and go meanwhile). Every sweep is checked: no chunk missing, the
 * grand sum equal to the placeholder's closed form.
 *
 *   node dist/bench/redis-footprint.js [--sweeps=100000000/10000,…] [--workers=2] [--json]
 *
 * REDIS_HOST / REDIS_PORT name the server (127.0.0.1:6379 by default). Each
 * sweep runs under its own prefix (ttgbench-mem-<pid>-<n>), reset at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { loadConfig } from '../engine/config.js';
import { silentLogger } from '../core/log.js';
import { createBackend } from '../engine/backend.js';
import { mergePartials, roundPartials } from '../kernel/exact-sum.js';

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(DIST, 'engine/cli.js');
const REDIS_HOST = process.env['REDIS_HOST'] ?? '127.0.0.1';
const REDIS_PORT = process.env['REDIS_PORT'] ?? '6379';

/** Bytes per key (its name without the prefix) and entries of the task and result streams. */
export interface Snapshot {
  keys: Record<string, number>;
  totalBytes: number;
  taskEntries: number;
  resultEntries: number;
  /** The server's used_memory, bytes. */
  usedMemory: number;
}

export interface FootprintRow {
  totalParams: number;
  chunkSize: number;
  chunks: number;
  workers: number;
  seconds: number;
  /** The server's used_memory before the sweep was created. */
  usedMemoryBefore: number;
  created: Snapshot;
  finished: Snapshot;
  afterReset: Snapshot;
  /** Bytes per chunk left by the sweep: every key, and the result stream alone. */
  bytesPerChunk: { total: number; results: number };
  error?: string;
}

/** The placeholder's exact sum over [0, total) when total is a multiple of its period (1000). */
function placeholderSum(total: number): number {
  return (total / 1000) * (499_500 + 535.5);
}

function exited(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.on('close', (code) => resolve(code ?? -1)));
}

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? NaN);
}

/** Every key of the prefix with its exact size, and the streams' lengths. */
async function snapshot(redis: Redis, prefix: string): Promise<Snapshot> {
  const keys: Record<string, number> = {};
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    for (const key of found) {
      const bytes = (await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) as number | null;
      if (bytes !== null) keys[key.slice(prefix.length)] = Number(bytes);
    }
    cursor = next;
  } while (cursor !== '0');
  return {
    keys,
    totalBytes: Object.values(keys).reduce((a, b) => a + b, 0),
    taskEntries: await redis.xlen(`${prefix}:tasks`),
    resultEntries: await redis.xlen(`${prefix}:results`),
    usedMemory: await usedMemory(redis),
  };
}

let runNo = 0;

export async function measureSweep(redis: Redis, totalParams: number, chunkSize: number, workers: number): Promise<FootprintRow> {
  const prefix = `ttgbench-mem-${process.pid}-${runNo++}`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'], HOME: process.env['HOME'],
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, REDIS_HOST, REDIS_PORT,
    TOTAL_PARAMS: String(totalParams), CHUNK_SIZE: String(chunkSize), THREADS: '1', METRICS_PORT: '0',
    LOG_LEVEL: 'warn', IDLE_TIMEOUT_SECONDS: '10',
  };
  const config = loadConfig({ ...env, WORKER_ID: 'bench' });
  const chunks = Math.ceil(totalParams / chunkSize);
  const empty: Snapshot = { keys: {}, totalBytes: 0, taskEntries: 0, resultEntries: 0, usedMemory: NaN };
  const row: FootprintRow = {
    totalParams, chunkSize, chunks, workers, seconds: NaN, usedMemoryBefore: await usedMemory(redis),
    created: empty, finished: empty, afterReset: empty,
    bytesPerChunk: { total: NaN, results: NaN },
  };
  // The sweep as the first worker would create it: the task stream is then at its fullest.
  const creator = await createBackend({ config, workerId: 'bench', log: silentLogger });
  try {
    await creator.init({ totalParams, chunkSize, kernel: config.kernel });
  } finally {
    await creator.close();
  }
  row.created = await snapshot(redis, prefix);
  const t0 = Date.now();
  const children = Array.from({ length: workers }, (_, i) =>
    spawn(process.execPath, [CLI, 'worker'], { env: { ...env, WORKER_ID: String(i) }, stdio: ['ignore', 'ignore', 'pipe'] }));
  const stderr: string[] = children.map(() => '');
  children.forEach((c, i) => c.stderr!.on('data', (b: Buffer) => (stderr[i] += b.toString())));
  const codes = await Promise.all(children.map(exited));
  row.seconds = (Date.now() - t0) / 1000;
  try {
    if (codes.some((c) => c !== 0)) throw new Error(`worker exit codes ${codes.join(',')}: ${stderr.join(' | ').slice(0, 300)}`);
    row.finished = await snapshot(redis, prefix);
    const reader = await createBackend({ config, workerId: 'bench', log: silentLogger });
    try {
      const first = new Map<string, number[]>();
      for (const r of await reader.readResults()) if (!first.has(r.chunkId)) first.set(r.chunkId, r.stats.partials);
      if (first.size !== chunks) throw new Error(`${first.size} of ${chunks} chunks have results`);
      const partials: number[] = [];
      for (const p of first.values()) mergePartials(partials, p);
      if (totalParams % 1000 === 0 && roundPartials(partials) !== placeholderSum(totalParams)) {
        throw new Error(`grand sum ${roundPartials(partials)} is not ${placeholderSum(totalParams)}`);
      }
    } finally {
      await reader.close();
    }
    row.bytesPerChunk = { total: row.finished.totalBytes / chunks, results: (row.finished.keys[':results'] ?? 0) / chunks };
  } catch (err) {
    row.error = err instanceof Error ? err.message : String(err);
  } finally {
    // What `ttg reset` removes: run it as a user would.
    const reset = spawn(process.execPath, [CLI, 'reset', '--yes'], { env: { ...env, WORKER_ID: 'bench' }, stdio: 'ignore' });
    const code = await exited(reset);
    if (code !== 0) row.error = `${row.error ? `${row.error}; ` : ''}ttg reset exited ${code}`;
    row.afterReset = await snapshot(redis, prefix);
  }
  return row;
}

const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const signedKb = (bytes: number) => (Number.isFinite(bytes) ? `${bytes >= 0 ? '+' : ''}${kb(bytes)}` : '-');

export function footprintTable(rows: FootprintRow[]): string {
  const lines: string[] = [];
  for (const r of rows) {
    lines.push(`${r.totalParams.toLocaleString('en-US')} params in chunks of ${r.chunkSize.toLocaleString('en-US')} = ` +
      `${r.chunks.toLocaleString('en-US')} chunks, ${r.workers} workers, ${r.seconds.toFixed(1)} s` +
      (r.error ? `  FAILED: ${r.error}` : ', every chunk has a result, grand sum exact'));
    lines.push('  key                 created (bytes)   finished (bytes)   per chunk');
    const names = [...new Set([...Object.keys(r.created.keys), ...Object.keys(r.finished.keys)])].sort();
    for (const name of names) {
      const c = r.created.keys[name];
      const f = r.finished.keys[name];
      lines.push(`  P${name.padEnd(18)} ${(c === undefined ? '-' : c.toLocaleString('en-US')).padStart(15)} ` +
        `${(f === undefined ? '-' : f.toLocaleString('en-US')).padStart(18)} ${(f === undefined ? '-' : (f / r.chunks).toFixed(1)).padStart(11)}`);
    }
    lines.push(`  ${'all keys'.padEnd(19)} ${r.created.totalBytes.toLocaleString('en-US').padStart(15)} ` +
      `${r.finished.totalBytes.toLocaleString('en-US').padStart(18)} ${r.bytesPerChunk.total.toFixed(1).padStart(11)}`);
    lines.push(`  task stream entries: ${r.created.taskEntries.toLocaleString('en-US')} created, ${r.finished.taskEntries.toLocaleString('en-US')} finished; ` +
      `result entries: ${r.finished.resultEntries.toLocaleString('en-US')}`);
    lines.push(`  server used_memory (the whole server's: exact only on a private one): ${signedKb(r.finished.usedMemory - r.usedMemoryBefore)} ` +
      `before → finished (${signedKb(r.created.usedMemory - r.usedMemoryBefore)} at creation), ` +
      `${signedKb(r.afterReset.usedMemory - r.usedMemoryBefore)} before → after ttg reset`);
    const left = Object.keys(r.afterReset.keys);
    lines.push(`  after ttg reset: ${left.length ? `left ${left.map((k) => `P${k}`).join(', ')}` : 'no key left under the prefix'}`);
    lines.push('');
  }
  return lines.join('\n');
}

function parseSweeps(text: string): Array<{ totalParams: number; chunkSize: number }> {
  return text.split(',').map((s) => {
    const [total, chunk] = s.split('/').map(Number);
    if (!Number.isSafeInteger(total) || !Number.isSafeInteger(chunk) || total! <= 0 || chunk! <= 0) {
      throw new Error(`--sweeps takes TOTAL/CHUNK pairs separated by commas (e.g. 1000000/1000), got "${s}"`);
    }
    return { totalParams: total!, chunkSize: chunk! };
  });
}

/** The sweeps measured by default: 1 M, 10 M and 100 M parameters, 1,000 to 100,000 chunks. */
export const DEFAULT_SWEEPS = '1000000/1000,10000000/10000,10000000/1000,100000000/10000,100000000/1000';

async function main(argv: string[]): Promise<number> {
  const flag = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const unknown = argv.filter((a) => !/^--(sweeps|workers)=/.test(a) && a !== '--json');
  if (unknown.length) {
    process.stderr.write(`unknown argument ${unknown[0]}; usage: node dist/bench/redis-footprint.js [--sweeps=TOTAL/CHUNK,…] [--workers=N] [--json]\n`);
    return 2;
  }
  const sweeps = parseSweeps(flag('sweeps') ?? DEFAULT_SWEEPS);
  const workers = Number(flag('workers') ?? 2);
  const redis = new Redis({ host: REDIS_HOST, port: Number(REDIS_PORT), lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
  } catch (err) {
    process.stderr.write(`cannot reach Redis at ${REDIS_HOST}:${REDIS_PORT} (${(err as Error).message}); set REDIS_HOST and REDIS_PORT\n`);
    return 1;
  }
  const rows: FootprintRow[] = [];
  try {
    for (const { totalParams, chunkSize } of sweeps) {
      const row = await measureSweep(redis, totalParams, chunkSize, workers);
      rows.push(row);
      if (!argv.includes('--json')) process.stdout.write(footprintTable([row]) + '\n');
    }
  } finally {
    await redis.quit();
  }
  if (argv.includes('--json')) process.stdout.write(JSON.stringify({ redis: `${REDIS_HOST}:${REDIS_PORT}`, rows }, null, 2) + '\n');
  return rows.some((r) => r.error) ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}

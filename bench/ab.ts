/**
 * Interleaved A/B runs of ttg builds, for a change too small for the queue bench's noise:
 * `node dist/bench/ab.js <redis|rabbitmq> <params> <chunk> <runs> <dir> [<dir> ...]`, each <dir> a
 * checkout (or a copy of its dist/, build/, package.json and backends/redis/*.lua, node_modules
 * linked) of the build to compare. Each run spawns WORKERS (default 2) `ttg worker` processes of that
 * build on a fresh QUEUE_PREFIX, THREADS=1, placeholder kernel, and times spawn → all exited, spawn →
 * first chunk started, and last result → all exited, from the results' own timestamps; the builds
 * take turns, in alternating order. Prints medians (min–max) per build.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { createBackend } from '../engine/backend.js';
import { loadConfig } from '../engine/config.js';
import { silentLogger } from '../core/log.js';

const [backend, params, chunk, runs, ...dirs] = process.argv.slice(2);
if (!backend || !params || !chunk || !runs || dirs.length === 0) {
  process.stderr.write('usage: node dist/bench/ab.js <redis|rabbitmq> <params> <chunk> <runs> <dir> [<dir> ...]\n');
  process.exit(2);
}
const workers = Number(process.env['WORKERS'] ?? 2);
const chunks = Math.ceil(Number(params) / Number(chunk));

interface Run { wall: number; first: number; exit: number }

let n = 0;
async function once(dir: string): Promise<Run> {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', USE_QUEUE: 'true', QUEUE_BACKEND: backend!,
    QUEUE_PREFIX: `ttg-ab-${process.pid}-${n++}`, REDIS_HOST: process.env['REDIS_HOST'] ?? '127.0.0.1',
    RABBITMQ_HOST: process.env['RABBITMQ_HOST'] ?? '127.0.0.1', TOTAL_PARAMS: params!, CHUNK_SIZE: chunk!, THREADS: '1',
    METRICS_PORT: '0', LOG_LEVEL: 'error', IDLE_TIMEOUT_SECONDS: '10',
  };
  const t0 = Date.now();
  const kids = Array.from({ length: workers }, (_, i) => spawn(process.execPath, [path.join(dir, 'dist/engine/cli.js'), 'worker'], {
    env: { ...env, WORKER_ID: String(i) }, stdio: ['ignore', 'ignore', 'inherit'],
  }));
  const codes = await Promise.all(kids.map((c) => new Promise<number | null>((resolve) => c.on('close', resolve))));
  const tEnd = Date.now();
  const reader = await createBackend({ config: loadConfig({ ...env, WORKER_ID: 'ab' }), workerId: 'ab', log: silentLogger });
  try {
    const results = await reader.readResults();
    const done = new Set(results.map((r) => r.chunkId)).size;
    if (codes.some((c) => c !== 0) || done !== chunks) throw new Error(`${dir}: exit codes ${codes.join(',')}, ${done} of ${chunks} chunks`);
    const last = Math.max(...results.map((r) => Date.parse(r.completedAt)));
    const first = Math.min(...results.map((r) => Date.parse(r.startedAt ?? r.completedAt)));
    return { wall: tEnd - t0, first: first - t0, exit: tEnd - last };
  } finally {
    await reader.reset().catch(() => {});
    await reader.close();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const got = new Map<string, Run[]>(dirs.map((d) => [d, []]));
for (let r = 0; r < Number(runs); r++) {
  for (const dir of r % 2 ? [...dirs].reverse() : dirs) got.get(dir)!.push(await once(dir));
}
for (const [dir, rs] of got) {
  const f = (k: keyof Run) => `${median(rs.map((x) => x[k]))} (${Math.min(...rs.map((x) => x[k]))}–${Math.max(...rs.map((x) => x[k]))})`;
  process.stdout.write(`${dir}\n  spawn → exited ${f('wall')} ms, → first chunk ${f('first')} ms, last result → exited ${f('exit')} ms\n`);
}

/**
 * Small helpers of the broker-restart scenario (faults/scenarios/broker-restart.ts):
 * real `ttg worker` and `ttg aggregate` processes, a reader of the sweep through ttg's own
 * backend, the golden reference, and the arithmetic that turns results into
 * "parameters lost" and "parameters counted twice". Kept apart from the shared fault
 * harness (written in parallel), so the scenario stands on its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../engine/config.js';
import { backendOptions } from '../engine/backend.js';
import { createBackendByName } from '../backends/registry.js';
import type { QueueBackend } from '../backends/types.js';
import { silentLogger } from '../core/log.js';
import { chunkIndexOf, type ChunkResult } from '../core/sweep.js';
import type { FaultBackend } from './types.js';

/** The package root (this file runs as dist/faults/restart-helpers.js). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/engine/cli.js');

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface TtgChild {
  readonly name: string;
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has ended and its output is closed. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
}

/** Starts `node dist/engine/cli.js <args>` with exactly `env` (plus PATH and HOME). */
export function startTtg(name: string, args: string[], env: Record<string, string>): TtgChild {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env['PATH'], HOME: process.env['HOME'], ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return { name, child, stdout: () => out, stderr: () => err, exited };
}

/** Runs a ttg command to its end, SIGKILLing it past `timeoutMs`. */
export async function runTtg(args: string[], env: Record<string, string>, timeoutMs: number) {
  const p = startTtg(`ttg ${args.join(' ')}`, args, env);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const end = await p.exited;
  clearTimeout(timer);
  return { ...end, stdout: p.stdout(), stderr: p.stderr() };
}

/** The last non-empty stdout line as JSON (a worker's summary, `ttg aggregate --json`), or null. */
export function lastJson(stdout: string): Record<string, unknown> | null {
  const line = stdout.trim().split('\n').filter(Boolean).at(-1);
  if (!line) return null;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** Polls `probe` until it gives a truthy value; throws naming `what` past `timeoutMs`. */
export async function waitUntil<T>(what: string, probe: () => Promise<T> | T, timeoutMs: number, pollMs = 100): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await probe();
    if (got) return got as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(pollMs);
  }
}

/** Reads the sweep with ttg's own backend (a reader: it consumes nothing), then closes it. */
export async function withReader<T>(kind: FaultBackend, env: Record<string, string>, fn: (b: QueueBackend) => Promise<T>): Promise<T> {
  const config = loadConfig({ ...env, USE_QUEUE: 'true', QUEUE_BACKEND: kind });
  const backend = await createBackendByName(kind, backendOptions(config, kind, 'fault-observer', silentLogger));
  try {
    return await fn(backend);
  } finally {
    await backend.close().catch(() => {});
  }
}

export interface GoldenRange {
  start: number;
  end: number;
  count: number;
  sum: number;
}

/** Reference statistics of independent implementations (test/fixtures/golden.json, the repository's copy). */
export function goldenRange(kernel: 'placeholder' | 'mandelbrot', totalParams: number): GoldenRange {
  const all = JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/golden.json'), 'utf8')) as Record<string, GoldenRange[]>;
  const range = all[kernel]?.find((g) => g.start === 0 && g.end === totalParams);
  if (!range) throw new Error(`test/fixtures/golden.json has no ${kernel} range [0, ${totalParams})`);
  return range;
}

export interface ResultAccount {
  /** Parameters of the sweep with no result at all. */
  paramsLost: number;
  /** Parameters the report counts beyond the parameters that have a result. */
  paramsDoubleCounted: number;
  /** Chunks computed more than once: redelivered, retried, or with several results. */
  chunksRedone: number;
  /** Chunks with more than one result, and whether each is explained (redelivered or retried). */
  duplicatedChunks: Array<{ chunkId: string; results: number; explained: boolean }>;
}

/**
 * What the results say, counted here from the raw results rather than taken from the
 * report: each chunk's range comes from its index, so a chunk counted twice by the
 * aggregator shows as the report's total exceeding the parameters that have a result.
 */
export function accountResults(results: ChunkResult[], totalParams: number, chunkSize: number, reportedParams: number): ResultAccount {
  const totalChunks = Math.ceil(totalParams / chunkSize);
  const byChunk = new Map<number, ChunkResult[]>();
  for (const r of results) {
    const index = chunkIndexOf(r.chunkId, totalChunks);
    if (index === null) continue;
    byChunk.set(index, [...(byChunk.get(index) ?? []), r]);
  }
  let covered = 0;
  let redone = 0;
  const duplicatedChunks: ResultAccount['duplicatedChunks'] = [];
  for (const [index, rs] of byChunk) {
    covered += Math.min(totalParams, (index + 1) * chunkSize) - index * chunkSize;
    const again = rs.some((r) => r.recovered === true || (r.attempts ?? 0) > 0);
    if (again || rs.length > 1) redone++;
    if (rs.length > 1) duplicatedChunks.push({ chunkId: rs[0]!.chunkId, results: rs.length, explained: again });
  }
  return { paramsLost: totalParams - covered, paramsDoubleCounted: Math.max(0, reportedParams - covered), chunksRedone: redone, duplicatedChunks };
}

/** Lines of any of `texts` that contain one of `secrets`. */
export function secretLeaks(texts: string[], secrets: string[]): number {
  let n = 0;
  for (const text of texts) for (const line of text.split('\n')) if (secrets.some((s) => s && line.includes(s))) n++;
  return n;
}

/** Parsed LOG_FORMAT=json lines of a process's stderr (other lines skipped). */
export function logLines(stderr: string): Array<{ ts: string; level: string; msg: string }> {
  const out: Array<{ ts: string; level: string; msg: string }> = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const v = JSON.parse(line) as { ts?: unknown; level?: unknown; msg?: unknown };
      if (typeof v.ts === 'string' && typeof v.msg === 'string') out.push({ ts: v.ts, level: String(v.level), msg: v.msg });
    } catch {
      /* not a log line */
    }
  }
  return out;
}

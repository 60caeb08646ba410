/** Shared test helpers: real servers, random prefixes, the golden reference, running `ttg`. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import assert from 'node:assert/strict';
import type { ChunkResult, Delivery, QueueBackend } from '../backends/types.js';

/** The package root (tests run from dist/test/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(ROOT, 'dist/engine/cli.js');

export const REDIS_HOST = process.env['TEST_REDIS_HOST'] ?? '127.0.0.1';
export const REDIS_PORT = Number(process.env['TEST_REDIS_PORT'] ?? 6379);
export const RABBIT_HOST = process.env['TEST_RABBITMQ_HOST'] ?? '127.0.0.1';
export const RABBIT_PORT = Number(process.env['TEST_RABBITMQ_PORT'] ?? 5672);

/** A fresh QUEUE_PREFIX so tests never see each other's data. */
export function randomPrefix(tag = 't'): string {
  return `ttgtest-${tag}-${randomBytes(4).toString('hex')}`;
}

function canConnect(host: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Fails (never skips) with how to start Redis when it is not there. */
export async function requireRedis(): Promise<void> {
  if (!(await canConnect(REDIS_HOST, REDIS_PORT))) {
    throw new Error(
      `Redis is not reachable at ${REDIS_HOST}:${REDIS_PORT}; these tests need a real server. Start one with: ` +
        `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`,
    );
  }
}

/** Fails (never skips) with how to start RabbitMQ when it is not there. */
export async function requireRabbit(): Promise<void> {
  if (!(await canConnect(RABBIT_HOST, RABBIT_PORT))) {
    throw new Error(
      `RabbitMQ is not reachable at ${RABBIT_HOST}:${RABBIT_PORT}; these tests need a real server. Start one with: ` +
        `rabbitmq-server -detached && rabbitmqctl await_startup`,
    );
  }
}

export interface GoldenRange {
  start: number;
  end: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  avg?: number;
}

/**
 * Reference statistics from independent implementations (test/fixtures/golden.json,
 * copied from the project's shared reference: see its "about" field). Only the
 * repository's copy is read, so a user's clone tests the same way.
 */
export function golden(): { placeholder: GoldenRange[]; mandelbrot: GoldenRange[] } {
  return JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/golden.json'), 'utf8'));
}

/** Environment for a `ttg` child process against the test servers. */
export function testEnv(extra: Record<string, string | number>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    REDIS_HOST,
    REDIS_PORT: String(REDIS_PORT),
    RABBITMQ_HOST: RABBIT_HOST,
    RABBITMQ_PORT: String(RABBIT_PORT),
    LOG_LEVEL: 'info',
    THREADS: '1',
    // Many test workers share this host: endpoints only where a test asks for them (its own port).
    METRICS_PORT: '0',
  };
  for (const [k, v] of Object.entries(extra)) env[k] = String(v);
  return env;
}



export interface TtgProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  exited: Promise<number | string>;
}

/**
 * Preloaded into every `ttg` the tests start: it reports a process.exit()
 * call on stderr (with the timers still holding the process), so a command
 * that needed a forced exit to end, instead of closing its handles, fails
 * the test (runTtg, and assertEndedByItself for processes started here).
 */
export const EXIT_SPY = path.join(ROOT, 'test/fixtures/exit-spy.mjs');

/** Fails when the process was ended by process.exit() rather than by running out of work. */
export function assertEndedByItself(stderr: string, what: string): void {
  const line = stderr.split('\n').find((l) => l.startsWith('EXIT-SPY'));
  if (line) throw new Error(`${what} did not end by itself: ${line}`);
}

/**
 * Starts `node dist/engine/cli.js <args>` with exactly `env`. `wrap` runs it through a
 * command that execs it in the same process (e.g. `ip netns exec NS`), so signals reach node.
 */
export function startTtg(args: string[], env: NodeJS.ProcessEnv, opts: { wrap?: string[] } = {}): TtgProcess {
  const argv = [process.execPath, '--import', EXIT_SPY, CLI, ...args];
  const [command, ...rest] = [...(opts.wrap ?? []), ...argv];
  const child = spawn(command!, rest, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | string>((resolve) => {
    child.on('close', (code, signal) => resolve(code ?? signal ?? -1));
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Runs `ttg <args>` to the end; fails the test if it outlives `timeoutMs`. */
export async function runTtg(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000) {
  const p = startTtg(args, env);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  // No command run to its end (no signal) may need process.exit() to end.
  if (code !== 'SIGKILL') assertEndedByItself(p.stderr(), `ttg ${args.join(' ')}`);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

/** The last non-empty stdout line, parsed as JSON (the worker summary, the --json report). */
export function lastJsonLine(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n').filter(Boolean);
  if (lines.length === 0) throw new Error('no output on stdout');
  return JSON.parse(lines.at(-1)!);
}

/** A small seeded generator (mulberry32), so a failing random case can be replayed from its seed. */
export { random } from '../kernel/user-check.js';

/**
 * Polls `probe` until it gives a truthy value, and returns that value: the
 * tests wait on a condition, never on a fixed sleep. Fails naming `what`
 * after `timeoutMs`. Between probes it yields for `pollMs` (0: one turn of
 * the event loop, so I/O and timers run).
 */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 20_000, pollMs = 10): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await probe();
    if (got) return got as NonNullable<T>;
    assert.ok(Date.now() < deadline, `timed out waiting for: ${what}`);
    await new Promise((resolve) => (pollMs > 0 ? setTimeout(resolve, pollMs) : setImmediate(resolve)));
  }
}

/** A non-empty list as a truthy value (for waitFor), else null. */
export function nonEmpty<T>(list: T[]): T[] | null {
  return list.length > 0 ? list : null;
}

/**
 * A result computed here from the chunk's range alone (the sum of the parameters, as if the kernel
 * were the identity): what a backend stores and hands back, for backend tests no kernel takes part in.
 */
export function rangeResult(d: Delivery, workerId = 'w'): ChunkResult {
  const t = d.task!;
  const n = t.endParam - t.startParam;
  const sum = ((t.startParam + t.endParam - 1) * n) / 2;
  return {
    chunkId: t.chunkId, workerId, status: 'completed', durationSeconds: 0.001, completedAt: new Date().toISOString(),
    stats: { count: n, sum, min: t.startParam, max: t.endParam - 1, argmin: t.startParam, argmax: t.endParam - 1, avg: sum / n, partials: [sum] },
  };
}

/** Takes until at least n deliveries came (or timeoutMs passed), 200 ms per take. */
export async function takeAtLeast(backend: QueueBackend, n: number, timeoutMs = 10_000): Promise<Delivery[]> {
  const got: Delivery[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < n && Date.now() < deadline) got.push(...(await backend.take(n - got.length, 200)));
  return got;
}

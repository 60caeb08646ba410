/**
 * `ttg monitor` in the terminal: one progress line redrawn in place on a TTY,
 * plain lines when piped, and counts that never exceed their totals, even
 * with dead letters of messages that were never chunks of the sweep (three
 * malformed tasks once showed as `203/200 chunks`).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { loadConfig } from '../engine/config.js';
import { silentLogger } from '../core/log.js';
import { createBackend } from '../engine/backend.js';
import { CLI, randomPrefix, REDIS_HOST, REDIS_PORT, requireRedis, runTtg, testEnv } from './helpers.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

test('three malformed tasks dead-lettered beside a whole sweep: ttg monitor says 200/200 chunks, never more', async () => {
  await requireRedis();
  const prefix = randomPrefix('mon-malformed');
  const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, TOTAL_PARAMS: 20000, CHUNK_SIZE: 100, IDLE_TIMEOUT_SECONDS: 5 });
  cleanups.push(() => runTtg(['reset'], env, 20_000));
  // The sweep is created, then three messages that are not chunks of it join its task stream.
  const creator = await createBackend({ config: loadConfig(env as Record<string, string>), workerId: 'creator', log: silentLogger });
  cleanups.push(() => creator.close());
  await creator.init({ totalParams: 20000, chunkSize: 100, kernel: 'placeholder' });
  const redis = new Redis({ host: REDIS_HOST, port: REDIS_PORT });
  cleanups.push(async () => redis.quit());
  await redis.xadd(`${prefix}:tasks`, '*', 'chunk_id', 'junk-1', 'start_param', 'x');
  await redis.xadd(`${prefix}:tasks`, '*', 'chunk_id', '99999', 'start_param', '0', 'end_param', '100', 'total_params', '20000');
  await redis.xadd(`${prefix}:tasks`, '*', 'garbage', 'yes');

  const worker = await runTtg(['worker'], env, 60_000);
  assert.equal(worker.code, 0, worker.stderr);
  const report = JSON.parse((await runTtg(['aggregate', '--json'], env)).stdout.trim().split('\n').at(-1)!);
  assert.equal(report.total_chunks, 200);
  assert.equal(report.dead_lettered_chunks.length, 3, 'the three malformed messages are dead letters');

  const monitor = await runTtg(['monitor', '--once'], env, 20_000);
  assert.equal(monitor.code, 0, monitor.stderr);
  assert.match(monitor.stdout, /200\/200 chunks/, monitor.stdout);
  for (const [, done, total] of monitor.stdout.matchAll(/(\d+)\/(\d+) chunks/g)) {
    assert.ok(Number(done) <= Number(total), `never more settled than the sweep has: ${monitor.stdout}`);
  }
  assert.doesNotMatch(monitor.stdout, /\x1b\[/, 'piped: plain text, no terminal escapes');
});

test('on a terminal (a pseudo-terminal from script(1)), ttg monitor redraws one line in place while a sweep runs', async () => {
  await requireRedis();
  const prefix = randomPrefix('mon-tty');
  const env = testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, TOTAL_PARAMS: 10000, CHUNK_SIZE: 100, SIMULATE_WORK_MS: 0.2,
    IDLE_TIMEOUT_SECONDS: 5, COLUMNS: 200,
  });
  cleanups.push(() => runTtg(['reset'], env, 20_000));
  // script(1) runs the monitor on a pty (util-linux, on every Debian); -e: its exit status, -f: flush as it comes.
  // A terminal of 100 columns (a pty from script has no size of its own).
  const monitor = spawn('script', ['-qfec', `stty cols 100 rows 30; ${process.execPath} ${CLI} monitor --interval 0.2`, '/dev/null'], {
    env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let screen = '';
  monitor.stdout.on('data', (b: Buffer) => (screen += b.toString()));
  const exited = new Promise<number | null>((resolve) => monitor.on('close', (code) => resolve(code)));
  cleanups.push(async () => monitor.kill('SIGTERM')); // script(1) closes the pty: the monitor gets SIGHUP
  const deadline = Date.now() + 15_000;
  while (!screen.includes('waiting for a sweep')) {
    assert.ok(Date.now() < deadline, `the monitor starts on the pty: ${JSON.stringify(screen)}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  const worker = await runTtg(['worker'], env, 60_000);
  assert.equal(worker.code, 0, worker.stderr);
  // Settled: the monitor leaves by itself (a guard, so a monitor that never sees the end fails the test instead of hanging it).
  const guard = setTimeout(() => monitor.kill('SIGTERM'), 30_000);
  const code = await exited;
  clearTimeout(guard);
  assert.equal(code, 0, `the monitor exits once the sweep is settled: ${JSON.stringify(screen.slice(-600))}`);

  const redraws = screen.split('\r\x1b[2K').slice(1);
  assert.ok(redraws.length >= 4, `redrawn at every poll (${redraws.length} times): ${JSON.stringify(screen.slice(0, 400))}`);
  // Between two progress redraws nothing moves the cursor to a new line; only the sweep's line and the end do.
  const progress = redraws.filter((r) => /^(\[[#.]+\] )?\d+\.\d%/.test(r));
  assert.ok(progress.length >= 2, JSON.stringify(redraws));
  for (const r of progress.slice(0, -1)) assert.ok(!r.includes('\n'), `an update stays on its line: ${JSON.stringify(r)}`);
  // 100 columns: every figure whole, and what room is left for the bar.
  const final = progress.at(-1)!.split(/\r?\n/)[0]!;
  assert.match(final, /^\[#+\] 100\.0% 100\/100 chunks, [\d.]+\/s, eta done, in flight 0, retrying 0, dead-lettered 0$/);
  assert.ok(final.length < 100, `narrower than the terminal: ${final.length}`);
  assert.match(screen, /sweep settled: run `ttg aggregate` for the report\r?\n$/);
  assert.match(screen, /sweep: kernel placeholder, 10000 params in 100 chunks of 100, on redis/);
});

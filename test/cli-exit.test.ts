/**
 * Every `ttg` command ends by itself once its work is done: connections,
 * thread pool and timers closed, no forced process.exit() hiding a leaked
 * handle. The commands run with test/fixtures/exit-spy.mjs preloaded, which
 * reports any process.exit() call with the timers still holding the process.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, ROOT, randomPrefix, requireRabbit, requireRedis, testEnv } from './helpers.js';

const SPY = path.join(ROOT, 'test/fixtures/exit-spy.mjs');
const prefixes: Array<[string, string]> = [];

function ttg(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', SPY, CLI, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stderr });
    });
  });
}

after(async () => {
  await Promise.all(prefixes.map(([kind, prefix]) => ttg(['reset'], testEnv({ QUEUE_BACKEND: kind, QUEUE_PREFIX: prefix }))));
});

for (const kind of ['redis', 'rabbitmq'] as const) {
  test(`${kind}: worker, aggregate, monitor and reset end by themselves`, async () => {
    await (kind === 'redis' ? requireRedis() : requireRabbit());
    const prefix = randomPrefix(`${kind}-exit`);
    prefixes.push([kind, prefix]);
    const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: kind, QUEUE_PREFIX: prefix, TOTAL_PARAMS: 3000, CHUNK_SIZE: 100 });
    const worker = await ttg(['worker'], env);
    assert.equal(worker.code, 0, worker.stderr);
    assert.doesNotMatch(worker.stderr, /EXIT-SPY/);
    for (const args of [['aggregate', '--json'], ['monitor', '--once'], ['reset']]) {
      const r = await ttg(args, env);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /EXIT-SPY/, args.join(' '));
    }
  });
}

test('ttg run on the embedded queue, and a worker that cannot reach its broker, end by themselves', async () => {
  const run = await ttg(['run', '--workers', '2'], testEnv({ TOTAL_PARAMS: 3000, CHUNK_SIZE: 100 }));
  assert.equal(run.code, 0, run.stderr);
  assert.doesNotMatch(run.stderr, /EXIT-SPY/);
  const down = await ttg(['worker'], testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'rabbitmq', RABBITMQ_PORT: 1, CONNECT_TIMEOUT_SECONDS: 0.5 }));
  assert.equal(down.code, 1, down.stderr);
  assert.doesNotMatch(down.stderr, /EXIT-SPY/);
});

/**
 * The short version of the fault suite's broker-restart scenario (faults/scenarios/broker-restart.ts)
 * inside `npm test`: a private Redis (append-only, fsync always) and a private RabbitMQ node, each
 * restarted twice under a sweep of real `ttg worker` processes (an orderly stop, then a SIGKILL,
 * both with chunks waiting out a retry). The two backends run side by side to keep the wall time
 * down; each must end with the exact aggregate, nothing lost or counted twice, every worker exiting 0.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { brokerRestartRabbitmq, brokerRestartRedis } from '../faults/scenarios/broker-restart.js';
import type { FaultScenario } from '../faults/types.js';

function requireBrokerBinaries(): void {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new Error('this test starts a private Redis and needs redis-server on PATH (Debian: apt-get install redis-server)');
  }
  if (!existsSync('/usr/lib/rabbitmq/bin/rabbitmq-server')) {
    throw new Error('this test starts a private RabbitMQ node and needs /usr/lib/rabbitmq/bin/rabbitmq-server (Debian: apt-get install rabbitmq-server)');
  }
}

async function runQuick(scenario: FaultScenario): Promise<void> {
  const lines: string[] = [];
  const result = await scenario.run({ quick: true, log: (line) => lines.push(line) });
  const context = `${JSON.stringify(result, null, 1)}\n${lines.join('\n')}`;
  assert.equal(result.scenario, 'broker-restart');
  assert.equal(result.backend, scenario.backend);
  assert.equal(result.faults_injected, 2, `two restarts injected\n${context}`);
  assert.equal(result.params_lost, 0, context);
  assert.equal(result.params_double_counted, 0, context);
  assert.equal(result.secret_leaks, 0, context);
  assert.equal(result.workers.length, 2);
  for (const w of result.workers) assert.deepEqual(w, { exit_code: 0, signal: null }, context);
  if (scenario.backend === 'redis') assert.equal(result.duplicate_results, 0, `a Redis commit is atomic and owned\n${context}`);
  assert.equal(result.takeover_ms.length, 2);
  for (const ms of result.takeover_ms) assert.ok(ms > 0, `work resumed after every restart\n${context}`);
  assert.equal(result.ok, true, context);
}

test('broker restarts mid-sweep (orderly, then SIGKILL, under retries): workers reconnect and the aggregate is exact', { timeout: 300_000, concurrency: 2 }, async (t) => {
  requireBrokerBinaries();
  await Promise.all([
    t.test('redis', () => runQuick(brokerRestartRedis)),
    t.test('rabbitmq', () => runQuick(brokerRestartRabbitmq)),
  ]);
});

/**
 * Fault scenario "broker-restart" (issue 9): the broker goes away mid-sweep, twice, and
 * comes back with its data; the workers must reconnect within CONNECT_TIMEOUT_SECONDS and
 * finish with the exact aggregate, nothing lost, nothing counted twice.
 *
 * The brokers are private (faults/private-brokers.ts), never the machine's shared ones:
 * a Redis with `appendonly yes` + `appendfsync always`, a RabbitMQ node with its own ports
 * and data directory. The first restart is an orderly stop (SIGTERM, which both brokers
 * answer with their own shutdown), the second a SIGKILL, each taken only once the sweep is under way
 * and chunks are waiting out a retry (SIMULATE_FAULT_RATE): on RabbitMQ those sit in the
 * quorum retry queue, whose dead-lettering back to the tasks must survive the restart
 * (backends/rabbitmq/names.ts). The broker runs with a password, and no log line may
 * carry it.
 *
 * Why the orderly stop comes first: RabbitMQ 3.10 SIGKILLed within a few minutes of its
 * first stream being declared forgets its stream coordinator (Ra keeps its registry in a
 * DETS file saved every 3 minutes or at an orderly stop), and the streams then stay down
 * after the restart for good: the workers wait CONNECT_TIMEOUT_SECONDS for them and exit 1
 * naming the queue (test/rabbitmq-restart.test.ts). A node that has run a while, or was
 * once stopped in order, comes back whole from a SIGKILL, which is what this scenario
 * is about.
 *
 * takeover_ms, per restart: from the broker going down to the first chunk committed after
 * it came back (how long the sweep stood still). Duplicate results: none on Redis (a
 * commit is one script, checked for ownership); on RabbitMQ a chunk whose result the
 * broker stored but whose acknowledgement died with it is delivered again, so a
 * duplicate is allowed there when that chunk was redelivered or retried (the report
 * counts it once either way).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect } from 'amqplib';
import { PrivateRabbit, PrivateRedis } from '../private-brokers.js';
import type { FaultBackend, FaultRunOptions, FaultScenario, FaultScenarioResult } from '../types.js';
import {
  accountResults, goldenRange, lastJson, logLines, runTtg, secretLeaks, sleep, startTtg, waitUntil, withReader, type TtgChild,
} from '../restart-helpers.js';
import type { ChunkResult } from '../../core/sweep.js';

type RestartHow = 'kill' | 'stop';

interface Plan {
  totalParams: number;
  chunkSize: number;
  workers: number;
  /** Busy work per parameter, so the sweep lasts long enough to be hit. */
  simulateWorkMs: number;
  faultRate: number;
  retryDelayMs: number;
  /** When (fraction of the chunks under way, see QueueCounts) and how each restart happens. */
  restarts: Array<{ atFraction: number; how: RestartHow }>;
  /** The broker stays down this long before it is started again (beyond what stopping takes). */
  holdDownMs: number;
  /** Bound on the whole run, start-up of the broker included. */
  timeoutMs: number;
}

const RESTARTS: Plan['restarts'] = [{ atFraction: 0.25, how: 'stop' }, { atFraction: 0.55, how: 'kill' }];

/** Quick: npm test. Full: npm run faults (the Redis outage then outlasts STALE_THRESHOLD_MS, so stale claims happen too). */
const PLANS: Record<'quick' | 'full', Record<FaultBackend, Plan>> = {
  quick: {
    redis: { totalParams: 10_000, chunkSize: 100, workers: 2, simulateWorkMs: 1.2, faultRate: 0.25, retryDelayMs: 1000, restarts: RESTARTS, holdDownMs: 1500, timeoutMs: 90_000 },
    rabbitmq: { totalParams: 10_000, chunkSize: 100, workers: 2, simulateWorkMs: 1, faultRate: 0.25, retryDelayMs: 1000, restarts: RESTARTS, holdDownMs: 0, timeoutMs: 150_000 },
  },
  full: {
    redis: { totalParams: 100_000, chunkSize: 500, workers: 3, simulateWorkMs: 0.15, faultRate: 0.2, retryDelayMs: 1500, restarts: RESTARTS, holdDownMs: 5000, timeoutMs: 240_000 },
    rabbitmq: { totalParams: 100_000, chunkSize: 500, workers: 3, simulateWorkMs: 0.15, faultRate: 0.2, retryDelayMs: 1500, restarts: RESTARTS, holdDownMs: 3000, timeoutMs: 300_000 },
  },
};

const PROGRESSED: Record<FaultBackend, string> = { redis: 'completed', rabbitmq: 'taken' };

/** A worker's log line saying it has its broker connection back. */
const RECONNECTED = /reconnected to Redis at|connected to RabbitMQ at/;

/** Worker settings shared by both backends. */
const STALE_THRESHOLD_MS = 3000;
const CONNECT_TIMEOUT_SECONDS = 60;

/** Ports of this scenario's private brokers (7200–7289 are the fault suite's; RabbitMQ's distribution port is +20000). */
const PORTS: Record<'quick' | 'full', Record<FaultBackend, number>> = {
  quick: { redis: 7201, rabbitmq: 7211 },
  full: { redis: 7202, rabbitmq: 7212 },
};

/**
 * How far the sweep is, from cheap reads: on Redis the chunks completed (a hash length); on
 * RabbitMQ, where counting results means reading a stream, the chunks taken (neither waiting
 * in the task queue nor waiting out a retry; queue.declare-ok counts). And how many wait out
 * a retry.
 */
interface QueueCounts {
  totalChunks: number;
  progressed: number;
  retrying: number;
}

interface Broker {
  env: Record<string, string>;
  start(): Promise<void>;
  down(how: RestartHow): Promise<void>;
  dispose(): Promise<void>;
  /** Polls the counts until `until` accepts them (cheap reads: nothing that scans the results). */
  watch(prefix: string, totalChunks: number, until: (c: QueueCounts) => boolean, timeoutMs: number, what: string): Promise<QueueCounts>;
}

function privateBroker(kind: FaultBackend, port: number, secret: string): Broker {
  if (kind === 'redis') {
    const redis = new PrivateRedis({ port, durable: true, args: ['--requirepass', secret] });
    const env = { REDIS_HOST: '127.0.0.1', REDIS_PORT: String(port), REDIS_PASSWORD: secret };
    return {
      env,
      start: () => redis.start(),
      down: (how) => (how === 'kill' ? redis.kill() : redis.stop()),
      dispose: () => redis.dispose(),
      // ttg's own reader: on Redis its counts are a few commands.
      watch: (prefix, totalChunks, until, timeoutMs, what) => withReader('redis', { ...env, QUEUE_PREFIX: prefix }, (reader) =>
        waitUntil(what, async () => {
          const s = await reader.stats();
          const c = { totalChunks, progressed: s.completedChunks, retrying: s.retrying };
          return until(c) ? c : null;
        }, timeoutMs, 50)),
    };
  }
  const rabbit = new PrivateRabbit({ port, name: `ttgrestart${port}`, confLines: ['default_user = ttg', `default_pass = ${secret}`] });
  return {
    env: { RABBITMQ_HOST: '127.0.0.1', RABBITMQ_PORT: String(port), RABBITMQ_USER: 'ttg', RABBITMQ_PASSWORD: secret },
    start: () => rabbit.start(),
    down: (how) => (how === 'kill' ? rabbit.kill() : terminate(rabbit)),
    dispose: () => rabbit.dispose(),
    // Plain queue.declare-ok counts: ttg's reader would read the results stream to a quiet
    // moment, which never comes while workers write.
    watch: async (prefix, totalChunks, until, timeoutMs, what) => {
      const conn = await connect(`amqp://ttg:${encodeURIComponent(secret)}@127.0.0.1:${port}/`);
      conn.on('error', () => {});
      const count = async (queue: string): Promise<number | null> => {
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        try {
          return (await ch.checkQueue(queue)).messageCount;
        } catch {
          return null; // not declared yet
        } finally {
          await ch.close().catch(() => {});
        }
      };
      try {
        return await waitUntil(what, async () => {
          const [ready, retrying] = [await count(`${prefix}.tasks`), await count(`${prefix}.tasks.retry`)];
          const c = { totalChunks, progressed: totalChunks - (ready ?? totalChunks) - (retrying ?? 0), retrying: retrying ?? 0 };
          return ready !== null && until(c) ? c : null;
        }, timeoutMs, 50);
      } finally {
        await conn.close().catch(() => {});
      }
    },
  };
}

/**
 * An orderly stop of a RabbitMQ node by SIGTERM to its Erlang VM, which RabbitMQ answers
 * with its own shutdown ("SIGTERM received - shutting down": listeners closed, clients
 * told, queues and the stream coordinator saved), as `rabbitmqctl stop` would, without
 * booting a second VM for the CLI (seconds on a busy machine).
 */
async function terminate(rabbit: PrivateRabbit): Promise<void> {
  const pid = Number(readFileSync(path.join(rabbit.dir, 'rabbit.pid'), 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid in ${rabbit.dir}/rabbit.pid`);
  process.kill(pid, 'SIGTERM');
  await waitUntil(`RabbitMQ (pid ${pid}) to shut down after SIGTERM`, () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }, 60_000, 20);
  await rabbit.kill(); // reaps the launcher: the node itself is already down, in order
}

interface RestartRecord {
  how: RestartHow;
  /** QueueCounts.progressed when the broker went down. */
  progressed: number;
  retrying: number;
  downAt: number;
  upAt: number;
}

async function runScenario(kind: FaultBackend, { quick, log }: FaultRunOptions): Promise<FaultScenarioResult> {
  const plan = PLANS[quick ? 'quick' : 'full'][kind];
  const started = Date.now();
  const deadline = started + plan.timeoutMs;
  const left = () => Math.max(1000, deadline - Date.now());
  const secret = `restart-pw-${randomBytes(6).toString('hex')}`;
  const prefix = `ttgfault-restart-${randomBytes(4).toString('hex')}`;
  const broker = privateBroker(kind, PORTS[quick ? 'quick' : 'full'][kind], secret);
  const totalChunks = Math.ceil(plan.totalParams / plan.chunkSize);
  const notes: string[] = [];
  const failures: string[] = [];
  const restarts: RestartRecord[] = [];
  const workers: TtgChild[] = [];
  const env: Record<string, string> = {
    ...broker.env, USE_QUEUE: 'true', QUEUE_BACKEND: kind, QUEUE_PREFIX: prefix, KERNEL: 'placeholder',
    TOTAL_PARAMS: String(plan.totalParams), CHUNK_SIZE: String(plan.chunkSize), THREADS: '1', METRICS_PORT: '0',
    LOG_FORMAT: 'json', LOG_LEVEL: 'info', CONNECT_TIMEOUT_SECONDS: String(CONNECT_TIMEOUT_SECONDS), IDLE_TIMEOUT_SECONDS: '60',
    STALE_THRESHOLD_MS: String(STALE_THRESHOLD_MS), STALE_CHECK_INTERVAL_SECONDS: '1', SIMULATE_WORK_MS: String(plan.simulateWorkMs),
    SIMULATE_FAULT_RATE: String(plan.faultRate), MAX_RETRIES: '25', RETRY_DELAY_MS: String(plan.retryDelayMs),
    // A fixed, small hold: the rate-sized default counts simulated failures (which take no time)
    // as work done, so one worker would take most of the sweep at once and commit it in one go.
    PREFETCH: '2',
  };
  let report: Record<string, unknown> | null = null;
  let aggregateOutput = '';
  let results: ChunkResult[] = [];
  try {
    await broker.start();
    log(`broker-restart/${kind}: private broker up after ${Date.now() - started} ms; ${plan.workers} workers, ${totalChunks} chunks`);
    for (let i = 0; i < plan.workers; i++) workers.push(startTtg(`worker-${i}`, ['worker'], { ...env, WORKER_ID: String(i) }));
    const anyExited = () => workers.some((w) => w.child.exitCode !== null || w.child.signalCode !== null);
    // A restart must find the workers connected and working, not still waiting out the previous one.
    const allBackSince = (t: number) => workers.every((w) => logLines(w.stderr()).some((l) => RECONNECTED.test(l.msg) && Date.parse(l.ts) >= t));

    for (const [k, restart] of plan.restarts.entries()) {
      // Under way, and chunks waiting out a retry: the broker goes down with them in its retry queue.
      let back = k === 0;
      const seen = await broker.watch(prefix, totalChunks, (c) => {
        if (anyExited()) throw new Error(`a worker ended before restart ${k + 1}: the sweep went too fast or a worker failed`);
        back ||= allBackSince(restarts[k - 1]!.downAt);
        if (!back) return false;
        return c.progressed >= restart.atFraction * c.totalChunks && (plan.faultRate === 0 || c.retrying > 0);
      }, left(), `${Math.round(restart.atFraction * 100)}% of the chunks ${PROGRESSED[kind]} with a retry pending (restart ${k + 1})`);
      const downAt = Date.now();
      await broker.down(restart.how);
      if (plan.holdDownMs > 0) await sleep(plan.holdDownMs);
      await broker.start();
      const upAt = Date.now();
      restarts.push({ how: restart.how, progressed: seen.progressed, retrying: seen.retrying, downAt, upAt });
      log(`broker-restart/${kind}: restart ${k + 1} (${restart.how}) with ${seen.progressed}/${seen.totalChunks} chunks ${PROGRESSED[kind]}, ` +
        `${seen.retrying} waiting out a retry; broker back after ${upAt - downAt} ms`);
    }

    const timers = workers.map((w) => setTimeout(() => w.child.kill('SIGKILL'), left()));
    await Promise.all(workers.map((w) => w.exited));
    timers.forEach(clearTimeout);

    const agg = await runTtg(['aggregate', '--json'], env, 60_000);
    aggregateOutput = agg.stdout + agg.stderr;
    report = lastJson(agg.stdout);
    if (agg.code !== 0) failures.push(`ttg aggregate exited ${agg.code ?? agg.signal}: ${agg.stderr.trim().split('\n').at(-1)}`);
    results = await withReader(kind, env, (reader) => reader.readResults());
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await broker.dispose().catch((err: unknown) => notes.push(`could not remove the private broker: ${String(err)}`));
  }

  // ---- what happened, checked against independent references
  const ref = goldenRange('placeholder', plan.totalParams);
  const reportedParams = Number(report?.['total_params'] ?? 0);
  const account = accountResults(results, plan.totalParams, plan.chunkSize, reportedParams);
  const duplicates = Number(report?.['duplicate_results'] ?? 0);
  if (report) {
    if (report['grand_sum'] !== ref.sum) failures.push(`grand_sum ${String(report['grand_sum'])}, golden ${ref.sum}`);
    if (reportedParams !== ref.count) failures.push(`total_params ${reportedParams}, expected ${ref.count}`);
    const missing = report['missing_chunks'] as unknown[] | undefined;
    if (missing?.length) failures.push(`missing chunks: ${missing.slice(0, 10).join(', ')}`);
    const dead = report['dead_lettered_chunks'] as unknown[] | undefined;
    if (dead?.length) failures.push(`dead-lettered chunks: ${JSON.stringify(dead.slice(0, 3))}`);
  } else {
    failures.push('no report from ttg aggregate --json');
  }
  if (account.paramsLost !== 0) failures.push(`${account.paramsLost} parameters have no result`);
  if (account.paramsDoubleCounted !== 0) failures.push(`${account.paramsDoubleCounted} parameters counted twice`);
  if (kind === 'redis' && duplicates !== 0) failures.push(`${duplicates} duplicate results on Redis (a commit is atomic and owned: expected none)`);
  const unexplained = account.duplicatedChunks.filter((d) => !d.explained);
  if (unexplained.length) failures.push(`duplicate results of chunks never redelivered nor retried: ${unexplained.map((d) => d.chunkId).join(', ')}`);
  if (duplicates > 0) {
    notes.push(`${duplicates} duplicate result(s), counted once: chunks ${account.duplicatedChunks.map((d) => d.chunkId).join(', ')} ` +
      'had their result (or their retry copy) stored, then were delivered again because the broker went down before it ' +
      'recorded their acknowledgement: RabbitMQ delivers at least once, and the report keeps the first result per chunk');
  }
  if (restarts.length !== plan.restarts.length) failures.push(`${restarts.length} of ${plan.restarts.length} restarts injected`);
  for (const [k, r] of restarts.entries()) {
    if (plan.faultRate > 0 && r.retrying === 0) failures.push(`restart ${k + 1} found no chunk waiting out a retry`);
    notes.push(`restart ${k + 1}: ${r.how === 'kill' ? 'SIGKILL' : 'orderly stop'} with ${r.progressed}/${totalChunks} chunks ${PROGRESSED[kind]}, ` +
      `${r.retrying} waiting out a retry; down ${r.upAt - r.downAt} ms`);
  }

  const exits = await Promise.all(workers.map((w) => w.exited));
  exits.forEach((e, i) => {
    const summary = lastJson(workers[i]!.stdout());
    if (e.code !== 0) failures.push(`worker-${i} exited ${e.code ?? e.signal}: ${workers[i]!.stderr().trim().split('\n').slice(-2).join(' | ')}`);
    else if (summary?.['status'] !== 'completed') failures.push(`worker-${i} ended with status ${String(summary?.['status'])}`);
  });
  // Each worker alive through a restart says it got its connection back, within CONNECT_TIMEOUT_SECONDS (else it would have exited 1).
  workers.forEach((w, i) => {
    const back = logLines(w.stderr()).filter((l) => RECONNECTED.test(l.msg)).map((l) => Date.parse(l.ts));
    restarts.forEach((r, k) => {
      const until = restarts[k + 1]?.downAt ?? Infinity;
      if (!back.some((t) => t >= r.downAt && t < until)) failures.push(`worker-${i} logged no reconnection after restart ${k + 1}`);
    });
  });

  const takeover = restarts.map((r, k) => {
    const firstAfter = results.map((x) => Date.parse(x.completedAt)).filter((t) => t >= r.upAt).sort((a, b) => a - b)[0];
    if (firstAfter === undefined) failures.push(`no chunk was completed after restart ${k + 1}`);
    return firstAfter === undefined ? -1 : firstAfter - r.downAt;
  });
  const leaks = secretLeaks([...workers.flatMap((w) => [w.stdout(), w.stderr()]), aggregateOutput], [secret]);
  if (leaks > 0) failures.push(`${leaks} log line(s) carry the broker password`);
  notes.push(`${results.length} result entries for ${totalChunks} chunks; ${account.chunksRedone} chunks computed more than once (retried or redelivered)`);
  const allLogs = workers.flatMap((w) => logLines(w.stderr()));
  const takenOver = allLogs.filter((l) => /^FAULT RECOVERY/.test(l.msg)).length;
  const refused = allLogs.filter((l) => /is no longer this worker's/.test(l.msg)).length;
  if (takenOver + refused > 0) {
    notes.push(`${takenOver} FAULT RECOVERY line(s) (chunks redelivered or claimed after the outage) and ${refused} late commit(s) ` +
      'refused because the chunk was no longer the committing worker\'s: ownership kept them from counting twice');
  }
  notes.push(`whole run ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // The workers' logs are kept where a reader can look when something failed (or when asked to).
  if (failures.length > 0 || process.env['TTG_FAULT_KEEP_LOGS']) {
    const dir = mkdtempSync(path.join(os.tmpdir(), `ttg-fault-broker-restart-${kind}-`));
    workers.forEach((w, i) => writeFileSync(path.join(dir, `worker-${i}.log`), w.stderr() + w.stdout()));
    writeFileSync(path.join(dir, 'aggregate.out'), aggregateOutput);
    notes.push(`worker logs in ${dir}`);
  }
  return {
    scenario: 'broker-restart',
    backend: kind,
    variant: plan.restarts.map((r) => r.how).join('+'),
    faults_injected: restarts.length,
    takeover_ms: takeover,
    chunks_redone: account.chunksRedone,
    params_lost: report ? account.paramsLost : plan.totalParams,
    params_double_counted: account.paramsDoubleCounted,
    duplicate_results: duplicates,
    workers: exits.map((e) => ({ exit_code: e.code, signal: e.signal })),
    secret_leaks: leaks,
    ok: failures.length === 0,
    notes: [...failures.map((f) => `FAILED: ${f}`), ...notes],
  };
}

export const brokerRestartRedis: FaultScenario = { name: 'broker-restart', backend: 'redis', run: (o) => runScenario('redis', o) };
export const brokerRestartRabbitmq: FaultScenario = { name: 'broker-restart', backend: 'rabbitmq', run: (o) => runScenario('rabbitmq', o) };
/** Both, for the scenario index. */
export const brokerRestartScenarios: FaultScenario[] = [brokerRestartRedis, brokerRestartRabbitmq];

/**
 * The deployment as local processes: each Job of k8s/ is played as the Job controller and
 * the kubelet would play it, one `node dist/engine/cli.js <args>` per pod with exactly the
 * container's command and environment (ConfigMap + Secret + env, fieldRefs filled with the
 * pod's name, the Service link variables the kubelet adds). Only what a shared host and a
 * test need differs: the broker host is 127.0.0.1 with the test broker's credentials, a
 * random QUEUE_PREFIX, a distinct METRICS_PORT per process, THREADS from the CPU limit (as
 * the engine reads it from the cgroup), and a smaller, slower sweep with faster STALE_*
 * settings. Probes are polled as the kubelet would; one pod is SIGKILLed at 30% and
 * replaced as the podFailurePolicy says; the aggregate must be exact.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { mergePartials, roundPartials } from '../kernel/exact-sum.js';
import {
  golden, lastJsonLine, randomPrefix, requireRabbit, requireRedis, runTtg, startTtg,
  RABBIT_HOST, RABBIT_PORT, REDIS_HOST, REDIS_PORT, type TtgProcess,
} from './helpers.js';
import {
  K8S_DIR, containerEnv, execForm, findObject, jobContainer, parseDockerfile, renderKustomization, stringValues, type K8sObject,
} from './k8s-helpers.js';

const manifests = renderKustomization(K8S_DIR);
const ENTRYPOINT = execForm(parseDockerfile(readFileSync(path.join(K8S_DIR, 'Dockerfile'), 'utf8')).at(-1)!, 'ENTRYPOINT');
const resets: NodeJS.ProcessEnv[] = [];

after(async () => {
  for (const env of resets) await runTtg(['reset'], env, 20_000);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** What the kubelet adds for every Service in the namespace (enableServiceLinks). */
function serviceLinks(): Record<string, string> {
  const env: Record<string, string> = {};
  manifests.filter((m) => m.object.kind === 'Service').forEach((m, i) => {
    const name = String(m.object.metadata.name).toUpperCase().replace(/-/g, '_');
    const ip = `10.96.0.${10 + i}`;
    const [first] = m.object.spec.ports;
    env[`${name}_SERVICE_HOST`] = ip;
    env[`${name}_SERVICE_PORT`] = String(first.port);
    env[`${name}_PORT`] = `tcp://${ip}:${first.port}`;
    for (const p of m.object.spec.ports) env[`${name}_PORT_${p.port}_TCP`] = `tcp://${ip}:${p.port}`;
  });
  return env;
}

/** The Job's podFailurePolicy verdict on a pod that ended with `exit` (a code, or the killing signal). */
function podFailureAction(job: K8sObject, container: string, exit: number | string): 'FailJob' | 'Ignore' | 'Count' {
  const code = exit === 'SIGKILL' ? 137 : exit === 'SIGTERM' ? 143 : Number(exit);
  for (const rule of job.spec.podFailurePolicy?.rules ?? []) {
    const on = rule.onExitCodes;
    if (!on || (on.containerName && on.containerName !== container)) continue;
    if (on.operator === 'In' ? on.values.includes(code) : !on.values.includes(code)) return rule.action;
  }
  return 'Count';
}

/** CPUs a container's limit gives it, as the engine reads the cgroup quota (ceil). */
function cpuLimitThreads(container: K8sObject): number {
  const cpu = String(container.resources.limits.cpu);
  const cores = cpu.endsWith('m') ? Number(cpu.slice(0, -1)) / 1000 : Number(cpu);
  return Math.max(1, Math.ceil(cores));
}

interface LocalPod {
  name: string;
  process: TtgProcess;
  metricsPort: number;
  env: NodeJS.ProcessEnv;
}

interface SweepOverrides {
  config: Record<string, string>;
  secret: Record<string, string>;
}

/**
 * Starts one pod of `job` as a local process: the container's argv (the image's entrypoint
 * and the container's args), and its environment resolved from the test's ConfigMap and Secret.
 */
async function startPod(job: K8sObject, overrides: SweepOverrides, extra: Record<string, string> = {}): Promise<LocalPod> {
  const container = jobContainer(job);
  const argv = [...(container.command ?? ENTRYPOINT), ...(container.args ?? [])];
  assert.deepEqual(argv.slice(0, 2), ['node', 'dist/engine/cli.js'], 'the container runs the image\'s entrypoint');
  const name = `${job.metadata.name}-${extra['JOB_COMPLETION_INDEX'] !== undefined ? extra['JOB_COMPLETION_INDEX'] + '-' : ''}${randomBytes(3).toString('hex')}`;
  const configMap = { ...stringValues(findObject(manifests, 'ConfigMap', 'ttg-config')), ...overrides.config };
  const secret = { ...stringValues(findObject(manifests, 'Secret', 'ttg-broker-credentials')), ...overrides.secret };
  const podEnv = containerEnv(container, {
    configMaps: { 'ttg-config': configMap },
    secrets: { 'ttg-broker-credentials': secret },
    fields: { 'metadata.name': name, 'metadata.namespace': 'default' },
  });
  const metricsContainerPort = container.ports.find((p: K8sObject) => p.name === 'metrics').containerPort;
  assert.equal(Number(podEnv['METRICS_PORT']), metricsContainerPort, 'the worker listens on the probed port');
  const metricsPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    ...serviceLinks(),
    HOSTNAME: name,
    ...podEnv,
    ...extra,
    // A shared host: each "pod" gets its own port, and the thread count its CPU limit gives.
    METRICS_PORT: String(metricsPort),
    THREADS: String(cpuLimitThreads(container)),
  };
  return { name, metricsPort, env, process: startTtg(argv.slice(2), env) };
}

async function probe(pod: LocalPod, path: string): Promise<number | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${pod.metricsPort}${path}`, { signal: AbortSignal.timeout(2000) });
    await res.text();
    return res.status;
  } catch {
    return null;
  }
}

/** Polls the container's readiness and liveness probes, as the kubelet does, until both answer 200. */
async function waitReadyAndLive(job: K8sObject, pod: LocalPod, timeoutMs = 20_000): Promise<void> {
  const c = jobContainer(job);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [ready, live] = [await probe(pod, c.readinessProbe.httpGet.path), await probe(pod, c.livenessProbe.httpGet.path)];
    if (ready === 200 && live === 200) return;
    assert.ok(Date.now() < deadline, `${pod.name}: never ready and live (readyz ${ready}, healthz ${live}): ${pod.process.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function finish(pod: LocalPod, timeoutMs = 60_000): Promise<number | string> {
  const timer = setTimeout(() => pod.process.child.kill('SIGKILL'), timeoutMs);
  const code = await pod.process.exited;
  clearTimeout(timer);
  return code;
}

const broker = {
  redis: { require: requireRedis, config: { REDIS_HOST, REDIS_PORT: String(REDIS_PORT) }, secret: { REDIS_PASSWORD: '' } },
  rabbitmq: {
    require: requireRabbit, config: { RABBITMQ_HOST: RABBIT_HOST, RABBITMQ_PORT: String(RABBIT_PORT) },
    secret: { RABBITMQ_USER: 'guest', RABBITMQ_PASSWORD: 'guest' },
  },
} as const;

for (const backend of ['redis', 'rabbitmq'] as const) {
  test(`the queue Job on ${backend} as local pods: probes answer, a pod SIGKILLed at 30% is replaced, the aggregate is exact`, async () => {
    await broker[backend].require();
    const job = findObject(manifests, 'Job', `ttg-worker-${backend}`);
    const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10_000)!;
    const overrides: SweepOverrides = {
      config: {
        ...broker[backend].config, QUEUE_PREFIX: randomPrefix(`pods-${backend}`),
        // ~150 ms a chunk: the kill lands mid-sweep even when the aggregate polls are slow on a busy machine.
        TOTAL_PARAMS: '10000', CHUNK_SIZE: '100', SIMULATE_WORK_MS: '1.5',
        STALE_THRESHOLD_MS: '1500', STALE_CHECK_INTERVAL_SECONDS: '0.5', IDLE_TIMEOUT_SECONDS: '20', CONNECT_TIMEOUT_SECONDS: '10',
      },
      secret: broker[backend].secret,
    };
    const pods = await Promise.all(Array.from({ length: job.spec.parallelism }, () => startPod(job, overrides)));
    resets.push(pods[0]!.env);
    await Promise.all(pods.map((p) => waitReadyAndLive(job, p)));
    const metrics = await fetch(`http://127.0.0.1:${pods[0]!.metricsPort}/metrics`).then((r) => r.text());
    assert.match(metrics, /^ttg_\w+/m, '/metrics serves ttg_ metrics');

    // Kill one pod once 30% of the chunks have results, as run-demo.sh --fault-demo does.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await runTtg(['aggregate', '--json'], pods[0]!.env, 20_000);
      // ttg aggregate exits 3 while chunks are missing: the report is there all the same.
      if ((r.code === 0 || r.code === 3) && Number(lastJsonLine(r.stdout)['total_chunks']) >= 30) break;
      assert.ok(Date.now() < deadline, `the sweep never reached 30%: ${r.stderr}\n${pods[0]!.process.stderr()}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const victim = pods[0]!;
    assert.equal(victim.process.child.exitCode, null, 'the victim is still working at 30%');
    victim.process.child.kill('SIGKILL');
    const victimExit = await victim.process.exited;
    assert.equal(victimExit, 'SIGKILL');
    assert.equal(podFailureAction(job, 'worker', victimExit), 'Ignore', 'a killed pod does not count against the Job');
    // The Job controller starts a replacement (a new pod name: a new consumer), which joins the sweep.
    const replacement = await startPod(job, overrides);
    const running = [...pods.slice(1), replacement];
    const codes = await Promise.all(running.map((p) => finish(p)));
    running.forEach((p, i) => assert.equal(codes[i], 0, `${p.name} succeeded: ${p.process.stderr()}`));
    assert.equal(codes.filter((c) => c === 0).length, job.spec.completions, 'as many successful pods as completions: the Job is complete');
    assert.match(running.map((p) => p.process.stderr()).join('\n'), /FAULT RECOVERY/, 'the other pods took over the killed pod\'s chunks');

    const report = lastJsonLine((await runTtg(['aggregate', '--json'], pods[1]!.env, 20_000)).stdout);
    assert.equal(report['grand_sum'], ref.sum);
    assert.equal(report['total_params'], ref.count);
    assert.equal(report['global_min'], ref.min);
    assert.equal(report['global_max'], ref.max);
    assert.equal(report['total_chunks'], 100);
    assert.deepEqual(report['missing_chunks'], []);
    const distribution = report['worker_distribution'] as Record<string, number>;
    assert.ok(Object.keys(distribution).every((id) => [...pods, replacement].some((p) => p.name === id)), 'worker ids are the pods\' names (fieldRef)');
  });
}

test('the Indexed static Job as local pods: one process per JOB_COMPLETION_INDEX, a killed index rerun, the merged partials exact', async () => {
  const job = findObject(manifests, 'Job', 'ttg-worker-static');
  assert.equal(job.spec.completionMode, 'Indexed');
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100_000)!;
  const overrides: SweepOverrides = { config: { TOTAL_PARAMS: '100000', SIMULATE_WORK_MS: '0.1' }, secret: {} };
  const indices = Array.from({ length: job.spec.completions }, (_, i) => String(i));
  const pods = await Promise.all(indices.map((i) => startPod(job, overrides, { JOB_COMPLETION_INDEX: i })));
  await Promise.all(pods.map((p) => waitReadyAndLive(job, p)));

  // Index 1 is killed mid-share; an Indexed Job reruns the same index.
  pods[1]!.process.child.kill('SIGKILL');
  const exit = await pods[1]!.process.exited;
  assert.equal(podFailureAction(job, 'worker', exit), 'Ignore');
  const rerun = await startPod(job, overrides, { JOB_COMPLETION_INDEX: '1' });
  const final = [pods[0]!, rerun, pods[2]!];
  const codes = await Promise.all(final.map((p) => finish(p)));
  final.forEach((p, i) => assert.equal(codes[i], 0, `${p.name}: ${p.process.stderr()}`));

  const partials: number[] = [];
  let count = 0;
  let min = Infinity;
  let max = -Infinity;
  const ranges: [number, number][] = [];
  final.forEach((p, i) => {
    const s = lastJsonLine(p.process.stdout());
    assert.equal(s['mode'], 'static');
    assert.equal(String(s['worker_id']), indices[i], 'WORKER_ID comes from JOB_COMPLETION_INDEX');
    const agg = s['aggregates'] as { count: number; partials: number[]; min: number; max: number };
    mergePartials(partials, agg.partials);
    count += agg.count;
    min = Math.min(min, agg.min);
    max = Math.max(max, agg.max);
    ranges.push([Number(s['range_start']), Number(s['range_end'])]);
  });
  assert.deepEqual(ranges.flat(), [0, ranges[0]![1], ranges[0]![1], ranges[1]![1], ranges[1]![1], 100_000], 'the shares tile the range');
  assert.equal(count, ref.count);
  assert.equal(roundPartials(partials), ref.sum);
  assert.equal(min, ref.min);
  assert.equal(max, ref.max);
});

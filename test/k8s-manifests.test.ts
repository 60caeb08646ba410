/**
 * The deployment in k8s/, checked without a cluster: every manifest parses and validates
 * against the Kubernetes and KEDA schemas (kubernetes-models at run time, and their
 * TypeScript types for fields the API does not know), the kustomizations list and render
 * every file, the environment the manifests give ttg is one ttg reads and accepts, and
 * names, labels, ports and probes agree with the Dockerfile and docs/design.md's contracts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { ConfigMap, PersistentVolumeClaim, Pod, Secret, Service } from 'kubernetes-models/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { ScaledJob, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { ENV_VARIABLES, loadConfig } from '../engine/config.js';
import { ROOT } from './helpers.js';
import {
  CONTRACT, K8S_DIR, containerEnv, dockerignore, envNamesSet, execForm, findObject, jobContainer, kustomizationResources,
  packageVersion, parseDockerfile, readManifestFile, renderKustomization, stageCopies, stringValues,
  type K8sObject, type Manifest,
} from './k8s-helpers.js';

const KEDA_DIR = path.join(K8S_DIR, 'keda');
/** A user kernel from a ConfigMap (not in the default kustomization), and the derived image's Dockerfile. */
const USER_KERNEL_DIR = path.join(K8S_DIR, 'user-kernel');

/** apiVersion/kind → the model that validates it and the module and interface that type it. */
const MODELS: Record<string, { validate: (o: K8sObject) => void; module: string; type: string }> = {
  'v1/Pod': { validate: (o) => new Pod(o).validate(), module: 'kubernetes-models/v1', type: 'IPod' },
  'v1/Service': { validate: (o) => new Service(o).validate(), module: 'kubernetes-models/v1', type: 'IService' },
  'v1/ConfigMap': { validate: (o) => new ConfigMap(o).validate(), module: 'kubernetes-models/v1', type: 'IConfigMap' },
  'v1/Secret': { validate: (o) => new Secret(o).validate(), module: 'kubernetes-models/v1', type: 'ISecret' },
  'v1/PersistentVolumeClaim': { validate: (o) => new PersistentVolumeClaim(o).validate(), module: 'kubernetes-models/v1', type: 'IPersistentVolumeClaim' },
  'batch/v1/Job': { validate: (o) => new Job(o).validate(), module: 'kubernetes-models/batch/v1', type: 'IJob' },
  'keda.sh/v1alpha1/ScaledJob': { validate: (o) => new ScaledJob(o).validate(), module: '@kubernetes-models/keda/keda.sh/v1alpha1', type: 'IScaledJob' },
  'keda.sh/v1alpha1/TriggerAuthentication': {
    validate: (o) => new TriggerAuthentication(o).validate(), module: '@kubernetes-models/keda/keda.sh/v1alpha1', type: 'ITriggerAuthentication',
  },
};

function modelOf(o: K8sObject) {
  const model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!model) throw new Error(`no schema for ${o.apiVersion} ${o.kind} (${o.metadata?.name})`);
  return model;
}

const base = () => renderKustomization(K8S_DIR);
const keda = () => renderKustomization(KEDA_DIR);
const userKernel = () => renderKustomization(USER_KERNEL_DIR);
const all = () => [...base(), ...keda(), ...userKernel()];

/** The pod-running objects whose container runs ttg (the worker image). */
function ttgWorkloads(manifests: Manifest[]): K8sObject[] {
  return manifests.map((m) => m.object).filter((o) => {
    const spec = o.kind === 'Pod' ? o.spec : o.kind === 'Job' ? o.spec.template.spec : o.kind === 'ScaledJob' ? o.spec.jobTargetRef.template.spec : null;
    return spec?.containers.some((c: K8sObject) => String(c.image).startsWith('ttg-worker:'));
  });
}

/** Worker Jobs (and KEDA's): the objects labelled app.kubernetes.io/name=ttg-worker that run pods. */
function workers(manifests: Manifest[]): K8sObject[] {
  return manifests.map((m) => m.object)
    .filter((o) => (o.kind === 'Job' || o.kind === 'ScaledJob') && o.metadata.labels?.['app.kubernetes.io/name'] === 'ttg-worker');
}

const jobSpec = (o: K8sObject) => (o.kind === 'ScaledJob' ? o.spec.jobTargetRef : o.spec);

function podSources(manifests: Manifest[]) {
  const configMaps: Record<string, Record<string, string>> = {};
  const secrets: Record<string, Record<string, string>> = {};
  for (const { object: o } of manifests) {
    if (o.kind === 'ConfigMap') configMaps[o.metadata.name] = stringValues(o);
    if (o.kind === 'Secret') secrets[o.metadata.name] = stringValues(o);
  }
  return { configMaps, secrets };
}

test('every manifest file is listed in its kustomization, and the kustomizations render', () => {
  const yamlIn = (dir: string) => readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml' && f !== 'kind-config.yaml').sort();
  assert.deepEqual([...kustomizationResources(K8S_DIR)].sort(), yamlIn(K8S_DIR));
  assert.deepEqual([...kustomizationResources(KEDA_DIR)].sort(), yamlIn(KEDA_DIR));
  assert.deepEqual([...kustomizationResources(USER_KERNEL_DIR)].sort(), yamlIn(USER_KERNEL_DIR));
  const rendered = base();
  assert.ok(rendered.length >= 12, `the base renders its objects (${rendered.length})`);
  const ids = all().map((m) => `${m.object.kind}/${m.object.metadata?.name}`);
  assert.equal(new Set(ids).size, ids.length, `no object is defined twice: ${ids.join(', ')}`);
  assert.ok(!rendered.some((m) => m.object.apiVersion.startsWith('keda.sh/')), 'KEDA objects are not in the default kustomization');
  assert.ok(keda().some((m) => m.object.kind === 'ScaledJob'), 'the KEDA kustomization has the ScaledJobs');
  for (const m of all()) assert.ok(!m.object.metadata.namespace, `${m.file}: default namespace, so the guide's commands work`);

  const [kind] = readManifestFile(path.join(K8S_DIR, 'kind-config.yaml'));
  assert.equal(kind!.object.kind, 'Cluster');
  assert.equal(kind!.object.apiVersion, 'kind.x-k8s.io/v1alpha4');
  assert.equal(kind!.object.name, CONTRACT.cluster);
  const pools = kind!.object.nodes.filter((n: K8sObject) => n.role === 'worker').map((n: K8sObject) => n.labels?.['ttg.io/pool']);
  assert.ok(pools.length >= 2 && new Set(pools).size === pools.length && pools.every(Boolean), 'worker nodes in distinct ttg.io/pool pools');
});

test('every manifest validates against the Kubernetes and KEDA schemas', () => {
  for (const m of all()) {
    assert.doesNotThrow(() => modelOf(m.object).validate(m.object), `${m.file}: ${m.object.kind} ${m.object.metadata?.name}`);
  }
});

test('schema validation catches a wrong field (corrupted copies of the manifests fail)', () => {
  const copy = <T>(o: T): T => structuredClone(o);
  const job = findObject(base(), 'Job', 'ttg-worker-redis');
  const corruptions: [string, (o: K8sObject) => void][] = [
    ['parallelism as a string', (o) => (o.spec.parallelism = 'three')],
    ['a container port by name', (o) => (jobContainer(o).ports[0].containerPort = 'metrics')],
    ['an unknown podFailurePolicy action', (o) => (o.spec.podFailurePolicy.rules[0].action = 'Retry')],
    ['a container without a name', (o) => delete jobContainer(o).name],
    ['an unknown completion mode', (o) => (o.spec.completionMode = 'Ordered')],
  ];
  for (const [what, corrupt] of corruptions) {
    const bad = copy(job);
    corrupt(bad);
    assert.throws(() => new Job(bad).validate(), `${what} is rejected`);
  }
  const sj = copy(findObject(keda(), 'ScaledJob', 'ttg-worker-redis-keda'));
  delete sj.spec.triggers[0].type;
  assert.throws(() => new ScaledJob(sj).validate(), 'a trigger without a type is rejected');
  const svc = copy(findObject(base(), 'Service', 'ttg-redis'));
  svc.spec.ports[0].port = '6379';
  assert.throws(() => new Service(svc).validate(), 'a service port as a string is rejected');
});

test('no manifest sets a field the API does not know (typed against the schemas\' TypeScript types)', () => {
  // The validators accept unknown fields (as the API server does without strict field
  // validation), so a typo like `paralelism` would be silently dropped by the cluster. The
  // models' TypeScript types catch it: each object becomes an object literal of its type.
  const dir = mkdtempSync(path.join(ROOT, 'dist', '.k8s-typecheck-'));
  try {
    const source = (objects: K8sObject[]) => {
      const imports = new Map<string, Set<string>>();
      const lines = objects.map((o, i) => {
        const { module, type } = modelOf(o);
        imports.set(module, (imports.get(module) ?? new Set()).add(type));
        return `export const object${i}: ${type} = ${JSON.stringify(o)};`;
      });
      return [...imports].map(([m, t]) => `import type { ${[...t].join(', ')} } from '${m}';`).concat(lines).join('\n') + '\n';
    };
    const good = path.join(dir, 'manifests.ts');
    writeFileSync(good, source(all().map((m) => m.object)));
    const typo = structuredClone(findObject(base(), 'Job', 'ttg-worker-redis'));
    typo.spec.paralelism = typo.spec.parallelism;
    delete typo.spec.parallelism;
    const bad = path.join(dir, 'typo.ts');
    writeFileSync(bad, source([typo]));
    const program = ts.createProgram([good, bad], {
      strict: true, noEmit: true, skipLibCheck: true, types: [],
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    });
    const messages = (file: string) => ts.getPreEmitDiagnostics(program, program.getSourceFile(file))
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' '));
    assert.deepEqual(messages(good), [], 'every field of every manifest is known to its schema');
    assert.match(messages(bad).join('\n'), /paralelism\W* does not exist in type 'IJobSpec'/, 'and the check does catch a misspelt field');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('labels: every object is part of ttg; worker pods carry the name, mode and backend labels', () => {
  for (const m of all()) {
    assert.equal(m.object.metadata.labels?.[CONTRACT.partOf[0]], CONTRACT.partOf[1], `${m.file}: ${m.object.kind} ${m.object.metadata.name} is found by cleanup's label`);
  }
  const list = workers(all());
  assert.ok(list.length >= 5, 'queue Jobs for both backends, the static Job and the KEDA examples');
  for (const w of list) {
    const spec = jobSpec(w);
    const podLabels = spec.template.metadata.labels;
    const env = Object.fromEntries((jobContainer(w).env ?? []).filter((e: K8sObject) => 'value' in e).map((e: K8sObject) => [e.name, e.value]));
    const mode = env['USE_QUEUE'] === 'true' ? 'queue' : 'static';
    for (const labels of [w.metadata.labels, podLabels]) {
      for (const [k, v] of Object.entries(CONTRACT.workerLabels)) assert.equal(labels[k], v, `${w.metadata.name}: ${k}`);
      assert.equal(labels[CONTRACT.modeLabel], mode, `${w.metadata.name}: ${CONTRACT.modeLabel} agrees with USE_QUEUE`);
      if (mode === 'queue') {
        assert.ok(['redis', 'rabbitmq'].includes(labels[CONTRACT.backendLabel]), `${w.metadata.name}: ${CONTRACT.backendLabel}`);
        assert.equal(labels[CONTRACT.backendLabel], env['QUEUE_BACKEND'], `${w.metadata.name}: the backend label agrees with QUEUE_BACKEND`);
      }
    }
    assert.equal(spec.selector, undefined, `${w.metadata.name}: the Job controller makes its own selector`);
  }
  const modes = new Set(list.map((w) => w.metadata.labels[CONTRACT.modeLabel]));
  assert.deepEqual([...modes].sort(), ['queue', 'static']);
  const queueBackends = base().map((m) => m.object).filter((o) => o.kind === 'Job' && o.metadata.labels[CONTRACT.modeLabel] === 'queue')
    .map((o) => o.metadata.labels[CONTRACT.backendLabel]).sort();
  assert.deepEqual(queueBackends, ['rabbitmq', 'redis'], 'one queue Job per backend');
  for (const b of ['redis', 'rabbitmq']) {
    const agg = findObject(base(), 'Job', `ttg-aggregate-${b}`);
    assert.deepEqual(jobContainer(agg, 'aggregator').args, ['aggregate', '--json']);
    assert.equal(agg.spec.template.metadata.labels[CONTRACT.backendLabel], b);
    assert.notEqual(agg.spec.template.metadata.labels['app.kubernetes.io/name'], 'ttg-worker', 'the aggregator is not counted among the workers');
  }
});

test('brokers: Pods and Services named ttg-redis:6379 and ttg-rabbitmq:5672, probed, with credentials from the Secret', () => {
  const manifests = base();
  const secret = findObject(manifests, 'Secret', 'ttg-broker-credentials');
  const secretKeys = Object.keys(stringValues(secret));
  const config = stringValues(findObject(manifests, 'ConfigMap', 'ttg-config'));
  for (const [name, port] of Object.entries(CONTRACT.services)) {
    const pod = findObject(manifests, 'Pod', name);
    const svc = findObject(manifests, 'Service', name);
    for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(pod.metadata.labels[k], v, `Service ${name} selects Pod ${name}`);
    const svcPort = svc.spec.ports.find((p: K8sObject) => p.port === port);
    assert.ok(svcPort, `Service ${name} listens on ${port}`);
    const container = pod.spec.containers[0];
    const cPort = container.ports.find((p: K8sObject) => p.name === svcPort.targetPort || p.containerPort === svcPort.targetPort);
    assert.equal(cPort?.containerPort, port, `Service ${name} targets the broker's port ${port}`);
    assert.ok(container.readinessProbe, `${name} has a readiness probe`);
    const refs = (container.env ?? []).filter((e: K8sObject) => e.valueFrom?.secretKeyRef);
    assert.ok(refs.length >= 1, `${name} takes its credentials from a Secret`);
    for (const e of refs) {
      assert.equal(e.valueFrom.secretKeyRef.name, 'ttg-broker-credentials');
      assert.ok(secretKeys.includes(e.valueFrom.secretKeyRef.key), `${name}: the Secret has ${e.valueFrom.secretKeyRef.key}`);
    }
  }
  const redis = findObject(manifests, 'Pod', 'ttg-redis').spec.containers[0];
  assert.match(redis.image, /^redis:7/, 'Redis 7 (XINFO lag for KEDA, the Lua scripts)');
  assert.deepEqual(redis.args.slice(redis.args.indexOf('--appendonly'), redis.args.indexOf('--appendonly') + 2), ['--appendonly', 'yes']);
  assert.ok(redis.env.some((e: K8sObject) => e.name === 'REDISCLI_AUTH'), 'kubectl exec ttg-redis -- redis-cli works without a password flag');
  assert.match(findObject(manifests, 'Pod', 'ttg-rabbitmq').spec.containers[0].image, /^rabbitmq:.*management/);
  assert.equal(config['REDIS_HOST'], 'ttg-redis');
  assert.equal(Number(config['REDIS_PORT']), CONTRACT.services['ttg-redis']);
  assert.equal(config['RABBITMQ_HOST'], 'ttg-rabbitmq');
  assert.equal(Number(config['RABBITMQ_PORT']), CONTRACT.services['ttg-rabbitmq']);
});

test('workers: image, port 9464 and probes, resources, grace period, podFailurePolicy, Job shape', () => {
  const manifests = all();
  const config = stringValues(findObject(manifests, 'ConfigMap', 'ttg-config'));
  assert.equal(config['THREADS'], undefined, 'THREADS is left to follow the CPU limit');
  for (const w of workers(manifests)) {
    const name = w.metadata.name;
    const spec = jobSpec(w);
    const pod = spec.template.spec;
    const c = jobContainer(w);
    assert.equal(c.image, CONTRACT.image(), `${name}: the image is ttg-worker:<package version>`);
    assert.equal(c.command, undefined, `${name}: the image's entrypoint runs (node dist/engine/cli.js)`);
    assert.deepEqual(c.args, CONTRACT.command);
    const metrics = c.ports.find((p: K8sObject) => p.name === 'metrics');
    assert.equal(metrics?.containerPort, CONTRACT.metricsPort, `${name}: container port metrics = ${CONTRACT.metricsPort}`);
    const metricsEnv = c.env.find((e: K8sObject) => e.name === 'METRICS_PORT');
    assert.equal(Number(metricsEnv?.value ?? CONTRACT.metricsPort), CONTRACT.metricsPort, `${name}: METRICS_PORT is the probed port`);
    assert.deepEqual([c.livenessProbe?.httpGet?.path, c.livenessProbe?.httpGet?.port], [CONTRACT.livenessPath, 'metrics'], `${name}: liveness`);
    assert.deepEqual([c.readinessProbe?.httpGet?.path, c.readinessProbe?.httpGet?.port], [CONTRACT.readinessPath, 'metrics'], `${name}: readiness`);
    for (const kind of ['requests', 'limits']) {
      for (const r of ['cpu', 'memory']) assert.ok(c.resources?.[kind]?.[r], `${name}: ${kind}.${r}`);
    }
    assert.ok(!(c.env ?? []).some((e: K8sObject) => e.name === 'THREADS'), `${name}: THREADS follows the CPU limit`);
    assert.ok(pod.terminationGracePeriodSeconds >= 30, `${name}: time to finish the chunks in hand`);
    assert.equal(pod.restartPolicy, 'Never', `${name}: podFailurePolicy needs restartPolicy Never`);
    assert.equal(pod.securityContext?.runAsNonRoot, true, `${name}: non-root`);
    const rules = spec.podFailurePolicy?.rules ?? [];
    const onCodes = (action: string) => rules.filter((r: K8sObject) => r.action === action && r.onExitCodes?.operator === 'In')
      .flatMap((r: K8sObject) => r.onExitCodes.values);
    assert.deepEqual(onCodes('FailJob'), [2], `${name}: exit 2 (bad configuration) fails the Job at once`);
    assert.deepEqual(onCodes('Ignore').sort(), [137, 143], `${name}: a pod killed from outside is replaced without counting`);
    assert.ok(rules.some((r: K8sObject) => r.action === 'Ignore' && r.onPodConditions?.some((p: K8sObject) => p.type === 'DisruptionTarget')), `${name}: disruptions are ignored`);
    assert.ok(rules.every((r: K8sObject) => !r.onExitCodes || r.onExitCodes.containerName === c.name), `${name}: rules name the worker container`);
    assert.ok(spec.backoffLimit >= 1, `${name}: backoffLimit`);
    assert.equal(spec.parallelism, spec.completions, `${name}: parallelism = completions`);
    const env = Object.fromEntries(c.env.map((e: K8sObject) => [e.name, e]));
    if (w.metadata.labels[CONTRACT.modeLabel] === 'static') {
      assert.equal(spec.completionMode, 'Indexed', `${name}: static mode is an Indexed Job`);
      assert.equal(spec.completions, Number(config['TOTAL_WORKERS']), `${name}: one index per static share (TOTAL_WORKERS)`);
      assert.equal(env['WORKER_ID'], undefined, `${name}: WORKER_ID comes from JOB_COMPLETION_INDEX`);
    } else {
      assert.notEqual(spec.completionMode, 'Indexed');
      assert.equal(env['WORKER_ID']?.valueFrom?.fieldRef?.fieldPath, 'metadata.name', `${name}: one consumer per pod`);
    }
  }
});

test('the environment the manifests give ttg: only variables ttg reads, and its config validation accepts the values', () => {
  const known = new Set<string>(ENV_VARIABLES);
  const manifests = all();
  const sources = podSources(manifests);
  const workloads = ttgWorkloads(manifests);
  assert.ok(workloads.length >= 8, 'workers, aggregators and the toolbox');
  for (const w of workloads) {
    const podSpec = w.kind === 'Pod' ? w.spec : jobSpec(w).template.spec;
    for (const c of podSpec.containers) {
      const unknown = envNamesSet(c, sources).filter((n) => !known.has(n));
      assert.deepEqual(unknown, [], `${w.kind} ${w.metadata.name}: every variable it sets is one ttg reads`);
      const indexed = jobSpec(w)?.completionMode === 'Indexed';
      const indices = indexed ? Array.from({ length: jobSpec(w).completions }, (_, i) => String(i)) : [null];
      for (const index of indices) {
        const env: Record<string, string> = {
          ...containerEnv(c, { ...sources, fields: { 'metadata.name': `${w.metadata.name}-x7k2p`, 'metadata.namespace': 'default' } }),
          HOSTNAME: `${w.metadata.name}-x7k2p`,
          ...(index === null ? {} : { JOB_COMPLETION_INDEX: index }),
        };
        let config: ReturnType<typeof loadConfig> | undefined;
        assert.doesNotThrow(() => (config = loadConfig(env)), `${w.kind} ${w.metadata.name}: loadConfig accepts its environment`);
        if (index !== null) assert.equal(config!.workerId, index, `${w.metadata.name}: WORKER_ID follows JOB_COMPLETION_INDEX ${index}`);
        if (env['QUEUE_BACKEND'] === 'redis') assert.equal(config!.backends.redis.address, 'ttg-redis:6379');
        if (env['QUEUE_BACKEND'] === 'rabbitmq') assert.match(config!.backends.rabbitmq.address, /^amqp:\/\/ttg-rabbitmq:5672\//);
        if (c.name === 'worker') assert.equal(config!.useQueue, w.metadata.labels[CONTRACT.modeLabel] === 'queue');
      }
    }
  }
});

test('Dockerfile: multi-stage, production dependencies only, non-root, exec-form entrypoint, port 9464', () => {
  const stages = parseDockerfile(readFileSync(path.join(K8S_DIR, 'Dockerfile'), 'utf8'));
  assert.ok(stages.length >= 2, 'multi-stage');
  const final = stages.at(-1)!;
  const build = stages.find((s) => s.name !== null && final.instructions.some((i) => i.op === 'COPY' && i.args.includes(`--from=${s.name}`)));
  assert.ok(build, 'the final stage copies from a build stage');
  const runs = (s: typeof final) => s.instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  assert.match(runs(build!), /npm ci\b/, 'the build stage installs the dev dependencies');
  assert.match(runs(build!), /npm run build\b/, 'and builds the kernels and the TypeScript');
  assert.match(runs(final), /npm ci\b.*--omit=dev/, 'the runtime stage installs production dependencies only');
  assert.match(runs(final), /npm ci\b.*--ignore-scripts/, 'without the prepare script (which would build)');
  const user = final.instructions.filter((i) => i.op === 'USER').at(-1)?.args;
  assert.ok(user && !/^(root|0)(:|$)/.test(user), `non-root USER (got ${user})`);
  assert.deepEqual(execForm(final, 'ENTRYPOINT'), CONTRACT.entrypoint);
  assert.deepEqual(execForm(final, 'CMD'), CONTRACT.command);
  assert.ok(final.instructions.some((i) => i.op === 'EXPOSE' && i.args.split(/\s+/).includes(String(CONTRACT.metricsPort))), 'EXPOSE 9464');
  const copied = stageCopies(final).filter((c) => c.from === build!.name).flatMap((c) => c.sources.map((s) => path.posix.relative(build!.workdir, s)));
  for (const needed of ['dist', 'build/kernel.wasm']) assert.ok(copied.includes(needed), `the runtime stage has ${needed}`);

  // .dockerignore keeps the heavy and generated trees out, but none of what the build stage copies.
  const ignored = dockerignore();
  for (const must of ['node_modules', '.git', 'dist', 'build']) assert.ok(ignored.includes(must), `.dockerignore has ${must}`);
  for (const copy of stages.flatMap(stageCopies).filter((c) => c.from === null)) {
    for (const src of copy.sources) {
      assert.ok(!ignored.some((pattern) => src === pattern || src.startsWith(pattern + '/')), `.dockerignore keeps ${src} in the context`);
    }
  }
});

test('the image tag is the package version everywhere, written in no script', () => {
  const version = packageVersion();
  for (const w of ttgWorkloads(all())) {
    const podSpec = w.kind === 'Pod' ? w.spec : jobSpec(w).template.spec;
    for (const c of podSpec.containers) assert.equal(c.image, CONTRACT.image(), `${w.metadata.name}/${c.name}`);
  }
  for (const script of ['run-demo.sh', 'cleanup.sh']) {
    const text = readFileSync(path.join(K8S_DIR, script), 'utf8');
    assert.ok(!text.includes(version) && !/ttg-worker:\d/.test(text), `${script} reads the version from package.json`);
  }
});

test('a user kernel on Kubernetes: the Job mounts the ConfigMap KERNEL and KERNEL_JS point into; the derived image builds FROM ttg-worker', () => {
  const job = findObject(userKernel(), 'Job', 'ttg-worker-redis-user-kernel');
  const c = jobContainer(job);
  const env = Object.fromEntries(c.env.filter((e: K8sObject) => 'value' in e).map((e: K8sObject) => [e.name, e.value]));
  const volume = job.spec.template.spec.volumes.find((v: K8sObject) => v.configMap?.name === 'ttg-user-kernel');
  assert.ok(volume, 'a volume from the ConfigMap ttg-user-kernel');
  const mount = c.volumeMounts.find((m: K8sObject) => m.name === volume.name);
  assert.equal(mount.readOnly, true);
  // The files the README's `kubectl create configmap --from-file` puts there, under their own names.
  assert.equal(env['KERNEL'], path.posix.join(mount.mountPath, 'collatz.wasm'));
  assert.equal(env['KERNEL_JS'], path.posix.join(mount.mountPath, 'collatz.js'));
  const config = loadConfig({ ...stringValues(findObject(base(), 'ConfigMap', 'ttg-config')), ...env, USE_QUEUE: 'true', WORKER_ID: 'pod-x' });
  assert.deepEqual([config.kernel, config.kernelPath, config.kernelJs], ['collatz', env['KERNEL'], env['KERNEL_JS']], 'env overrides the ConfigMap\'s KERNEL');
  // The rest is the ordinary queue Job: exit 2 (a worker whose module differs) fails the Job at once.
  const plain = findObject(base(), 'Job', 'ttg-worker-redis');
  assert.deepEqual(job.spec.podFailurePolicy, plain.spec.podFailurePolicy);

  const [derived, ...more] = parseDockerfile(readFileSync(path.join(USER_KERNEL_DIR, 'Dockerfile'), 'utf8'));
  assert.equal(more.length, 0);
  assert.equal(derived!.base, CONTRACT.image(), 'FROM the ttg image of this version');
  const runtime = parseDockerfile(readFileSync(path.join(K8S_DIR, 'Dockerfile'), 'utf8')).at(-1)!;
  assert.equal(derived!.workdir, runtime.workdir, 'the same WORKDIR, where the entrypoint runs');
  assert.ok(!derived!.instructions.some((i) => i.op === 'USER' || i.op === 'ENTRYPOINT' || i.op === 'CMD'), 'the ttg image\'s user, entrypoint and command');
  const run = derived!.instructions.find((i) => i.op === 'RUN')!.args;
  assert.match(run, /^node dist\/engine\/cli\.js kernel build kernels\/\$\{KERNEL_NAME\}\.ts$/);
  const envLine = derived!.instructions.find((i) => i.op === 'ENV')!.args;
  assert.match(envLine, /KERNEL=\.\/kernels\/\$\{KERNEL_NAME\}\.wasm/, 'KERNEL is what kernel build writes beside the source');
  assert.match(envLine, /KERNEL_JS=\.\/kernels\/\$\{KERNEL_NAME\}\.js/);
});

/**
 * k8s/run-demo.sh and k8s/cleanup.sh under --dry-run: the command sequence they print for
 * each backend and flag, and their usage errors. They run with bash as child processes,
 * with stand-ins for kind, docker and kubectl first on PATH that record any call and fail,
 * so nothing real runs and a call that escapes --dry-run is caught.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../engine/config.js';
import { ROOT } from './helpers.js';
import { CONTRACT, K8S_DIR, findObject, packageVersion, renderKustomization, stringValues } from './k8s-helpers.js';

const CTX = 'kubectl --context kind-ttg-sandbox';
let stubDir = '';
let callLog = '';

before(() => {
  stubDir = mkdtempSync(path.join(os.tmpdir(), 'ttg-k8s-stubs-'));
  callLog = path.join(stubDir, 'calls.log');
  for (const tool of ['kind', 'docker', 'kubectl']) {
    const stub = path.join(stubDir, tool);
    writeFileSync(stub, `#!/bin/sh\necho "${tool} $*" >> "${callLog}"\nexit 97\n`);
    chmodSync(stub, 0o755);
  }
});
after(() => rmSync(stubDir, { recursive: true, force: true }));

function script(name: 'run-demo.sh' | 'cleanup.sh', args: string[]) {
  if (existsSync(callLog)) rmSync(callLog);
  // From another directory: the scripts find the repository themselves.
  const r = spawnSync('bash', [path.join(K8S_DIR, name), ...args], {
    cwd: os.tmpdir(), encoding: 'utf8', timeout: 20_000,
    env: { PATH: `${stubDir}:/usr/bin:/bin`, HOME: os.tmpdir() },
  });
  const calls = existsSync(callLog) ? readFileSync(callLog, 'utf8') : '';
  assert.equal(calls, '', `${name} ${args.join(' ')} ran nothing for real`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lines: r.stdout.split('\n').filter(Boolean) };
}

function dryRun(...args: string[]) {
  const r = script('run-demo.sh', ['--dry-run', ...args]);
  assert.equal(r.code, 0, r.stderr);
  for (const line of r.lines) assert.match(line, /^\+ /, 'stdout holds only the commands, one per line');
  // Every printed line is a command the shell can read as it stands.
  const syntax = spawnSync('bash', ['-n'], { input: r.lines.map((l) => l.slice(2)).join('\n'), encoding: 'utf8' });
  assert.equal(syntax.status, 0, `the printed commands are valid shell: ${syntax.stderr}`);
  return r.lines;
}

/** The JSON merge patch of the `kubectl patch --local -f <file>` line. */
function patchFor(lines: string[], file: string): Record<string, unknown> {
  const line = lines.find((l) => l.startsWith(`+ kubectl patch --local -f ${file} `));
  assert.ok(line, `a patched apply of ${file}`);
  const m = / -p '([^']*)' -o yaml \| kubectl --context kind-ttg-sandbox apply -f -$/.exec(line!);
  assert.ok(m, `the patch is piped into kubectl apply: ${line}`);
  return JSON.parse(m![1]!);
}

test('run-demo.sh --dry-run prints the whole demo, in order, for the default Redis sweep', () => {
  const v = packageVersion();
  const lines = dryRun();
  assert.deepEqual(lines, [
    '+ kind get clusters',
    '+ kind create cluster --name ttg-sandbox --config k8s/kind-config.yaml',
    `+ docker build -f k8s/Dockerfile -t ttg-worker:${v} .`,
    `+ kind load docker-image ttg-worker:${v} --name ttg-sandbox`,
    `+ ${CTX} apply -f k8s/secret.yaml`,
    `+ kubectl patch --local -f k8s/configmap.yaml --type merge -p '{"data":{"TOTAL_PARAMS":"10000","CHUNK_SIZE":"100","KERNEL":"placeholder","TOTAL_WORKERS":"3"}}' -o yaml | ${CTX} apply -f -`,
    `+ ${CTX} apply -f k8s/redis.yaml`,
    `+ ${CTX} delete job -l app.kubernetes.io/part-of=ttg,ttg.io/queue-backend=redis --ignore-not-found --cascade=foreground --wait=true`,
    `+ ${CTX} delete pod ttg-toolbox --ignore-not-found --wait=true`,
    `+ ${CTX} apply -f k8s/toolbox.yaml`,
    `+ ${CTX} wait --for=condition=Ready pod/ttg-redis --timeout=300s`,
    `+ ${CTX} wait --for=condition=Ready pod/ttg-toolbox --timeout=300s`,
    `+ ${CTX} exec ttg-toolbox -- env QUEUE_BACKEND=redis node dist/engine/cli.js reset`,
    `+ kubectl patch --local -f k8s/worker-queue-redis.yaml --type merge -p '{"spec":{"parallelism":3,"completions":3}}' -o yaml | ${CTX} apply -f -`,
    `+ ${CTX} wait --for=condition=complete job/ttg-worker-redis --timeout=600s`,
    `+ ${CTX} apply -f k8s/aggregate-redis.yaml`,
    `+ ${CTX} wait --for=condition=complete job/ttg-aggregate-redis --timeout=300s`,
    `+ ${CTX} logs job/ttg-aggregate-redis`,
    `+ ${CTX} exec ttg-toolbox -- env QUEUE_BACKEND=redis node dist/engine/cli.js aggregate`,
  ]);
  // The files and objects the commands name exist.
  for (const line of lines) {
    for (const [, file] of line.matchAll(/-f (k8s\/\S+)/g)) assert.ok(existsSync(path.join(ROOT, file!)), `${file} exists`);
  }
  const manifests = renderKustomization(K8S_DIR);
  for (const name of ['ttg-worker-redis', 'ttg-aggregate-redis']) findObject(manifests, 'Job', name);
  for (const name of ['ttg-redis', 'ttg-toolbox']) findObject(manifests, 'Pod', name);
});

test('run-demo.sh --backend rabbitmq deploys RabbitMQ and its Jobs instead', () => {
  const lines = dryRun('--backend', 'rabbitmq');
  const text = lines.join('\n');
  assert.doesNotMatch(text, /redis/, 'nothing of Redis');
  for (const expected of [
    `+ ${CTX} apply -f k8s/rabbitmq.yaml`,
    `+ ${CTX} wait --for=condition=Ready pod/ttg-rabbitmq --timeout=300s`,
    `+ ${CTX} delete job -l app.kubernetes.io/part-of=ttg,ttg.io/queue-backend=rabbitmq --ignore-not-found --cascade=foreground --wait=true`,
    `+ ${CTX} exec ttg-toolbox -- env QUEUE_BACKEND=rabbitmq node dist/engine/cli.js reset`,
    `+ ${CTX} wait --for=condition=complete job/ttg-worker-rabbitmq --timeout=600s`,
    `+ ${CTX} logs job/ttg-aggregate-rabbitmq`,
  ]) assert.ok(lines.includes(expected), `prints: ${expected}`);
  assert.deepEqual(patchFor(lines, 'k8s/worker-queue-rabbitmq.yaml'), { spec: { parallelism: 3, completions: 3 } });
  assert.equal(dryRun('--backend=rabbitmq').join('\n'), text, '--flag=value is the same as --flag value');
});

test('run-demo.sh --scale, --kernel and --workers reach the workers through the ConfigMap and the Job', () => {
  const manifests = renderKustomization(K8S_DIR);
  const configMap = stringValues(findObject(manifests, 'ConfigMap', 'ttg-config'));
  const secret = stringValues(findObject(manifests, 'Secret', 'ttg-broker-credentials'));
  const cases = [
    { args: ['--scale', 'small'], total: 10_000, workers: 3, kernel: 'placeholder' },
    { args: ['--scale', 'medium', '--workers', '5'], total: 1_000_000, workers: 5, kernel: 'placeholder' },
    { args: ['--scale', 'large', '--kernel', 'mandelbrot', '--workers', '8'], total: 100_000_000, workers: 8, kernel: 'mandelbrot' },
  ];
  const chunkCounts: number[] = [];
  for (const c of cases) {
    const lines = dryRun(...c.args);
    const data = (patchFor(lines, 'k8s/configmap.yaml') as { data: Record<string, string> }).data;
    // What a worker pod then sees: the patched ConfigMap and the Secret, with the Job's own env.
    const config = loadConfig({ ...configMap, ...data, ...secret, USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', WORKER_ID: 'ttg-worker-redis-x7k2p' });
    assert.equal(config.totalParams, c.total, `${c.args.join(' ')}: TOTAL_PARAMS`);
    assert.equal(config.kernel, c.kernel);
    assert.equal(config.totalWorkers, c.workers, 'TOTAL_WORKERS follows --workers (for the static Job)');
    assert.ok(config.chunkSize >= 100 && config.totalParams / config.chunkSize <= 1000, 'a sensible chunk size for the scale');
    chunkCounts.push(Math.ceil(config.totalParams / config.chunkSize));
    assert.deepEqual(patchFor(lines, 'k8s/worker-queue-redis.yaml'), { spec: { parallelism: c.workers, completions: c.workers } });
  }
  assert.ok(chunkCounts.every((n) => n >= 100), `enough chunks at every scale to watch progress and a fault: ${chunkCounts}`);
});

test('run-demo.sh --fault-demo waits for 30% of the chunks, SIGKILLs one worker pod, then shows FAULT RECOVERY', () => {
  for (const backend of ['redis', 'rabbitmq']) {
    const lines = dryRun('--fault-demo', '--backend', backend);
    const at = (prefix: string) => {
      const i = lines.findIndex((l) => l.startsWith(prefix));
      assert.ok(i >= 0, `prints ${prefix}`);
      return i;
    };
    const started = at('+ kubectl patch --local -f k8s/worker-queue-');
    const poll = at(`+ ${CTX} exec ttg-toolbox -- env QUEUE_BACKEND=${backend} node dist/engine/cli.js aggregate --json`);
    const victim = at(`+ ${CTX} get pods -l app.kubernetes.io/name=ttg-worker,ttg.io/mode=queue,ttg.io/queue-backend=${backend} --field-selector=status.phase=Running`);
    const kill = at('+ docker exec ');
    const complete = at(`+ ${CTX} wait --for=condition=complete job/ttg-worker-${backend}`);
    const logs = at(`+ ${CTX} logs -l app.kubernetes.io/name=ttg-worker,ttg.io/mode=queue,ttg.io/queue-backend=${backend} --tail=-1`);
    assert.ok(started < poll && poll < victim && victim < kill && kill < complete && complete < logs, 'in that order');
    assert.match(lines[kill]!, /kill -KILL/, 'a hard kill, not a graceful stop');
    assert.match(lines[logs]!, /\| grep "FAULT RECOVERY"$/);
  }
  const stderr = script('run-demo.sh', ['--dry-run', '--fault-demo', '--scale', 'medium']).stderr;
  assert.match(stderr, /waiting until 30 of 100 chunks have results/, '30% of the sweep\'s chunks');
  assert.doesNotMatch(dryRun().join('\n'), /docker exec|FAULT RECOVERY/, 'no fault without --fault-demo');
});

test('run-demo.sh --monitor cli|web|both runs ttg monitor in a pod, the web one port-forwarded to 8080', () => {
  const cliLine = `+ ${CTX} exec ttg-toolbox -- env QUEUE_BACKEND=redis node dist/engine/cli.js monitor --interval 2 &`;
  const webLine = `+ ${CTX} exec ttg-toolbox -- env QUEUE_BACKEND=redis node dist/engine/cli.js monitor --web &`;
  const forward = `+ ${CTX} port-forward pod/ttg-toolbox 8080:8080 &`;
  const has = (lines: string[]) => [cliLine, webLine, forward].map((l) => lines.includes(l));
  assert.deepEqual(has(dryRun('--monitor', 'cli')), [true, false, false]);
  assert.deepEqual(has(dryRun('--monitor', 'web')), [false, true, true]);
  assert.deepEqual(has(dryRun('--monitor', 'both')), [true, true, true]);
  assert.deepEqual(has(dryRun()), [false, false, false]);
  const lines = dryRun('--monitor', 'both');
  const started = lines.findIndex((l) => l.startsWith('+ kubectl patch --local -f k8s/worker-queue-redis.yaml'));
  assert.ok(lines.indexOf(cliLine) > started, 'the monitor starts with the sweep');
  const toolbox = findObject(renderKustomization(K8S_DIR), 'Pod', 'ttg-toolbox');
  assert.ok(toolbox.spec.containers[0].ports.some((p: { containerPort: number }) => p.containerPort === 8080), 'the toolbox declares 8080');
});

test('run-demo.sh: a bad flag is one clear line on stderr and exit 2, before anything runs', () => {
  const cases: [string[], RegExp][] = [
    [['--backend', 'kafka'], /--backend must be redis or rabbitmq, got "kafka"/],
    [['--scale', 'huge'], /--scale must be small, medium or large, got "huge"/],
    [['--workers', '0'], /--workers must be an integer from 1 to 100, got "0"/],
    [['--workers', 'three'], /--workers must be an integer/],
    [['--kernel', 'nope'], /--kernel must be placeholder or mandelbrot, got "nope"/],
    [['--monitor', 'tui'], /--monitor must be cli, web or both, got "tui"/],
    [['--workers'], /--workers needs a value/],
    [['--scale', '--dry-run'], /--scale needs a value/],
    [['--dry-run=yes'], /--dry-run takes no value/],
    [['--bogus'], /unknown argument "--bogus"/],
    [['redis'], /unknown argument "redis"/],
  ];
  for (const [args, message] of cases) {
    // Without --dry-run too: the flags are checked before any tool is looked for.
    for (const withDryRun of [true, false]) {
      const r = script('run-demo.sh', withDryRun ? ['--dry-run', ...args] : args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit 2`);
      assert.equal(r.stdout, '', `${args.join(' ')}: nothing printed on stdout`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${args.join(' ')}: one line, got ${r.stderr}`);
      assert.match(lines[0]!, message);
    }
  }
  const help = script('run-demo.sh', ['--help']);
  assert.equal(help.code, 0);
  for (const flag of ['--backend', '--scale', '--workers', '--kernel', '--fault-demo', '--monitor', '--dry-run']) {
    assert.ok(help.stdout.includes(flag), `--help documents ${flag}`);
  }
});

test('cleanup.sh --dry-run deletes ttg\'s objects by label only; --all also deletes the Kind cluster', () => {
  const plain = script('cleanup.sh', ['--dry-run']);
  assert.equal(plain.code, 0, plain.stderr);
  const deletes = plain.lines.filter((l) => / delete /.test(l));
  assert.ok(deletes.length >= 1);
  for (const line of deletes) {
    assert.match(line, /^\+ kubectl --context kind-ttg-sandbox delete \S+ -l app\.kubernetes\.io\/part-of=ttg /, `by label, in the sandbox's context: ${line}`);
  }
  assert.ok(!plain.lines.some((l) => l.startsWith('+ kind delete')), 'the cluster stays without --all');

  // Every kind of object the manifests create is among those deleted.
  const kinds = new Set(deletes.flatMap((l) => l.split(' ')[5]!.split(',')));
  const plural: Record<string, string> = {
    Job: 'job', Pod: 'pod', Service: 'service', ConfigMap: 'configmap', Secret: 'secret', PersistentVolumeClaim: 'persistentvolumeclaim',
    ScaledJob: 'scaledjobs.keda.sh', TriggerAuthentication: 'triggerauthentications.keda.sh', PodMonitor: 'podmonitors.monitoring.coreos.com',
  };
  const created = [...renderKustomization(K8S_DIR), ...renderKustomization(path.join(K8S_DIR, 'keda')), ...renderKustomization(path.join(K8S_DIR, 'grafana'))]
    .map((m) => m.object.kind as string);
  for (const kind of new Set(created)) assert.ok(kinds.has(plural[kind] ?? `?${kind}`), `cleanup deletes ${kind}`);

  const all = script('cleanup.sh', ['--all', '--dry-run']);
  assert.equal(all.code, 0, all.stderr);
  assert.equal(all.lines.at(-1), `+ kind delete cluster --name ${CONTRACT.cluster}`);
  assert.deepEqual(all.lines.slice(0, plain.lines.length), plain.lines, '--all does the same first');

  for (const bad of [['--bogus'], ['all'], ['--dry-run', '--force']]) {
    const r = script('cleanup.sh', bad);
    assert.equal(r.code, 2, `${bad.join(' ')}: exit 2`);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.match(r.stderr, /unknown argument/);
  }
});

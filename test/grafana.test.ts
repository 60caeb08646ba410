/**
 * k8s/grafana: the Grafana dashboard and the PodMonitor that feeds it, checked
 * without a cluster. The dashboard is valid JSON whose every query names only
 * metrics a worker really exports (read from a worker's own /metrics text,
 * with every series made to appear) and groups only by labels those series
 * carry; the PodMonitor validates against prometheus-operator's schema
 * (@kubernetes-models/prometheus-operator, at run time and as TypeScript
 * types for misspelt fields) and selects the worker pods on their `metrics`
 * port.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { WorkerMetrics } from '../engine/metrics.js';
import { ROOT } from './helpers.js';
import { K8S_DIR, jobContainer, kustomizationResources, readManifestFile, renderKustomization, type K8sObject } from './k8s-helpers.js';

const GRAFANA_DIR = path.join(K8S_DIR, 'grafana');
const dashboard = () => JSON.parse(readFileSync(path.join(GRAFANA_DIR, 'ttg-dashboard.json'), 'utf8'));

/** Every series name (and its label names) in a worker's /metrics text once each kind of event has happened. */
async function exportedSeries(): Promise<Map<string, Set<string>>> {
  const metrics = new WorkerMetrics({ mode: 'queue', backend: 'redis', kernel: 'placeholder', impl: 'wasm', threads: 2, version: '0.0.0' });
  metrics.watch({ worker: 'worker-0', chunksInHand: 1, reconnects: 1 });
  metrics.chunkCompleted('worker-0', 100, 0.2, false);
  metrics.chunkCompleted('worker-0', 100, 0.3, true);
  for (const outcome of ['retried', 'dead-lettered', 'not-owner', 'unrecorded'] as const) metrics.chunkFailed('worker-0', outcome);
  const names = new Map<string, Set<string>>();
  for (const line of (await metrics.registry.metrics()).split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? \S+$/.exec(line);
    if (!m) continue;
    const labels = names.get(m[1]!) ?? new Set<string>();
    for (const [, label] of (m[2] ?? '').matchAll(/(\w+)="/g)) labels.add(label!);
    names.set(m[1]!, labels);
  }
  return names;
}

/** Every query of the dashboard, with the panel it is in. */
function queries(d: K8sObject): Array<{ panel: string; expr: string }> {
  const out: Array<{ panel: string; expr: string }> = [];
  for (const p of d.panels) for (const t of p.targets ?? []) out.push({ panel: p.title, expr: t.expr });
  for (const v of d.templating?.list ?? []) if (v.type === 'query') out.push({ panel: `variable ${v.name}`, expr: v.definition });
  return out;
}

test('the dashboard is valid Grafana JSON: unique panel ids, a 24-column grid, a Prometheus datasource variable', () => {
  const d = dashboard();
  assert.equal(d.uid, 'ttg-sweep');
  assert.ok(Array.isArray(d.panels) && d.panels.length >= 8);
  const ids = d.panels.map((p: K8sObject) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of d.panels) {
    const g = p.gridPos;
    assert.ok(Number.isInteger(g.x) && Number.isInteger(g.w) && g.x >= 0 && g.w > 0 && g.x + g.w <= 24, `${p.title} fits the grid`);
    assert.ok(p.targets.length > 0 && p.targets.every((t: K8sObject) => typeof t.expr === 'string' && t.expr.length > 0), `${p.title} queries something`);
    assert.equal(p.datasource.uid, '${datasource}', `${p.title} reads the chosen Prometheus`);
  }
  assert.ok(d.templating.list.some((v: K8sObject) => v.type === 'datasource' && v.query === 'prometheus'));
  // What the issue asks to see, each in some panel.
  const titles = d.panels.map((p: K8sObject) => p.title.toLowerCase()).join('\n');
  for (const topic of ['progress', 'params/s per worker', 'params/s in total', 'quantiles', 'failures', 'recovered', 'reconnects']) {
    assert.ok(titles.includes(topic), `a panel about ${topic}`);
  }
});

test('every query names only metrics the workers export, and groups by labels those metrics carry', async () => {
  const exported = await exportedSeries();
  const used = new Set<string>();
  for (const { panel, expr } of queries(dashboard())) {
    let depth = 0;
    for (const ch of expr) {
      depth += ch === '(' ? 1 : ch === ')' ? -1 : 0;
      assert.ok(depth >= 0, `${panel}: parentheses balance in ${expr}`);
    }
    assert.equal(depth, 0, `${panel}: parentheses balance in ${expr}`);
    const names = [...expr.matchAll(/\b(ttg_\w+)/g)].map((m) => m[1]!);
    assert.ok(names.length > 0, `${panel} reads a ttg metric: ${expr}`);
    for (const name of names) {
      assert.ok(exported.has(name), `${panel}: ${name} is not a metric a worker exports (${expr})`);
      used.add(name);
    }
    // sum by (worker), by (le), by (outcome): each label must be on the metrics summed.
    for (const [, list] of expr.matchAll(/\bby \(([^)]*)\)/g)) {
      for (const label of list!.split(',').map((s) => s.trim())) {
        assert.ok(names.some((n) => exported.get(n)!.has(label)), `${panel}: no metric in ${expr} has the label ${label}`);
      }
    }
    for (const [, label] of expr.matchAll(/\{(\w+)=~?"/g)) {
      assert.ok(names.some((n) => exported.get(n)!.has(label!)), `${panel}: no metric in ${expr} has the label ${label}`);
    }
  }
  // The dashboard covers every ttg_ metric of the worker loop (the process ones are optional).
  for (const name of ['ttg_chunks_completed_total', 'ttg_chunks_recovered_total', 'ttg_chunk_failures_total', 'ttg_params_processed_total',
    'ttg_chunk_duration_seconds_bucket', 'ttg_chunks_in_hand', 'ttg_threads', 'ttg_broker_reconnects_total', 'ttg_info']) {
    assert.ok(used.has(name), `the dashboard shows ${name}`);
  }
});

test('the check above does catch a query on a metric nobody exports', async () => {
  const exported = await exportedSeries();
  assert.equal(exported.has('ttg_chunks_done_total'), false);
  assert.equal(exported.has('ttg_chunks_completed_total'), true);
  assert.ok(exported.get('ttg_chunk_failures_total')!.has('outcome'));
});

test('the PodMonitor validates against prometheus-operator\'s schema and selects every worker pod on its metrics port', () => {
  assert.deepEqual(kustomizationResources(GRAFANA_DIR), readdirSync(GRAFANA_DIR).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml'));
  const [pm] = renderKustomization(GRAFANA_DIR).map((m) => m.object);
  assert.equal(pm!.kind, 'PodMonitor');
  assert.doesNotThrow(() => new PodMonitor(pm as never).validate());
  const bad = structuredClone(pm!);
  bad.spec.podMetricsEndpoints = 'metrics';
  assert.throws(() => new PodMonitor(bad as never).validate(), 'a corrupted copy fails validation');
  assert.equal(pm!.metadata.labels['app.kubernetes.io/part-of'], 'ttg', 'cleanup.sh finds it by label');

  const [endpoint] = pm!.spec.podMetricsEndpoints;
  assert.equal(endpoint.path, '/metrics');
  // Every worker workload in k8s/ (queue Jobs, the static Job, KEDA's ScaledJobs) is selected, on a port it has.
  const workloads = [...renderKustomization(K8S_DIR), ...renderKustomization(path.join(K8S_DIR, 'keda'))].map((m) => m.object)
    .filter((o) => (o.kind === 'Job' || o.kind === 'ScaledJob') && o.metadata.labels?.['app.kubernetes.io/name'] === 'ttg-worker');
  assert.ok(workloads.length >= 5);
  for (const w of workloads) {
    const template = w.kind === 'ScaledJob' ? w.spec.jobTargetRef.template : w.spec.template;
    for (const [k, v] of Object.entries(pm!.spec.selector.matchLabels)) {
      assert.equal(template.metadata.labels[k], v, `${w.metadata.name}'s pods carry ${k}=${v}`);
    }
    const container = w.kind === 'ScaledJob' ? template.spec.containers[0] : jobContainer(w);
    const port = container.ports.find((p: K8sObject) => p.name === endpoint.port);
    assert.equal(port?.containerPort, 9464, `${w.metadata.name} names port ${endpoint.port} 9464 (METRICS_PORT)`);
  }
});

test('the PodMonitor sets no field the operator does not know (typed against its TypeScript types)', () => {
  const dir = mkdtempSync(path.join(ROOT, 'dist', '.grafana-typecheck-'));
  try {
    const object = readManifestFile(path.join(GRAFANA_DIR, 'podmonitor.yaml'))[0]!.object;
    const typo = structuredClone(object);
    typo.spec.podMetricsEndpoint = typo.spec.podMetricsEndpoints;
    delete typo.spec.podMetricsEndpoints;
    const file = (name: string, o: K8sObject) => {
      const f = path.join(dir, name);
      writeFileSync(f, `import type { IPodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';\n` +
        `export const pm: IPodMonitor = ${JSON.stringify(o)};\n`);
      return f;
    };
    const good = file('good.ts', object);
    const bad = file('bad.ts', typo);
    const program = ts.createProgram([good, bad], {
      strict: true, noEmit: true, skipLibCheck: true, types: [],
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    });
    const messages = (f: string) => ts.getPreEmitDiagnostics(program, program.getSourceFile(f)).map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' '));
    assert.deepEqual(messages(good), []);
    assert.match(messages(bad).join('\n'), /podMetricsEndpoint\W* does not exist/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

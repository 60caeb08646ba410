/**
 * Reading the deployment in k8s/ without a cluster: manifests (as kustomize renders a
 * resources-only kustomization), the environment a container gets from the kubelet, the
 * Dockerfile's stages, and docs/design.md's deployment contracts written down once for the tests.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './helpers.js';

export const K8S_DIR = path.join(ROOT, 'k8s');

/** The package version, the image's tag (read, never repeated). */
export function packageVersion(): string {
  return JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
}

/** docs/design.md, "Deployment" and "HTTP endpoints": what users, scripts and manifests rely on. */
export const CONTRACT = {
  image: () => `ttg-worker:${packageVersion()}`,
  cluster: 'ttg-sandbox',
  workerLabels: { 'app.kubernetes.io/name': 'ttg-worker', 'app.kubernetes.io/part-of': 'ttg' },
  partOf: ['app.kubernetes.io/part-of', 'ttg'] as const,
  modeLabel: 'ttg.io/mode',
  backendLabel: 'ttg.io/queue-backend',
  services: { 'ttg-redis': 6379, 'ttg-rabbitmq': 5672 } as Record<string, number>,
  metricsPort: 9464,
  livenessPath: '/healthz',
  readinessPath: '/readyz',
  entrypoint: ['node', 'dist/engine/cli.js'],
  command: ['worker'],
};

/* The manifests are untyped data here; the model classes check their shape. */
export type K8sObject = any;

export interface Manifest {
  /** Path relative to the repository root. */
  file: string;
  object: K8sObject;
}

/** Every document of a YAML file; YAML errors throw naming the file. */
export function readManifestFile(absPath: string): Manifest[] {
  const file = path.relative(ROOT, absPath);
  const docs = parseAllDocuments(readFileSync(absPath, 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${file}: not a YAML stream`);
  return docs
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      return { file, object: doc.toJS() as K8sObject };
    })
    .filter((m) => m.object !== null && m.object !== undefined);
}

/** The `resources` of a kustomization.yaml (this project's are resources-only). */
export function kustomizationResources(dir: string): string[] {
  const [k] = readManifestFile(path.join(dir, 'kustomization.yaml'));
  const allowed = new Set(['apiVersion', 'kind', 'resources']);
  for (const key of Object.keys(k!.object)) {
    if (!allowed.has(key)) throw new Error(`${k!.file}: only resources are rendered here, found ${key}`);
  }
  return k!.object.resources as string[];
}

/** What `kubectl kustomize <dir>` gives for a resources-only kustomization: the listed files' objects, in order. */
export function renderKustomization(dir: string): Manifest[] {
  return kustomizationResources(dir).flatMap((r) => readManifestFile(path.join(dir, r)));
}

export function findObject(manifests: Manifest[], kind: string, name: string): K8sObject {
  const found = manifests.find((m) => m.object.kind === kind && m.object.metadata?.name === name);
  if (!found) throw new Error(`no ${kind} ${name} in the manifests`);
  return found.object;
}

/** The container named `name` of a Job's (or ScaledJob's jobTargetRef's) pod template. */
export function jobContainer(job: K8sObject, name = 'worker'): K8sObject {
  const spec = job.kind === 'ScaledJob' ? job.spec.jobTargetRef : job.spec;
  const c = spec.template.spec.containers.find((x: K8sObject) => x.name === name);
  if (!c) throw new Error(`${job.kind} ${job.metadata.name} has no container ${name}`);
  return c;
}

/** A ConfigMap's or Secret's string values (Secret: stringData over base64 data, as the API server merges them). */
export function stringValues(obj: K8sObject): Record<string, string> {
  if (obj.kind === 'ConfigMap') return { ...(obj.data ?? {}) };
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj.data ?? {})) data[k] = Buffer.from(String(v), 'base64').toString('utf8');
  return { ...data, ...(obj.stringData ?? {}) };
}

export interface PodSources {
  configMaps: Record<string, Record<string, string>>;
  secrets: Record<string, Record<string, string>>;
  /** fieldRef values, e.g. { 'metadata.name': 'ttg-worker-redis-x7k2p' }. */
  fields: Record<string, string>;
}

/**
 * The environment the kubelet gives a container: envFrom sources in order (a later source
 * wins a duplicate key), then env (wins over envFrom), $(VAR) references in env values
 * expanded from the variables defined before them.
 */
export function containerEnv(container: K8sObject, sources: PodSources): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const prefix: string = from.prefix ?? '';
    const [kind, ref] = from.configMapRef ? ['ConfigMap', from.configMapRef] : ['Secret', from.secretRef];
    const values = kind === 'ConfigMap' ? sources.configMaps[ref.name] : sources.secrets[ref.name];
    if (!values) {
      if (ref.optional) continue;
      throw new Error(`container ${container.name}: envFrom ${kind} ${ref.name} does not exist`);
    }
    for (const [k, v] of Object.entries(values)) env[prefix + k] = v;
  }
  for (const e of container.env ?? []) {
    if (e.valueFrom === undefined) {
      env[e.name] = String(e.value ?? '').replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole: string, name: string) => env[name] ?? whole);
    } else if (e.valueFrom.fieldRef) {
      const v = sources.fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`container ${container.name}: no value for fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else if (e.valueFrom.configMapKeyRef || e.valueFrom.secretKeyRef) {
      const ref = e.valueFrom.configMapKeyRef ?? e.valueFrom.secretKeyRef;
      const values = e.valueFrom.configMapKeyRef ? sources.configMaps[ref.name] : sources.secrets[ref.name];
      const v = values?.[ref.key];
      if (v === undefined) throw new Error(`container ${container.name}: ${e.name} refers to a missing ${ref.name}/${ref.key}`);
      env[e.name] = v;
    } else {
      throw new Error(`container ${container.name}: ${e.name} uses a valueFrom this helper does not resolve`);
    }
  }
  return env;
}

/** The names a container's environment sets: env entries and every key of its envFrom sources. */
export function envNamesSet(container: K8sObject, sources: Omit<PodSources, 'fields'>): string[] {
  const names = new Set<string>();
  for (const from of container.envFrom ?? []) {
    const values = from.configMapRef ? sources.configMaps[from.configMapRef.name] : sources.secrets[from.secretRef.name];
    for (const k of Object.keys(values ?? {})) names.add((from.prefix ?? '') + k);
  }
  for (const e of container.env ?? []) names.add(e.name);
  return [...names].sort();
}

export interface DockerStage {
  name: string | null;
  base: string;
  workdir: string;
  instructions: { op: string; args: string }[];
}

/** The stages of a Dockerfile: FROM lines open them; continuation lines are joined, comments dropped. */
export function parseDockerfile(text: string): DockerStage[] {
  const lines = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: DockerStage[] = [];
  for (const line of lines) {
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile: cannot read "${line}"`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!from) throw new Error(`Dockerfile: cannot read FROM ${args}`);
      stages.push({ name: from[2] ?? null, base: from[1]!, workdir: '/', instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) throw new Error(`Dockerfile: ${op} before FROM`);
    if (op === 'WORKDIR') stage.workdir = path.posix.resolve(stage.workdir, args);
    stage.instructions.push({ op, args });
  }
  return stages;
}

export interface DockerCopy {
  /** Build stage name, or null for the build context. */
  from: string | null;
  sources: string[];
  /** Absolute destination in the image. */
  dest: string;
}

/** A stage's COPY instructions (shell form), destinations made absolute against WORKDIR at that point. */
export function stageCopies(stage: DockerStage): DockerCopy[] {
  const copies: DockerCopy[] = [];
  let workdir = '/';
  for (const { op, args } of stage.instructions) {
    if (op === 'WORKDIR') workdir = path.posix.resolve(workdir, args);
    if (op !== 'COPY') continue;
    const words = args.split(/\s+/);
    let from: string | null = null;
    while (words[0]?.startsWith('--')) {
      const flag = words.shift()!;
      if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
      else if (!/^--(chown|chmod|link)/.test(flag)) throw new Error(`Dockerfile: unsupported COPY flag ${flag}`);
    }
    if (words.length < 2) throw new Error(`Dockerfile: COPY needs a source and a destination: ${args}`);
    const dest = words.pop()!;
    copies.push({ from, sources: words, dest: dest.endsWith('/') ? path.posix.resolve(workdir, dest) + '/' : path.posix.resolve(workdir, dest) });
  }
  return copies;
}

/** The exec-form JSON array of ENTRYPOINT / CMD (shell form throws: it would not pass SIGTERM to node). */
export function execForm(stage: DockerStage, op: 'ENTRYPOINT' | 'CMD'): string[] {
  const found = stage.instructions.filter((i) => i.op === op).at(-1);
  if (!found) throw new Error(`Dockerfile: no ${op} in the final stage`);
  const parsed = JSON.parse(found.args) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new Error(`Dockerfile: ${op} is not in exec form`);
  return parsed as string[];
}

/** Lines of a .dockerignore (comments and blanks dropped). */
export function dockerignore(): string[] {
  return readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

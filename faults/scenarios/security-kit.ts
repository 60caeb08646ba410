/**
 * What the security scenarios (security.ts) share: free ports in this suite's range, `ttg`
 * processes with a clean environment, a secret scan of every line they print, the check
 * that a refused worker fails at once with one line, a whole sweep checked against the
 * golden reference, and a private RabbitMQ node shared by the two RabbitMQ scenarios.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { rabbitNames } from '../../backends/rabbitmq/names.js';
import { minimalRabbitPermissions } from '../../backends/rabbitmq/refusals.js';
import { makeTestCertificates, PrivateRabbit, type TestCertificates } from '../private-brokers.js';
import type { FaultBackend, FaultRunOptions, FaultScenarioResult } from '../types.js';
import { golden, type GoldenRange } from '../../test/helpers.js';

/** The package root (this file runs as dist/faults/scenarios/security-kit.js). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CLI = path.join(ROOT, 'dist/engine/cli.js');

/** The ports these scenarios may take (RabbitMQ's distribution port is its AMQP port + 20000). */
const PORT_RANGE = { from: 7300, to: 7389 } as const;
/**
 * A refused worker is given CONNECT_TIMEOUT_SECONDS=30: retrying would keep it 30 s. It must be
 * gone within FAIL_FAST_LIMIT_MS of its start-up line (so node's own start on a busy machine does
 * not count), and within PROCESS_LIMIT_MS of being spawned.
 */
export const REFUSED_CONNECT_TIMEOUT_SECONDS = 30;
export const FAIL_FAST_LIMIT_MS = 5000;
const PROCESS_LIMIT_MS = 20_000;

export function secret(tag: string): string {
  return `${tag}-${randomBytes(6).toString('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Ports

const taken = new Set<number>();

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** `n` ports of the range that nothing listens on (nor on port + 20000), picked at random so parallel runs rarely meet. */
export async function freePorts(n: number): Promise<number[]> {
  const span = PORT_RANGE.to - PORT_RANGE.from + 1;
  const start = Math.floor(Math.random() * span);
  const found: number[] = [];
  for (let i = 0; i < span && found.length < n; i++) {
    const port = PORT_RANGE.from + ((start + i) % span);
    if (taken.has(port)) continue;
    taken.add(port); // before the check, so that concurrent callers never pick the same port
    if ((await bindable(port)) && (await bindable(port + 20000))) found.push(port);
    else taken.delete(port);
  }
  if (found.length < n) throw new Error(`no ${n} free ports in ${PORT_RANGE.from}..${PORT_RANGE.to} (and +20000)`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// ttg processes

export interface Ran {
  args: string[];
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** From spawn to exit. */
  ms: number;
  /** When it exited (epoch ms). */
  endedAt: number;
}

/** Runs `node dist/engine/cli.js <args>` with exactly `env` (plus PATH and HOME); SIGKILLed past `timeoutMs`. */
export function runTtg(args: string[], env: Record<string, string | number>, timeoutMs = 90_000): Promise<Ran> {
  const full: NodeJS.ProcessEnv = { PATH: process.env['PATH'], HOME: process.env['HOME'] };
  for (const [k, v] of Object.entries(env)) full[k] = String(v);
  const started = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], { env: full, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ args, code, signal, stdout, stderr, ms: Math.round(performance.now() - started), endedAt: Date.now() });
    });
  });
}

/** The environment of a queue-mode worker in these scenarios: one thread, no endpoints. */
export function workerEnv(backend: FaultBackend, prefix: string, extra: Record<string, string | number>): Record<string, string | number> {
  return { USE_QUEUE: 'true', QUEUE_BACKEND: backend, QUEUE_PREFIX: prefix, THREADS: 1, METRICS_PORT: 0, LOG_LEVEL: 'info', ...extra };
}

function lastJson(stdout: string): Record<string, unknown> | null {
  const line = stdout.trim().split('\n').filter(Boolean).at(-1);
  try {
    return line === undefined ? null : (JSON.parse(line) as Record<string, unknown>);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// One scenario's bookkeeping

/** Collects what a scenario ran and checked; `result()` makes the FaultScenarioResult. */
export class Checks {
  readonly notes: string[] = [];
  readonly #failures: string[] = [];
  readonly #runs: Ran[] = [];
  readonly #workers: Ran[] = [];
  readonly #secrets: string[] = [];
  faults = 0;
  chunksRedone = 0;
  paramsLost = 0;
  paramsDoubleCounted = 0;
  duplicateResults = 0;

  constructor(readonly scenario: string, readonly backend: FaultBackend, readonly options: FaultRunOptions) {}

  /** Passwords that must appear in no line any process prints. */
  secrets(...values: string[]): void {
    this.#secrets.push(...values);
  }

  note(line: string): void {
    this.notes.push(line);
    this.options.log(`[${this.backend}/${this.scenario}] ${line}`);
  }

  expect(ok: boolean, what: string): boolean {
    if (!ok) {
      this.#failures.push(what);
      this.note(`FAILED: ${what}`);
    }
    return ok;
  }

  record(run: Ran, isWorker: boolean): Ran {
    this.#runs.push(run);
    if (isWorker) this.#workers.push(run);
    return run;
  }

  /** Lines of every process that contain a secret. */
  get secretLeaks(): string[] {
    const lines = this.#runs.flatMap((r) => `${r.stdout}\n${r.stderr}`.split('\n'));
    return lines.filter((line) => this.#secrets.some((s) => line.includes(s)));
  }

  result(): FaultScenarioResult {
    const leaks = this.secretLeaks;
    if (leaks.length > 0) this.expect(false, `${leaks.length} log lines hold a password, e.g. ${JSON.stringify(leaks[0]!.slice(0, 200))}`);
    else this.note(`no line of ${this.#runs.length} ttg processes holds a password`);
    return {
      scenario: this.scenario,
      backend: this.backend,
      faults_injected: this.faults,
      takeover_ms: [],
      chunks_redone: this.chunksRedone,
      params_lost: this.paramsLost,
      params_double_counted: this.paramsDoubleCounted,
      duplicate_results: this.duplicateResults,
      workers: this.#workers.map((r) => ({ exit_code: r.code, signal: r.signal })),
      secret_leaks: leaks.length,
      ok: this.#failures.length === 0,
      notes: this.notes,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Refusals

export interface RefusalCase {
  /** What is wrong, for the notes ("a wrong CA"). */
  label: string;
  env: Record<string, string | number>;
  /** The one stderr line that must say it. */
  cause: RegExp;
  /** What that line must also name: the address, the variable to fix. */
  mentions: Array<string | RegExp>;
}

/**
 * A refused `ttg worker` exits 2 at once (long before CONNECT_TIMEOUT_SECONDS), with exactly
 * one stderr line matching the cause and naming the address and the fix, no retry line, and
 * its JSON summary (status interrupted, the same error) as the last stdout line.
 */
export async function checkRefusal(checks: Checks, c: RefusalCase): Promise<void> {
  checks.faults++;
  const run = checks.record(await runTtg(['worker'], { ...c.env, CONNECT_TIMEOUT_SECONDS: REFUSED_CONNECT_TIMEOUT_SECONDS }), true);
  const lines = run.stderr.split('\n').filter(Boolean);
  const matching = lines.filter((l) => c.cause.test(l));
  // The worker's start-up line carries its time: from there to the exit is what the refusal cost.
  const startedAt = Date.parse(/^(\S+Z) INFO .*starting: /m.exec(run.stderr)?.[1] ?? '');
  const afterStart = Number.isFinite(startedAt) ? run.endedAt - startedAt : NaN;
  const ok = [
    checks.expect(run.code === 2, `${c.label}: exit status 2 (a configuration error), got ${run.code ?? run.signal}; stderr: ${run.stderr.slice(-600)}`),
    checks.expect(afterStart < FAIL_FAST_LIMIT_MS && run.ms < PROCESS_LIMIT_MS,
      `${c.label}: exits at once (within ${FAIL_FAST_LIMIT_MS} ms of its start-up line and ${PROCESS_LIMIT_MS} ms of its spawn, ` +
      `CONNECT_TIMEOUT_SECONDS=${REFUSED_CONNECT_TIMEOUT_SECONDS}), took ${afterStart} ms and ${run.ms} ms`),
    checks.expect(matching.length === 1, `${c.label}: exactly one stderr line matches ${c.cause}, found ${matching.length}: ${JSON.stringify(lines)}`),
    checks.expect(!lines.some((l) => /not reachable|retrying|gave up|reconnecting/.test(l)), `${c.label}: no retry line: ${JSON.stringify(lines)}`),
  ].every(Boolean);
  const line = matching[0] ?? '';
  for (const m of c.mentions) {
    checks.expect(typeof m === 'string' ? line.includes(m) : m.test(line), `${c.label}: the line names ${m}: ${line}`);
  }
  const summary = lastJson(run.stdout);
  checks.expect(summary?.['status'] === 'interrupted' && typeof summary['error'] === 'string' && c.cause.test(summary['error']),
    `${c.label}: the JSON summary is the last stdout line, status interrupted, with the error: ${run.stdout.slice(-400)}`);
  if (ok) checks.note(`${c.label}: exit 2, ${afterStart} ms after its start-up line (${run.ms} ms after spawn), with one line: ${line.replace(/^ttg worker: /, '')}`);
}

// ---------------------------------------------------------------------------------------------
// A whole sweep, checked against the golden reference

/** The reference statistics of the placeholder kernel over [0, total) (test/fixtures/golden.json, from independent implementations). */
export function goldenPlaceholder(total: number): GoldenRange {
  const g = golden().placeholder.find((r) => r.start === 0 && r.end === total);
  if (!g) throw new Error(`test/fixtures/golden.json has no placeholder range [0, ${total})`);
  return g;
}

export interface SweepPlan {
  label: string;
  /** Environment of every worker and of the aggregate (the broker address and credentials among it). */
  env: Record<string, string | number>;
  workers: number;
  total: number;
  chunkSize: number;
}

/**
 * Runs `workers` queue workers to the end, then `ttg aggregate --json` with the same
 * environment, and checks the report against the golden figures: every parameter once, the
 * exact grand sum, min and max, no missing chunk, no duplicate.
 */
export async function runSweep(checks: Checks, plan: SweepPlan): Promise<Record<string, unknown> | null> {
  const env = { ...plan.env, TOTAL_PARAMS: plan.total, CHUNK_SIZE: plan.chunkSize, IDLE_TIMEOUT_SECONDS: 20 };
  const runs = await Promise.all(Array.from({ length: plan.workers }, (_, i) => runTtg(['worker'], { ...env, WORKER_ID: `s${i}` })));
  let redone = 0;
  for (const run of runs) {
    checks.record(run, true);
    const summary = lastJson(run.stdout);
    redone += Number(summary?.['failed_attempts'] ?? 0) + Number(summary?.['chunks_recovered'] ?? 0);
    checks.expect(run.code === 0 && summary?.['status'] === 'completed',
      `${plan.label}: worker exits 0 with status completed, got ${run.code ?? run.signal} ${String(summary?.['status'])}; stderr: ${run.stderr.slice(-800)}`);
  }
  checks.chunksRedone += redone;
  const agg = checks.record(await runTtg(['aggregate', '--json'], env), false);
  const report = lastJson(agg.stdout);
  if (!checks.expect(agg.code === 0 && report !== null, `${plan.label}: ttg aggregate --json exits 0 (complete), got ${agg.code}: ${agg.stderr.slice(-600)}`)) return null;
  const g = goldenPlaceholder(plan.total);
  const counted = Number(report!['total_params']);
  checks.paramsLost += Math.max(0, g.count - counted);
  checks.paramsDoubleCounted += Math.max(0, counted - g.count);
  checks.duplicateResults += Number(report!['duplicate_results'] ?? 0);
  const exact = counted === g.count && report!['grand_sum'] === g.sum && report!['global_min'] === g.min && report!['global_max'] === g.max &&
    Array.isArray(report!['missing_chunks']) && (report!['missing_chunks'] as unknown[]).length === 0 && report!['duplicate_results'] === 0;
  if (checks.expect(exact, `${plan.label}: the aggregate is the golden one (count ${g.count}, sum ${g.sum}, min ${g.min}, max ${g.max}, nothing missing or duplicated), got ` +
    JSON.stringify({ total_params: counted, grand_sum: report!['grand_sum'], global_min: report!['global_min'], global_max: report!['global_max'],
      missing: report!['missing_chunks'], duplicate_results: report!['duplicate_results'] }))) {
    checks.note(`${plan.label}: ${plan.workers} workers, ${plan.total} params in chunks of ${plan.chunkSize}, ${redone} chunk attempts redone; ` +
      `the aggregate is exact (grand sum ${g.sum}, the golden figure)`);
  }
  return report;
}

// ---------------------------------------------------------------------------------------------
// Shared TLS material and RabbitMQ node

let certificates: TestCertificates | null = null;

/** One CA, server certificate and unrelated CA per process (openssl, ~0.3 s), removed at exit. */
export function testCertificates(): TestCertificates {
  if (certificates === null) {
    const made = makeTestCertificates();
    certificates = made;
    process.once('exit', () => rmSync(made.dir, { recursive: true, force: true }));
  }
  return certificates;
}

/** A user of the private RabbitMQ node. */
export interface RabbitUser {
  name: string;
  password: string;
}

/**
 * The private RabbitMQ node's users, made once per process and loaded as definitions when the
 * node boots (a rabbitmqctl call costs a second or more on a busy machine): `tls` (all
 * permissions, for the TLS scenario), `sweeper` (exactly minimalRabbitPermissions(sweepPrefix)),
 * `lacking` (those of refusedPrefix without write on amq.default) and `admin` (for checks).
 */
export const rabbitPlan = {
  sweepPrefix: secret('sec-acl'),
  refusedPrefix: secret('sec-acl-refused'),
  users: {
    tls: { name: secret('tls'), password: secret('tls-pw') },
    sweeper: { name: secret('sweeper'), password: secret('sweeper-pw') },
    lacking: { name: secret('lacking'), password: secret('lacking-pw') },
    admin: { name: secret('admin'), password: secret('admin-pw') },
  },
};

/** RabbitMQ's stored form of a password (rabbit_password_hashing_sha256: base64 of salt + sha256(salt + password)). */
function passwordHash(password: string): string {
  const salt = randomBytes(4);
  return Buffer.concat([salt, createHash('sha256').update(Buffer.concat([salt, Buffer.from(password, 'utf8')])).digest()]).toString('base64');
}

function rabbitDefinitions(): string {
  const { users, sweepPrefix, refusedPrefix } = rabbitPlan;
  const all = { configure: '.*', write: '.*', read: '.*' };
  const refused = minimalRabbitPermissions(refusedPrefix);
  const grants: Array<[RabbitUser, { configure: string; write: string; read: string }]> = [
    [users.admin, all], [users.tls, all], [users.sweeper, minimalRabbitPermissions(sweepPrefix)],
    // Everything but the default exchange, through which the sweep's settings are published.
    [users.lacking, { ...refused, write: refused.configure }],
  ];
  return JSON.stringify({
    vhosts: [{ name: '/' }],
    users: grants.map(([u]) => ({
      name: u.name, password_hash: passwordHash(u.password), hashing_algorithm: 'rabbit_password_hashing_sha256', tags: u === users.admin ? 'administrator' : '',
    })),
    permissions: grants.map(([u, p]) => ({ user: u.name, vhost: '/', ...p })),
  });
}

interface SharedRabbit {
  ready: Promise<{ node: PrivateRabbit; dir: string }>;
  users: number;
}
let sharedRabbit: SharedRabbit | null = null;

export interface RabbitLease {
  node: PrivateRabbit;
  /** Plain AMQP port and AMQPS port. */
  port: number;
  tlsPort: number;
  release(): Promise<void>;
}

/**
 * A private RabbitMQ node with a plain and a TLS listener (certificates from testCertificates())
 * and the users of rabbitPlan, started once for the scenarios that run at the same time (a start
 * costs 6 s, three times that on a busy machine) and stopped when the last of them releases it.
 */
export async function acquireRabbit(): Promise<RabbitLease> {
  if (sharedRabbit === null) {
    // Set before anything is awaited, so that scenarios starting together share this one node.
    const made: SharedRabbit = {
      users: 0,
      ready: (async () => {
        const [port, tlsPort] = await freePorts(2);
        const dir = mkdtempSync(path.join(os.tmpdir(), 'ttg-rabbit-defs-'));
        const definitions = path.join(dir, 'definitions.json');
        writeFileSync(definitions, rabbitDefinitions());
        const node = new PrivateRabbit({
          port: port!, name: `ttgsec${port}`, tls: { port: tlsPort!, certs: testCertificates() }, confLines: [`load_definitions = ${definitions}`],
        });
        try {
          await node.start();
        } catch (err) {
          const logs = rabbitLogTail(node.dir);
          await node.dispose();
          rmSync(dir, { recursive: true, force: true });
          throw new Error(`${err instanceof Error ? err.message : String(err)}; its log ends: ${logs}`, { cause: err });
        }
        return { node, dir };
      })(),
    };
    sharedRabbit = made;
    made.ready.catch(() => {
      if (sharedRabbit === made) sharedRabbit = null;
    });
  }
  const shared = sharedRabbit;
  shared.users++;
  let started: { node: PrivateRabbit; dir: string };
  try {
    started = await shared.ready;
  } catch (err) {
    shared.users--;
    throw err;
  }
  const { node, dir } = started;
  return {
    node, port: node.options.port, tlsPort: node.options.tls!.port,
    release: async () => {
      if (--shared.users > 0) return;
      if (sharedRabbit === shared) sharedRabbit = null;
      await node.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The last lines of a private node's logs (kept in the error: dispose() removes its directory). */
function rabbitLogTail(dir: string, lines = 12): string {
  try {
    const logDir = path.join(dir, 'log');
    return readdirSync(logDir).map((f) => `[${f}] ${readFileSync(path.join(logDir, f), 'utf8').trim().split('\n').slice(-lines).join('\n')}`).join('\n') || '(no log)';
  } catch (err) {
    return `(no log: ${String(err)})`;
  }
}

/** Which of the sweep's queues and exchanges still exist on the node (asked as the admin user, over AMQP). */
export async function rabbitLeftovers(port: number, prefix: string): Promise<string[]> {
  const { connect } = await import('amqplib');
  const admin = rabbitPlan.users.admin;
  const conn = await connect(`amqp://${admin.name}:${admin.password}@127.0.0.1:${port}/`);
  const n = rabbitNames(prefix);
  const left: string[] = [];
  try {
    for (const [kind, name] of [['queue', n.tasks], ['queue', n.retry], ['queue', n.dlq], ['queue', n.results], ['queue', n.meta],
      ['exchange', n.exchange], ['exchange', n.ready]] as const) {
      const ch = await conn.createChannel();
      ch.on('error', () => {}); // a 404 closes the channel: that is the answer
      try {
        await (kind === 'queue' ? ch.checkQueue(name) : ch.checkExchange(name));
        left.push(`${kind} ${name}`);
        await ch.close();
      } catch {
        /* gone */
      }
    }
  } finally {
    await conn.close().catch(() => {});
  }
  return left;
}

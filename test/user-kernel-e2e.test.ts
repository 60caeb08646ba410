/**
 * User kernels end to end, as a user runs them: `ttg run` with KERNEL=./NAME.ts
 * (built on first use) through WASM and through the JS twin, real `ttg worker`
 * processes on Redis with KERNEL=./NAME.wasm, a worker with another module
 * refused naming both hashes, static mode, and a kernel that traps: its chunk
 * is retried and dead-lettered while the workers finish the rest.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exactSum, roundPartials } from '../kernel/exact-sum.js';
import { UserWasmKernel } from '../kernel/user-wasm.js';
import { buildUserKernel } from '../kernel/user-build.js';
import { lastJsonLine, randomPrefix, requireRedis, ROOT, runTtg, startTtg, testEnv } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-user-e2e-'));
const prefixes: string[] = [];
after(async () => {
  for (const prefix of prefixes) await runTtg(['reset'], testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix }), 20_000);
  rmSync(tmp, { recursive: true, force: true });
});

const TOTAL = 200_000;
/** Collatz total stopping times of n = 1 .. total by a memoized recurrence (not the kernel's loop). */
function collatzReference(total: number): { sum: number; max: number; argmax: number } {
  const steps = new Float64Array(total + 1);
  for (let n = 2; n <= total; n++) {
    let m = n;
    let k = 0;
    while (m >= n) {
      m = m % 2 ? 3 * m + 1 : m / 2;
      k++;
    }
    steps[n] = k + steps[m]!;
  }
  const values = Array.from(steps.subarray(1));
  let argmax = 0;
  for (let p = 1; p < values.length; p++) if (values[p]! > values[argmax]!) argmax = p;
  return { sum: exactSum(values), max: values[argmax]!, argmax };
}
const reference = collatzReference(TOTAL);

let collatzWasm = '';
let collatzSha = '';
let otherWasm = '';
let otherSha = '';

before(async () => {
  const built = await buildUserKernel(path.join(ROOT, 'examples', 'collatz.ts'), path.join(tmp, 'collatz.wasm'));
  [collatzWasm, collatzSha] = [built.wasmPath, built.sha256];
  // Another module under the same name: counts one step more.
  const dir = mkdtempSync(path.join(tmp, 'other-'));
  writeFileSync(path.join(dir, 'collatz.ts'), 'export function value(p: i64, total: i64): f64 {\n  let n = <u64>p + 1;\n  let s = 1;\n  while (n != 1) {\n    n = n & 1 ? 3 * n + 1 : n >> 1;\n    s++;\n  }\n  return <f64>s;\n}\n');
  const other = await buildUserKernel(path.join(dir, 'collatz.ts'));
  [otherWasm, otherSha] = [other.wasmPath, other.sha256];
});

function sweepEnv(extra: Record<string, string | number>) {
  // The cache of kernels built on first use goes to this test's directory.
  return testEnv({ TOTAL_PARAMS: TOTAL, CHUNK_SIZE: 20_000, XDG_CACHE_HOME: path.join(tmp, 'cache'), ...extra });
}

function assertCollatzReport(report: Record<string, unknown>, label: string) {
  assert.equal(report['total_params'], TOTAL, label);
  assert.equal(report['grand_sum'], reference.sum, label);
  assert.equal(report['global_min'], 0, label);
  assert.equal(report['argmin'], 0, label);
  assert.equal(report['global_max'], reference.max, label);
  assert.equal(report['argmax'], reference.argmax, label);
  assert.deepEqual(report['missing_chunks'], [], label);
}

test('ttg run with KERNEL=./NAME.ts builds it on first use and gives the reference; the JS twin gives the same report figures', async () => {
  const wasm = await runTtg(['run', '--json'], sweepEnv({ KERNEL: path.join(ROOT, 'examples', 'collatz.ts'), THREADS: 2 }), 120_000);
  assert.equal(wasm.code, 0, wasm.stderr);
  const a = lastJsonLine(wasm.stdout);
  assertCollatzReport(a, 'wasm');
  assert.equal(a['kernel'], 'collatz');
  assert.equal(a['kernel_sha256'], collatzSha, 'the module built on first use is the one ttg kernel build writes');
  const js = await runTtg(['run', '--json'], sweepEnv({ KERNEL: collatzWasm, KERNEL_IMPL: 'js', KERNEL_JS: path.join(ROOT, 'examples', 'collatz.js'), THREADS: 2 }), 120_000);
  assert.equal(js.code, 0, js.stderr);
  assertCollatzReport(lastJsonLine(js.stdout), 'js');
});

test('a bad KERNEL or KERNEL_JS stops ttg worker with exit 2 and one line, before any connection', async () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ KERNEL: 'cubic' }, /KERNEL must be placeholder, mandelbrot or the path of a user kernel/],
    [{ KERNEL: path.join(tmp, 'absent.wasm') }, /KERNEL=.*absent\.wasm: cannot read the kernel module/],
    [{ KERNEL: collatzWasm, KERNEL_IMPL: 'js' }, /KERNEL_IMPL=js with the user kernel .* needs its JS twin: set KERNEL_JS/],
    [{ KERNEL: 'placeholder', KERNEL_JS: path.join(ROOT, 'examples', 'collatz.js') }, /KERNEL_JS .*user kernel/],
  ];
  for (const [extra, message] of cases) {
    // Port 1: a connection attempt would fail differently (exit 1, after the connect timeout).
    const r = await runTtg(['worker'], sweepEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', REDIS_PORT: 1, ...extra }));
    assert.equal(r.code, 2, `${JSON.stringify(extra)}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('Redis: two workers with KERNEL=./NAME.wasm give the reference; a worker with another module is refused, naming both hashes', async () => {
  await requireRedis();
  const prefix = randomPrefix('userk');
  prefixes.push(prefix);
  const env = sweepEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, KERNEL: collatzWasm, IDLE_TIMEOUT_SECONDS: 3 });
  const workers = [0, 1].map((id) => startTtg(['worker'], { ...env, WORKER_ID: String(id) }));
  const codes = await Promise.all(workers.map((w) => w.exited));
  assert.deepEqual(codes, [0, 0], workers.map((w) => w.stderr()).join('\n'));
  const agg = await runTtg(['aggregate', '--json'], env);
  assert.equal(agg.code, 0, agg.stderr);
  const report = lastJsonLine(agg.stdout);
  assertCollatzReport(report, 'redis');
  assert.equal(report['kernel'], 'collatz');
  assert.equal(report['kernel_sha256'], collatzSha);
  const summaries = workers.map((w) => lastJsonLine(w.stdout()));
  assert.equal(summaries.reduce((n, s) => n + Number(s['params_processed']), 0), TOTAL);

  const refused = await runTtg(['worker'], { ...env, KERNEL: otherWasm, WORKER_ID: '9' });
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, new RegExp(`sha-256 ${otherSha}.* here but ${collatzSha} in the queue`));
});

test('static mode with a user kernel: the shares merge to the reference', async () => {
  const files: string[] = [];
  for (const id of [0, 1]) {
    const r = await runTtg(['worker'], sweepEnv({ USE_QUEUE: 'false', TOTAL_WORKERS: 2, WORKER_ID: id, KERNEL: collatzWasm }));
    assert.equal(r.code, 0, r.stderr);
    const summary = lastJsonLine(r.stdout);
    assert.equal(summary['kernel'], 'collatz');
    assert.equal(summary['kernel_sha256'], collatzSha);
    const file = path.join(tmp, `static-${id}.json`);
    writeFileSync(file, r.stdout);
    files.push(file);
  }
  const agg = await runTtg(['aggregate', '--static', '--json', ...files], testEnv({}));
  assert.equal(agg.code, 0, agg.stderr);
  const report = lastJsonLine(agg.stdout);
  assertCollatzReport(report, 'static');
  assert.equal(report['kernel_sha256'], collatzSha);
  // A share computed by another module under the same name is not merged.
  const other = await runTtg(['worker'], sweepEnv({ USE_QUEUE: 'false', TOTAL_WORKERS: 2, WORKER_ID: 1, KERNEL: otherWasm }));
  assert.equal(other.code, 0, other.stderr);
  const otherFile = path.join(tmp, 'static-other.json');
  writeFileSync(otherFile, other.stdout);
  const mixed = await runTtg(['aggregate', '--static', files[0]!, otherFile], testEnv({}));
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, new RegExp(`static-other\\.json:1: kernel_sha256 is ${otherSha} but ${collatzSha} in .*different sweeps`));
});

test('Redis: a kernel that traps fails its chunk, which is retried and dead-lettered naming the parameter; the rest completes', async () => {
  await requireRedis();
  const source = path.join(tmp, 'trapper.ts');
  writeFileSync(source, 'export function value(p: i64, total: i64): f64 {\n  return <f64>(<i64>1000 / (p - 45678)) + 2.0;\n}\n');
  const built = await buildUserKernel(source);
  const prefix = randomPrefix('trap');
  prefixes.push(prefix);
  const env = sweepEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, KERNEL: built.wasmPath, TOTAL_PARAMS: 100_000, CHUNK_SIZE: 10_000,
    IDLE_TIMEOUT_SECONDS: 3, RABBITMQ_MAX_RETRIES: 2, RABBITMQ_RETRY_DELAY_MS: 50, THREADS: 2,
  });
  const r = await runTtg(['worker'], env, 120_000);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /chunk 00004 failed \(attempt 1\): kernel trapper trapped at parameter 45678: WebAssembly trap: .*divi.*zero/i);
  const summary = lastJsonLine(r.stdout);
  assert.equal(summary['chunks_processed'], 9);
  const agg = await runTtg(['aggregate', '--json'], env);
  assert.equal(agg.code, 3, 'incomplete: one chunk dead-lettered');
  const report = lastJsonLine(agg.stdout);
  assert.deepEqual(report['missing_chunks'], ['00004']);
  const dead = report['dead_lettered_chunks'] as Array<{ chunk_id: string; reason: string; attempts: number }>;
  assert.equal(dead.length, 1);
  assert.equal(dead[0]!.chunk_id, '00004');
  assert.equal(dead[0]!.attempts, 2);
  assert.match(dead[0]!.reason, /kernel trapper trapped at parameter 45678/);
  assert.equal(report['total_params'], 90_000);
});

test('every example gives the same report through ttg run and through Redis workers, as WASM and as its JS twin', async () => {
  await requireRedis();
  const total = 100_000;
  for (const name of ['himmelblau', 'monte-carlo-pi', 'collatz', 'placeholder-formula']) {
    const built = await buildUserKernel(path.join(ROOT, 'examples', `${name}.ts`), path.join(tmp, 'examples', `${name}.wasm`));
    // What the sweep must report: the module swept directly over the whole range, in this process.
    const direct = UserWasmKernel.fromFile(built.wasmPath).sweep(0, total, total);
    const expected = {
      total_params: total, grand_sum: roundPartials(direct.partials), global_min: direct.min, argmin: direct.argmin,
      global_max: direct.max, argmax: direct.argmax, kernel: name, kernel_sha256: built.sha256,
    };
    for (const impl of ['wasm', 'js']) {
      const kernelEnv = { KERNEL: built.wasmPath, KERNEL_IMPL: impl, KERNEL_JS: path.join(ROOT, 'examples', `${name}.js`), TOTAL_PARAMS: total, CHUNK_SIZE: 7_000 };
      const run = await runTtg(['run', '--json'], sweepEnv({ ...kernelEnv, THREADS: 2 }), 120_000);
      assert.equal(run.code, 0, run.stderr);
      const prefix = randomPrefix(`ex-${impl}`);
      prefixes.push(prefix);
      const env = sweepEnv({ ...kernelEnv, USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, IDLE_TIMEOUT_SECONDS: 3 });
      const worker = await runTtg(['worker'], env, 120_000);
      assert.equal(worker.code, 0, worker.stderr);
      const agg = await runTtg(['aggregate', '--json'], env);
      assert.equal(agg.code, 0, agg.stderr);
      for (const [how, out] of [['ttg run', run.stdout], ['redis', agg.stdout]] as const) {
        const report = lastJsonLine(out);
        const got = Object.fromEntries(Object.keys(expected).map((k) => [k, report[k]]));
        assert.deepEqual(got, expected, `${name} ${impl} ${how}`);
      }
    }
  }
});

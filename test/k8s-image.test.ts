/**
 * The image's content, without Docker: a directory laid out exactly as k8s/Dockerfile's
 * runtime stage lays out /app (its COPY lines are read and replayed from the built
 * repository, its `npm ci --omit=dev` is run there, its ENV applied), then `ttg worker`
 * runs in it as the entrypoint would: static mode, and queue mode on the real brokers.
 * The directory lives outside the repository so that no dev dependency can be found by
 * walking up to the repository's node_modules.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { golden, lastJsonLine, randomPrefix, requireRabbit, requireRedis, ROOT, testEnv } from './helpers.js';
import { CONTRACT, K8S_DIR, execForm, parseDockerfile, stageCopies, type DockerStage } from './k8s-helpers.js';
import { freePort } from './relay.js';

const stages = parseDockerfile(readFileSync(path.join(K8S_DIR, 'Dockerfile'), 'utf8'));
const runtime = stages.at(-1)!;
let imageDir = '';
const prefixes: { prefix: string; backend: string }[] = [];

/** The repository path a build-stage path corresponds to (the build stage mirrors the repository under its WORKDIR). */
function repoPathOf(stage: DockerStage, absolute: string): string {
  const rel = path.posix.relative(stage.workdir, absolute);
  assert.ok(!rel.startsWith('..'), `${absolute} is under the build stage's WORKDIR ${stage.workdir}`);
  return rel;
}

/** Sources, with a `*` in the last segment expanded against the repository. */
function expand(source: string): string[] {
  const base = path.posix.basename(source);
  if (!base.includes('*')) return [source];
  const dir = path.posix.dirname(source);
  const re = new RegExp('^' + base.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*') + '$');
  return readdirSync(path.join(ROOT, dir)).filter((f) => re.test(f)).map((f) => path.posix.join(dir, f));
}

/**
 * dist/ in the image holds what the build stage compiles: the source folders it copies.
 * The repository's dist/ also has the tests, which the image does not; scripts/ (the bundler, run
 * by the build) is copied but not compiled.
 */
function distFolders(build: DockerStage): string[] {
  return stageCopies(build).filter((c) => c.from === null).flatMap((c) => c.sources)
    .filter((s) => statSync(path.join(ROOT, s)).isDirectory() && s !== 'scripts');
}

/** Replays the runtime stage into `dir` (its WORKDIR). Returns the stage's ENV. */
function layOutRuntimeStage(dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  let workdir = '/';
  const inImage = (dest: string) => {
    const rel = path.posix.relative(workdir, dest);
    assert.ok(!rel.startsWith('..'), `COPY destination ${dest} is under WORKDIR ${workdir}`);
    return path.join(dir, rel);
  };
  const copies = stageCopies(runtime);
  let copyIndex = 0;
  for (const { op, args } of runtime.instructions) {
    if (op === 'WORKDIR') workdir = path.posix.resolve(workdir, args);
    if (op === 'ENV') {
      for (const [, k, v] of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) env[k!] = v!.replace(/^"|"$/g, '');
    }
    if (op === 'COPY') {
      const copy = copies[copyIndex++]!;
      const build = copy.from === null ? null : stages.find((s) => s.name === copy.from);
      if (copy.from !== null) assert.ok(build, `COPY --from=${copy.from} names a stage`);
      for (const source of copy.sources) {
        const repoPath = build ? repoPathOf(build, source) : source;
        for (const file of expand(repoPath)) {
          const target = copy.dest.endsWith('/') ? path.join(inImage(copy.dest), path.basename(file)) : inImage(copy.dest);
          if (file === 'dist') {
            for (const folder of distFolders(build!)) cpSync(path.join(ROOT, 'dist', folder), path.join(target, folder), { recursive: true });
          } else {
            assert.ok(existsSync(path.join(ROOT, file)), `${file} exists in the built repository (npm run build)`);
            mkdirSync(path.dirname(target), { recursive: true });
            cpSync(path.join(ROOT, file), target, { recursive: true });
          }
        }
      }
    }
    if (op === 'RUN') {
      // Only the installs: `npm cache clean` and the like would touch this machine's npm.
      for (const command of args.split('&&').map((s) => s.trim()).filter((s) => s.startsWith('npm ci'))) {
        const r = spawnSync('sh', ['-c', command], { cwd: dir, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
        assert.equal(r.status, 0, `${command}: ${r.stderr}`);
      }
    }
  }
  return env;
}

let imageEnv: Record<string, string> = {};

before(() => {
  imageDir = mkdtempSync(path.join(os.tmpdir(), 'ttg-image-'));
  for (let d = path.dirname(imageDir); ; d = path.dirname(d)) {
    assert.ok(!existsSync(path.join(d, 'node_modules')), `no node_modules above the image directory (${d})`);
    if (d === path.dirname(d)) break;
  }
  imageEnv = layOutRuntimeStage(imageDir);
});

after(async () => {
  for (const { prefix, backend } of prefixes) {
    await runInImage(['reset'], brokerEnv(backend, prefix, {}), 20_000);
  }
  if (imageDir) rmSync(imageDir, { recursive: true, force: true });
});

/** `node dist/engine/cli.js <args>` in the image directory, as the ENTRYPOINT runs it. */
function runInImage(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000) {
  const [node, ...entry] = execForm(runtime, 'ENTRYPOINT');
  assert.equal(node, 'node');
  return new Promise<{ code: number | string; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [...entry, ...args], { cwd: imageDir, env: { ...env, ...imageEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    });
  });
}

function brokerEnv(backend: string, prefix: string, extra: Record<string, string | number>) {
  return testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: backend, QUEUE_PREFIX: prefix, METRICS_PORT: 0, CONNECT_TIMEOUT_SECONDS: 10, ...extra });
}

const ref10k = () => golden().placeholder.find((g) => g.start === 0 && g.end === 10_000)!;

test('the runtime stage holds production dependencies, dist/, the compiled kernel and the Lua scripts, and nothing of the tests', () => {
  for (const needed of [
    'package.json', 'dist/engine/cli.js', 'dist/kernel/wasm.js', 'build/kernel.wasm', 'backends/redis/init-7.lua', 'node_modules/piscina',
    'node_modules/prom-client', 'engine/web/index.html', 'node_modules/uplot/dist/uPlot.iife.min.js',
    // What `ttg kernel build` needs at run time: the compiler, the wrapper and the statistics.
    'node_modules/assemblyscript/dist/asc.js', 'kernel/assembly/stats.ts', 'kernel/assembly/user-kernel.ts',
  ]) {
    assert.ok(existsSync(path.join(imageDir, needed)), `/app/${needed}`);
  }
  for (const devOnly of [
    // (assemblyscript is a runtime dependency since `ttg kernel build` compiles user kernels.)
    'node_modules/typescript', 'node_modules/kubernetes-models', 'node_modules/playwright-core', 'dist/test', 'test', 'kernel/assembly/index.ts',
  ]) {
    assert.ok(!existsSync(path.join(imageDir, devOnly)), `no /app/${devOnly}`);
  }
  assert.equal(imageEnv['NODE_ENV'], 'production');
  assert.deepEqual(execForm(runtime, 'CMD'), CONTRACT.command);
});

test('ttg worker runs from the image layout in static mode and computes the exact share', async () => {
  const r = await runInImage(['worker'], testEnv({ USE_QUEUE: 'false', TOTAL_PARAMS: 10_000, TOTAL_WORKERS: 1, WORKER_ID: 0, METRICS_PORT: 0 }));
  assert.equal(r.code, 0, r.stderr);
  const s = lastJsonLine(r.stdout);
  const ref = ref10k();
  assert.equal(s['mode'], 'static');
  assert.equal(s['status'], 'completed');
  const agg = s['aggregates'] as Record<string, number>;
  assert.equal(agg['count'], ref.count);
  assert.equal(agg['sum'], ref.sum);
  assert.equal(agg['min'], ref.min);
  assert.equal(agg['max'], ref.max);
});

for (const [backend, requireServer] of [['redis', requireRedis], ['rabbitmq', requireRabbit]] as const) {
  test(`ttg worker runs from the image layout in queue mode on ${backend}, and ttg aggregate from it reads the exact sum`, async () => {
    await requireServer();
    const prefix = randomPrefix(`image-${backend}`);
    prefixes.push({ prefix, backend });
    const r = await runInImage(['worker'], brokerEnv(backend, prefix, { TOTAL_PARAMS: 10_000, CHUNK_SIZE: 500, WORKER_ID: 0 }));
    assert.equal(r.code, 0, r.stderr);
    const s = lastJsonLine(r.stdout);
    assert.equal(s['mode'], 'queue');
    assert.equal(s['status'], 'completed');
    assert.equal(s['chunks_processed'], 20);
    const a = await runInImage(['aggregate', '--json'], brokerEnv(backend, prefix, {}), 30_000);
    assert.equal(a.code, 0, a.stderr);
    const report = lastJsonLine(a.stdout);
    assert.equal(report['grand_sum'], ref10k().sum);
    assert.equal(report['total_chunks'], 20);
    assert.deepEqual(report['missing_chunks'], []);
  });
}

test('ttg monitor --web serves its page and uPlot from the image layout (no CDN, no dev dependency), and stops on SIGTERM', async () => {
  await requireRedis();
  const prefix = randomPrefix('image-web');
  const port = await freePort();
  const [, ...entry] = execForm(runtime, 'ENTRYPOINT');
  const child = spawn(process.execPath, [...entry, 'monitor', '--web', '--port', String(port), '--host', '127.0.0.1'], {
    cwd: imageDir, env: { ...brokerEnv('redis', prefix, {}), ...imageEnv }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  try {
    const get = async (p: string) => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        try {
          const res = await fetch(`http://127.0.0.1:${port}${p}`);
          return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`nothing answers on ${port}: ${stderr}`, { cause: err });
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    };
    const page = await get('/');
    assert.equal(page.status, 200);
    assert.match(page.body, /<script src="\/vendor\/uPlot\.iife\.min\.js">/);
    assert.doesNotMatch(page.body, /https?:\/\//, 'the page loads nothing from another host');
    const uplot = await get('/vendor/uPlot.iife.min.js');
    assert.equal(uplot.status, 200);
    assert.match(uplot.type, /javascript/);
    assert.equal(uplot.body, readFileSync(path.join(imageDir, 'node_modules/uplot/dist/uPlot.iife.min.js'), 'utf8'));
    for (const asset of ['/app.js', '/style.css', '/vendor/uPlot.min.css']) assert.equal((await get(asset)).status, 200, asset);
    const deadline = Date.now() + 15_000;
    let snapshot = JSON.parse((await get('/snapshot.json')).body);
    while (!snapshot.broker.ok) {
      assert.ok(Date.now() < deadline, `the monitor reaches Redis: ${JSON.stringify(snapshot.broker)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      snapshot = JSON.parse((await get('/snapshot.json')).body);
    }
    assert.equal(snapshot.sweep, null, 'no sweep under a fresh prefix');
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
});

test('ttg kernel build and check run from the image layout: a user kernel compiles there, as a derived image does it', async () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'ttg-image-kernel-'));
  try {
    const source = path.join(ROOT, 'examples', 'collatz.ts');
    const built = await runInImage(['kernel', 'build', source, '--out', path.join(out, 'collatz.wasm')], testEnv({}));
    assert.equal(built.code, 0, built.stderr);
    const sha = /^sha256 ([0-9a-f]{64})$/m.exec(built.stdout)?.[1];
    assert.equal(sha, createHash('sha256').update(readFileSync(path.join(out, 'collatz.wasm'))).digest('hex'));
    const checked = await runInImage(['kernel', 'check', path.join(out, 'collatz.wasm'), '--twin', path.join(ROOT, 'examples', 'collatz.js'), '--total', '100000'], testEnv({}));
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    assert.match(checked.stdout, /statistics of \[0, 100000\) agree: sum \d+, min 0 at 0, max 350 at 77030/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('the derived image of k8s/user-kernel/Dockerfile, replayed on this layout, runs ttg worker with the built-in user kernel', async () => {
  const [derived] = parseDockerfile(readFileSync(path.join(K8S_DIR, 'user-kernel', 'Dockerfile'), 'utf8'));
  assert.equal(derived!.workdir, runtime.workdir);
  // ARG defaults, then each instruction in order: COPY from the build context (examples/, as the header says), RUN, ENV.
  const args: Record<string, string> = {};
  const expandArgs = (text: string) => text.replace(/\$\{(\w+)\}/g, (_, name: string) => args[name] ?? '');
  const derivedEnv: Record<string, string> = {};
  let sha = '';
  for (const { op, args: line } of derived!.instructions) {
    if (op === 'ARG') {
      const [name, value] = line.split('=');
      args[name!] = value ?? '';
    } else if (op === 'COPY') {
      const words = expandArgs(line).split(/\s+/).filter((w) => !w.startsWith('--'));
      const dest = path.join(imageDir, path.posix.relative(derived!.workdir, path.posix.resolve(derived!.workdir, words.pop()!)));
      mkdirSync(dest, { recursive: true });
      for (const source of words) cpSync(path.join(ROOT, 'examples', source), path.join(dest, source));
    } else if (op === 'RUN') {
      const [node, ...argv] = expandArgs(line).split(/\s+/);
      assert.equal(node, 'node');
      const built = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, argv, { cwd: imageDir, env: { ...testEnv({}), ...imageEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
        child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      });
      assert.equal(built.code, 0, built.stderr);
      sha = /^sha256 ([0-9a-f]{64})$/m.exec(built.stdout)?.[1] ?? '';
    } else if (op === 'ENV') {
      for (const [, k, v] of expandArgs(line).matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(\S+)/g)) derivedEnv[k!] = v!;
    }
  }
  assert.match(sha, /^[0-9a-f]{64}$/, 'the build printed the module\'s hash');
  const r = await runInImage(['worker'], testEnv({ ...derivedEnv, USE_QUEUE: 'false', TOTAL_PARAMS: 100_000, TOTAL_WORKERS: 1, WORKER_ID: 0 }));
  assert.equal(r.code, 0, r.stderr);
  const s = lastJsonLine(r.stdout);
  assert.deepEqual([s['kernel'], s['kernel_sha256'], s['status']], ['collatz', sha, 'completed']);
  const agg = s['aggregates'] as Record<string, number>;
  // Below 10^5 the longest Collatz trajectory is 350 steps, from 77031 (parameter 77030).
  assert.deepEqual([agg['count'], agg['min'], agg['max'], agg['argmax']], [100_000, 0, 350, 77_030]);
  const twin = await runInImage(['worker'], testEnv({ ...derivedEnv, KERNEL_IMPL: 'js', USE_QUEUE: 'false', TOTAL_PARAMS: 100_000, TOTAL_WORKERS: 1, WORKER_ID: 0 }));
  assert.equal(twin.code, 0, twin.stderr);
  assert.equal((lastJsonLine(twin.stdout)['aggregates'] as Record<string, number>)['sum'], agg['sum'], 'the twin from the image gives the same sum');
});


/**
 * The `ttg` command's own surface: version, help for every command (checked
 * against what each command's parser accepts), exit statuses, and merging
 * static workers' summaries with `ttg aggregate --static`.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { COMMAND_HELP } from '../engine/help.js';
import { CLI, golden, lastJsonLine, randomPrefix, requireRabbit, requireRedis, ROOT, runTtg, testEnv } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-cli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('ttg --version prints the package version', async () => {
  const version = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
  for (const arg of ['--version', '-V', 'version']) {
    const r = await runTtg([arg], testEnv({}));
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `ttg ${version}\n`);
  }
});

test('every command has help, and its help lists exactly the flags its parser accepts', async () => {
  const overview = await runTtg(['help'], testEnv({}));
  assert.equal(overview.code, 0);
  for (const [name, h] of Object.entries(COMMAND_HELP)) {
    assert.ok(overview.stdout.includes(h.usage.replace(/^ttg /, '')), `the overview shows ${name}'s usage with its flags`);
    for (const args of [['help', name], [name, '--help'], [name, '-h']]) {
      const r = await runTtg(args, testEnv({}));
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: ttg ${name}`));
    }
    // The parser names what it knows when given a flag it does not.
    const bad = await runTtg([name, '--no-such-flag'], testEnv({ REDIS_PORT: 1, RABBITMQ_PORT: 1 }));
    assert.equal(bad.code, 2, `${name}: ${bad.stderr}`);
    const known = /known: (.*)$/m.exec(bad.stderr)?.[1] ?? '';
    // aggregate takes --host/--port only to say that the broker's address comes from the environment.
    const accepted = known === 'none' ? [] : known.split(', ').filter((f) => name !== 'aggregate' || !['--host', '--port'].includes(f));
    const documented = h.flags.map(([flag]) => flag.split(' ')[0]!);
    assert.deepEqual([...accepted].sort(), [...documented].sort(), `${name}: help and parser agree`);
  }
  const unknown = await runTtg(['help', 'frobnicate'], testEnv({}));
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
});

test('ttg aggregate says where the broker address comes from when given the old --port flag', async () => {
  const r = await runTtg(['aggregate', '--port', '6380'], testEnv({}));
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /address comes from the environment \(REDIS_HOST\/REDIS_PORT/);
});

/** Runs static worker `id` of `workers` and keeps its stdout in a file, as a user's shell would. */
async function staticWorker(id: number, workers: number, total: number, extra: Record<string, string | number> = {}): Promise<string> {
  const r = await runTtg(['worker'], testEnv({ USE_QUEUE: 'false', TOTAL_PARAMS: total, TOTAL_WORKERS: workers, WORKER_ID: id, CHUNK_SIZE: 1000, ...extra }));
  assert.equal(r.code, 0, r.stderr);
  const file = path.join(tmp, `w${id}-of-${workers}-${total}-${Object.values(extra).join('-')}.json`);
  writeFileSync(file, r.stdout);
  return file;
}

test('ttg aggregate --static merges static workers\' summaries exactly and says which shares are missing', async () => {
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 100000)!;
  const files = await Promise.all([0, 1, 2].map((id) => staticWorker(id, 3, 100000)));
  const all = await runTtg(['aggregate', '--static', '--json', ...files], testEnv({}));
  assert.equal(all.code, 0, all.stderr);
  const report = lastJsonLine(all.stdout);
  assert.equal(report['grand_sum'], ref.sum);
  assert.equal(report['total_params'], ref.count);
  assert.equal(report['global_min'], ref.min);
  assert.equal(report['global_max'], ref.max);
  assert.deepEqual([report['argmin'], report['argmax']], [141, 998]);
  assert.deepEqual(report['missing_chunks'], []);
  assert.equal(report['expected_chunks'], 3);

  // One share given twice, one left out: counted once, and the missing one named; exit 3.
  const partial = await runTtg(['aggregate', '--static', '--json', files[0]!, files[1]!, files[0]!], testEnv({}));
  assert.equal(partial.code, 3, partial.stderr);
  const p = lastJsonLine(partial.stdout);
  assert.deepEqual(p['missing_chunks'], ['2']);
  assert.equal(p['duplicate_results'], 1);
  assert.equal(p['total_params'], 66666);

  // From stdin, as `cat w*.json | ttg aggregate --static`.
  const child = spawn(process.execPath, [CLI, 'aggregate', '--static'], { env: testEnv({}), stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stdin.end(files.map((f) => readFileSync(f, 'utf8')).join(''));
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0);
  assert.match(out, /Grand sum\s+: 50,003,550\n/);
  assert.match(out, /Minimum\s+: 0\.41 at parameter 141\n/);
});

test('ttg aggregate --static refuses summaries of different sweeps, naming the file', async () => {
  const a = await staticWorker(0, 2, 4000);
  const b = await staticWorker(1, 2, 6000);
  const r = await runTtg(['aggregate', '--static', a, b], testEnv({}));
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`${path.basename(b)}:\\d+: total_params is 6000 but 4000 in .*different sweeps`));
  const empty = path.join(tmp, 'empty.json');
  writeFileSync(empty, 'not a summary\n');
  const none = await runTtg(['aggregate', '--static', empty], testEnv({}));
  assert.equal(none.code, 1);
  assert.match(none.stderr, /holds no static worker summary/);
});

test('./ttg runs the command as one process: the PID a shell gets is node itself, and a kill reaches the worker', async () => {
  const child = spawn(path.join(ROOT, 'ttg'), ['worker'], {
    env: testEnv({ USE_QUEUE: 'false', TOTAL_WORKERS: 1, TOTAL_PARAMS: 100000, SIMULATE_WORK_MS: 1 }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const closed = new Promise<[number | null, string | null]>((resolve) => child.on('close', (code, signal) => resolve([code, signal])));
  // Wait until the worker logs its share: by then the script has exec'd node.
  const deadline = Date.now() + 20_000;
  while (!/static share/.test(err)) {
    assert.ok(Date.now() < deadline, `the worker never started: ${err}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
  assert.equal(path.basename(cmdline[0]!), path.basename(process.execPath), `the process is node, not a shell: ${cmdline.join(' ')}`);
  assert.ok(cmdline.some((a) => a.endsWith('dist/engine/cli.js')));
  child.kill('SIGKILL');
  assert.deepEqual(await closed, [null, 'SIGKILL']);
});

test('a worker names a misspelt variable and echoes the settings it really runs with', async () => {
  const r = await runTtg(['worker'], testEnv({ USE_QUEUE: 'false', TOTAL_WORKERS: 1, TOTAL_PARAM: 2000, CHUNKSIZE: 500 }));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /TOTAL_PARAM is not a ttg variable and is ignored: did you mean TOTAL_PARAMS\?/);
  assert.match(r.stderr, /CHUNKSIZE is not a ttg variable and is ignored: did you mean CHUNK_SIZE\?/);
  assert.match(r.stderr, /starting: static mode, worker 0 of 1: 10,000 params in chunks of 100, kernel placeholder/);
  assert.equal(lastJsonLine(r.stdout)['params_processed'], 10000, 'the defaults ran, as the warning said');
});

/** Runs `ttg <args>` at a terminal (a pty from util-linux's script), typing `answer`. */
async function atTerminal(args: string[], env: NodeJS.ProcessEnv, answer: string): Promise<{ code: number | null; output: string }> {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a}'`).join(' ');
  const child = spawn('script', ['-qec', command, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (b: Buffer) => {
    output += b.toString();
    // Answer once the question is on the screen, as a person would.
    if (/\[y\/N\]/.test(output) && !child.stdin.writableEnded) child.stdin.end(answer + '\n');
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, output };
}

test('ttg reset asks at a terminal before deleting a sweep; --yes and scripts are not asked', async () => {
  await requireRedis();
  const prefix = randomPrefix('reset-ask');
  const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, TOTAL_PARAMS: 1000, CHUNK_SIZE: 100 });
  try {
    assert.equal((await runTtg(['worker'], env)).code, 0);
    const no = await atTerminal(['reset'], env, 'n');
    assert.match(no.output, /Delete a sweep of 1,000 params \(kernel placeholder\) with its results under QUEUE_PREFIX=\S+ on redis\? \[y\/N\]/);
    assert.equal(no.code, 1);
    assert.match(no.output, /nothing deleted/);
    assert.equal((await runTtg(['aggregate', '--json'], env)).code, 0, 'the sweep is still there');
    const yes = await atTerminal(['reset'], env, 'y');
    assert.equal(yes.code, 0, yes.output);
    assert.match((await runTtg(['aggregate'], env)).stderr, /no sweep found/, 'deleted');
    // Scripts (no terminal) and --yes go straight ahead.
    assert.equal((await runTtg(['worker'], env)).code, 0);
    const forced = await atTerminal(['reset', '--yes'], env, 'n');
    assert.equal(forced.code, 0, forced.output);
    assert.doesNotMatch(forced.output, /\[y\/N\]/);
    assert.match((await runTtg(['aggregate'], env)).stderr, /no sweep found/);
  } finally {
    await runTtg(['reset'], env);
  }
});

test('a worker that finishes a short sweep says nothing at LOG_LEVEL=warn', async () => {
  await requireRedis();
  await requireRabbit();
  for (const backend of ['redis', 'rabbitmq']) {
    const prefix = randomPrefix('quiet');
    // One chunk: the worker is done, and closes, before its background steps (Redis: the settle subscription) are.
    const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: backend, QUEUE_PREFIX: prefix, TOTAL_PARAMS: 1000, CHUNK_SIZE: 1000, LOG_LEVEL: 'warn' });
    try {
      for (let run = 0; run < 3; run++) {
        const r = await runTtg(['worker'], { ...env, QUEUE_PREFIX: `${prefix}-${run}` });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stderr, '', `${backend}: a worker of a one-chunk sweep printed:\n${r.stderr}`);
      }
    } finally {
      for (let run = 0; run < 3; run++) await runTtg(['reset', '--yes'], { ...env, QUEUE_PREFIX: `${prefix}-${run}` });
    }
  }
});

test('with LOG_FORMAT=json every stderr line is JSON, the client library\'s own warnings included', async () => {
  await requireRedis();
  const prefix = randomPrefix('json-lines');
  // A password the server does not need: ioredis prints its own "[WARN] ... a password was supplied".
  const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, TOTAL_PARAMS: 1000, REDIS_PASSWORD: 'pw-x9z-unneeded', LOG_FORMAT: 'json' });
  try {
    const r = await runTtg(['worker'], env);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), `not JSON: ${line}`);
    assert.ok(lines.map((l) => JSON.parse(l)).some((o) => o.level === 'warn' && o.name === 'library' && /does not require a password/.test(o.msg)),
      'the library\'s warning came through the logger');
    assert.doesNotMatch(r.stderr + r.stdout, /pw-x9z-unneeded/);
  } finally {
    await runTtg(['reset'], env);
  }
});

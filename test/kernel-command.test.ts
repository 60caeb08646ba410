/**
 * `ttg kernel init|build|check` as a user runs them: real `ttg` processes in
 * a temporary directory, from the starter kernel to a twin that disagrees.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { CLI, ROOT, testEnv } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-kernel-cmd-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs `ttg <args>` in `cwd`, as a user in that directory would. */
function ttg(args: string[], cwd = tmp): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: testEnv({}), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('kernel init writes a kernel, its twin and a README, and never overwrites them', async () => {
  const r = await ttg(['kernel', 'init', 'starter']);
  assert.equal(r.code, 0, r.stderr);
  for (const f of ['starter.ts', 'starter.js', 'starter.README.md']) assert.ok(existsSync(path.join(tmp, f)), f);
  assert.match(readFileSync(path.join(tmp, 'starter.ts'), 'utf8'), /export function value\(p: i64, total: i64\): f64/);
  assert.match(readFileSync(path.join(tmp, 'starter.README.md'), 'utf8'), /ttg kernel build starter\.ts/);
  const again = await ttg(['kernel', 'init', 'starter']);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /starter\.ts already exists: ttg kernel init never overwrites/);
  const badName = await ttg(['kernel', 'init', '9lives']);
  assert.equal(badName.code, 2);
  assert.match(badName.stderr, /NAME must start with a letter/);
});

test('kernel build prints the module\'s path and its sha-256; check agrees with the starter twin', async () => {
  await ttg(['kernel', 'init', 'built', '--dir', tmp], ROOT);
  const r = await ttg(['kernel', 'build', 'built.ts']);
  assert.equal(r.code, 0, r.stderr);
  const [, wasmPath, sha] = /^kernel built: (.+)\nsha256 ([0-9a-f]{64})\n$/.exec(r.stdout) ?? [];
  assert.equal(wasmPath, 'built.wasm');
  assert.equal(sha, createHash('sha256').update(readFileSync(path.join(tmp, 'built.wasm'))).digest('hex'));
  const check = await ttg(['kernel', 'check', 'built.ts']);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /^built\.ts vs built\.js: [\d,]+ values agree bit for bit \(\d+ ranges of \[0, 1000000\), seed 1\)\n/);
  // The starter is (p/total - 1/3)^2: smallest at the parameter nearest total/3.
  const whole = await ttg(['kernel', 'check', 'built.wasm', '--total', '300']);
  assert.equal(whole.code, 0, whole.stdout);
  assert.match(whole.stdout, /statistics of \[0, 300\) agree: sum [\d.e-]+, min 0 at 100, max [\d.]+ at 299\n$/);
});

test('kernel check names the first parameter where the twin differs, with both values, and exits 1', async () => {
  await ttg(['kernel', 'init', 'skewed']);
  // 4096 is a WASM block edge, always among the checked ranges.
  writeFileSync(path.join(tmp, 'skewed-twin.js'), `export function value(p, total) {
  const x = p / total;
  const d = x - 1 / 3;
  return p === 4096 ? d * d * 2 : d * d;
}
`);
  const r = await ttg(['kernel', 'check', 'skewed.ts', '--twin', 'skewed-twin.js', '--seed', '3']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const [, wasmValue, jsValue] = /^skewed\.ts vs skewed-twin\.js: mismatch at p=4096: wasm (\S+) js (\S+)\n$/.exec(r.stdout) ?? [];
  assert.equal(Number(wasmValue), (4096 / 1e6 - 1 / 3) ** 2, r.stdout);
  assert.equal(Number(jsValue), 2 * Number(wasmValue));
  const noTwin = await ttg(['kernel', 'check', path.join(ROOT, 'test', 'nothing.ts')]);
  assert.equal(noTwin.code, 2);
  assert.match(noTwin.stderr, /no twin for .*nothing\.ts: .*nothing\.js does not exist; name it with --twin FILE/);
});

test('kernel build shows compile errors at the user\'s file and line and exits 1; usage errors exit 2', async () => {
  writeFileSync(path.join(tmp, 'broken.ts'), 'export function value(p: i64, total: i64): f64 {\n  return p * 0.5 +;\n}\n');
  const r = await ttg(['kernel', 'build', 'broken.ts']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^ttg kernel: broken\.ts does not compile \(1 error\):\nbroken\.ts:2:\d+ - error TS\d+: .*\n  2 \|   return p \* 0\.5 \+;/);
  assert.ok(!existsSync(path.join(tmp, 'broken.wasm')));
  for (const [args, message] of [
    [['kernel'], /a subcommand is needed/],
    [['kernel', 'compile', 'x.ts'], /unknown subcommand "compile"/],
    [['kernel', 'build'], /needs a kernel file/],
    [['kernel', 'build', 'x.js'], /takes an AssemblyScript file ending in \.ts/],
    [['kernel', 'check', 'broken.ts', '--out', 'x'], /--out is a flag of "ttg kernel build", not of "ttg kernel check"/],
    [['kernel', 'check', 'broken.ts', '--total', 'lots'], /--total must be an integer >= 1, got "lots"/],
  ] as const) {
    const u = await ttg([...args]);
    assert.equal(u.code, 2, `${args.join(' ')}: ${u.stderr}`);
    assert.match(u.stderr, message);
    assert.equal(u.stderr.trim().split('\n').length, 1, u.stderr);
  }
});

test('kernel check passes on every example kernel and its twin', async () => {
  for (const name of ['himmelblau', 'monte-carlo-pi', 'collatz']) {
    const r = await ttg(['kernel', 'check', path.join('examples', `${name}.ts`), '--total', '2000000'], ROOT);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /values agree bit for bit/);
  }
});

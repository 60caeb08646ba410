/**
 * User kernels (docs/design.md, "User kernels"): the three examples built with
 * the public interface only, against reference statistics computed by other
 * methods (exact integer and rational arithmetic, a memoized recurrence, a
 * BigInt Philox, the known records), WASM against the JS twin bit for bit,
 * the inlining of value() checked in the module itself, and every way a
 * kernel can fail (NaN, ±Infinity, traps, aborts, compile errors, impure
 * imports) turned into an error naming the parameter or the line.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KernelBuildError, KernelLoadError, KernelTrapError, KernelValueError } from '../kernel/errors.js';
import { exactSum, roundPartials } from '../kernel/exact-sum.js';
import { buildUserKernel, cachedUserKernel, compileUserKernel } from '../kernel/user-build.js';
import { checkKernel } from '../kernel/user-check.js';
import { UserJsKernel } from '../kernel/user-js.js';
import { UserWasmKernel, type UserKernelRunner } from '../kernel/user-wasm.js';
import { WasmKernelRunner } from '../kernel/wasm.js';
import { benchUserKernels } from '../bench/user-kernels.js';
import { random, ROOT } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-user-kernels-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const EXAMPLES = ['himmelblau', 'monte-carlo-pi', 'collatz'] as const;
const kernels = new Map<string, { wasm: UserWasmKernel; js: UserJsKernel; text: string }>();

before(async () => {
  for (const name of EXAMPLES) {
    const compiled = await compileUserKernel(path.join(ROOT, 'examples', `${name}.ts`), { text: true });
    kernels.set(name, {
      wasm: new UserWasmKernel(compiled.bytes as Uint8Array<ArrayBuffer>, name),
      js: await UserJsKernel.fromFile(path.join(ROOT, 'examples', `${name}.js`)),
      text: compiled.text!,
    });
  }
});

function example(name: (typeof EXAMPLES)[number]) {
  return kernels.get(name)!;
}

/** Writes a kernel (and optionally its twin) into the temp dir; returns the .ts path. */
function writeKernel(name: string, source: string, twin?: string): string {
  const file = path.join(tmp, `${name}.ts`);
  writeFileSync(file, source);
  if (twin !== undefined) writeFileSync(path.join(tmp, `${name}.js`), twin);
  return file;
}

async function wasmOf(name: string, source: string): Promise<UserWasmKernel> {
  const compiled = await compileUserKernel(writeKernel(name, source));
  return new UserWasmKernel(compiled.bytes as Uint8Array<ArrayBuffer>, name);
}

/** Both runners give the same statistics (rounded sum included) over [start, end). */
function assertSameStats(a: UserKernelRunner, b: UserKernelRunner, start: number, end: number, total: number) {
  const s = a.sweep(start, end, total);
  const t = b.sweep(start, end, total);
  assert.deepEqual(
    { count: s.count, min: s.min, max: s.max, argmin: s.argmin, argmax: s.argmax, sum: roundPartials(s.partials) },
    { count: t.count, min: t.min, max: t.max, argmin: t.argmin, argmax: t.argmax, sum: roundPartials(t.partials) },
    `[${start}, ${end}) of ${total}`,
  );
  return s;
}

test('himmelblau: min 0 at (3, 2) = parameter 700800, max and sum as exact integer arithmetic gives them', () => {
  const { wasm, js } = example('himmelblau');
  const total = 1_000_000;
  const s = assertSameStats(wasm, js, 0, total, total);
  // Reference by exact integers: with i' = i - 500, j' = j - 500, 10^8 f = (i'^2 + 100 j' - 110000)^2 + (100 i' + j'^2 - 70000)^2,
  // an integer below 2^53 at every grid point: no rounding anywhere.
  let best = Infinity, bestAt = -1, worst = -Infinity, worstAt = -1;
  let sum = 0n;
  for (let p = 0; p < total; p++) {
    const i = (p % 1000) - 500;
    const j = Math.floor(p / 1000) - 500;
    const a = i * i + 100 * j - 110_000;
    const b = 100 * i + j * j - 70_000;
    const f = a * a + b * b;
    if (f < best) [best, bestAt] = [f, p];
    if (f > worst) [worst, worstAt] = [f, p];
    sum += BigInt(f);
  }
  assert.equal(s.count, total);
  assert.equal(best, 0);
  assert.equal(s.min, 0);
  assert.equal(s.argmin, 700_800); // x = 3, y = 2: the one minimum of f on the grid
  assert.equal(bestAt, 700_800);
  assert.equal(s.argmax, worstAt);
  assert.equal(worstAt, 999_999); // the corner (4.99, 4.99)
  assert.ok(Math.abs(s.max - worst / 1e8) <= 1e-12, `max ${s.max} vs ${worst / 1e8}`);
  // Each value is rounded a few times in f64; the sum of a million of them is within 1e-12 relative.
  const exact = Number(sum) / 1e8;
  assert.ok(Math.abs(roundPartials(s.partials) - exact) <= 1e-12 * exact, `sum ${roundPartials(s.partials)} vs ${exact}`);
  // And the sum in closed form from power sums of k/100, k = -500..499 (a third method).
  const N = 1000n;
  const S = (m: number) => {
    let t = 0n;
    for (let k = -500n; k < 500n; k++) t += k ** BigInt(m);
    return t;
  };
  // sum f = 2N X4 - 34N X2 + 4 X1 X2 - 36N X1 + 170 N^2, Xm = S_m / 100^m; times 10^8:
  const closed = 2n * N * S(4) - 34n * N * S(2) * 10_000n + 4n * S(1) * S(2) * 100n - 36n * N * S(1) * 1_000_000n + 170n * N * N * 100_000_000n;
  assert.equal(closed, sum);
});

/** Philox2x32-10 in BigInt, written from the paper's definition: the independent reference for monte-carlo-pi. */
function philoxReference(p: number): [bigint, bigint] {
  const M = 0xd256d193n, W = 0x9e3779b9n, MASK = 0xffffffffn;
  let c0 = BigInt(p) & MASK;
  let c1 = BigInt(p) >> 32n;
  let key = 0x5eed1234n;
  for (let round = 0; round < 10; round++) {
    const product = M * c0;
    [c0, c1] = [(product >> 32n) ^ key ^ c1, product & MASK];
    key = (key + W) & MASK;
  }
  return [c0, c1];
}

test('monte-carlo-pi: hits as a BigInt Philox2x32-10 counts them, and the average within 5 sigma of pi', () => {
  const { wasm, js } = example('monte-carlo-pi');
  const n = 20_000;
  let hits = 0, firstHit = -1, firstMiss = -1;
  for (let p = 0; p < n; p++) {
    const [x, y] = philoxReference(p);
    // u^2 + v^2 <= 1 with u = (x + 0.5) / 2^32: exactly (2x + 1)^2 + (2y + 1)^2 <= 2^66.
    const inside = (2n * x + 1n) ** 2n + (2n * y + 1n) ** 2n <= 2n ** 66n;
    if (inside) {
      hits++;
      if (firstHit < 0) firstHit = p;
    } else if (firstMiss < 0) firstMiss = p;
  }
  const s = assertSameStats(wasm, js, 0, n, 1_000_000);
  assert.equal(roundPartials(s.partials), 4 * hits);
  assert.deepEqual([s.min, s.argmin, s.max, s.argmax], [0, firstMiss, 4, firstHit]);
  // A million draws: the mean of 4·Bernoulli(pi/4) has sigma 4 sqrt(q(1-q)/n), q = pi/4.
  const big = wasm.sweep(0, 1_000_000, 1_000_000);
  const avg = roundPartials(big.partials) / big.count;
  const sigma = 4 * Math.sqrt((Math.PI / 4) * (1 - Math.PI / 4) / 1_000_000);
  assert.ok(Math.abs(avg - Math.PI) < 5 * sigma, `average ${avg} vs pi, sigma ${sigma}`);
  // Counter-based: a parameter's draw does not depend on where the slice starts.
  const a = wasm.values(123_456, 123_556, 1_000_000);
  const b = wasm.values(123_400, 123_600, 1_000_000).subarray(56, 156);
  assert.deepEqual(Array.from(a), Array.from(b));
});

test('collatz: statistics as a memoized recurrence gives them, and the known record 524 steps at n = 837799', () => {
  const { wasm, js } = example('collatz');
  const total = 1_000_000;
  // Reference: steps(n) = steps of the trajectory until it drops below n, plus the known steps there.
  const steps = new Float64Array(total + 1);
  for (let n = 2; n <= total; n++) {
    let m = n, k = 0;
    while (m >= n) {
      m = m % 2 ? 3 * m + 1 : m / 2;
      k++;
    }
    steps[n] = k + steps[m]!;
  }
  const values = Array.from(steps.subarray(1)); // p = n - 1
  const s = wasm.sweep(0, total, total);
  assert.equal(roundPartials(s.partials), exactSum(values));
  assert.deepEqual([s.min, s.argmin, s.max, s.argmax], [0, 0, 524, 837_798]);
  assert.equal(wasm.values(26, 27, total)[0], 111); // 27 takes 111 steps
  // The twin over a part (it is ten times slower), and the records below 10^4: 261 steps at 6171.
  const t = assertSameStats(wasm, js, 0, 10_000, total);
  assert.deepEqual([t.max, t.argmax], [261, 6170]);
});

test('every example: WASM and its JS twin agree bit for bit on the edges and on seeded random ranges', () => {
  for (const name of EXAMPLES) {
    const { wasm, js } = example(name);
    const outcome = checkKernel(wasm, js, { total: 10_000_000, seed: 7, statsRange: 20_000 });
    assert.ok(outcome.ok, `${name}: ${outcome.ok ? '' : outcome.message}`);
    assert.ok(outcome.values > 20_000, `${name}: ${outcome.values} values compared`);
    const rand = random(11);
    for (let i = 0; i < 5; i++) {
      const start = Math.floor(rand() * 9_000_000);
      assertSameStats(wasm, js, start, start + 1 + Math.floor(rand() * 5000), 10_000_000);
    }
  }
});

test('the check finds a twin that differs at one parameter, and names it with both values', () => {
  const { wasm, js } = example('himmelblau');
  const off = new UserJsKernel((p: number, total: number) => {
    const v = js.values(p, p + 1, total)[0]!;
    return p === 4096 ? v + 1e-9 : v;
  }, 'himmelblau');
  const outcome = checkKernel(wasm, off, { total: 1_000_000, seed: 1 });
  assert.equal(outcome.ok, false);
  assert.match(outcome.ok ? '' : outcome.message, /^mismatch at p=4096: wasm 184\.\d+ js 184\.\d+$/);
});

test('value() is inlined into the block loop: the module has no function for it (and the test would see one)', async () => {
  for (const name of EXAMPLES) {
    const functions = [...example(name).text.matchAll(/^\s*\(func (\$\S+)/gm)].map((m) => m[1]!);
    assert.ok(functions.length > 5, `${name}: functions found in the text: ${functions.join(' ')}`);
    assert.ok(!functions.some((f) => /\/value$/.test(f)), `${name}: ${functions.join(' ')}`);
  }
  // A control: a recursive helper cannot be inlined; it stays a function, and is seen.
  const control = await compileUserKernel(
    writeKernel('control', `function countdown(n: i64): f64 {
  return n <= 0 ? 0.0 : 1.0 + countdown(n - 1);
}
export function value(p: i64, total: i64): f64 {
  return countdown(p % 5);
}
`),
    { text: true },
  );
  const functions = [...control.text!.matchAll(/^\s*\(func (\$\S+)/gm)].map((m) => m[1]!);
  assert.ok(functions.includes('$control/countdown'), functions.join(' '));
});

test('a NaN or an Infinity fails the slice naming the first parameter that gave it, in WASM and JS alike', async () => {
  const cases: Array<[string, string, string, RegExp]> = [
    ['nan', 'return p == 1234 || p == 5000 ? NaN : 1.0;', 'return p === 1234 || p === 5000 ? NaN : 1;', /kernel nan returned NaN at parameter 1234$/],
    ['inf', 'return 1.0 / <f64>(p - 4200);', 'return 1 / (p - 4200);', /kernel inf returned Infinity at parameter 4200$/],
    ['neginf', 'return p > 6000 ? -Infinity : 0.5;', 'return p > 6000 ? -Infinity : 0.5;', /kernel neginf returned -Infinity at parameter 6001$/],
  ];
  for (const [name, body, twin, message] of cases) {
    const wasm = await wasmOf(name, `export function value(p: i64, total: i64): f64 {\n  ${body}\n}\n`);
    writeFileSync(path.join(tmp, `${name}.js`), `export function value(p, total) {\n  ${twin}\n}\n`);
    const js = await UserJsKernel.fromFile(path.join(tmp, `${name}.js`));
    for (const runner of [wasm, js]) {
      assert.throws(() => runner.sweep(0, 10_000, 10_000), (err: unknown) => {
        assert.ok(err instanceof KernelValueError, String(err));
        assert.match(err.message, message);
        return true;
      });
      assert.throws(() => runner.values(1000, 7000, 10_000), message);
      // The runner goes on: a range without the bad parameter sweeps normally.
      assert.equal(runner.sweep(0, 1000, 10_000).count, 1000);
    }
  }
});

test('a trap or an abort fails the slice naming the parameter and the reason; the runner keeps working', async () => {
  const cases: Array<[string, string, RegExp]> = [
    ['divzero', 'return <f64>(<i64>1000 / (p - 4321));', /kernel divzero trapped at parameter 4321: WebAssembly trap: .*divi.*zero/i],
    ['unreach', 'if (p == 999) unreachable();\n  return 1.0;', /kernel unreach trapped at parameter 999: WebAssembly trap: unreachable/],
    ['oob', 'if (p == 7777) return <f64>load<u8>(<usize>0xffff_fff0);\n  return 0.0;', /kernel oob trapped at parameter 7777: WebAssembly trap: memory access out of bounds/],
    ['aborts', "assert(p != 333, 'p must not be 333');\n  return 2.0;", /kernel aborts trapped at parameter 333: abort: p must not be 333 in aborts\.ts:\d+:\d+/],
    ['recurse', 'return p == 55 ? value(p, total) + 1.0 : 1.0;', /kernel recurse trapped at parameter 55: stack overflow/],
  ];
  for (const [name, body, message] of cases) {
    const wasm = await wasmOf(name, `export function value(p: i64, total: i64): f64 {\n  ${body}\n}\n`);
    assert.throws(() => wasm.sweep(0, 10_000, 10_000), (err: unknown) => {
      assert.ok(err instanceof KernelTrapError, String(err));
      assert.match(err.message, message);
      return true;
    });
    assert.throws(() => wasm.values(0, 9000, 10_000), message);
    // The instance was replaced: a clean range gives exact statistics again, many times.
    for (let i = 0; i < 3; i++) {
      const s = wasm.sweep(10, 50, 10_000);
      assert.equal(s.count, 40);
      assert.ok(Number.isFinite(roundPartials(s.partials)));
    }
  }
});

test('a twin that throws or returns a non-number fails naming the parameter', async () => {
  const thrower = new UserJsKernel((p) => {
    if (p === 12) throw new Error('boom');
    return 1;
  }, 'thrower');
  assert.throws(() => thrower.sweep(0, 100, 100), /kernel thrower \(js\) threw at parameter 12: Error: boom/);
  const stringy = new UserJsKernel((p) => (p === 3 ? '7' : 1), 'stringy');
  assert.throws(() => stringy.sweep(0, 100, 100), /kernel stringy returned the string "7" at parameter 3/);
  const noValue = path.join(tmp, 'novalue.js');
  writeFileSync(noValue, 'export const valu = () => 1;\n');
  await assert.rejects(UserJsKernel.fromFile(noValue), (err: unknown) => err instanceof KernelLoadError && /must export a function value\(p, total\)/.test(err.message));
  await assert.rejects(UserJsKernel.fromFile(path.join(tmp, 'missing.js')), /cannot load the kernel twin .*missing\.js: not found/);
});

test('compile errors name the user\'s file, line and column, with the line; a wrong value() says what it must be', async () => {
  const bad = writeKernel('bad', 'export function value(p: i64, total: i64): f64 {\n  const x: i32 = p;\n  return undefinedThing + <f64>x;\n}\n');
  await assert.rejects(compileUserKernel(bad), (err: unknown) => {
    assert.ok(err instanceof KernelBuildError);
    assert.match(err.message, /bad\.ts does not compile \(2 errors\)/);
    assert.match(err.diagnostics[0]!, new RegExp(`^${bad.replace(/[.]/g, '\\.')}:2:18 - error TS\\d+: .*i64.*i32.*\\n  2 \\|   const x: i32 = p;`));
    assert.match(err.diagnostics[1]!, /bad\.ts:3:10 - error TS2304: Cannot find name 'undefinedThing'/);
    return true;
  });
  for (const [name, source] of [
    ['signature', 'export function value(p: i32): f64 {\n  return <f64>p;\n}\n'],
    ['unexported', 'export function valu(p: i64, total: i64): f64 {\n  return 1.0;\n}\n'],
  ]) {
    await assert.rejects(compileUserKernel(writeKernel(name!, source!)), /must export `function value\(p: i64, total: i64\): f64`/);
  }
  await assert.rejects(
    compileUserKernel(writeKernel('rnd', 'export function value(p: i64, total: i64): f64 {\n  return Math.random();\n}\n')),
    /rnd\.ts uses Math\.random .*pure function of p and total/,
  );
  await assert.rejects(compileUserKernel(path.join(tmp, 'nothere.ts')), /cannot read .*nothere\.ts: ENOENT/);
});

test('the build is deterministic and says the sha-256 of what it wrote; a foreign module is refused', async () => {
  const source = path.join(ROOT, 'examples', 'collatz.ts');
  const out = path.join(tmp, 'out', 'collatz.wasm');
  const built = await buildUserKernel(source, out);
  const bytes = readFileSync(out);
  assert.equal(built.sha256, createHash('sha256').update(bytes).digest('hex'));
  assert.equal((await compileUserKernel(source)).sha256, built.sha256);
  assert.equal(UserWasmKernel.fromFile(out).sha256, built.sha256);
  assert.equal(UserWasmKernel.fromFile(out).name, 'collatz');
  assert.throws(() => UserWasmKernel.fromFile(path.join(ROOT, 'build', 'kernel.wasm')), /not a ttg user kernel module: build it .*ttg kernel build/);
  const junk = path.join(tmp, 'junk.wasm');
  writeFileSync(junk, 'not wasm');
  assert.throws(() => UserWasmKernel.fromFile(junk), /junk\.wasm is not a WebAssembly module/);
  assert.throws(() => UserWasmKernel.fromFile(path.join(tmp, 'absent.wasm')), /cannot read the kernel module .*absent\.wasm: ENOENT/);
});

test('a kernel built on first use is cached by content: the same source is not rebuilt, an edited one is', async () => {
  const cache = path.join(tmp, 'cache');
  const source = writeKernel('cached', 'export function value(p: i64, total: i64): f64 {\n  return <f64>p;\n}\n');
  const first = await cachedUserKernel(source, cache);
  const again = await cachedUserKernel(source, cache);
  assert.equal(first.cached, false);
  assert.equal(again.cached, true);
  assert.equal(again.wasmPath, first.wasmPath);
  assert.equal(again.sha256, first.sha256);
  assert.ok(first.wasmPath.startsWith(cache));
  writeFileSync(source, 'export function value(p: i64, total: i64): f64 {\n  return <f64>(p * 2);\n}\n');
  const edited = await cachedUserKernel(source, cache);
  assert.equal(edited.cached, false);
  assert.notEqual(edited.sha256, first.sha256);
  assert.deepEqual(Array.from(UserWasmKernel.fromFile(edited.wasmPath).values(0, 3, 3)), [0, 2, 4]);
});

test('examples/placeholder-formula, a user kernel, gives the built-in placeholder\'s values and statistics bit for bit', async () => {
  const compiled = await compileUserKernel(path.join(ROOT, 'examples', 'placeholder-formula.ts'));
  const user = new UserWasmKernel(compiled.bytes as Uint8Array<ArrayBuffer>, 'placeholder-formula');
  const builtIn = new WasmKernelRunner();
  const rand = random(5);
  const ranges: Array<[number, number]> = [[0, 10_000], [2 ** 40, 2 ** 40 + 5000]];
  for (let i = 0; i < 10; i++) {
    const start = Math.floor(rand() * 2 ** 47);
    ranges.push([start, start + 1 + Math.floor(rand() * 9000)]);
  }
  for (const [start, end] of ranges) {
    const a = user.values(start, end, 2 ** 48);
    const b = builtIn.values('placeholder', start, end, 2 ** 48);
    assert.equal(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)), 0, `[${start}, ${end})`);
    const s = user.sweep(start, end, 2 ** 48);
    const t = builtIn.sweep('placeholder', start, end, 2 ** 48);
    assert.deepEqual([s.min, s.argmin, s.max, s.argmax, roundPartials(s.partials)], [t.min, t.argmin, t.max, t.argmax, roundPartials(t.partials)]);
  }
});

test('the user-kernel bench measures WASM and the twin per kernel, and the user kernel beside its @inline twin and the built-in', async () => {
  const bench = await benchUserKernels({
    quick: true,
    sources: [path.join(ROOT, 'examples', 'himmelblau.ts'), path.join(ROOT, 'examples', 'placeholder-formula.ts')],
  });
  assert.deepEqual(
    bench.rows.map((r) => `${r.kernel} ${r.impl}`),
    ['himmelblau wasm', 'himmelblau js', 'placeholder-formula wasm', 'placeholder-formula js', 'placeholder-formula wasm @inline', 'placeholder built-in wasm'],
  );
  for (const r of bench.rows) {
    assert.ok(r.paramsPerSecond > 0 && Number.isFinite(r.paramsPerSecond), `${r.kernel} ${r.impl}`);
    assert.ok(r.minParamsPerSecond <= r.paramsPerSecond && r.paramsPerSecond <= r.maxParamsPerSecond);
  }
  // The user kernel and its references sweep the same slices, and the same values.
  const sizes = bench.rows.filter((r) => r.kernel.startsWith('placeholder') && r.impl !== 'js').map((r) => r.sliceSize);
  assert.equal(new Set(sizes).size, 1);
  assert.equal(bench.builtInComparison?.sameSum, true);
});

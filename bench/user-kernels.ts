/**
 * User kernels, per thread (`ttg bench`, section `user`; `ttg bench --kernel
 * NAME.ts` for one's own): each kernel's WASM module against its JS twin,
 * and a user kernel against the same arithmetic compiled the built-in way.
 * examples/placeholder-formula.ts is the placeholder written as a user
 * kernel (the built-in's values bit for bit). Its reference is the same file
 * with `@inline` on value(): AssemblyScript then puts the body into the
 * block loop itself, as the built-in kernels' fill functions are put there,
 * so the gap between the two is what the user-kernel wrapper costs (the
 * call Binaryen must inline). The built-in placeholder is shown beside
 * them: it steps its two residues from one parameter to the next instead of
 * dividing, an algorithm a pure value(p) cannot use, so it is faster by
 * its arithmetic, not by its wrapper.
 *
 * The cases run in interleaved rounds, one sweep each per round, after a
 * warm-up that lets V8 tier the code up; each figure is the median of its
 * rounds with the min-max range, so a neighbour's burst on a shared machine
 * does not land on one case only.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { roundPartials } from '../kernel/exact-sum.js';
import { WasmKernelRunner } from '../kernel/wasm.js';
import { compileUserKernel, userKernelName } from '../kernel/user-build.js';
import { UserJsKernel } from '../kernel/user-js.js';
import { UserWasmKernel } from '../kernel/user-wasm.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const EXAMPLES_DIR = path.join(ROOT, 'examples');
/** The examples benchmarked by default (examples/ is in the repository, not in the worker image). */
const EXAMPLES = ['himmelblau', 'monte-carlo-pi', 'collatz', 'placeholder-formula'];

export interface UserKernelBenchRow {
  kernel: string;
  impl: 'wasm' | 'js' | 'wasm @inline' | 'built-in wasm';
  /** Parameters per sweep call. */
  sliceSize: number;
  /** Median over the rounds, parameters per second of one thread; min and max beside it. */
  paramsPerSecond: number;
  minParamsPerSecond: number;
  maxParamsPerSecond: number;
}

export interface UserKernelBench {
  rows: UserKernelBenchRow[];
  /** examples/placeholder-formula against the built-in placeholder (null when the example is not benchmarked). */
  builtInComparison: {
    userKernel: string;
    /** user kernel / the same value() with @inline (the built-in way): 0.9 or more is within 10%. */
    ratioToInlined: number;
    /** user kernel / the built-in placeholder (another algorithm for the same values). */
    ratioToBuiltIn: number;
    sameSum: boolean;
  } | null;
}

interface Case {
  kernel: string;
  impl: UserKernelBenchRow['impl'];
  sweep: (start: number, end: number) => number;
  sliceSize: number;
  seconds: number[];
}

/** The twin beside a kernel source: NAME.js or NAME.mjs. */
function twinOf(source: string): string | null {
  const base = source.replace(/\.(ts|wasm)$/, '');
  for (const ext of ['.js', '.mjs']) if (existsSync(base + ext)) return base + ext;
  return null;
}

/** Seconds of one call of `f`. */
function time(f: () => void): number {
  const t0 = performance.now();
  f();
  return (performance.now() - t0) / 1000;
}

/** A slice that takes about `target` seconds (between 1000 and 2 million parameters). */
function calibrate(sweep: (start: number, end: number) => number, target: number): number {
  let size = 10_000;
  for (let i = 0; i < 3; i++) {
    const t = time(() => sweep(0, size));
    size = Math.round(Math.min(2_000_000, Math.max(1000, (size * target) / Math.max(t, 1e-6))));
  }
  return size;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/**
 * Benchmarks `sources` (user kernels, .ts built here in memory or .wasm; the
 * twin is NAME.js beside each), by default the examples. A sweep's `total`
 * is 10^8 for every kernel, so parameters stay inside each twin's exact range.
 */
export async function benchUserKernels(opts: { quick?: boolean; sources?: string[] } = {}): Promise<UserKernelBench> {
  const sources = opts.sources ?? EXAMPLES.map((e) => path.join(EXAMPLES_DIR, `${e}.ts`)).filter((f) => existsSync(f));
  const total = 100_000_000;
  const target = opts.quick ? 0.005 : 0.03;
  const cases: Case[] = [];
  let sink = 0;
  const add = (kernel: string, impl: Case['impl'], run: (start: number, end: number, total: number) => { partials: number[] }) => {
    const sweep = (start: number, end: number) => {
      const s = run(start, end, total);
      sink += s.partials.length;
      return roundPartials(s.partials);
    };
    cases.push({ kernel, impl, sweep, sliceSize: calibrate(sweep, target), seconds: [] });
  };
  for (const source of sources) {
    const name = userKernelName(source);
    const wasm = source.endsWith('.wasm')
      ? UserWasmKernel.fromFile(source, name)
      : new UserWasmKernel((await compileUserKernel(source)).bytes as Uint8Array<ArrayBuffer>, name, source);
    add(name, 'wasm', (s, e, t) => wasm.sweep(s, e, t));
    const twin = twinOf(source);
    if (twin) {
      const js = await UserJsKernel.fromFile(twin, name);
      add(name, 'js', (s, e, t) => js.sweep(s, e, t));
    }
  }
  const formula = cases.find((c) => c.kernel === 'placeholder-formula' && c.impl === 'wasm');
  const formulaSource = sources.find((f) => userKernelName(f) === 'placeholder-formula' && f.endsWith('.ts'));
  if (formula && formulaSource) {
    // The same file with value() marked @inline: the arithmetic is the user's, character for character.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ttg-bench-inline-'));
    try {
      const inlined = path.join(dir, 'placeholder-formula.ts');
      writeFileSync(inlined, readFileSync(formulaSource, 'utf8').replace(/^export function value\(/m, '// @ts-ignore: decorator\n@inline\nexport function value('));
      const reference = new UserWasmKernel((await compileUserKernel(inlined)).bytes as Uint8Array<ArrayBuffer>, 'placeholder-formula');
      add('placeholder-formula', 'wasm @inline', (s, e, t) => reference.sweep(s, e, t));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const builtIn = new WasmKernelRunner();
    add('placeholder', 'built-in wasm', (s, e, t) => builtIn.sweep('placeholder', s, e, t));
  }
  // The same slice for the user kernel and its references, so they do the same work.
  const references = cases.filter((c) => c.impl === 'wasm @inline' || c.impl === 'built-in wasm');
  if (formula) for (const c of references) c.sliceSize = formula.sliceSize;

  const rounds = opts.quick ? 3 : 11;
  for (const c of cases) for (let i = 0; i < 3; i++) c.sweep(0, c.sliceSize); // warm-up
  for (let r = 0; r < rounds; r++) {
    for (const c of cases) {
      // Each round a different stretch of the range, the same for every case.
      const start = (r * 7_919_993) % (total - c.sliceSize);
      c.seconds.push(time(() => c.sweep(start, start + c.sliceSize)));
    }
  }
  if (sink < 0) throw new Error('unreachable: keeps the sweeps alive');
  const rows = cases.map((c): UserKernelBenchRow => ({
    kernel: c.kernel,
    impl: c.impl,
    sliceSize: c.sliceSize,
    paramsPerSecond: c.sliceSize / median(c.seconds),
    minParamsPerSecond: c.sliceSize / Math.max(...c.seconds),
    maxParamsPerSecond: c.sliceSize / Math.min(...c.seconds),
  }));
  let builtInComparison: UserKernelBench['builtInComparison'] = null;
  const user = rows.find((r) => r.kernel === 'placeholder-formula' && r.impl === 'wasm');
  const inlined = rows.find((r) => r.impl === 'wasm @inline');
  const builtIn = rows.find((r) => r.impl === 'built-in wasm');
  if (formula && user && inlined && builtIn) {
    const builtInCase = cases.find((c) => c.impl === 'built-in wasm')!;
    builtInComparison = {
      userKernel: 'placeholder-formula',
      ratioToInlined: user.paramsPerSecond / inlined.paramsPerSecond,
      ratioToBuiltIn: user.paramsPerSecond / builtIn.paramsPerSecond,
      sameSum: Object.is(formula.sweep(0, formula.sliceSize), builtInCase.sweep(0, formula.sliceSize)),
    };
  }
  return { rows, builtInComparison };
}

const mps = (x: number) => `${(x / 1e6).toFixed(2)} M`;

/** The section's text: one row per kernel and impl, WASM/JS per kernel, and the built-in comparison. */
export function userKernelTable(bench: UserKernelBench): string {
  const lines = ['User kernels (one thread; median of interleaved rounds, min-max)', '  kernel                impl            slice      params/s  (range)'];
  for (const r of bench.rows) {
    lines.push(
      `  ${r.kernel.padEnd(21)} ${r.impl.padEnd(13)} ${String(r.sliceSize).padStart(8)} ${mps(r.paramsPerSecond).padStart(12)}  ` +
        `(${mps(r.minParamsPerSecond)}-${mps(r.maxParamsPerSecond)})`,
    );
  }
  for (const kernel of new Set(bench.rows.map((r) => r.kernel))) {
    const w = bench.rows.find((r) => r.kernel === kernel && r.impl === 'wasm');
    const j = bench.rows.find((r) => r.kernel === kernel && r.impl === 'js');
    if (w && j) lines.push(`  ${kernel}: wasm/js = ${(w.paramsPerSecond / j.paramsPerSecond).toFixed(2)}x`);
  }
  const c = bench.builtInComparison;
  if (c) {
    lines.push(
      `  user kernel ${c.userKernel} / the same value() with @inline, compiled into the loop as the built-ins are: ` +
        `${c.ratioToInlined.toFixed(3)}x (${c.ratioToInlined >= 0.9 ? 'within' : 'NOT within'} 10%)`,
      `  user kernel ${c.userKernel} / built-in placeholder (${c.sameSum ? 'the same sum' : 'SUMS DIFFER'}; the built-in steps ` +
        `its residues instead of dividing): ${c.ratioToBuiltIn.toFixed(3)}x`,
    );
  }
  return lines.join('\n');
}

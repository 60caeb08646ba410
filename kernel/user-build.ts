/**
 * Builds a user kernel (docs/design.md, "User kernels"): one AssemblyScript file
 * exporting `value(p: i64, total: i64): f64`, compiled by `asc` (its
 * programmatic API, loaded only here) together with the engine's wrapper,
 * kernel/assembly/user-kernel.ts, and the statistics the built-in kernels
 * use, kernel/assembly/stats.ts. The result is one WASM module whose block
 * loop has the user's function inlined (see the wrapper), with SIMD enabled
 * and the exact sum, min, max, argmin and argmax computed inside WASM.
 *
 * The compiler sees a small virtual file system: the wrapper as the entry,
 * next to the user's file (so the user's own relative imports work), with
 * the wrapper's two imports pointed at the user's file and at the
 * statistics. Diagnostics are reported against the user's path as given,
 * with line and column; an error inside the wrapper can only come from the
 * user's `value` (missing, or another signature) and is said so.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KernelBuildError } from './errors.js';

/** kernel/assembly of the package: this file runs as dist/kernel/user-build.js. */
const ASSEMBLY_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../kernel/assembly');

/** The virtual names of the entry and the statistics, beside the user's file. */
const ENTRY_FILE = '__ttg_kernel__.ts';
const STATS_FILE = '__ttg_stats__.ts';

/** What the kernel may import: abort (assertions, bounds checks) and trace. Anything else would make it impure or unrunnable. */
export const ALLOWED_IMPORTS: ReadonlySet<string> = new Set(['env.abort', 'env.trace']);

/** Imports that mean something the user can fix, and how. */
const IMPURE_IMPORTS: Record<string, string> = {
  'env.seed': 'Math.random (values must depend on p only: derive random numbers from p with a counter-based generator, as examples/monte-carlo-pi.ts does)',
  'Date.now': 'Date.now (values must depend on p only)',
  'env.Date.now': 'Date.now (values must depend on p only)',
  'performance.now': 'performance.now (values must depend on p only)',
};

/** The compiler options of every user kernel: the built-in kernels' release settings, with SIMD. */
const ASC_OPTIONS = [
  '--optimizeLevel', '3',
  '--shrinkLevel', '0',
  '--enable', 'simd',
  // Nothing is allocated by the engine's code; a kernel that allocates gets a collector, so it
  // cannot run out of memory over a long sweep (the runtime costs nothing when unused).
  '--runtime', 'incremental',
  '--noColors',
];

/** The part of asc's API used here (assemblyscript/asc). */
interface AscDiagnostic {
  category: number;
  code: number;
  message: string;
  range: { start: number; end: number; source: { normalizedPath: string } } | null;
}
interface AscApi {
  main(
    argv: string[],
    options: {
      readFile(filename: string, baseDir: string): string | null;
      writeFile(filename: string, contents: Uint8Array | string, baseDir: string): void;
      listFiles(dirname: string, baseDir: string): string[] | null;
      reportDiagnostic(d: AscDiagnostic): void;
      stdout: unknown;
      stderr: unknown;
    },
  ): Promise<{ error: Error | null }>;
  createMemoryStream(): { toString(): string };
}

/** asc.js category numbers (DiagnosticCategory). */
const ERROR_CATEGORY = 3;
const WARNING_CATEGORY = 2;

let ascApi: Promise<AscApi> | undefined;

/** Loads the compiler once per process; it is large, and only building needs it. */
function loadAsc(): Promise<AscApi> {
  ascApi ??= import('assemblyscript/asc').then(
    (m) => (m as unknown as { default: AscApi }).default,
    (err: unknown) => {
      ascApi = undefined;
      throw new KernelBuildError(
        `the AssemblyScript compiler (package "assemblyscript") cannot be loaded: ${(err as Error).message}; ` +
          'it is a dependency of ttg: reinstall with `npm ci`',
      );
    },
  );
  return ascApi;
}

export interface CompiledKernel {
  /** The kernel's name: the source file's base name without `.ts`. */
  name: string;
  bytes: Uint8Array;
  sha256: string;
  /** The module in WebAssembly text format, when asked for (tests check the inlining with it). */
  text?: string;
  /** Formatted warnings (the build succeeded). */
  warnings: string[];
}

/** The kernel name of a source or module path: its base name without the extension. */
export function userKernelName(file: string): string {
  return path.basename(file).replace(/\.(ts|wasm|js|mjs)$/, '');
}

export function sha256(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** 1-based line and column of `offset` in `text`, and the line itself. */
function locate(text: string, offset: number): { line: number; column: number; lineText: string } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const lineStart = before.lastIndexOf('\n') + 1;
  const lineEnd = text.indexOf('\n', offset);
  return { line, column: offset - lineStart + 1, lineText: text.slice(lineStart, lineEnd === -1 ? undefined : lineEnd) };
}

/**
 * Compiles the user kernel at `source` into a module (nothing is written).
 * Throws KernelBuildError with every error formatted against the user's
 * file and line.
 */
export async function compileUserKernel(source: string, opts: { text?: boolean } = {}): Promise<CompiledKernel> {
  if (!/\.ts$/.test(source)) throw new KernelBuildError(`${source}: a user kernel is an AssemblyScript file ending in .ts`);
  let userText: string;
  try {
    userText = readFileSync(source, 'utf8');
  } catch (err) {
    throw new KernelBuildError(`cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const name = userKernelName(source);
  const userFile = path.basename(source);
  const baseDir = path.dirname(path.resolve(source));
  const entry = readFileSync(path.join(ASSEMBLY_DIR, 'user-kernel.ts'), 'utf8')
    .replace("from './user-value'", `from ${JSON.stringify('./' + name)}`)
    .replaceAll("from './stats'", `from './${STATS_FILE.replace(/\.ts$/, '')}'`);
  const virtual = new Map<string, string>([
    [ENTRY_FILE, entry],
    [STATS_FILE, readFileSync(path.join(ASSEMBLY_DIR, 'stats.ts'), 'utf8')],
  ]);
  // Every text the compiler read, to show the line of a diagnostic.
  const texts = new Map<string, string>([...virtual, [userFile, userText]]);
  const diagnostics: AscDiagnostic[] = [];
  const outputs = new Map<string, Uint8Array | string>();

  const asc = await loadAsc();
  const argv = [ENTRY_FILE, '--baseDir', baseDir, '--outFile', 'kernel.wasm', ...(opts.text ? ['--textFile', 'kernel.wat'] : []), ...ASC_OPTIONS];
  const result = await asc.main(argv, {
    readFile(filename, dir) {
      const own = virtual.get(filename);
      if (own !== undefined && path.resolve(dir) === baseDir) return own;
      try {
        const text = readFileSync(path.resolve(dir, filename), 'utf8');
        texts.set(filename, text);
        return text;
      } catch {
        return null;
      }
    },
    writeFile(filename, contents) {
      outputs.set(filename, contents);
    },
    listFiles: () => [],
    reportDiagnostic: (d) => diagnostics.push(d),
    stdout: asc.createMemoryStream(),
    stderr: asc.createMemoryStream(),
  });

  const shown = (file: string) => (file === userFile ? source : path.relative(process.cwd(), path.join(baseDir, file)) || file);
  const format = (d: AscDiagnostic): string => {
    const kind = d.category === ERROR_CATEGORY ? 'error' : d.category === WARNING_CATEGORY ? 'warning' : 'info';
    if (!d.range) return `${source}: ${kind} TS${d.code}: ${d.message}`;
    const file = d.range.source.normalizedPath;
    if (file === ENTRY_FILE) return `${source}: ${kind} TS${d.code}: ${d.message} (in the engine's call value(p, total))`;
    const text = texts.get(file);
    if (text === undefined) return `${file}: ${kind} TS${d.code}: ${d.message}`;
    const at = locate(text, d.range.start);
    const width = String(at.line).length;
    const marker = ' '.repeat(at.column - 1) + '~'.repeat(Math.max(1, Math.min(d.range.end, text.length) - d.range.start));
    return `${shown(file)}:${at.line}:${at.column} - ${kind} TS${d.code}: ${d.message}\n` +
      `  ${at.line} | ${at.lineText}\n  ${' '.repeat(width)} | ${marker.split('\n')[0]}`;
  };
  const errors = diagnostics.filter((d) => d.category === ERROR_CATEGORY).map(format);
  const warnings = diagnostics.filter((d) => d.category === WARNING_CATEGORY).map(format);
  const bytes = outputs.get('kernel.wasm');
  if (errors.length || result.error || !(bytes instanceof Uint8Array)) {
    const lines = errors.length ? [...errors] : [`${source}: ${result.error?.message ?? 'asc produced no module'}`];
    // An error in the engine's wrapper can only come from the user's `value`: say what it must be.
    if (diagnostics.some((d) => d.category === ERROR_CATEGORY && d.range?.source.normalizedPath === ENTRY_FILE)) {
      lines.push(`${source} must export \`function value(p: i64, total: i64): f64\` (the engine calls it with two i64 and sums the f64 it returns)`);
    }
    throw new KernelBuildError(`${source} does not compile (${errors.length || 1} error${errors.length > 1 ? 's' : ''}):\n${lines.join('\n')}`, lines);
  }
  checkImports(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>), source);
  const text = outputs.get('kernel.wat');
  return {
    name,
    bytes,
    sha256: sha256(bytes),
    warnings,
    ...(opts.text && typeof text === 'string' ? { text } : {}),
  };
}

/** Refuses a module that imports what a pure kernel cannot need (Math.random, clocks, host functions). */
export function checkImports(module: WebAssembly.Module, source: string): void {
  const foreign = WebAssembly.Module.imports(module)
    .map((i) => `${i.module}.${i.name}`)
    .filter((name) => !ALLOWED_IMPORTS.has(name));
  if (foreign.length) {
    const what = foreign.map((f) => IMPURE_IMPORTS[f] ?? f);
    throw new KernelBuildError(`${source} uses ${what.join(', ')}, which a kernel cannot: it must be a pure function of p and total`);
  }
}

export interface BuiltKernel {
  name: string;
  /** Where the module was written. */
  wasmPath: string;
  sha256: string;
  warnings: string[];
}

/** `ttg kernel build`: compiles `source` and writes the module to `outFile` (default: beside it, NAME.wasm). */
export async function buildUserKernel(source: string, outFile?: string): Promise<BuiltKernel> {
  const compiled = await compileUserKernel(source);
  const wasmPath = outFile ?? source.replace(/\.ts$/, '.wasm');
  writeAtomically(wasmPath, compiled.bytes);
  return { name: compiled.name, wasmPath, sha256: compiled.sha256, warnings: compiled.warnings };
}

/** Writes through a temporary file and a rename, so a reader (another thread, another worker) never sees half a module. */
function writeAtomically(file: string, bytes: Uint8Array): void {
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, file);
}

/**
 * The cache of kernels built on first use (`KERNEL=./NAME.ts`): one module
 * per content, keyed by the sha-256 of the source, the wrapper, the
 * statistics and the compiler's version, so an edited source or another
 * ttg builds again and an unchanged one never does.
 */
export function kernelCacheDir(): string {
  const base = process.env['XDG_CACHE_HOME'] || path.join(os.homedir() || os.tmpdir(), '.cache');
  return path.join(base, 'ttg', 'kernels');
}

function cacheKey(source: string): string {
  const ascVersion = JSON.parse(readFileSync(fileURLToPath(import.meta.resolve('assemblyscript/package.json')), 'utf8')).version;
  return sha256(
    [
      readFileSync(source, 'utf8'),
      readFileSync(path.join(ASSEMBLY_DIR, 'user-kernel.ts'), 'utf8'),
      readFileSync(path.join(ASSEMBLY_DIR, 'stats.ts'), 'utf8'),
      ascVersion,
      ASC_OPTIONS.join(' '),
    ].join('\0'),
  );
}

/**
 * The module of the user kernel at `source`, built on first use and cached
 * by content (in `cacheDir`, default kernelCacheDir(); an unwritable cache
 * falls back to the system's temporary directory).
 */
export async function cachedUserKernel(source: string, cacheDir = kernelCacheDir()): Promise<BuiltKernel & { cached: boolean }> {
  let key: string;
  try {
    key = cacheKey(source);
  } catch (err) {
    throw new KernelBuildError(`cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const name = userKernelName(source);
  let compiled: CompiledKernel | undefined;
  for (const dir of [cacheDir, path.join(os.tmpdir(), 'ttg-kernels')]) {
    const wasmPath = path.join(dir, `${name}-${key.slice(0, 16)}.wasm`);
    try {
      if (statSync(wasmPath).isFile()) {
        return { name, wasmPath, sha256: sha256(readFileSync(wasmPath)), warnings: [], cached: true };
      }
    } catch {
      // not built yet
    }
    compiled ??= await compileUserKernel(source);
    try {
      writeAtomically(wasmPath, compiled.bytes);
    } catch {
      continue; // an unwritable cache: try the next
    }
    return { name, wasmPath, sha256: compiled.sha256, warnings: compiled.warnings, cached: false };
  }
  throw new KernelBuildError(`cannot write the built kernel to ${cacheDir} nor to ${os.tmpdir()}`);
}

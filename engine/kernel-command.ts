/**
 * `ttg kernel init|build|check`: user kernels (docs/design.md, "User kernels").
 * The work is done in kernel/ (user-build, user-wasm, user-js, user-check);
 * this file reads the command line and prints.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, TtgError } from '../core/errors.js';
import { KernelBuildError, KernelLoadError } from '../kernel/errors.js';
import { roundPartials } from '../kernel/exact-sum.js';
import { buildUserKernel, compileUserKernel, userKernelName } from '../kernel/user-build.js';
import { checkKernel } from '../kernel/user-check.js';
import { UserJsKernel } from '../kernel/user-js.js';
import { kernelTemplate, readmeTemplate, twinTemplate } from '../kernel/user-template.js';
import { UserWasmKernel } from '../kernel/user-wasm.js';

type FlagKinds = Record<string, 'bool' | 'value'>;
type ParseFlags = (args: string[], known: FlagKinds) => Record<string, string | boolean>;

/** Every flag of `ttg kernel`, and the subcommand it belongs to (engine/help.ts lists them). */
const FLAGS: FlagKinds = { dir: 'value', out: 'value', twin: 'value', total: 'value', seed: 'value' };
const FLAGS_OF: Record<string, string[]> = { init: ['dir'], build: ['out'], check: ['twin', 'total', 'seed'] };

/** Splits `args` into the words (subcommand, file) and the flags with their values. */
function splitArgs(args: string[]): { words: string[]; flagArgs: string[] } {
  const words: string[] = [];
  const flagArgs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('--')) {
      words.push(arg);
      continue;
    }
    flagArgs.push(arg);
    const name = /^--([a-z-]+)$/.exec(arg)?.[1];
    if (name !== undefined && FLAGS[name] === 'value' && i + 1 < args.length) flagArgs.push(args[++i]!);
  }
  return { words, flagArgs };
}

function integerFlag(flag: string, value: string | boolean | undefined, def: number, min: number): number {
  if (value === undefined) return def;
  const n = typeof value === 'string' && /^\d+(e\d+)?$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new ConfigError(`--${flag} must be an integer >= ${min}, got "${String(value)}"`);
  return n;
}

/** A KernelBuildError or KernelLoadError is the user's file: exit 1 with its whole message. */
function asTtgError(err: unknown): unknown {
  if (err instanceof KernelBuildError || err instanceof KernelLoadError) return new TtgError(err.message, { cause: err });
  return err;
}

const USAGE = 'usage: ttg kernel init NAME | ttg kernel build NAME.ts | ttg kernel check NAME.ts [--twin NAME.js]';

export async function cmdKernel(args: string[], parseFlags: ParseFlags): Promise<number> {
  const { words, flagArgs } = splitArgs(args);
  const flags = parseFlags(flagArgs, FLAGS);
  const [sub, target, ...extra] = words;
  if (sub === undefined || !(sub in FLAGS_OF)) {
    throw new ConfigError(sub === undefined ? `a subcommand is needed; ${USAGE}` : `unknown subcommand "${sub}"; ${USAGE}`);
  }
  for (const name of Object.keys(flags)) {
    if (!FLAGS_OF[sub]!.includes(name)) {
      const owner = Object.keys(FLAGS_OF).find((s) => FLAGS_OF[s]!.includes(name));
      throw new ConfigError(`--${name} is a flag of "ttg kernel ${owner}", not of "ttg kernel ${sub}"`);
    }
  }
  if (target === undefined) throw new ConfigError(`ttg kernel ${sub} needs ${sub === 'init' ? 'a NAME' : 'a kernel file (NAME.ts)'}; ${USAGE}`);
  if (extra.length) throw new ConfigError(`unexpected argument "${extra[0]}"; ${USAGE}`);
  try {
    if (sub === 'init') return init(target, typeof flags['dir'] === 'string' ? flags['dir'] : '.');
    if (sub === 'build') return await build(target, typeof flags['out'] === 'string' ? flags['out'] : undefined);
    return await check(target, flags);
  } catch (err) {
    throw asTtgError(err);
  }
}

function init(name: string, dir: string): number {
  if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(name)) {
    throw new ConfigError(`NAME must start with a letter and hold only letters, digits, - and _, got "${name}"`);
  }
  const files: Array<[string, string]> = [
    [path.join(dir, `${name}.ts`), kernelTemplate(name)],
    [path.join(dir, `${name}.js`), twinTemplate(name)],
    [path.join(dir, `${name}.README.md`), readmeTemplate(name)],
  ];
  const present = files.find(([file]) => existsSync(file));
  if (present) throw new ConfigError(`${present[0]} already exists: ttg kernel init never overwrites (choose another NAME or --dir)`);
  if (!existsSync(dir)) throw new ConfigError(`--dir ${dir} does not exist`);
  for (const [file, text] of files) writeFileSync(file, text, { flag: 'wx' });
  process.stdout.write(`wrote ${files.map(([f]) => f).join(', ')}\nnext: npx ttg kernel build ${files[0]![0]}\n`);
  return 0;
}

async function build(source: string, out: string | undefined): Promise<number> {
  if (!source.endsWith('.ts')) throw new ConfigError(`ttg kernel build takes an AssemblyScript file ending in .ts, got "${source}"`);
  const built = await buildUserKernel(source, out);
  for (const w of built.warnings) process.stderr.write(w + '\n');
  process.stdout.write(`kernel ${built.name}: ${built.wasmPath}\nsha256 ${built.sha256}\n`);
  return 0;
}

/** The twin beside a kernel file: NAME.js, else NAME.mjs. */
function defaultTwin(file: string): string | null {
  const base = file.replace(/\.(ts|wasm)$/, '');
  for (const ext of ['.js', '.mjs']) if (existsSync(base + ext)) return base + ext;
  return null;
}

async function check(file: string, flags: Record<string, string | boolean>): Promise<number> {
  if (!/\.(ts|wasm)$/.test(file)) throw new ConfigError(`ttg kernel check takes NAME.ts (built here, in memory) or NAME.wasm, got "${file}"`);
  const total = integerFlag('total', flags['total'], 1_000_000, 1);
  const seed = integerFlag('seed', flags['seed'], 1, 0);
  if (total > 2 ** 50) throw new ConfigError(`--total must be at most 2^50, got ${total}`);
  const twinPath = typeof flags['twin'] === 'string' ? flags['twin'] : defaultTwin(file);
  if (twinPath === null) throw new ConfigError(`no twin for ${file}: ${file.replace(/\.(ts|wasm)$/, '.js')} does not exist; name it with --twin FILE`);
  const name = userKernelName(file);
  const wasm = file.endsWith('.ts')
    ? new UserWasmKernel((await compileUserKernel(file)).bytes as Uint8Array<ArrayBuffer>, name, file)
    : UserWasmKernel.fromFile(file, name);
  const js = await UserJsKernel.fromFile(twinPath, name);
  const outcome = checkKernel(wasm, js, { total, seed });
  if (!outcome.ok) {
    process.stdout.write(`${file} vs ${twinPath}: ${outcome.message}\n`);
    return 1;
  }
  const s = outcome.stats;
  process.stdout.write(
    `${file} vs ${twinPath}: ${outcome.values.toLocaleString('en-US')} values agree bit for bit ` +
      `(${outcome.ranges} ranges of [0, ${total}), seed ${seed})\n` +
      `statistics of [${outcome.statsRange[0]}, ${outcome.statsRange[1]}) agree: sum ${roundPartials(s.partials)}, ` +
      `min ${s.min} at ${s.argmin}, max ${s.max} at ${s.argmax}\n`,
  );
  return 0;
}

/**
 * KERNEL=./NAME.wasm or ./NAME.ts, and KERNEL_JS=./NAME.js (docs/design.md, "User
 * kernels"): turning the configured paths into what the pool's threads load
 * (a UserKernelSpec) and what the sweep's settings record (the kernel's
 * name and the sha-256 of its module). It runs before any connection is
 * made, so a missing file, a module that is not a ttg kernel, a source that
 * does not compile or a twin without `value` is one ConfigError (exit 2)
 * naming the variable, and no worker joins a sweep it cannot compute.
 */
import path from 'node:path';
import { ConfigError } from '../core/errors.js';
import { KernelBuildError, KernelLoadError } from '../kernel/errors.js';
import type { KernelChoice, KernelImpl, KernelName, UserKernelSpec } from '../kernel/types.js';
import type { Config } from './config.js';
import { cachedUserKernel, userKernelName } from '../kernel/user-build.js';
import { UserJsKernel } from '../kernel/user-js.js';
import { UserWasmKernel } from '../kernel/user-wasm.js';

/** Is this KERNEL value the path of a user kernel (rather than a built-in kernel's name)? */
export function isUserKernelPath(value: string): boolean {
  return /\.(wasm|ts)$/.test(value);
}

/** Is this a user kernel's name as a sweep records it: the file's base name? */
export function isUserKernelName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name);
}

export interface ResolvedUserKernel {
  spec: UserKernelSpec;
  /** A .ts kernel: whether its module came from the cache (false: built now). */
  cached: boolean | null;
}

/**
 * Resolves KERNEL (a .wasm module, or a .ts source built on first use and
 * cached by content) and KERNEL_JS into absolute paths and the module's
 * sha-256, loading each once here to prove it works. `cacheDir` overrides
 * the build cache (tests).
 */
export async function resolveUserKernel(
  kernel: string,
  kernelJs: string | null,
  impl: KernelImpl,
  opts: { cacheDir?: string } = {},
): Promise<ResolvedUserKernel> {
  const name = userKernelName(kernel);
  if (!isUserKernelName(name)) throw new ConfigError(`KERNEL=${kernel}: the file name must be a plain name (letters, digits, . _ -), got "${name}"`);
  let wasmPath: string;
  let cached: boolean | null = null;
  try {
    if (kernel.endsWith('.ts')) {
      const built = await cachedUserKernel(path.resolve(kernel), ...(opts.cacheDir ? [opts.cacheDir] : []));
      wasmPath = built.wasmPath;
      cached = built.cached;
    } else {
      wasmPath = path.resolve(kernel);
    }
  } catch (err) {
    if (err instanceof KernelBuildError) throw new ConfigError(`KERNEL=${kernel}: ${err.message}`, { cause: err });
    throw err;
  }
  let sha256: string;
  try {
    sha256 = UserWasmKernel.fromFile(wasmPath, name).sha256;
  } catch (err) {
    if (err instanceof KernelLoadError) throw new ConfigError(`KERNEL=${kernel}: ${err.message}`, { cause: err });
    throw err;
  }
  let jsPath: string | null = null;
  if (kernelJs !== null) {
    jsPath = path.resolve(kernelJs);
    try {
      await UserJsKernel.fromFile(jsPath, name);
    } catch (err) {
      if (err instanceof KernelLoadError) throw new ConfigError(`KERNEL_JS=${kernelJs}: ${err.message}`, { cause: err });
      throw err;
    }
  }
  if (impl === 'js' && jsPath === null) {
    throw new ConfigError(`KERNEL_IMPL=js with the user kernel ${kernel} needs its JS twin: set KERNEL_JS=./${name}.js`);
  }
  return { spec: { name, wasmPath, sha256, jsPath }, cached };
}

/**
 * The config with its kernel resolved, and what the pool runs: a built-in
 * kernel as it is; a user kernel found (or built) and proved loadable, its
 * module's sha-256 put in the config for the sweep's settings. Call it after
 * loadConfig and before any connection.
 */
export async function withResolvedKernel(config: Config): Promise<{ config: Config; kernel: KernelChoice }> {
  if (config.kernelPath === null) return { config, kernel: config.kernel as KernelName };
  const { spec } = await resolveUserKernel(config.kernelPath, config.kernelJs, config.kernelImpl);
  return { config: { ...config, kernel: spec.name, kernelSha256: spec.sha256 }, kernel: spec };
}

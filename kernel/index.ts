/** The kernel layer: one interface (KernelRunner) over the WASM and the plain JS kernels. */
import { JsKernelRunner } from './js.js';
import type { KernelImpl, KernelRunner } from './types.js';
import { WasmKernelRunner, type WasmKernelOptions } from './wasm.js';

export { KERNEL_IMPLS, KERNEL_NAMES } from './types.js';
export type { KernelImpl, KernelName, KernelRunner, SliceStats } from './types.js';
export { MAX_KERNEL_PARAMS } from './slice.js';
export { JsKernelRunner, mandelbrotValue, placeholderValue } from './js.js';
export { DEFAULT_WASM_PATH, WasmKernelRunner, type WasmKernelOptions } from './wasm.js';

/**
 * A runner for `impl`, ready to use (the WASM module is compiled and
 * instantiated here, synchronously). Create one per thread and reuse it.
 */
export function createKernelRunner(impl: KernelImpl, options: WasmKernelOptions = {}): KernelRunner {
  switch (impl) {
    case 'wasm':
      return new WasmKernelRunner(options);
    case 'js':
      return new JsKernelRunner();
    default:
      throw new TypeError(`unknown kernel implementation ${JSON.stringify(impl)}; expected wasm or js`);
  }
}

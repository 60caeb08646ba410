/** `node dist/bench/kernels-main.js [--quick]`: the kernel benchmark alone, as a table. */
import { benchKernels } from './kernels.js';

const rows = await benchKernels({ quick: process.argv.includes('--quick') });
console.table(
  rows.map((r) => ({ ...r, 'M params/s': (r.paramsPerSecond / 1e6).toFixed(2), paramsPerSecond: Math.round(r.paramsPerSecond) })),
);
for (const kernel of new Set(rows.map((r) => r.kernel))) {
  const wasm = rows.find((r) => r.kernel === kernel && r.impl === 'wasm');
  const js = rows.find((r) => r.kernel === kernel && r.impl === 'js');
  if (wasm && js) console.log(`${kernel}: wasm/js = ${(wasm.paramsPerSecond / js.paramsPerSecond).toFixed(2)}x`);
}

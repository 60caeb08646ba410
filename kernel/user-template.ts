/** The starter files `ttg kernel init NAME` writes: a kernel, its JS twin, and how to build, check and run them. */

export function kernelTemplate(name: string): string {
  return `/**
 * ${name}: a ttg user kernel (AssemblyScript).
 *
 * ttg calls value(p, total) for every parameter p in 0 ... total-1 and keeps
 * the exact sum, min, max, average, argmin and argmax of the values. It must
 * be a pure function of p and total (no Math.random, no clock, no state kept
 * between calls), so any worker computing any chunk gets the same value, and
 * return a finite f64 (NaN or ±Infinity fails the chunk, naming p).
 *
 * Replace the body with your computation. This one is (p/total - 1/3)²,
 * smallest at the parameter nearest total/3.
 */
export function value(p: i64, total: i64): f64 {
  const x = <f64>p / <f64>total;
  const d = x - 1.0 / 3.0;
  return d * d;
}
`;
}

export function twinTemplate(name: string): string {
  return `// ${name}: the plain JS twin of ${name}.ts, for KERNEL_IMPL=js and \`ttg kernel check\`.
// The same operations in the same order give the same f64s as the WASM module.
export function value(p, total) {
  const x = p / total;
  const d = x - 1 / 3;
  return d * d;
}
`;
}

export function readmeTemplate(name: string): string {
  return `# ${name}: a ttg user kernel

- \`${name}.ts\`: the kernel, AssemblyScript: \`export function value(p: i64, total: i64): f64\`.
- \`${name}.js\`: its plain JS twin, an ES module: \`export function value(p, total)\` on numbers.

## Build, check, run

\`\`\`sh
npx ttg kernel build ${name}.ts              # writes ${name}.wasm, prints its path and sha-256
npx ttg kernel check ${name}.ts              # WASM against ${name}.js, value for value, bit for bit
KERNEL=./${name}.wasm npx ttg run            # a sweep (or KERNEL=./${name}.ts: built on first use)
KERNEL=./${name}.wasm KERNEL_JS=./${name}.js KERNEL_IMPL=js npx ttg run   # the same sweep through the twin
npx ttg bench --kernel ${name}.ts            # WASM and JS throughput per thread
\`\`\`

ttg compiles the engine's block loop and exact statistics around \`value\`, so the call is
inlined and the sum, min, max, argmin and argmax are kept inside WASM, as for the built-in
kernels. Compile errors name this file and line.

## Rules

- Pure: the value depends on p and total only. For randomness derive it from p with a
  counter-based generator (see ttg's examples/monte-carlo-pi.ts); Math.random is refused.
- Finite: a NaN or ±Infinity fails the chunk with the parameter that gave it; a trap
  (integer division by zero, \`unreachable\`, an out-of-range access, a failed \`assert\`) fails
  it with the parameter too. Failed chunks are retried, then dead-lettered.
- Twin: \`+ - * /\` and \`Math.sqrt\` round the same in WASM and JS; \`Math.sin\`, \`exp\`, \`log\`,
  \`pow\` may differ in the last bit between AssemblyScript and V8 — \`ttg kernel check\` tells.
  i64 arithmetic is exact in WASM; a JS number is an exact integer only below 2^53.
- Every worker of a sweep must run the same module: the sweep records its sha-256 and a
  worker with another one refuses to join.
`;
}

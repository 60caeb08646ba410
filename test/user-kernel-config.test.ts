/**
 * KERNEL / KERNEL_JS resolution before any connection (engine/user-kernel.ts):
 * a module or a source built on first use, its sha-256, and one ConfigError
 * (exit 2) naming the variable for each thing that can be wrong.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../core/errors.js';
import { isUserKernelPath, resolveUserKernel } from '../engine/user-kernel.js';
import { buildUserKernel } from '../kernel/user-build.js';
import { ROOT } from './helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'ttg-user-kernel-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const example = (f: string) => path.join(ROOT, 'examples', f);

test('a .wasm module resolves to its absolute path and sha-256; a .ts source is built once, then taken from the cache', async () => {
  const built = await buildUserKernel(example('himmelblau.ts'), path.join(tmp, 'himmelblau.wasm'));
  const r = await resolveUserKernel(path.relative(process.cwd(), built.wasmPath), example('himmelblau.js'), 'js');
  assert.deepEqual(r.spec, {
    name: 'himmelblau', wasmPath: built.wasmPath, jsPath: example('himmelblau.js'),
    sha256: createHash('sha256').update(readFileSync(built.wasmPath)).digest('hex'),
  });
  assert.equal(r.cached, null);
  const cacheDir = path.join(tmp, 'cache');
  const first = await resolveUserKernel(example('himmelblau.ts'), null, 'wasm', { cacheDir });
  const second = await resolveUserKernel(example('himmelblau.ts'), null, 'wasm', { cacheDir });
  assert.deepEqual([first.cached, second.cached], [false, true]);
  assert.equal(first.spec.sha256, built.sha256, 'the cached build is the same module as ttg kernel build\'s');
  assert.equal(second.spec.wasmPath, first.spec.wasmPath);
  assert.ok(isUserKernelPath('./x.wasm') && isUserKernelPath('/k/x.ts') && !isUserKernelPath('placeholder'));
});

test('each thing wrong with KERNEL or KERNEL_JS is a ConfigError (exit 2) naming the variable', async () => {
  writeFileSync(path.join(tmp, 'broken.ts'), 'export function value(p: i64, total: i64): f64 {\n  return nope;\n}\n');
  writeFileSync(path.join(tmp, 'twin-without-value.js'), 'export const v = 1;\n');
  const cases: Array<[string, string | null, 'wasm' | 'js', RegExp]> = [
    [path.join(tmp, 'absent.wasm'), null, 'wasm', /^KERNEL=.*absent\.wasm: cannot read the kernel module .*ENOENT/],
    [path.join(ROOT, 'build', 'kernel.wasm'), null, 'wasm', /^KERNEL=.*kernel\.wasm: .*not a ttg user kernel module/],
    [path.join(tmp, 'broken.ts'), null, 'wasm', /^KERNEL=.*broken\.ts: .*broken\.ts does not compile \(1 error\):\n.*broken\.ts:2:10 - error TS2304: Cannot find name 'nope'/],
    [example('collatz.ts'), path.join(tmp, 'absent.js'), 'wasm', /^KERNEL_JS=.*absent\.js: cannot load the kernel twin .*: not found/],
    [example('collatz.ts'), path.join(tmp, 'twin-without-value.js'), 'js', /^KERNEL_JS=.*: .* must export a function value\(p, total\)/],
    [example('collatz.ts'), null, 'js', /^KERNEL_IMPL=js with the user kernel .*collatz\.ts needs its JS twin: set KERNEL_JS=\.\/collatz\.js$/],
  ];
  for (const [kernel, js, impl, message] of cases) {
    await assert.rejects(resolveUserKernel(kernel, js, impl, { cacheDir: path.join(tmp, 'cache') }), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.exitCode, 2);
      assert.match(err.message, message);
      return true;
    });
  }
});

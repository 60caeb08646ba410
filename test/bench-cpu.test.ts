/**
 * bench/cpu-at-exit.ts, preloaded by `node dist/bench/ab.js` into every worker: one line with the
 * process's CPU time at exit where TTG_BENCH_CPU=1, and nothing otherwise.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CPU_LINE } from '../bench/cpu-at-exit.js';
import { ROOT } from './helpers.js';

const PRELOAD = pathToFileURL(path.join(ROOT, 'dist/bench/cpu-at-exit.js')).href;
// Burns ~30 ms of CPU, then prints the CPU it has used by then (the line at exit must not be less).
const BUSY = 'const t = Date.now(); while (Date.now() - t < 30); const u = process.cpuUsage(); console.log((u.user + u.system) / 1000);';

test('a preloaded worker reports its CPU time at exit with TTG_BENCH_CPU=1, and nothing without it', () => {
  const go = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', PRELOAD, '-e', BUSY], { env: { PATH: process.env['PATH'], ...env }, encoding: 'utf8' });
  const on = go({ TTG_BENCH_CPU: '1' });
  assert.equal(on.status, 0, on.stderr);
  const line = new RegExp(`^${CPU_LINE} (\\d+)$`, 'm').exec(on.stderr);
  assert.ok(line, `no "${CPU_LINE} <ms>" line in: ${on.stderr}`);
  const before = Number(on.stdout.trim());
  assert.ok(before >= 30, `the child burnt ${before} ms`);
  assert.ok(Number(line[1]) >= Math.floor(before), `reported ${line[1]} ms at exit, but had used ${before} ms before it`);
  const off = go({});
  assert.equal(off.status, 0, off.stderr);
  assert.doesNotMatch(off.stderr, new RegExp(CPU_LINE));
});

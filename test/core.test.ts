/** The core layer on its own: backoff, the sweep domain, and the layering rule that keeps core/ and backends/ free of engine/. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { backoffDelay } from '../core/backoff.js';
import {
  chunkCount, chunkIdOf, chunkIndexOf, kernelField, notAChunkOf, parseKernelField, settingsDifference, settingsFromRecord, settingsRecord, sweepTasks,
} from '../core/sweep.js';
import { ROOT } from './helpers.js';

test('backoff doubles from the initial delay up to the cap, with jitter inside its band', () => {
  const exact = [1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, { initialMs: 100, maxMs: 1000 }));
  assert.deepEqual(exact, [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(backoffDelay(1, { initialMs: 100, maxMs: 1000, jitter: 0.2, random: () => 0 }), 80);
  assert.equal(backoffDelay(1, { initialMs: 100, maxMs: 1000, jitter: 0.2, random: () => 1 }), 120);
  assert.equal(backoffDelay(1000, { initialMs: 100, maxMs: 5000 }), 5000, 'no overflow for large attempts');
});

test('chunk ids, count and the "exactly a chunk" check, against the definition written out here', () => {
  const settings = { totalParams: 1001, chunkSize: 100, kernel: 'placeholder' as const };
  assert.equal(chunkCount(settings), 11);
  const tasks = [...sweepTasks(settings)];
  assert.equal(tasks.length, 11);
  tasks.forEach((t, i) => {
    assert.deepEqual(t, { chunkId: String(i).padStart(5, '0'), startParam: i * 100, endParam: Math.min(1001, i * 100 + 100), totalParams: 1001 });
    assert.equal(notAChunkOf(t, settings), null);
    assert.equal(chunkIndexOf(t.chunkId, 11), i);
  });
  assert.equal(chunkIdOf(123456, 200000), '123456');
  assert.equal(chunkIdOf(7, 200000), '000007');
  assert.equal(chunkIndexOf('7', 11), null, 'only the canonical, zero-padded form');
  assert.equal(chunkIndexOf('00011', 11), null, 'beyond the last chunk');
  assert.match(notAChunkOf({ chunkId: '00010', startParam: 1000, endParam: 1100, totalParams: 1001 }, settings)!, /is \[1000, 1001\)/);
  assert.match(notAChunkOf({ chunkId: '00001', startParam: 100, endParam: 200, totalParams: 2000 }, settings)!, /total_params/);
});

test('stored settings are read by one rule, and differences are named', () => {
  assert.deepEqual(settingsFromRecord({ total_params: '10', chunk_size: 5, kernel: 'mandelbrot' }), { totalParams: 10, chunkSize: 5, kernel: 'mandelbrot' });
  for (const bad of [{ total_params: '0', chunk_size: 5, kernel: 'placeholder' }, { total_params: 10, chunk_size: 'x', kernel: 'placeholder' }, { total_params: 10, chunk_size: 5, kernel: 'nope' }, {}]) {
    assert.equal(settingsFromRecord(bad), null, JSON.stringify(bad));
  }
  assert.equal(settingsDifference({ totalParams: 1, chunkSize: 1, kernel: 'placeholder' }, { totalParams: 1, chunkSize: 1, kernel: 'placeholder' }), null);
  assert.match(settingsDifference({ totalParams: 1, chunkSize: 1, kernel: 'placeholder' }, { totalParams: 2, chunkSize: 1, kernel: 'placeholder' })!, /TOTAL_PARAMS is 2 here but 1 in the queue/);
});

test('a user kernel\'s settings carry its module\'s sha-256 in the one stored kernel field, and a different module is named by both hashes', () => {
  const a = 'a'.repeat(64);
  const b = '0123456789abcdef'.repeat(4);
  const user = { totalParams: 10, chunkSize: 5, kernel: 'collatz', kernelSha256: a };
  assert.deepEqual(settingsRecord(user), { total_params: 10, chunk_size: 5, kernel: `collatz@sha256:${a}` });
  assert.deepEqual(settingsFromRecord(settingsRecord(user)), user);
  assert.deepEqual(settingsFromRecord(settingsRecord({ totalParams: 10, chunkSize: 5, kernel: 'mandelbrot' })), { totalParams: 10, chunkSize: 5, kernel: 'mandelbrot' });
  assert.equal(kernelField({ kernel: 'placeholder' }), 'placeholder');
  for (const bad of ['collatz', 'collatz@sha256:abc', `bad name@sha256:${a}`, `collatz@sha256:${a.toUpperCase()}`, `@sha256:${a}`]) {
    assert.equal(parseKernelField(bad), null, bad);
  }
  assert.equal(settingsDifference(user, { ...user }), null);
  assert.equal(
    settingsDifference(user, { ...user, kernelSha256: b }),
    `KERNEL collatz is the module with sha-256 ${b} here but ${a} in the queue`,
  );
  assert.equal(
    settingsDifference({ totalParams: 10, chunkSize: 5, kernel: 'placeholder' }, user),
    `KERNEL is collatz (module sha-256 ${a}) here but placeholder in the queue`,
  );
});

/** Every relative import of every .ts file under `dir` (the source tree, not dist/). */
function importsUnder(dir: string): Array<{ file: string; target: string }> {
  const out: Array<{ file: string; target: string }> = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = path.join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name.endsWith('.ts')) {
        const source = readFileSync(full, 'utf8');
        for (const m of source.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
          out.push({ file: path.relative(ROOT, full), target: path.relative(ROOT, path.resolve(path.dirname(full), m[1]!)) });
        }
      }
    }
  };
  walk(path.join(ROOT, dir));
  return out;
}

test('layering: core/ imports neither engine/ nor backends/; backends/ never imports engine/', () => {
  const core = importsUnder('core');
  const backends = importsUnder('backends');
  assert.ok(core.length >= 2 && backends.length >= 10, 'the scan found the imports');
  const wrong = [
    ...core.filter((i) => /^(engine|backends)\//.test(i.target)),
    ...backends.filter((i) => /^engine\//.test(i.target)),
  ].map((i) => `${i.file} imports ${i.target}`);
  assert.deepEqual(wrong, []);
});

test('no file in backends/ is over 400 lines', () => {
  const long: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = path.join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (/\.(ts|lua)$/.test(name)) {
        const lines = readFileSync(full, 'utf8').split('\n').length;
        if (lines > 400) long.push(`${path.relative(ROOT, full)}: ${lines} lines`);
      }
    }
  };
  walk(path.join(ROOT, 'backends'));
  assert.deepEqual(long, []);
});

/**
 * `npm run faults`: runs the fault scenarios of faults/scenarios/index.ts one
 * after the other against the real brokers, prints the fault report (a table
 * and each scenario's notes) and keeps it as JSON; exits 1 if any scenario is
 * not ok, 2 on a bad flag.
 *
 *   node dist/faults/run.js [--quick] [--only=kill-storm,frozen] [--backend=redis|rabbitmq] [--out=FILE]
 *
 * The report goes to bench/results/faults.json (git-ignored: a run's output)
 * unless --out names another file.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../test/helpers.js';
import { closeSharedAccess } from './harness.js';
import { formatTable } from './report.js';
import { SCENARIOS } from './scenarios/index.js';
import type { FaultBackend, FaultScenarioResult } from './types.js';

interface Args {
  quick: boolean;
  only: string[] | null;
  backend: FaultBackend | null;
  out: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, only: null, backend: null, out: path.join(ROOT, 'bench/results/faults.json') };
  const names = [...new Set(SCENARIOS.map((s) => s.name))];
  for (const arg of argv) {
    const [flag, value] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if (flag === '--quick' && value === undefined) args.quick = true;
    else if (flag === '--only' && value) {
      args.only = value.split(',').map((s) => s.trim()).filter(Boolean);
      const unknown = args.only.filter((n) => !names.includes(n));
      if (unknown.length) throw new UsageError(`--only: no scenario named ${unknown.join(', ')} (there are: ${names.join(', ')})`);
    } else if (flag === '--backend' && (value === 'redis' || value === 'rabbitmq')) args.backend = value;
    else if (flag === '--backend') throw new UsageError(`--backend must be redis or rabbitmq, got "${value ?? ''}"`);
    else if (flag === '--out' && value) args.out = path.resolve(value);
    else throw new UsageError(`unknown flag ${arg}; usage: npm run faults -- [--quick] [--only=NAME,…] [--backend=redis|rabbitmq] [--out=FILE]`);
  }
  return args;
}

class UsageError extends Error {}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`ttg faults: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const chosen = SCENARIOS.filter((s) => (!args.only || args.only.includes(s.name)) && (!args.backend || s.backend === args.backend));
  const log = (line: string) => process.stderr.write(`[faults ${new Date().toISOString().slice(11, 23)}] ${line}\n`);
  const startedAt = new Date().toISOString();
  const results: FaultScenarioResult[] = [];
  try {
    for (const s of chosen) {
      log(`${s.name} on ${s.backend}${args.quick ? ' (quick)' : ''} ...`);
      const t0 = Date.now();
      const r = await s.run({ quick: args.quick, log });
      results.push(r);
      log(`${s.name} on ${s.backend}: ${r.ok ? 'ok' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  } finally {
    await closeSharedAccess();
  }
  process.stdout.write(`${formatTable(results)}\n`);
  mkdirSync(path.dirname(args.out), { recursive: true });
  writeFileSync(args.out, `${JSON.stringify({
    started_at: startedAt, finished_at: new Date().toISOString(), quick: args.quick,
    argv: process.argv.slice(2), results,
  }, null, 2)}\n`);
  const failed = results.filter((r) => !r.ok).length;
  process.stdout.write(`\n${results.length - failed} of ${results.length} scenarios ok; report kept in ${path.relative(process.cwd(), args.out) || args.out}\n`);
  return failed > 0 ? 1 : 0;
}

// Ctrl-C: leave through process.exit, so the exit hooks delete the broker users made for the run.
process.once('SIGINT', () => process.exit(130));
process.once('SIGTERM', () => process.exit(143));

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ttg faults: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);

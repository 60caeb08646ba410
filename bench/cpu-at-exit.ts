/**
 * Preloaded (`node --import`) into the `ttg worker` processes that `node dist/bench/ab.js` spawns, so
 * that it can report each worker's CPU time beside its wall times: a change that moves work off the
 * critical path (or onto V8's background threads) shows in CPU before it shows in wall time on a
 * noisy 2-core machine. At exit the process writes one line, CPU_LINE and its user + system
 * milliseconds, to stderr. Only where TTG_BENCH_CPU=1, so that importing CPU_LINE does nothing.
 */
import { writeSync } from 'node:fs';

export const CPU_LINE = 'ttg-bench-cpu-ms';

if (process.env['TTG_BENCH_CPU'] === '1') {
  process.on('exit', () => {
    const { user, system } = process.cpuUsage();
    writeSync(2, `${CPU_LINE} ${Math.round((user + system) / 1000)}\n`);
  });
}

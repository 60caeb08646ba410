/**
 * What `ttg help`, `ttg help <command>` and `ttg <command> --help` print.
 * Every flag a command accepts is listed here, next to what it does; the
 * CLI's tests check each command's parser against this list, so the two
 * cannot drift.
 */

export interface CommandHelp {
  /** The command line, flags included. */
  usage: string;
  summary: string;
  /** Flag (as typed) → what it does. */
  flags: Array<[string, string]>;
  /** A few lines after the flags: configuration, exit codes. */
  notes?: string;
}

export const COMMAND_HELP: Record<string, CommandHelp> = {
  worker: {
    usage: 'ttg worker',
    summary: 'run one worker, configured by the environment (static mode, or queue mode with USE_QUEUE=true)',
    flags: [],
    notes: 'Logs go to stderr; the last stdout line is the JSON summary. Serves /healthz, /readyz and /metrics on METRICS_PORT.\n' +
      'Variables: see the README, "Configuration" (TOTAL_PARAMS, CHUNK_SIZE, QUEUE_BACKEND, REDIS_HOST, ...).\n' +
      'TLS: REDIS_URL=rediss://... or AMQP_URL=amqps://..., with REDIS_TLS_CA_FILE / RABBITMQ_TLS_CA_FILE naming the CA\'s PEM file\n' +
      'for a private CA (README, "Security"). A broker that refuses the password, the certificate, the vhost or a permission\n' +
      'stops the worker at once with one line saying what to fix (exit 2).',
  },
  run: {
    usage: 'ttg run [--workers N] [--backend memory|redis|rabbitmq] [--fresh] [--json] [--verbose] [--monitor web [--port P]]',
    summary: 'run a whole sweep on this machine and print its report',
    flags: [
      ['--workers N', 'in-process workers sharing one thread pool (default TOTAL_WORKERS)'],
      ['--backend B', 'queue to sweep through: memory (the default here), redis or rabbitmq'],
      ['--fresh', 'delete the broker\'s earlier sweep under QUEUE_PREFIX first'],
      ['--json', 'print the report as one JSON object (as ttg aggregate --json)'],
      ['--verbose', 'list every chunk in the report'],
      ['--monitor web', 'serve the live web page of this sweep while it runs (then until Ctrl-C, with the report)'],
      ['--port P', 'the web page\'s port (default 8080; 0 picks a free one)'],
    ],
  },
  aggregate: {
    usage: 'ttg aggregate [--json] [--verbose] | ttg aggregate --static [FILE ...]',
    summary: 'print the report of the sweep on the configured backend (reading never consumes results)',
    flags: [
      ['--json', 'one JSON object instead of the text report'],
      ['--verbose', 'list every chunk'],
      ['--static', 'merge static-mode workers\' JSON summary lines from FILEs (or stdin) instead of reading a broker'],
    ],
    notes: 'The broker\'s address comes from the environment (REDIS_HOST/REDIS_PORT or REDIS_URL, RABBITMQ_HOST/... or AMQP_URL).\n' +
      'Exit status: 0 complete; 3 incomplete (chunks missing or dead-lettered); 1 error; 2 usage.',
  },
  monitor: {
    usage: 'ttg monitor [--interval S] [--once] | ttg monitor --web [--port P] [--host H]',
    summary: 'live progress of the sweep on the configured backend, in the terminal or as a web page',
    flags: [
      ['--interval S', 'seconds between updates (default 2; 1 for --web)'],
      ['--once', 'print the progress once and exit'],
      ['--web', 'serve a live page (progress, throughput chart, workers, retries, dead letters, the final report) until Ctrl-C'],
      ['--port P', 'the page\'s port (default 8080; 0 picks a free one)'],
      ['--host H', 'the interface the page listens on (default: all, so a port-forward reaches it)'],
    ],
    notes: 'The broker\'s address comes from the environment, as for ttg aggregate.',
  },
  reset: {
    usage: 'ttg reset [--yes]',
    summary: 'delete the sweep\'s queue state (tasks, results, dead letters, settings) on the configured backend',
    flags: [['--yes', 'do not ask (at a terminal, ttg reset asks before deleting; scripts are never asked)']],
  },
  'retry-dead': {
    usage: 'ttg retry-dead [--chunk ID ...]',
    summary: 'put dead-lettered chunks back on the queue with fresh attempts (all of them, or those named), for workers to take',
    flags: [['--chunk ID ...', 'only these chunks (ids as ttg aggregate lists them; 42 means 00042); one that is not dead-lettered changes nothing']],
    notes: 'A re-driven chunk counts as pending again: workers that join take it, and ttg aggregate completes once it is done\n' +
      '(its report lists the chunk as re-driven, and --json gives redriven_chunks). Two ttg retry-dead at once never queue a chunk twice.\n' +
      'Exit status: 0 re-driven, or nothing was dead; 2 a named chunk is not dead-lettered (nothing changed); 1 error.',
  },
  bench: {
    usage: 'ttg bench [--quick] [--only kernels,user,engine,brokers,queue] [--kernel NAME.ts]',
    summary: 'run the benchmarks and write bench/results/latest.json',
    flags: [
      ['--quick', 'short runs: a smoke test, not figures to quote'],
      ['--only LIST', 'some sections only (user: user kernels, WASM vs JS and against the built-in of the same arithmetic; queue: real worker processes beside BullMQ)'],
      ['--kernel FILE', 'a user kernel (NAME.ts or NAME.wasm, twin NAME.js beside it): its WASM and JS throughput per thread, instead of the examples (alone: only that)'],
    ],
  },
  kernel: {
    usage: 'ttg kernel init NAME [--dir DIR] | ttg kernel build NAME.ts [--out FILE] | ttg kernel check NAME.ts [--twin NAME.js] [--total N] [--seed S]',
    summary: 'user kernels: write a starter kernel, compile one to WASM (printing its path and sha-256), check it against its JS twin',
    flags: [
      ['--dir DIR', 'init: where to write NAME.ts, NAME.js and NAME.README.md (default: here; never overwrites)'],
      ['--out FILE', 'build: where to write the module (default: NAME.wasm beside NAME.ts)'],
      ['--twin FILE', 'check: the JS twin (default: NAME.js beside the kernel)'],
      ['--total N', 'check: the sweep size the parameters are drawn from (default 1000000)'],
      ['--seed S', 'check: seed of the random ranges (default 1)'],
    ],
    notes: 'A user kernel is one AssemblyScript file exporting value(p: i64, total: i64): f64; ttg compiles its block loop and exact\n' +
      'statistics around it. check compares WASM and the twin value for value on the edges and on seeded random ranges, then\n' +
      'their statistics; exit 1 on the first mismatch (parameter and both values). Compile errors name the file and line (exit 1).',
  },
};

/** The overview: every command with its flags. */
export function usage(): string {
  const lines = ['usage: ttg <command> [flags]', '', 'commands:'];
  for (const h of Object.values(COMMAND_HELP)) {
    lines.push(`  ${h.usage.replace(/^ttg /, '')}`, `      ${h.summary}`);
  }
  lines.push('', 'ttg help <command> (or ttg <command> --help) for one command; ttg --version for the version.');
  lines.push('Exit codes: 0 success; 1 runtime failure; 2 invalid configuration or usage; 3 (aggregate, run) sweep incomplete.');
  return lines.join('\n');
}

/** The help of one command, or null when there is no such command. */
export function commandHelp(name: string): string | null {
  const h = COMMAND_HELP[name];
  if (!h) return null;
  const lines = [`usage: ${h.usage}`, '', h.summary];
  if (h.flags.length) {
    lines.push('', 'flags:');
    const width = Math.max(...h.flags.map(([f]) => f.length));
    for (const [flag, what] of h.flags) lines.push(`  ${flag.padEnd(width)}  ${what}`);
  }
  if (h.notes) lines.push('', h.notes);
  return lines.join('\n');
}

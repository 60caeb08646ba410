/**
 * The fault suite's shared shapes (issue 9). Every scenario runs real `ttg worker`
 * processes against a real broker, injects its faults, ends with `ttg aggregate --json`
 * and reports one FaultScenarioResult; `npm run faults` prints them as a table and keeps
 * them as JSON, and the short versions run inside `npm test`.
 */
export type FaultBackend = 'redis' | 'rabbitmq';

export interface FaultScenarioResult {
  /** e.g. 'kill-storm', 'broker-restart', 'partition', 'frozen', 'slow-alive', 'poison-duplicates', 'tls', 'acl'. */
  scenario: string;
  backend: FaultBackend;
  /** How the fault was made where there is a choice, e.g. 'netns' or 'relay' for a partition. */
  variant?: string;
  /** Faults injected (kills, restarts, cuts, freezes, poison entries...). */
  faults_injected: number;
  /** Per fault: ms from the fault to the chunks it took out being completed elsewhere (or by the same worker after it came back). */
  takeover_ms: number[];
  /** Chunks that were started more than once (recovered or retried). */
  chunks_redone: number;
  /** Parameters missing from the aggregate (must be 0). */
  params_lost: number;
  /** Parameters counted more than once in the aggregate (must be 0). */
  params_double_counted: number;
  /** `duplicate_results` from `ttg aggregate --json`. */
  duplicate_results: number;
  /** How each worker process ended. */
  workers: { exit_code: number | null; signal: string | null }[];
  /** Log lines that contained a secret (must be 0). */
  secret_leaks: number;
  /** Every expectation of the scenario held. */
  ok: boolean;
  /** What a reader needs to know: which expectation failed, which variant ran and why. */
  notes: string[];
}

export interface FaultRunOptions {
  /** The short version run inside `npm test`: smaller sweeps, fewer faults, same expectations. */
  quick: boolean;
  log: (line: string) => void;
}

export interface FaultScenario {
  name: string;
  backend: FaultBackend;
  run(options: FaultRunOptions): Promise<FaultScenarioResult>;
}

/** The fault report: one table row per scenario result, and the JSON kept of a run. */
import { median } from './harness.js';
import type { FaultScenarioResult } from './types.js';

const COLUMNS = ['scenario', 'backend', 'variant', 'faults', 'takeover ms med/max', 'redone', 'params lost', 'double-counted', 'duplicates', 'exits', 'ok'] as const;

/** How the workers ended, compactly: `3×0 2×SIGKILL`. */
export function exitsSummary(workers: FaultScenarioResult['workers']): string {
  const counts = new Map<string, number>();
  for (const w of workers) {
    const key = w.signal ?? String(w.exit_code);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${n}×${k}`).join(' ');
}

export function resultRow(r: FaultScenarioResult): string[] {
  const t = r.takeover_ms;
  return [
    r.scenario, r.backend, r.variant ?? '-', String(r.faults_injected),
    t.length ? `${median(t)}/${Math.max(...t)}` : '-',
    String(r.chunks_redone), String(r.params_lost), String(r.params_double_counted), String(r.duplicate_results),
    exitsSummary(r.workers), r.ok ? 'ok' : 'FAILED',
  ];
}

/** The results as an aligned text table, then each result's notes. */
export function formatTable(results: FaultScenarioResult[]): string {
  const rows = [[...COLUMNS], ...results.map(resultRow)];
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  for (const r of results) {
    if (r.notes.length === 0) continue;
    out.push('', `${r.scenario} / ${r.backend}${r.variant ? ` (${r.variant})` : ''}:`);
    for (const n of r.notes) out.push(`  - ${n}`);
  }
  return out.join('\n');
}

/**
 * The benchmark's picture: an SVG of bench/results/latest.json, written beside
 * it by `npm run bench`, so the figures can be looked at, not only read.
 * Panels of horizontal bars, each scaled from 0 to its own largest
 * value: kernel throughput per thread (WASM vs JS, a panel per kernel), engine throughput by
 * THREADS, and whole sweeps per backend and chunk size (in-process brokers,
 * and the queue path as a user runs it, with its min–max range). Plain SVG
 * text, no dependency: it opens in any browser and renders on GitHub.
 */

export interface BenchBar {
  label: string;
  value: number;
  /** Drawn as a whisker (the range over runs) where given. */
  min?: number;
  max?: number;
  /** Which series the bar belongs to (its colour), e.g. `wasm` or `js`. */
  series: string;
}

export interface BenchPanel {
  title: string;
  unit: string;
  bars: BenchBar[];
}

/** What the chart reads of latest.json (bench/run.ts writes it). */
export interface BenchResults {
  started?: string;
  quick?: boolean;
  machine?: { cpus: number; model: string; node: string };
  kernels?: Array<{ kernel: string; impl: string; paramsPerSecond: number }>;
  engine?: Array<{ backend: string; kernel: string; threads: number; chunkSize: number; paramsPerSecond: number; error?: string }>;
  brokers?: Array<{ backend: string; kernel: string; threads: number; chunkSize: number; paramsPerSecond: number; error?: string }>;
  queue?: { rows: Array<{ system: string; totalParams: number; chunkSize: number; runs: number; paramsPerSecond: { median: number; min: number; max: number } }> };
}

const COLOURS = ['#2f6fdf', '#e8772e', '#1f8a4c', '#9b51e0', '#c2185b', '#00838f'];
const ok = (x: number) => Number.isFinite(x) && x > 0;

/** The panels of a results file; sections that did not run (or failed) are left out. */
export function benchPanels(r: BenchResults): BenchPanel[] {
  const panels: BenchPanel[] = [];
  const kernels = (r.kernels ?? []).filter((k) => ok(k.paramsPerSecond));
  // One panel per kernel: their costs differ by orders of magnitude, and WASM vs JS is the comparison.
  for (const kernel of new Set(kernels.map((k) => k.kernel))) {
    panels.push({
      title: `Kernel ${kernel}, one thread: WASM vs JS`, unit: 'params/s',
      bars: kernels.filter((k) => k.kernel === kernel).map((k) => ({ label: `${k.kernel} ${k.impl}`, value: k.paramsPerSecond, series: k.impl })),
    });
  }
  const engine = (r.engine ?? []).filter((e) => !e.error && ok(e.paramsPerSecond));
  if (engine.length) {
    panels.push({
      title: `Engine scaling: whole ${engine[0]!.kernel} sweeps on the embedded queue, by THREADS`, unit: 'params/s',
      bars: engine.map((e) => ({ label: `THREADS=${e.threads}, chunk ${e.chunkSize.toLocaleString('en-US')}`, value: e.paramsPerSecond, series: `chunk ${e.chunkSize}` })),
    });
  }
  const brokers = (r.brokers ?? []).filter((b) => !b.error && ok(b.paramsPerSecond));
  if (brokers.length) {
    panels.push({
      title: 'Backends in-process: one worker, placeholder, by chunk size', unit: 'params/s',
      bars: brokers.map((b) => ({ label: `${b.backend}, chunk ${b.chunkSize.toLocaleString('en-US')}`, value: b.paramsPerSecond, series: b.backend })),
    });
  }
  const queue = (r.queue?.rows ?? []).filter((q) => q.runs > 0 && ok(q.paramsPerSecond.median));
  if (queue.length) {
    panels.push({
      title: 'Queue path: 2 worker processes (median, min–max), by chunk size', unit: 'params/s',
      bars: queue.map((q) => ({
        label: `${q.system}, chunk ${q.chunkSize.toLocaleString('en-US')}`, value: q.paramsPerSecond.median,
        min: q.paramsPerSecond.min, max: q.paramsPerSecond.max, series: q.system,
      })),
    });
  }
  return panels;
}

/** 1234567 → "1.23 M". */
export function shortNumber(x: number): string {
  if (x >= 1e9) return `${(x / 1e9).toFixed(2)} G`;
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)} k`;
  return x.toFixed(0);
}

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Geometry, exported for the test: bar lengths are value / panel max × BAR_SPACE. */
export const CHART = { width: 900, labelWidth: 250, barSpace: 480, barHeight: 18, gap: 6 } as const;

export function renderBenchChart(r: BenchResults): string {
  const panels = benchPanels(r);
  const { width, labelWidth, barSpace, barHeight, gap } = CHART;
  const parts: string[] = [];
  let y = 20;
  const subtitle = [
    r.started ? `run ${r.started.slice(0, 16).replace('T', ' ')} UTC` : '',
    r.machine ? `${r.machine.cpus} CPUs (${r.machine.model}), node ${r.machine.node}` : '',
    r.quick ? 'QUICK run: a smoke test, not figures to quote' : '',
  ].filter(Boolean).join(' · ');
  parts.push(`<text x="10" y="${y + 8}" class="title">ttg benchmarks</text>`);
  y += 26;
  if (subtitle) {
    parts.push(`<text x="10" y="${y}" class="sub">${escape(subtitle)}</text>`);
    y += 14;
  }
  if (panels.length === 0) {
    parts.push(`<text x="10" y="${y + 20}" class="label">no figures in this results file</text>`);
    y += 30;
  }
  for (const panel of panels) {
    y += 22;
    parts.push(`<text x="10" y="${y}" class="panel">${escape(panel.title)}</text>`);
    y += 10;
    const top = Math.max(...panel.bars.map((b) => Math.max(b.value, b.max ?? 0)));
    const seriesNames = [...new Set(panel.bars.map((b) => b.series))];
    for (const bar of panel.bars) {
      const colour = COLOURS[seriesNames.indexOf(bar.series) % COLOURS.length];
      const len = (bar.value / top) * barSpace;
      parts.push(`<text x="${labelWidth - 8}" y="${y + barHeight - 5}" class="label" text-anchor="end">${escape(bar.label)}</text>`);
      parts.push(`<rect x="${labelWidth}" y="${y}" width="${len.toFixed(2)}" height="${barHeight}" fill="${colour}" data-value="${bar.value}"><title>${escape(bar.label)}: ${Math.round(bar.value).toLocaleString('en-US')} ${panel.unit}</title></rect>`);
      let end = len;
      if (bar.min !== undefined && bar.max !== undefined && ok(bar.min) && ok(bar.max)) {
        const x1 = labelWidth + (bar.min / top) * barSpace;
        const x2 = labelWidth + (bar.max / top) * barSpace;
        const mid = y + barHeight / 2;
        parts.push(`<path d="M${x1.toFixed(2)} ${mid}H${x2.toFixed(2)}M${x1.toFixed(2)} ${mid - 5}V${mid + 5}M${x2.toFixed(2)} ${mid - 5}V${mid + 5}" class="range"/>`);
        end = Math.max(end, x2 - labelWidth);
      }
      parts.push(`<text x="${(labelWidth + end + 6).toFixed(2)}" y="${y + barHeight - 5}" class="value">${shortNumber(bar.value)} ${panel.unit}</text>`);
      y += barHeight + gap;
    }
  }
  const height = y + 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="ttg benchmarks">`,
    '<style>text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:#1d232b}.title{font-size:18px;font-weight:700}' +
      '.sub{font-size:11px;fill:#66707c}.panel{font-size:13px;font-weight:600}.label{font-size:12px}.value{font-size:11px;fill:#444}' +
      '.range{stroke:#1d232b;stroke-width:1.5;fill:none}</style>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    ...parts,
    '</svg>',
  ].join('\n') + '\n';
}

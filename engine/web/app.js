// The ttg monitor page: renders each `snapshot` event of /events (see engine/web-monitor.ts,
// MonitorSnapshot). Plain browser JavaScript, no build step; data is only ever set as text.
'use strict';

const $ = (id) => document.getElementById(id);
const int = (n) => (n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US'));
const palette = ['#2f6fdf', '#e8772e', '#1f8a4c', '#9b51e0', '#c2185b', '#00838f', '#6d4c41', '#7c8a17'];

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function ago(iso, now) {
  if (!iso) return '–';
  const s = Math.max(0, (Date.parse(now) - Date.parse(iso)) / 1000);
  return s < 1 ? 'just now' : `${duration(s)} ago`;
}

function cell(tr, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  tr.appendChild(td);
}

let chart = null;
let chartKey = '';

function renderChart(tp) {
  const box = $('chart');
  $('chart-empty').hidden = tp.t.length > 0;
  if (tp.t.length === 0) return;
  const names = Object.keys(tp.workers).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const data = [tp.t, tp.total, ...names.map((w) => tp.workers[w])];
  const key = names.join('\u0000');
  const width = Math.max(260, box.clientWidth);
  const height = window.innerWidth < 480 ? 200 : 260;
  if (!chart || key !== chartKey) {
    if (chart) chart.destroy();
    chartKey = key;
    chart = new uPlot({
      width, height,
      // One point (a sweep shorter than a bucket): a few seconds around it, not uPlot's default of years.
      scales: {
        x: { time: true, range: (u, min, max) => (min === max ? [min - 5, max + 5] : [min, max]) },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      series: [
        {},
        { label: 'total', stroke: '#1d232b', width: 2, fill: 'rgba(47,111,223,0.08)' },
        ...names.map((w, i) => ({ label: w, stroke: palette[i % palette.length], width: 1 })),
      ],
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map((v) => int(v)) }],
    }, data, box);
  } else {
    chart.setData(data);
  }
}

window.addEventListener('resize', () => {
  if (chart) chart.setSize({ width: Math.max(260, $('chart').clientWidth), height: window.innerWidth < 480 ? 200 : 260 });
});

function render(s) {
  const status = $('status');
  const banner = $('banner');
  if (s.broker.ok) {
    status.textContent = s.settled ? 'settled' : 'live';
    status.className = 'badge ok';
    banner.hidden = true;
  } else {
    status.textContent = 'broker unreachable';
    status.className = 'badge bad';
    banner.hidden = false;
    banner.textContent = `The broker (${s.backend}) is unreachable since ${new Date(s.broker.since).toLocaleTimeString()}: ` +
      `${s.broker.error}. The figures below are from its last answer; the monitor keeps trying.`;
  }
  if (!s.sweep) {
    $('sweep').textContent = s.broker.ok
      ? `no sweep yet on ${s.backend} under QUEUE_PREFIX=${s.queue_prefix}: waiting for workers to create one`
      : `${s.backend}, QUEUE_PREFIX=${s.queue_prefix}`;
  } else {
    const w = s.sweep;
    $('sweep').textContent = `kernel ${w.kernel} · ${int(w.total_params)} params in ${int(w.total_chunks)} chunks of ${int(w.chunk_size)} · ` +
      `${s.backend}, QUEUE_PREFIX=${s.queue_prefix}`;
  }
  const p = s.progress;
  if (p) {
    const pct = Math.floor(p.fraction * 1000) / 10;
    $('progress-pct').textContent = `${p.settled_chunks === p.total_chunks ? 100 : pct}%`;
    $('progress-text').textContent = `${int(p.settled_chunks)} / ${int(p.total_chunks)} chunks settled · ` +
      `${int(p.params_done)} / ${int(p.total_params)} params computed`;
    $('progress-fill').style.width = `${Math.min(100, p.fraction * 100)}%`;
    const bar = $('progress-fill').parentElement;
    bar.setAttribute('aria-valuenow', String(Math.round(p.fraction * 100)));
    bar.classList.toggle('done', s.settled);
    $('ready').textContent = int(p.ready);
    $('in-flight').textContent = int(p.in_flight);
    $('retrying').textContent = int(p.retrying);
    $('dead').textContent = int(p.dead_lettered_chunks);
    $('duplicates').textContent = int(p.duplicate_results);
  }
  $('rate').textContent = s.rate ? int(s.rate.params_per_second) : '–';
  $('chunk-rate').textContent = s.rate ? s.rate.chunks_per_second.toFixed(1) : '–';
  $('eta').textContent = s.settled ? 'done' : duration(s.eta_seconds);

  renderChart(s.throughput);

  const body = $('workers').tBodies[0];
  body.replaceChildren();
  for (const w of s.workers) {
    const tr = document.createElement('tr');
    tr.dataset.worker = w.worker;
    tr.dataset.consumer = w.consumer;
    cell(tr, w.consumer);
    cell(tr, int(w.chunks));
    cell(tr, int(w.params_per_second));
    cell(tr, w.in_hand === null ? '–' : int(w.in_hand));
    cell(tr, ago(w.last_seen, s.at));
    cell(tr, w.recovered.length ? `${w.recovered.length}: ${w.recovered.join(', ')}` : '–', 'wrap recovered');
    body.appendChild(tr);
  }
  $('workers-empty').hidden = s.workers.length > 0;

  const f = s.failures;
  const parts = [];
  parts.push(f.retrying_now === null ? 'chunks waiting to be retried: not reported by this broker'
    : `chunks waiting to be retried now: ${int(f.retrying_now)}`);
  parts.push(`failed attempts before success: ${int(f.retried_attempts)}`);
  parts.push(`dead-lettered: ${int(f.dead_letters.length + f.dead_letters_more)}`);
  $('retries').textContent = parts.join(' · ');
  const dead = $('dead-letters');
  dead.hidden = f.dead_letters.length === 0;
  dead.tBodies[0].replaceChildren(...f.dead_letters.map((d) => {
    const tr = document.createElement('tr');
    cell(tr, d.chunk_id);
    cell(tr, d.reason, 'wrap');
    cell(tr, String(d.attempts));
    cell(tr, d.worker_id);
    return tr;
  }));

  const r = s.report;
  $('report').hidden = !r;
  if (r) {
    // The JSON figures, every digit (as ttg aggregate --json), and the text report as ttg aggregate prints it.
    $('grand-sum').textContent = String(r.grand_sum);
    $('global-min').textContent = r.global_min === null ? '–' : `${r.global_min} at parameter ${r.argmin}`;
    $('global-max').textContent = r.global_max === null ? '–' : `${r.global_max} at parameter ${r.argmax}`;
    $('overall-avg').textContent = r.overall_avg === null ? '–' : String(r.overall_avg);
    $('missing').textContent = r.missing_chunks.length ? `${r.missing_chunks.length}: ${r.missing_chunks.slice(0, 20).join(', ')}` : '0';
    $('duplicate-results').textContent = String(r.duplicate_results);
    $('report-text').textContent = s.report_text;
  }
}

const events = new EventSource('/events');
events.addEventListener('snapshot', (e) => render(JSON.parse(e.data)));
events.addEventListener('error', () => {
  const status = $('status');
  status.textContent = 'monitor unreachable';
  status.className = 'badge bad';
  const banner = $('banner');
  banner.hidden = false;
  banner.textContent = 'Lost the connection to the ttg monitor process; reconnecting…';
});
events.addEventListener('open', () => {
  if ($('status').textContent === 'monitor unreachable') $('banner').hidden = true;
});

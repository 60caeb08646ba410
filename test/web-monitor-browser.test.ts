/**
 * The web monitor as a person sees it: real `ttg worker` processes sweep on
 * Redis while `ttg monitor --web` serves the page, and headless Chromium
 * (Debian's package, driven by playwright-core) watches it update live to
 * 100%, with the exact grand sum of the independent reference, a row per
 * worker, the throughput chart, and the report exactly as `ttg aggregate`
 * prints it. Then a worker is SIGKILLed mid-sweep and the page names the
 * chunks the survivor recovered; and a broker that goes away is said plainly.
 * Screenshots are kept (see testOutputDir) for a person to look at.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { golden, randomPrefix, REDIS_HOST, REDIS_PORT, requireRedis, runTtg, startTtg, testEnv, type TtgProcess } from './helpers.js';
import { freePort, TcpRelay } from './relay.js';
import { launchBrowser, testOutputDir } from './browser.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

/** Starts `ttg monitor --web` on a free port and waits for the address it prints. */
async function startWebMonitor(env: NodeJS.ProcessEnv): Promise<{ url: string; proc: TtgProcess }> {
  const port = await freePort();
  const proc = startTtg(['monitor', '--web', '--port', String(port), '--host', '127.0.0.1', '--interval', '0.5'], env);
  cleanups.push(async () => {
    proc.child.kill('SIGTERM');
    await proc.exited;
  });
  const deadline = Date.now() + 15_000;
  while (!/is at http:\/\/127\.0\.0\.1:\d+\//.test(proc.stdout())) {
    assert.ok(Date.now() < deadline, `ttg monitor --web did not say its address: ${proc.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return { url: `http://127.0.0.1:${port}/`, proc };
}

/** Waits until `check` holds on the page (polled in the test, so what it reads is what a person would read). */
async function until(page: Page, what: string, check: () => Promise<boolean>, timeoutMs = 25_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      assert.fail(`timed out waiting for the page to show ${what}; it shows:\n${(await page.innerText('body')).slice(0, 3000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const text = (page: Page, selector: string) => page.locator(selector).innerText();

test('the page follows a Redis sweep live to 100%: exact grand sum, worker rows, chart, and the report as ttg aggregate prints it', async () => {
  await requireRedis();
  const { context, close } = await launchBrowser();
  cleanups.push(close);
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
  const prefix = randomPrefix('web');
  const env = testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, TOTAL_PARAMS: 10000, CHUNK_SIZE: 250,
    SIMULATE_WORK_MS: 1, PREFETCH: 1, IDLE_TIMEOUT_SECONDS: 10,
  });
  cleanups.push(() => runTtg(['reset'], env, 20_000));
  const { url } = await startWebMonitor(env);

  const page = await context.newPage();
  await page.goto(url);
  await until(page, 'that no sweep exists yet', async () => /no sweep yet/.test(await text(page, '#sweep')));

  const workers = [0, 1, 2].map((id) => startTtg(['worker'], { ...env, WORKER_ID: String(id) }));
  for (const w of workers) cleanups.push(async () => w.child.kill('SIGKILL'));

  // Live: the percentage moves without a reload, through values between 0 and 100.
  const seen = new Set<string>();
  await until(page, '100%', async () => {
    const pct = await text(page, '#progress-pct');
    seen.add(pct);
    return pct === '100%';
  }, 40_000);
  const between = [...seen].filter((p) => p !== '0%' && p !== '100%');
  assert.ok(between.length >= 1, `the page showed progress on the way (saw ${[...seen].join(', ')})`);
  for (const w of workers) assert.equal(await w.exited, 0, w.stderr());

  await until(page, 'the report', async () => (await page.locator('#report').isVisible()) && (await text(page, '#grand-sum')) !== '');
  // The exact grand sum, as the independent reference gives it (every digit, as --json prints it).
  assert.equal(Number(await text(page, '#grand-sum')), ref.sum);
  assert.equal(await text(page, '#grand-sum'), String(ref.sum));
  assert.match(await text(page, '#global-min'), new RegExp(`^${ref.min} at parameter \\d+$`));
  assert.match(await text(page, '#global-max'), new RegExp(`^${ref.max} at parameter \\d+$`));
  assert.equal(await text(page, '#missing'), '0');
  assert.match(await text(page, '#progress-text'), /^40 \/ 40 chunks settled · 10,000 \/ 10,000 params computed$/);
  // The text report is exactly what `ttg aggregate` prints for the same sweep.
  const aggregate = await runTtg(['aggregate'], env, 20_000);
  assert.equal(aggregate.code, 0, aggregate.stderr);
  assert.equal(await page.locator('#report-text').textContent(), aggregate.stdout.replace(/\n$/, ''));

  // A row per worker, whose chunks add up to the sweep.
  const rows = page.locator('#workers tbody tr');
  assert.equal(await rows.count(), 3);
  let chunks = 0;
  for (let i = 0; i < 3; i++) {
    const cells = await rows.nth(i).locator('td').allInnerTexts();
    assert.equal(cells[0], `worker-${i}`);
    chunks += Number(cells[1]);
    assert.ok(Number(cells[2]!.replace(/,/g, '')) > 0, `worker-${i} has a rate: ${cells.join(' | ')}`);
  }
  assert.equal(chunks, 40);
  // The chart: uPlot drew a canvas with the total and one series per worker.
  assert.equal(await page.locator('#chart canvas').count(), 1);
  const box = await page.locator('#chart canvas').boundingBox();
  assert.ok(box && box.width > 200 && box.height > 100, `the chart has a size: ${JSON.stringify(box)}`);
  const legend = await page.locator('#chart .u-legend .u-series .u-label').allInnerTexts();
  assert.deepEqual(legend.slice(1), ['total', 'worker-0', 'worker-1', 'worker-2']);
  assert.equal(await page.locator('#banner').isVisible(), false);

  const dir = testOutputDir('web-monitor');
  await page.screenshot({ path: path.join(dir, 'sweep-done.png'), fullPage: true });
  // Phone width: nothing wider than the screen but the tables' own scroll boxes.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300); // the resize handler redraws the chart at the new width
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page fits a phone's width (overflows by ${overflow}px)`);
  await page.screenshot({ path: path.join(dir, 'sweep-done-phone.png'), fullPage: true });
  process.stdout.write(`# screenshots: ${dir}\n`);
});

test('a worker SIGKILLed mid-sweep: the page shows the survivor recovering its chunks, by id, and the exact sum', async () => {
  await requireRedis();
  const { context, close } = await launchBrowser();
  cleanups.push(close);
  const ref = golden().placeholder.find((g) => g.start === 0 && g.end === 10000)!;
  const env = testEnv({
    USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: randomPrefix('web-kill'), TOTAL_PARAMS: 10000, CHUNK_SIZE: 250,
    SIMULATE_WORK_MS: 0.5, PREFETCH: 2, IDLE_TIMEOUT_SECONDS: 20, STALE_THRESHOLD_MS: 1000, STALE_CHECK_INTERVAL_SECONDS: 0.5,
  });
  cleanups.push(() => runTtg(['reset'], env, 20_000));
  const { url } = await startWebMonitor(env);
  const page = await context.newPage();
  await page.goto(url);
  const [survivor, victim] = [0, 1].map((id) => startTtg(['worker'], { ...env, WORKER_ID: String(id) })) as [TtgProcess, TtgProcess];
  for (const w of [survivor, victim]) cleanups.push(async () => w.child.kill('SIGKILL'));

  // Kill the victim when the page shows it holding chunks, as a person watching would see it.
  const row = (worker: string) => page.locator(`#workers tbody tr[data-worker="${worker}"] td`);
  await until(page, 'worker-1 with chunks done and in hand', async () => {
    if ((await row('1').count()) === 0) return false;
    const cells = await row('1').allInnerTexts();
    return Number(cells[1]) >= 2 && Number(cells[3]) >= 1;
  });
  victim.child.kill('SIGKILL');
  assert.equal(await victim.exited, 'SIGKILL');

  await until(page, '100% after the recovery', async () => (await text(page, '#progress-pct')) === '100%', 40_000);
  assert.equal(await survivor.exited, 0, survivor.stderr());
  await until(page, 'the report', async () => (await text(page, '#grand-sum')) !== '');
  assert.equal(await text(page, '#grand-sum'), String(ref.sum), 'exact, each chunk counted once');
  assert.equal(await text(page, '#missing'), '0');

  // The survivor's row names the chunks it recovered: exactly those its log says it claimed.
  const claimed = [...survivor.stderr().matchAll(/FAULT RECOVERY: claimed chunk (\d+)/g)].map((m) => m[1]!).sort();
  assert.ok(claimed.length >= 1, `the survivor recovered something: ${survivor.stderr()}`);
  const cell = (await row('0').allInnerTexts())[5]!;
  assert.equal(cell, `${claimed.length}: ${claimed.join(', ')}`);
  assert.equal((await row('1').allInnerTexts())[5], '–', 'the victim recovered nothing');
  await page.screenshot({ path: path.join(testOutputDir('web-monitor'), 'worker-killed.png'), fullPage: true });
});

test('the page says plainly when the broker is unreachable, and recovers when it is back', async () => {
  await requireRedis();
  const { context, close } = await launchBrowser();
  cleanups.push(close);
  const relay = new TcpRelay(REDIS_HOST, REDIS_PORT);
  await relay.up();
  cleanups.push(() => relay.down());
  const prefix = randomPrefix('web-down');
  const env = testEnv({ USE_QUEUE: 'true', QUEUE_BACKEND: 'redis', QUEUE_PREFIX: prefix, TOTAL_PARAMS: 1000, CHUNK_SIZE: 100 });
  cleanups.push(() => runTtg(['reset'], env, 20_000));
  assert.equal((await runTtg(['worker'], env, 30_000)).code, 0);
  const { url } = await startWebMonitor({ ...env, REDIS_PORT: String(relay.port), CONNECT_TIMEOUT_SECONDS: '2' });
  const page = await context.newPage();
  await page.goto(url);
  await until(page, '100%', async () => (await text(page, '#progress-pct')) === '100%');
  assert.equal(await page.locator('#banner').isVisible(), false);

  await relay.down();
  await until(page, 'that the broker is unreachable', async () =>
    (await page.locator('#banner').isVisible()) && /broker \(redis\) is unreachable/.test(await text(page, '#banner')));
  assert.equal(await text(page, '#status'), 'broker unreachable');
  await page.screenshot({ path: path.join(testOutputDir('web-monitor'), 'broker-unreachable.png'), fullPage: true });

  await relay.up();
  await until(page, 'the broker back', async () => !(await page.locator('#banner').isVisible()), 30_000);
  assert.equal(await text(page, '#status'), 'settled');
});

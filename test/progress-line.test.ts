/**
 * The terminal monitor's line (engine/progress-line.ts): what it says, that
 * its counts never exceed their totals, and how it is written: redrawn in
 * place on a TTY, plain stamped lines when piped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitProgressLine, formatDuration, progressLine, ProgressWriter } from '../engine/progress-line.js';

const figures = { totalChunks: 200, settledChunks: 50, deadLettered: 3, inFlight: 4, retrying: 2, rate: 2.5 };

test('the line says settled of total, rate, ETA, in flight, retrying and dead-lettered', () => {
  const line = progressLine(figures);
  assert.equal(line, `[${'#'.repeat(8)}${'.'.repeat(22)}] 25.0% 50/200 chunks, 2.5/s, eta 1m00s, in flight 4, retrying 2, dead-lettered 3`);
  assert.match(progressLine({ ...figures, rate: null }), / -\/s, eta \?/);
  assert.match(progressLine({ ...figures, rate: 0 }), /eta \?/);
  assert.match(progressLine({ ...figures, inFlight: -1, retrying: -1 }), /in flight \?, retrying \?/, 'what the broker cannot tell is "?"');
  assert.match(progressLine({ ...figures, settledChunks: 200 }), /100\.0% 200\/200 chunks, .* eta done/);
  assert.equal(formatDuration(3599), '59m59s');
  // On a terminal the bar gives way first: the figures fit 80 columns whole, and a wide terminal gets the bar.
  const narrow = fitProgressLine(figures, 80);
  assert.ok(narrow.length < 80, narrow);
  assert.match(narrow, /dead-lettered 3$/);
  assert.equal(fitProgressLine(figures, 200), line);
  assert.equal(formatDuration(7300), '2h01m');
});

test('counts never exceed their totals: 203 settled of 200 shows 200/200, dead letters no more than settled', () => {
  const line = progressLine({ ...figures, settledChunks: 203, deadLettered: 250 });
  assert.match(line, /200\/200 chunks/);
  assert.match(line, /dead-lettered 200$/);
  assert.match(line, /100\.0%/);
  for (const [, done, total] of line.matchAll(/(\d+)\/(\d+)/g)) assert.ok(Number(done) <= Number(total));
});

test('on a TTY each update redraws the one line in place, cut to the width; messages and the end leave a fresh line', () => {
  const written: string[] = [];
  const w = new ProgressWriter({ isTTY: true, columns: 40, write: (c) => written.push(c) });
  w.update('first');
  w.update('x'.repeat(100));
  w.say('sweep settled');
  w.end();
  assert.deepEqual(written.slice(0, 1), ['\r\x1b[2Kfirst']);
  assert.equal(written[1], `\r\x1b[2K${'x'.repeat(38)}…`);
  assert.equal(written[1]!.length - '\r\x1b[2K'.length, 39, 'never as wide as the terminal: no wrap');
  assert.deepEqual(written.slice(2), ['\n', 'sweep settled\n'], 'the redrawn line ends before a message; no extra blank line at the end');
  assert.ok(written.slice(0, 2).every((c) => !c.includes('\n')), 'updates never move to a new line');
});

test('piped, every update is a plain line of its own, stamped with the time, with no escape codes', () => {
  let text = '';
  const w = new ProgressWriter({ isTTY: false, write: (c) => (text += c) });
  const at = new Date('2026-11-30T12:00:00.000Z');
  w.update('one', at);
  w.update('two', at);
  w.say('done');
  w.end();
  assert.equal(text, '2026-11-30T12:00:00.000Z  one\n2026-11-30T12:00:00.000Z  two\ndone\n');
  assert.doesNotMatch(text, /\x1b|\r/);
});

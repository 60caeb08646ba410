/**
 * Headless Chromium for the web monitor's tests: Debian's `chromium` package
 * driven by playwright-core (no browser download: the machine may have no
 * internet). A missing browser fails the test with what to install; it is
 * never a skip. `.ci/run` installs the package when it is missing.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env['TTG_CHROMIUM'] ?? '/usr/bin/chromium';

/** Where tests keep what a person may want to look at afterwards (screenshots). */
export function testOutputDir(name: string): string {
  const dir = path.join(process.env['TTG_TEST_OUTPUT'] ?? path.join(os.tmpdir(), 'ttg-test-output'), name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Launches headless Chromium with a fresh profile; close() also removes the profile. */
export async function launchBrowser(): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is not installed at ${CHROMIUM}; the web monitor's browser tests need it: ` +
      'apt-get update && apt-get install -y chromium (.ci/run does this), or set TTG_CHROMIUM to a Chromium binary');
  }
  const profile = mkdtempSync(path.join(os.tmpdir(), 'ttg-chromium-'));
  // A persistent context is how playwright takes a fresh --user-data-dir of our own.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: no sandbox; and nothing that would reach the network on its own.
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1200, height: 1000 },
    // The page honours it (no progress bar animation): a screenshot shows the figures as they are, not mid-slide.
    reducedMotion: 'reduce',
    timeout: 30_000,
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

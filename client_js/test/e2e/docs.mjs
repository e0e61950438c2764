#!/usr/bin/env node
// The API reference page (`/docs`) in headless Chromium with the network cut off at the
// server: every request to another host is aborted and recorded, so the page must render from
// the server's own files (the vendored Swagger UI over /openapi.json).
//
//   node client_js/test/e2e/docs.mjs 'http://127.0.0.1:PORT'
//
// Prints one JSON summary on stdout; tests/test_browser_e2e.py asserts on it.

import { ARGS, browserPath } from './browser.mjs';

const WAIT_MS = 20_000;

async function main() {
  const server = process.argv[2];
  if (!server) throw new Error('usage: docs.mjs <server URL>');
  const origin = new URL(server).origin;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: browserPath(), headless: true, args: ARGS });
  const offsite = [];
  const problems = [];
  try {
    const page = await browser.newPage();
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin || url.startsWith('data:')) return route.continue();
      offsite.push(url);
      return route.abort();
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${new URL(r.url()).pathname}`);
    });
    await page.goto(`${origin}/docs`, { waitUntil: 'load' });
    await page.waitForSelector('.opblock', { timeout: WAIT_MS });
    const summary = await page.evaluate(() => ({
      title: document.querySelector('.info .title')?.textContent ?? '',
      operations: [...document.querySelectorAll('.opblock')].map((el) => ({
        method: el.querySelector('.opblock-summary-method')?.textContent ?? '',
        path: el.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '',
      })),
      authorize: document.querySelector('.btn.authorize') !== null,
    }));
    process.stdout.write(`${JSON.stringify({ ...summary, offsite, problems })}\n`);
  } finally {
    await browser.close();
  }
}

if (process.env.NODE_TEST_CONTEXT && !process.argv.slice(2).length) {
  const { test } = await import('node:test'); // `npm test` finds this file: it needs a server
  test('the /docs page in headless Chromium', { skip: 'needs a live server: tests/test_browser_e2e.py runs it' }, () => {});
} else {
  main().catch((e) => {
    process.stderr.write(`docs.mjs: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}

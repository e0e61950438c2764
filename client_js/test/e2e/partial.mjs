#!/usr/bin/env node
// A partial session in a real headless Chromium against a live fedlearn API: the client module
// loaded from the API's origin, `FedClient.start({baseRows: 'partial'})`, `prepare` for the
// candidates, then local ranking beside the server's `POST /v1/users/{user}/rank`. A second
// session in the same page shows the buckets coming from the browser's HTTP cache.
//
//   node client_js/test/e2e/partial.mjs '<API URL>' '<user>' '<token>' '<request JSON>'
//
// The request JSON is `{"items": [{id, features?}], "context": {...}}`. Prints one JSON summary
// on stdout (tests/test_base_rows.py asserts on it); exits 1 with the reason on stderr.

import { chromium } from 'playwright-core';

import { ARGS, browserPath } from './browser.mjs';

/** Runs in the page: two partial sessions, their requests and the server's ranking. */
async function inPage({ user, token, items, context }) {
  performance.setResourceTimingBufferSize(5000);
  const { FedClient } = await import('/src/fedlearn.js');
  const requests = () => {
    const out = performance.getEntriesByType('resource')
      .filter((e) => e.initiatorType === 'fetch')
      .map((e) => ({ url: new URL(e.name).pathname, transfer: e.transferSize, body: e.encodedBodySize }));
    performance.clearResourceTimings();
    return out;
  };
  const session = async () => {
    const client = await FedClient.start({ baseUrl: '', user, token, baseRows: 'partial', storage: null });
    const fetched = await client.prepare(items, context);
    const ranked = client.rank(items, context).map((r) => [r.id, r.score]);
    await client.close();
    return { fetched, ranked, requests: requests() };
  };
  const first = await session();
  const second = await session();
  const res = await fetch(`/v1/users/${encodeURIComponent(user)}/rank`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ items, context }),
  });
  const served = (await res.json()).items.map((r) => [r.id, r.score]);
  return { first, second, served };
}

async function main() {
  const [api, user, token, request] = process.argv.slice(2);
  if (!request) throw new Error("usage: partial.mjs '<API URL>' '<user>' '<token>' '<request JSON>'");
  const browser = await chromium.launch({ executablePath: browserPath(), args: ARGS });
  try {
    const page = await browser.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(`${api}/healthz`);
    const { items, context } = JSON.parse(request);
    const summary = await page.evaluate(inPage, { user, token, items, context });
    process.stdout.write(`${JSON.stringify({ ...summary, problems })}\n`);
  } finally {
    await browser.close();
  }
}

if (process.env.NODE_TEST_CONTEXT && !process.argv.slice(2).length) {
  // `npm test` finds this file under test/; without a server it has nothing to drive.
  const { test } = await import('node:test');
  test('a partial session in headless Chromium', { skip: 'needs a live server: tests/test_base_rows.py runs it' }, () => {});
} else {
  main().catch((e) => {
    process.stderr.write(`partial.mjs: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}

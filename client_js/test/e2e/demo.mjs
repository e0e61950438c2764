#!/usr/bin/env node
// The demo page in a real headless Chromium, against a live fedlearn server, used as a person
// would: look at the ranked grid, Like films of one genre and Skip films of another, watch the
// grid re-rank at once (on-device learning), wait until the server has trained the same signals
// (the panel polls the user's model), then reload: a new session must rank with the server's
// delta and take the base from the Cache API, not the network.
//
//   node client_js/test/e2e/demo.mjs '<demo page URL>' [--out artifacts/browser]
//
// Prints one JSON summary on stdout; tests/test_browser_e2e.py asserts on it. Exits 1 (the
// reason on stderr) when the page cannot be driven at all: no browser, no grid, a wait timed out.
// Real time throughout: under a virtual time budget the Cache API never settles.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { ARGS, browserPath } from './browser.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..', '..');
const SIGNALS_PER_GENRE = 3;
const WAIT_MS = 20_000; // events flush within 2 s and the panel polls every 3 s: ample

const $ = (id) => `[data-testid="${id}"]`;

/** @param {string[]} argv */
function parseArgs(argv) {
  const url = argv.find((a) => !a.startsWith('--'));
  if (!url) throw new Error('usage: demo.mjs <demo page URL> [--out DIR]');
  const i = argv.indexOf('--out');
  const out = i >= 0 ? path.resolve(argv[i + 1]) : path.join(REPO, 'artifacts', 'browser');
  return { url, out };
}

/**
 * The grid as the page shows it, in display order.
 * @param {import('playwright-core').Page} page
 */
async function readGrid(page) {
  return page.$$eval($('card'), (cards) =>
    cards.map((el) => ({
      id: el.dataset.itemId,
      title: el.querySelector('[data-testid="card-title"]').textContent,
      genres: [...el.querySelectorAll('[data-testid="card-genres"] .chip')].map((c) => c.textContent),
      rank: Number(el.dataset.rank),
      score: Number(el.dataset.score),
      mark: el.dataset.mark,
    })),
  );
}

/** @param {import('playwright-core').Page} page */
async function readPanel(page) {
  const ids = ['status', 'base-version', 'model-size', 'learned-on-device', 'events-queued',
    'events-sent', 'events-dropped', 'server-events-applied', 'server-model-rows', 'error'];
  const panel = {};
  for (const id of ids) panel[id] = (await page.locator($(id)).textContent()).trim();
  return panel;
}

/**
 * Pick what a person testing the page would: Like the single-genre films of the genre the
 * base ranks lowest, Skip those of the genre it ranks highest, so learning has to move them.
 * @param {Awaited<ReturnType<typeof readGrid>>} grid
 */
function chooseSignals(grid) {
  const byGenre = new Map();
  for (const card of grid) {
    if (card.genres.length !== 1) continue;
    const list = byGenre.get(card.genres[0]) ?? [];
    list.push(card);
    byGenre.set(card.genres[0], list);
  }
  // One more than we signal, so an unsignalled film of each genre shows the generalisation.
  const usable = [...byGenre].filter(([, cards]) => cards.length > SIGNALS_PER_GENRE);
  if (usable.length < 2) throw new Error(`need two genres with ${SIGNALS_PER_GENRE + 1}+ single-genre films on the page`);
  const meanRank = (cards) => cards.reduce((s, c) => s + c.rank, 0) / cards.length;
  usable.sort((a, b) => meanRank(a[1]) - meanRank(b[1]));
  const [skipGenre, skipCards] = usable[0];
  const [likeGenre, likeCards] = usable[usable.length - 1];
  return {
    likeGenre,
    skipGenre,
    // The lowest-ranked films to Like, the highest-ranked to Skip: the moves are the point.
    like: likeCards.slice(-SIGNALS_PER_GENRE).map((c) => c.id),
    skip: skipCards.slice(0, SIGNALS_PER_GENRE).map((c) => c.id),
  };
}

/**
 * @param {Awaited<ReturnType<typeof readGrid>>} grid
 * @param {string} genre
 * @param {Set<string>} exclude
 */
function meanRankOf(grid, genre, exclude = new Set()) {
  const cards = grid.filter((c) => c.genres.includes(genre) && !exclude.has(c.id));
  return cards.length ? cards.reduce((s, c) => s + c.rank, 0) / cards.length : null;
}

/**
 * @param {import('playwright-core').Page} page
 * @param {string} testid
 * @param {number} value
 */
async function waitForNumber(page, testid, value) {
  await page.waitForFunction(
    ([sel, v]) => Number(document.querySelector(sel)?.textContent) === v,
    [$(testid), value],
    { timeout: WAIT_MS, polling: 100 },
  );
}

/** @param {import('playwright-core').Page} page */
async function waitForGrid(page) {
  await page.locator($('card')).first().waitFor({ timeout: WAIT_MS });
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'learning', $('status'), {
    timeout: WAIT_MS,
  });
}

async function main() {
  const { url, out } = parseArgs(process.argv.slice(2));
  const { chromium } = await import('playwright-core'); // a devDependency: `npm install` first
  mkdirSync(out, { recursive: true });
  const executablePath = browserPath();
  const profile = mkdtempSync(path.join(tmpdir(), 'fedlearn-e2e-'));
  const started = Date.now();
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ARGS,
    viewport: { width: 1360, height: 1000 },
    // Without it every signal slides the cards for 420 ms (FLIP), and a click aimed at one
    // card can land on another sliding under the pointer: seen once in CI as a mark that
    // never came. The test is about what the page learns, not about the animation.
    reducedMotion: 'reduce',
  });
  const problems = [];
  const requests = { base: 0, events: 0 };
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // Failed requests are reported with their URL below; other console errors are the page's.
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
    });
    page.on('response', (r) => {
      const p = new URL(r.url()).pathname;
      // The page declares no icon, so the browser's guess at one is refused: not the demo's fault.
      if (r.status() >= 400 && p !== '/favicon.ico') problems.push(`HTTP ${r.status()} for ${r.request().method()} ${p}`);
    });
    page.on('request', (r) => {
      const p = new URL(r.url()).pathname;
      if (p.startsWith('/v1/base/')) requests.base += 1;
      if (p === '/v1/events') requests.events += 1;
    });
    const shot = async (name) => {
      const file = path.join(out, name);
      // The top of the grid, where the liked films climb to; clicking scrolled the page down.
      await page.evaluate(() => window.scrollTo(0, 0));
      // Finish the FLIP animations so the picture shows where cards landed.
      await page.screenshot({ path: file, animations: 'disabled' });
      return path.relative(REPO, file);
    };

    // First session: an empty profile, so the base comes over the network.
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: WAIT_MS });
    await waitForGrid(page);
    const gridBefore = await readGrid(page);
    const firstBaseRequests = requests.base;
    const screenshots = [await shot('demo-before.png')];

    const choice = chooseSignals(gridBefore);
    const signals = [];
    // Alternate, as a person browsing would; it also keeps the user's own bias near neutral.
    for (let i = 0; i < SIGNALS_PER_GENRE; i++) {
      for (const [what, id] of [['like', choice.like[i]], ['skip', choice.skip[i]]]) {
        const card = page.locator(`${$('card')}[data-item-id="${id}"]`);
        // Where the card is shown, and with what propensity, as the click lands.
        const slot = Number(await card.getAttribute('data-rank')) - 1;
        const propensity = Number(await card.getAttribute('data-propensity'));
        await card.locator($(what)).click({ timeout: WAIT_MS });
        await page
          .waitForFunction(
            ([sel, mark]) => document.querySelector(sel)?.dataset.mark === mark,
            [`${$('card')}[data-item-id="${id}"]`, what === 'like' ? 'liked' : 'skipped'],
            { timeout: WAIT_MS },
          )
          .catch(async (e) => {
            // Say what the page shows instead: which cards carry a mark, and what went wrong.
            const marked = await page.$$eval(`${$('card')}[data-mark]:not([data-mark=""])`, (els) =>
              els.map((el) => `${el.dataset.itemId}=${el.dataset.mark}`),
            );
            throw new Error(`no ${what} mark on item ${id}: marked ${marked.join(', ') || 'none'}; ${problems.join('; ') || 'no page errors'} (${e.message})`);
          });
        signals.push({ what, id, slot, propensity });
      }
    }
    const gridAfter = await readGrid(page);
    screenshots.push(await shot('demo-after.png'));

    // The client flushes within 2 s; the panel re-reads the server's model every 3 s.
    await waitForNumber(page, 'events-sent', signals.length);
    await waitForNumber(page, 'server-events-applied', signals.length);
    const panel = await readPanel(page);
    screenshots.push(await shot('demo-synced.png'));

    // Second session in the same profile: the delta from the server, the base from the cache.
    requests.base = 0;
    await page.reload({ waitUntil: 'domcontentloaded', timeout: WAIT_MS });
    await waitForGrid(page);
    await waitForNumber(page, 'server-events-applied', signals.length);
    const gridReload = await readGrid(page);
    const panelReload = await readPanel(page);
    screenshots.push(await shot('demo-reload.png'));
    const scoreAfter = new Map(gridAfter.map((c) => [c.id, c.score]));
    const signalled = new Set(signals.map((s) => s.id));

    const summary = {
      browser: `${executablePath} ${context.browser()?.version() ?? ''}`.trim(),
      signals,
      likeGenre: choice.likeGenre,
      skipGenre: choice.skipGenre,
      orderBefore: gridBefore.map((c) => c.id),
      orderAfter: gridAfter.map((c) => c.id),
      orderReload: gridReload.map((c) => c.id),
      cards: Object.fromEntries(gridBefore.map((c) => [c.id, { title: c.title, genres: c.genres }])),
      marksAfter: Object.fromEntries(gridAfter.filter((c) => c.mark).map((c) => [c.id, c.mark])),
      // Mean rank of the films of each genre that got no signal: did the lesson generalise?
      unsignalled: {
        likeGenreBefore: meanRankOf(gridBefore, choice.likeGenre, signalled),
        likeGenreAfter: meanRankOf(gridAfter, choice.likeGenre, signalled),
        skipGenreBefore: meanRankOf(gridBefore, choice.skipGenre, signalled),
        skipGenreAfter: meanRankOf(gridAfter, choice.skipGenre, signalled),
      },
      panel,
      eventsSent: Number(panel['events-sent']),
      serverEventsApplied: Number(panel['server-events-applied']),
      requests: { firstLoadBase: firstBaseRequests, events: requests.events },
      reload: {
        baseRequests: requests.base,
        panel: panelReload,
        // The server trained the same steps in float32; the device kept float64.
        maxScoreDiff: Math.max(...gridReload.map((c) => Math.abs(c.score - scoreAfter.get(c.id)))),
      },
      problems,
      screenshots,
      seconds: (Date.now() - started) / 1000,
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

if (process.env.NODE_TEST_CONTEXT && !process.argv.slice(2).length) {
  // `npm test` (node --test) finds this file under test/; without a server it has nothing to
  // drive, so it says where it does run instead of failing.
  const { test } = await import('node:test');
  test('the demo page in headless Chromium', { skip: 'needs a live server: tests/test_browser_e2e.py runs it' }, () => {});
} else {
  main().catch((e) => {
    process.stderr.write(`demo.mjs: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}

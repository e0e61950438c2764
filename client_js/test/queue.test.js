// The client's network behaviour: batching, retries, auth refresh, rejection, the offline
// queue, keepalive. The injected `fetch` is the client's own HTTP seam; the live server and a
// real browser are exercised by the end-to-end test.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { FedClient } from '../src/fedlearn.js';
import { memoryCache } from '../src/basecache.js';
import { buildBase, json, manualTimers, memoryStorage, scriptedFetch, settle } from './helpers.js';

const API = 'https://api.test';
const BASE_BYTES = buildBase({ version: 'b1', k: 2, features: ['item=1'], w: [0.5], v: [[0.1, 0.2]] });
const ITEMS = ['1', '2', '3', '4', '5'].map((id) => ({ id }));

/**
 * A server whose answers to POST /v1/events come from `answers` in turn (the last one repeats).
 * @param {Array<Error | ((call: object) => Response)>} answers
 */
function server(answers = []) {
  let i = 0;
  return scriptedFetch((call) => {
    if (call.url.endsWith('/model')) {
      return json({
        user: 'u1',
        base_version: 'b1',
        base_url: '/v1/base/b1',
        delta: { w0: 0, features: [], w: [], v: [] },
        lr: 0.1,
        l2: 0,
        events_applied: 0,
        serve: 'clone',
      });
    }
    if (call.url.endsWith('/v1/base/b1')) return new Response(BASE_BYTES.slice(0));
    const answer = answers.length ? answers[Math.min(i++, answers.length - 1)] : () => json({ accepted: 1 });
    if (answer instanceof Error) throw answer;
    return answer(call);
  });
}

const clients = [];
async function start(s, options = {}) {
  const timers = options.timers ?? manualTimers();
  const client = await FedClient.start({
    baseUrl: API,
    user: 'u1',
    token: 't1',
    fetch: s.fetch,
    storage: memoryStorage(),
    baseCache: memoryCache(),
    random: () => 0.5,
    ...options,
    timers,
  });
  clients.push(client);
  return { client, timers };
}
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => {});
});
const posts = (s) => s.calls.filter((c) => c.method === 'POST');
const ids = (call) => call.body.events.map((e) => e.event_id);

test('a full batch is sent at once, as {"events": [...]} with the token', async () => {
  const s = server();
  const { client } = await start(s, { batchSize: 3 });
  client.click('1');
  client.skip('2');
  await settle();
  assert.equal(posts(s).length, 0);
  const third = client.click('3').event;
  await settle();
  const [post] = posts(s);
  assert.equal(post.url, `${API}/v1/events`);
  assert.equal(post.headers.authorization, 'Bearer t1');
  assert.equal(post.headers['content-type'], 'application/json');
  assert.deepEqual(post.body.events.map((e) => [e.item, e.signal]), [['1', 'click'], ['2', 'skip'], ['3', 'click']]);
  assert.deepEqual(post.body.events[2], third);
  assert.equal(client.stats.sent, 3);
  assert.equal(client.stats.queued, 0);
});

test('a lone event is sent when the time bound fires', async () => {
  const s = server();
  const { client, timers } = await start(s, { flushMs: 2000 });
  client.click('1');
  assert.deepEqual(timers.delays(), [2000]);
  await settle();
  assert.equal(posts(s).length, 0);
  timers.fire();
  await settle();
  assert.equal(posts(s).length, 1);
  assert.equal(client.stats.sent, 1);
});

test('a 5xx is retried with backoff, with the same event_ids', async () => {
  const s = server([() => json({ title: 'Unavailable' }, 503), () => json({ accepted: 2 })]);
  const { client, timers } = await start(s, { retryBaseMs: 1000 });
  client.click('1');
  client.click('2');
  await client.flush();
  assert.equal(client.stats.queued, 2);
  // backoff cap 1000 ms; half fixed + half jitter with random() = 0.5
  assert.deepEqual(timers.delays(), [750]);
  timers.fire();
  await settle();
  const [first, second] = posts(s);
  assert.deepEqual(ids(second), ids(first));
  assert.equal(client.stats.sent, 2);
  assert.equal(client.stats.queued, 0);
});

test('backoff grows exponentially up to its cap on repeated network errors', async () => {
  const s = server([new TypeError('fetch failed')]);
  const { client, timers } = await start(s, { retryBaseMs: 100, retryMaxMs: 500 });
  client.click('1');
  await client.flush();
  const seen = [];
  for (let i = 0; i < 5; i++) {
    seen.push(...timers.delays());
    timers.fire();
    await settle();
  }
  assert.deepEqual(seen, [75, 150, 300, 375, 375]);
  assert.equal(new Set(posts(s).map((p) => ids(p)[0])).size, 1);
});

test('a 429 waits what Retry-After says', async () => {
  const s = server([() => json({ title: 'Too Many Requests' }, 429, { 'retry-after': '7' }), () => json({})]);
  const { client, timers } = await start(s);
  client.click('1');
  await client.flush();
  assert.deepEqual(timers.delays(), [7000]);
  timers.fire();
  await settle();
  assert.equal(client.stats.sent, 1);
});

test('a 401 asks for a new token once and retries with it', async () => {
  let refreshes = 0;
  const s = server([(call) => (call.headers.authorization === 'Bearer t2' ? json({}) : json({}, 401))]);
  const { client } = await start(s, {
    onTokenExpired: async () => {
      refreshes += 1;
      return 't2';
    },
  });
  client.click('1');
  await client.flush();
  assert.equal(refreshes, 1);
  assert.deepEqual(posts(s).map((p) => p.headers.authorization), ['Bearer t1', 'Bearer t2']);
  assert.equal(client.token, 't2');
  assert.equal(client.stats.sent, 1);
});

test('a 401 that persists keeps the events and reports it', async () => {
  const errors = [];
  const s = server([() => json({ title: 'Unauthorized', detail: 'token expired' }, 401)]);
  const { client, timers } = await start(s, { onTokenExpired: () => 't2', onError: (e) => errors.push(e) });
  client.click('1');
  await client.flush();
  assert.equal(errors.length, 1);
  assert.equal(errors[0].kind, 'auth');
  assert.match(errors[0].message, /answered 401: token expired/);
  assert.equal(client.stats.queued, 1);
  assert.equal(timers.delays().length, 1);
});

test('a batch the server rejects as invalid is dropped, reported, never retried', async () => {
  const errors = [];
  const problem = { type: 'about:blank', title: 'Bad Request', status: 422, detail: "events[0].signal must be 'click' or 'skip'" };
  const s = server([() => json(problem, 422), () => json({})]);
  const { client, timers } = await start(s, { onError: (e) => errors.push(e) });
  const { event } = client.click('1');
  await client.flush();
  assert.equal(posts(s).length, 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].kind, 'rejected');
  assert.equal(errors[0].status, 422);
  assert.equal(errors[0].detail, problem.detail);
  assert.deepEqual(errors[0].events, [event]);
  assert.equal(client.stats.queued, 0);
  assert.equal(client.stats.dropped, 1);
  assert.deepEqual(timers.delays(), []);
});

test('the offline queue is bounded, persisted, and resent at the next start', async () => {
  const storage = memoryStorage();
  const errors = [];
  const down = server([new TypeError('offline')]);
  const { client } = await start(down, { storage, capacity: 3, onError: (e) => errors.push(e) });
  const sentIds = ITEMS.map((it) => client.click(it.id).event.event_id);
  assert.equal(errors.filter((e) => e.kind === 'overflow').length, 2);
  assert.equal(client.stats.dropped, 2);
  assert.equal(client.stats.queued, 3);
  const saved = JSON.parse([...storage.map.values()][0]);
  assert.deepEqual(saved.map((e) => e.event_id), sentIds.slice(2));
  // Closing while offline keeps them; a new page with the same storage sends them.
  await client.close();
  const up = server();
  const { client: next } = await start(up, { storage });
  await settle();
  assert.deepEqual(ids(posts(up)[0]), sentIds.slice(2));
  assert.equal(next.stats.queued, 0);
  assert.equal(JSON.parse([...storage.map.values()][0]).length, 0);
});

test('close sends what is queued and leaves no timer armed', async () => {
  const s = server();
  const { client, timers } = await start(s);
  client.click('1');
  client.skip('2');
  assert.equal(timers.delays().length, 1);
  await client.close();
  assert.equal(posts(s)[0].body.events.length, 2);
  assert.deepEqual(timers.delays(), []);
  assert.throws(() => client.click('3'), /client is closed/);
});

test('events keep their order across batches', async () => {
  const s = server();
  const { client } = await start(s, { batchSize: 2 });
  const order = ITEMS.map((it) => client.click(it.id).event.event_id);
  await client.flush();
  assert.deepEqual(posts(s).flatMap(ids), order);
  assert.deepEqual(posts(s).map((p) => p.body.events.length), [2, 2, 1]);
});

test('the features remembered for ranked items are bounded', async () => {
  const { client } = await start(server(), { predictionMemory: 2 });
  const ranked = client.rank(ITEMS.slice(0, 3), { hour: '21' });
  assert.deepEqual(client.click(ranked[0].id).event.context, {}); // evicted: nothing remembered
  assert.deepEqual(client.click(ranked[2].id).event.context, { hour: '21' });
});

test('a hidden page flushes with keepalive', async () => {
  const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
  const win = new EventTarget();
  Object.assign(globalThis, { document: doc, window: win });
  try {
    const s = server();
    const { client } = await start(s);
    client.click('1');
    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    await settle();
    assert.equal(posts(s).length, 1);
    assert.equal(posts(s)[0].keepalive, true);
    assert.equal(client.stats.queued, 0);
    await client.close();
    win.dispatchEvent(new Event('pagehide')); // listeners are gone after close
    await settle();
    assert.equal(posts(s).length, 1);
  } finally {
    delete globalThis.document;
    delete globalThis.window;
  }
});

test('options are validated before any request', async () => {
  const s = server();
  await assert.rejects(start(s, { user: '' }), /user must be a non-empty string.*got ""/);
  await assert.rejects(start(s, { user: 'a/b' }), /user must not contain '\/', got "a\/b"/);
  await assert.rejects(start(s, { token: 7 }), /token must be a non-empty bearer token, got 7/);
  await assert.rejects(start(s, { batchSize: 0 }), /batchSize must be a number >= 1, got 0/);
  assert.equal(s.calls.length, 0);
});

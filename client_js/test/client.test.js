import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { FedClient, eventFeatures, parseBase, score } from '../src/fedlearn.js';
import { memoryCache } from '../src/basecache.js';
import { buildBase, json, manualTimers, memoryStorage, scriptedFetch, settle } from './helpers.js';

const API = 'https://api.test';
const BASE_BYTES = buildBase({
  version: 'base-3',
  k: 2,
  w0: 0,
  features: ['item=1', 'item=2', 'item=3', 'genre=Drama', 'genre=Comedy'],
  w: [0.3, 0.2, 0.1, 0, 0],
  v: [
    [0.1, 0],
    [0, 0.1],
    [0.1, 0.1],
    [0.2, 0],
    [0, 0.2],
  ],
});
const ITEMS = [
  { id: '1', features: { 'genre=Drama': 1 } },
  { id: '2', features: { 'genre=Comedy': 1 } },
  { id: '3', features: { 'genre=Drama': 1, 'genre=Comedy': 1 } },
];

/** The answers of a well-behaved server; tests override `events` to script failures. */
function server({ events = () => json({ accepted: 1 }), model = {}, baseUrl = '/v1/base/base-3' } = {}) {
  return scriptedFetch((call) => {
    if (call.url === `${API}/v1/users/u%207/model`) {
      return json({
        user: 'u 7',
        base_version: 'base-3',
        base_url: baseUrl,
        delta: { w0: 0, features: [], w: [], v: [] },
        lr: 0.5,
        l2: 0,
        events_applied: 4,
        serve: 'clone',
        ...model,
      });
    }
    if (call.url.endsWith('/v1/base/base-3')) return new Response(BASE_BYTES.slice(0));
    if (call.url === `${API}/v1/events`) return events(call);
    return json({ title: 'Not Found', detail: `no route ${call.url}` }, 404);
  });
}

const clients = [];
/** Start a client with test seams; closed after each test. */
async function start(s, options = {}) {
  const client = await FedClient.start({
    baseUrl: `${API}/`,
    user: 'u 7',
    token: 't1',
    fetch: s.fetch,
    storage: memoryStorage(),
    baseCache: memoryCache(),
    timers: manualTimers(),
    random: () => 0.5,
    ...options,
  });
  clients.push(client);
  return client;
}
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => {});
});
const posts = (s) => s.calls.filter((c) => c.method === 'POST');

test('start fetches the model with the token, then the base once per version', async () => {
  const s = server();
  const cache = memoryCache();
  const first = await start(s, { baseCache: cache });
  assert.deepEqual(
    s.calls.map((c) => c.url),
    [`${API}/v1/users/u%207/model`, `${API}/v1/base/base-3`],
  );
  assert.equal(s.calls[0].headers.authorization, 'Bearer t1');
  assert.equal(first.stats.baseVersion, 'base-3');
  assert.equal(first.stats.eventsApplied, 4);
  // A returning session downloads only the user's model.
  await start(s, { baseCache: cache });
  assert.deepEqual(s.calls.slice(2).map((c) => c.url), [`${API}/v1/users/u%207/model`]);
});

test('a base on another origin is fetched without the token', async () => {
  const s = server({ baseUrl: 'https://cdn.test/v1/base/base-3' });
  await start(s);
  assert.equal(s.calls[1].url, 'https://cdn.test/v1/base/base-3');
  assert.equal(s.calls[1].headers.authorization, undefined);
});

test('a start error names the request and carries the problem detail', async () => {
  const s = scriptedFetch(() => json({ title: 'Forbidden', detail: 'token is for user 8' }, 403));
  await assert.rejects(start(s), (e) => e.status === 403 && /answered 403: token is for user 8/.test(e.message));
});

test('rank scores each item with the server-built features, best first', async () => {
  const client = await start(server());
  const ranked = client.rank(ITEMS, { hour: '21' });
  const base = parseBase(BASE_BYTES);
  const expected = ITEMS.map((it) => ({
    id: it.id,
    score: score(base, null, eventFeatures('u 7', it.id, it.features, { hour: '21' })),
  })).sort((a, b) => b.score - a.score);
  assert.deepEqual(
    ranked.map((r) => [r.id, r.score]),
    expected.map((r) => [r.id, r.score]),
  );
  assert.equal(ranked[0].item, ITEMS.find((it) => it.id === ranked[0].id));
});

test('a skip lowers the item at once; the event carries what the ranking saw', async () => {
  const client = await start(server());
  const before = client.rank(ITEMS, { hour: '21' });
  const top = before[0];
  const { event, prediction } = client.skip(top.id);
  assert.equal(prediction, top.score);
  assert.equal(event.user, 'u 7');
  assert.equal(event.item, top.id);
  assert.equal(event.signal, 'skip');
  assert.deepEqual(event.context, { hour: '21' });
  assert.equal(event.prediction_id, undefined); // a local ranking leaves no server record to name
  assert.match(event.event_id, /^[0-9a-f-]{36}$/);
  const after = client.rank(ITEMS, { hour: '21' });
  assert.ok(after.find((r) => r.id === top.id).score < top.score);
  assert.ok(client.stats.deltaRows > 0);
});

test('learnOnDevice: false leaves the ranking alone but still sends the event', async () => {
  const client = await start(server(), { learnOnDevice: false });
  const before = client.rank(ITEMS);
  client.click(before[2].id);
  const scores = (ranked) => ranked.map((r) => [r.id, r.score]);
  assert.deepEqual(scores(client.rank(ITEMS)), scores(before));
  assert.equal(client.stats.queued, 1);
  assert.equal(client.stats.deltaRows, 0);
});

test('a prediction_id from a server-side ranking is passed through', async () => {
  const client = await start(server());
  assert.equal(client.click('1', undefined, { predictionId: 'abc123' }).event.prediction_id, 'abc123');
  assert.throws(() => client.click('1', undefined, { predictionId: '' }), /predictionId must be a non-empty string/);
});

test('a local ranking explores under its policy and each event says how its item was shown', async () => {
  const s = server();
  const client = await start(s, { policy: { kind: 'epsilon', epsilon: 0.2 } });
  const greedy = client.rank(ITEMS, {}, { policy: { kind: 'greedy' } });
  assert.ok(greedy.every((r) => r.propensity === 1));
  // Below epsilon, u / epsilon = 0.95 picks the last of the items left, slot after slot.
  const ranked = client.rank(ITEMS, {}, { random: () => 0.19 });
  assert.deepEqual(
    ranked.map((r) => r.id),
    [greedy[2].id, greedy[1].id, greedy[0].id],
  );
  // Not the best: epsilon / 3, epsilon / 2; the last one left: probability 1.
  assert.deepEqual(
    ranked.map((r) => r.propensity),
    [0.2 / 3, 0.2 / 2, 1],
  );
  const { event } = client.click(ranked[1].id);
  assert.deepEqual([event.propensity, event.slot, event.policy], [0.1, 1, { kind: 'epsilon', epsilon: 0.2 }]);
  const serverRanked = client.click(ranked[0].id, undefined, { predictionId: 'p1' }).event;
  assert.equal(serverRanked.propensity, undefined); // the server's record says it
  assert.equal(client.click('9').event.propensity, undefined); // never ranked here
  await client.flush();
  const sent = posts(s)[0].body.events;
  assert.deepEqual(sent[0].policy, { kind: 'epsilon', epsilon: 0.2 });
  assert.throws(() => client.rank(ITEMS, {}, { policy: { kind: 'epsilon', epsilon: 2 } }), /options.policy.epsilon must be a number in \[0, 1\]/);
});

test('serve "base" ranks with the base alone and does not learn on the device', async () => {
  const s = server({ model: { delta: { w0: 5, features: [], w: [], v: [] }, serve: 'base' } });
  const client = await start(s);
  const base = parseBase(BASE_BYTES);
  const [top] = client.rank(ITEMS);
  assert.equal(top.score, score(base, null, eventFeatures('u 7', top.id, top.item.features, {})));
  client.click(top.id);
  assert.equal(client.rank(ITEMS)[0].score, top.score);
});

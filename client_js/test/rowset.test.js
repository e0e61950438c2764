// Partial bases against the Python side's vectors (rowset-vectors.json, written by
// `python -m fedlearn.model.rowset_vectors client_js/test/rowset-vectors.json`): the same bucket
// numbers, the .flrs bytes read with the server's checks, and the same scores over the rows of a
// few buckets as over the whole base. Then the client's partial session over a scripted fetch.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { afterEach, test } from 'node:test';
import { bucketOf, Delta, FedClient, FedError, parseBase, parseRowSet, PartialBase, score } from '../src/fedlearn.js';
import { memoryCache } from '../src/basecache.js';
import { json, manualTimers, memoryStorage, scriptedFetch } from './helpers.js';

const vectors = JSON.parse(readFileSync(new URL('./rowset-vectors.json', import.meta.url), 'utf8'));
const bytesOf = (b64) => new Uint8Array(Buffer.from(b64, 'base64'));
const whole = parseBase(bytesOf(vectors.base));
const bucket = (b) => parseRowSet(bytesOf(vectors.buckets[b]));
const TOL = 1e-6;

test('feature names fall in the buckets Python puts them in', () => {
  for (const [name, b] of Object.entries(vectors.bucket_of)) assert.equal(bucketOf(name, 8), b, name);
});

test('each bucket holds exactly the rows of the whole base that hash to it', () => {
  const seen = [];
  for (let b = 0; b < 8; b++) {
    const rows = bucket(b);
    assert.deepEqual(rows.buckets, [b]);
    rows.features.forEach((name, i) => {
      const r = whole.index.get(name);
      assert.equal(rows.w[i], whole.w[r]);
      assert.deepEqual([...rows.v.subarray(i * 3, i * 3 + 3)], [...whole.v.subarray(r * 3, r * 3 + 3)]);
    });
    seen.push(...rows.features);
  }
  assert.deepEqual(seen.sort(), [...whole.features].sort());
});

test('a partial base scores like the whole base, and refuses rows it never fetched', () => {
  const partial = new PartialBase('rows-v1', vectors.base_rows);
  const delta = Delta.fromJSON(vectors.delta, 3);
  const first = vectors.cases[0].features;
  assert.throws(() => score(partial, delta, first), (e) => e instanceof FedError && e.kind === 'missing_rows');
  for (const { features, expected_score: expected } of vectors.cases) {
    for (const b of partial.missing(Object.keys(features))) partial.add(bucket(b));
    const got = score(partial, delta, features);
    assert.ok(Math.abs(got - expected) <= TOL, `${JSON.stringify(features)}: ${got} != ${expected}`);
    assert.equal(got, score(whole, delta, features));
  }
  assert.ok(partial.buckets.size < 8 || partial.nFeatures === whole.nFeatures);
});

test('a corrupt, foreign or lying bucket is refused with what is wrong', () => {
  const good = bytesOf(vectors.buckets[3]);
  const flipped = good.slice();
  flipped[flipped.length - 2] ^= 0x10;
  assert.throws(() => parseRowSet(flipped), /row set checksum must be the CRC-32/);
  assert.throws(() => parseRowSet(good.slice(0, 20)), /row set/);
  assert.throws(() => parseRowSet(bytesOf(vectors.base)), /row set magic must be "FLRS"/);
  const other = new PartialBase('rows-v2', vectors.base_rows);
  assert.throws(() => other.add(bucket(3)), /must belong to base "rows-v2"/);
  assert.throws(() => new PartialBase('v', { ...vectors.base_rows, n_buckets: 0 }), /n_buckets must be an integer >= 1/);
});

const API = 'https://api.test';
const ITEMS = ['3', '7', '12', '35'].map((id, i) => ({ id, features: i % 2 ? { 'genre=Drama': 1 } : { 'genre=Comédie': 1 } }));

function server(rows = () => vectors.base_rows) {
  return scriptedFetch((call) => {
    if (call.url === `${API}/v1/users/alice/model`) {
      return json({
        user: 'alice', base_version: 'rows-v1', base_url: '/v1/base/rows-v1', base_rows: rows(),
        delta: vectors.delta, lr: 0.3, l2: 0, events_applied: 6, serve: 'clone',
      });
    }
    const hit = call.url.match(/\/v1\/base\/rows-v1\/buckets\/8\/(\d+)(\?.*)?$/);
    if (hit) return new Response(bytesOf(vectors.buckets[hit[1]]));
    if (call.url === `${API}/v1/base/rows-v1`) return new Response(bytesOf(vectors.base));
    return json({ title: 'Not Found', detail: call.url }, 404);
  });
}

const clients = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => {});
});
async function start(s, options) {
  const client = await FedClient.start({
    baseUrl: API, user: 'alice', token: 't', fetch: s.fetch, storage: memoryStorage(),
    baseCache: memoryCache(), timers: manualTimers(), ...options,
  });
  clients.push(client);
  return client;
}

test('a partial session fetches the user row at start and the candidates\' buckets in prepare', async () => {
  const s = server();
  const client = await start(s, { baseRows: 'partial' });
  const buckets = () => s.calls.filter((c) => c.url.includes('/buckets/')).length;
  assert.equal(buckets(), 1, 'the user row only');
  assert.ok(!s.calls.some((c) => c.url.endsWith('/v1/base/rows-v1')), 'never the whole base');
  assert.equal(s.calls[1].headers.authorization, 'Bearer t');
  assert.throws(() => client.rank(ITEMS, { hour: '21' }), (e) => e.kind === 'missing_rows');
  const fetched = await client.prepare(ITEMS, { hour: '21' });
  assert.equal(buckets(), 1 + fetched);
  assert.equal(await client.prepare(ITEMS, { hour: '21' }), 0, 'nothing twice');
  const partial = client.rank(ITEMS, { hour: '21' });
  const full = (await start(server(), {})).rank(ITEMS, { hour: '21' });
  assert.deepEqual(partial.map((r) => [r.id, r.score]), full.map((r) => [r.id, r.score]));
  assert.equal(typeof client.click('3').prediction, 'number', 'a prepared item learns on the device');
  const errors = [];
  const other = await start(server(), { baseRows: 'partial', onError: (e) => errors.push(e) });
  const { event, prediction } = other.skip('29', { hour: '23' });
  assert.equal(prediction, undefined);
  assert.equal(event.item, '29', 'an unprepared signal is still sent');
  assert.equal(errors[0]?.kind, 'missing_rows');
});

test('a refresh whose buckets moved starts a new partial base with the rows it had', async () => {
  let url = vectors.base_rows.url;
  const s = server(() => ({ ...vectors.base_rows, url }));
  const client = await start(s, { baseRows: 'partial' });
  await client.prepare(ITEMS, { hour: '21' });
  const before = client.base;
  await client.refresh();
  assert.equal(client.base, before, 'the same buckets: kept');
  url = `${url}?moved`;
  await client.refresh();
  assert.notEqual(client.base, before);
  assert.deepEqual([...client.base.buckets].sort(), [...before.buckets].sort(), 'the same rows, fetched anew');
  assert.ok(s.calls.at(-1).url.endsWith('?moved'));
  assert.equal(client.rank(ITEMS, { hour: '21' }).length, ITEMS.length);
});

test('prepare on a pruned version (410) moves the session to the current base, once', async () => {
  let url = vectors.base_rows.url;
  let pruned = false;
  const s = server(() => ({ ...vectors.base_rows, url }));
  // Once pruned, the old version's buckets answer as the API does for a pruned version.
  const fetch = async (input, init) =>
    pruned && String(input).includes('/buckets/') && !String(input).includes('?current')
      ? json({ title: 'Gone', status: 410, detail: 'pruned' }, 410)
      : s.fetch(input, init);
  const client = await start({ fetch }, { baseRows: 'partial' });
  const before = client.base;
  pruned = true;
  url = `${vectors.base_rows.url}?current`; // what the model now names
  const fetched = await client.prepare(ITEMS, { hour: '21' });
  assert.notEqual(client.base, before, 'a new partial base');
  assert.equal(fetched, client.base.buckets.size);
  assert.equal(client.rank(ITEMS, { hour: '21' }).length, ITEMS.length, 'ranks on the new rows');
  assert.equal(await client.prepare(ITEMS, { hour: '21' }), 0, 'nothing twice');
  // A model that still names the pruned buckets (a refresh mends nothing): the 410 is the
  // caller's after one try, not a loop.
  pruned = false;
  url = vectors.base_rows.url;
  const stuck = await start({ fetch }, { baseRows: 'partial' });
  pruned = true;
  await assert.rejects(stuck.prepare(ITEMS, { hour: '21' }), (e) => e.status === 410);
});

test('baseRows is validated', async () => {
  await assert.rejects(start(server(), { baseRows: 'some' }), /baseRows must be "whole" or "partial"/);
});

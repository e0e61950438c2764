import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fnv1a32, mulberry32, unseenLatent } from '../src/fedlearn.js';

// Expected values were computed independently in Python from the text of docs/CONTRACTS.md,
// with exact integer arithmetic (no JavaScript involved):
//   python3 -c '
//   import json; M = 2**32
//   def imul(a, b): return (a * b) % M
//   def fnv(bs):
//       h = 0x811C9DC5
//       for b in bs: h = ((h ^ b) * 0x01000193) % M
//       return h
//   def mul(a):
//       a = (a + 0x6D2B79F5) % M; t = a
//       t = imul(t ^ (t >> 15), t | 1)
//       t = t ^ ((t + imul(t ^ (t >> 7), t | 61)) % M)
//       return ((t ^ (t >> 14)) % M) / M, a
//   def latent(name, seed, scale, k):
//       s = fnv(name.encode()) ^ (seed % M); out = []
//       for _ in range(k):
//           u, s = mul(s); out.append(scale * (2 * u - 1))
//       return out
//   print(json.dumps({n: fnv(n.encode()) for n in ["", "a", "item=42", "genre=Drama"]}))
//   print(json.dumps({n: latent(n, 42, 0.1, 4) for n in ["item=999999", "hour=21",
//                     "genre=Science Fiction", "tag=café"]}))
//   print(json.dumps({"seed_neg": latent("item=1", -5, 0.05, 3),
//                     "seed_big": latent("item=1", 2**32 + 7, 0.05, 3)}))'
const FNV = { '': 2166136261, a: 3826002220, 'item=42': 956044071, 'genre=Drama': 693250578 };
const LATENT_SEED_42 = {
  'item=999999': [0.05714621637016535, -0.0010607481002807618, 0.07984911524690688, -0.020047341054305435],
  'hour=21': [-0.03702721102163196, -0.06290968894027174, 0.08823205195367337, -0.07426500674337148],
  'genre=Science Fiction': [0.04196790051646531, 0.06589003102853895, -0.039148273738101126, 0.057347033591941],
  'tag=café': [-0.041618543304502965, -0.09063025740906597, 0.08343727681785823, 0.013871805183589459],
};
const SEED_NEG = [0.019294849201105538, 0.04311560818459839, 0.029320735088549557];
const SEED_BIG = [-0.005821752944029868, -0.007219869433902204, 0.024809153866954148];

test('fnv1a32 of UTF-8 bytes', () => {
  for (const [name, h] of Object.entries(FNV)) assert.equal(fnv1a32(new TextEncoder().encode(name)), h, name);
});

test('unseen latents match the Python computation exactly (UTF-8 names included)', () => {
  for (const [name, expected] of Object.entries(LATENT_SEED_42)) {
    assert.deepEqual(Array.from(unseenLatent(name, 42, 0.1, 4)), expected, name);
  }
});

test('the seed is taken mod 2^32', () => {
  assert.deepEqual(Array.from(unseenLatent('item=1', -5, 0.05, 3)), SEED_NEG);
  assert.deepEqual(Array.from(unseenLatent('item=1', (2 ** 32 + 7) % 2 ** 32, 0.05, 3)), SEED_BIG);
});

test('mulberry32 draws are in [0, 1) and its state advances', () => {
  let state = 0;
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    const [u, next] = mulberry32(state);
    assert.ok(u >= 0 && u < 1, `draw ${u}`);
    assert.ok(Number.isInteger(next) && next >= 0 && next < 2 ** 32);
    seen.add(u);
    state = next;
  }
  assert.equal(seen.size, 1000);
});

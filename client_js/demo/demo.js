// The demo: start a FedClient, show a ranked grid, re-rank at once after each Like / Skip
// (on-device learning), and show what the device and the server know about the user's model.
import { FedClient, fnv1a32 } from '../src/fedlearn.js';

const SERVER_POLL_MS = 3000;
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const form = /** @type {HTMLFormElement} */ ($('start-form'));
const grid = $('grid');
const reduceMotion = matchMedia('(prefers-reduced-motion: reduce)').matches;

/** @type {FedClient | null} */
let client = null;
let items = [];
/** @type {Map<string, 'liked' | 'skipped'>} */
const marks = new Map();
/** @type {Map<string, HTMLElement>} card elements by item id, reused so they can animate */
const cards = new Map();
let poll = 0;

// Fill the form from the query string; start at once when it is complete.
const query = new URLSearchParams(location.search);
form.baseUrl.value = query.get('baseUrl') ?? location.origin;
form.user.value = query.get('user') ?? '';
form.token.value = query.get('token') ?? '';
form.addEventListener('submit', (e) => {
  e.preventDefault();
  start().catch(showError);
});
if (form.user.value && form.token.value) start().catch(showError);

async function start() {
  await client?.close();
  client = null;
  clearInterval(poll);
  setText('status', 'starting…');
  setText('error', '');
  const baseUrl = form.baseUrl.value.trim().replace(/\/+$/, '');
  const token = form.token.value.trim();
  client = await FedClient.start({
    baseUrl,
    user: form.user.value.trim(),
    token,
    onError: showError,
    onChange: showStats,
    // ?policy={"kind":"epsilon","epsilon":0.1} explores; each card shows its propensity.
    ...(query.get('policy') ? { policy: JSON.parse(query.get('policy')) } : {}),
  });
  const res = await fetch(`${baseUrl}/v1/items?limit=48`, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET /v1/items answered ${res.status}: ${await res.text()}`);
  items = (await res.json()).items;
  marks.clear();
  cards.clear();
  grid.replaceChildren();
  render(client.rank(items), new Map());
  setText('status', 'learning');
  showStats(client.stats);
  refreshServer();
  poll = setInterval(refreshServer, SERVER_POLL_MS);
}

/**
 * A signal: learn on the device, queue the event, re-rank at once.
 * @param {string} id
 * @param {'like' | 'skip'} what
 */
function signal(id, what) {
  if (!client) return;
  const before = new Map([...grid.children].map((el, i) => [el.dataset.itemId, i]));
  if (what === 'like') client.click(id);
  else client.skip(id);
  marks.set(id, what === 'like' ? 'liked' : 'skipped');
  render(client.rank(items), before);
}

/**
 * Show the ranking, moving existing cards (FLIP: measure, reorder, animate the difference).
 * @param {{id: string, score: number, propensity: number, item: any}[]} ranked
 * @param {Map<string, number>} before positions before this signal, to show how far items moved
 */
function render(ranked, before) {
  const first = new Map([...cards].map(([id, el]) => [id, el.getBoundingClientRect()]));
  ranked.forEach((r, i) => {
    const el = cards.get(r.id) ?? createCard(r.item);
    cards.set(r.id, el);
    updateCard(el, r, i, before.has(r.id) ? before.get(r.id) - i : 0);
    grid.appendChild(el); // appending in rank order reorders the grid
  });
  if (reduceMotion) return;
  for (const [id, el] of cards) {
    const was = first.get(id);
    if (!was) continue;
    const now = el.getBoundingClientRect();
    const dx = was.left - now.left;
    const dy = was.top - now.top;
    if (!dx && !dy) continue;
    el.animate([{ transform: `translate(${dx}px, ${dy}px)` }, { transform: 'none' }], {
      duration: 420,
      easing: 'cubic-bezier(.2,.7,.2,1)',
    });
  }
}

/** @param {{id: string, title?: string, features?: Record<string, number>}} item */
function createCard(item) {
  const el = document.createElement('article');
  el.className = 'card';
  el.dataset.testid = 'card';
  el.dataset.itemId = item.id;
  const title = item.title ?? `Item ${item.id}`;
  const hue = fnv1a32(new TextEncoder().encode(title)) % 360;
  const genres = Object.keys(item.features ?? {})
    .filter((f) => f.startsWith('genre='))
    .map((f) => f.slice(6));
  el.innerHTML = `
    <span class="badge" data-testid="card-mark" hidden></span>
    <div class="poster" style="background: linear-gradient(135deg, hsl(${hue} 55% 42%), hsl(${(hue + 40) % 360} 60% 30%))">
      <span class="rank" data-testid="card-rank"></span><span class="moved" data-testid="card-moved"></span>
    </div>
    <div class="body">
      <div class="title" data-testid="card-title"></div>
      <div class="chips" data-testid="card-genres"></div>
      <div class="score"><span></span></div>
      <div class="scoretext" data-testid="card-score"></div>
      <div class="actions">
        <button class="like" type="button" data-testid="like">♥ Like</button>
        <button class="skip" type="button" data-testid="skip">Skip</button>
      </div>
    </div>`;
  el.querySelector('.title').textContent = title; // text, never HTML: titles come from data
  el.querySelector('.chips').append(
    ...genres.map((g) => Object.assign(document.createElement('span'), { className: 'chip', textContent: g })),
  );
  el.querySelector('.like').addEventListener('click', () => signal(item.id, 'like'));
  el.querySelector('.skip').addEventListener('click', () => signal(item.id, 'skip'));
  return el;
}

/**
 * @param {HTMLElement} el
 * @param {{id: string, score: number, propensity: number}} r
 * @param {number} i rank, from 0
 * @param {number} moved places gained (negative: lost)
 */
function updateCard(el, r, i, moved) {
  el.dataset.rank = String(i + 1);
  el.dataset.score = r.score.toFixed(6);
  el.dataset.propensity = String(r.propensity);
  el.querySelector('.rank').textContent = `#${i + 1}`;
  el.querySelector('.score > span').style.width = `${(100 * r.score).toFixed(1)}%`;
  el.querySelector('.scoretext').textContent = `${(100 * r.score).toFixed(1)}% likely to click`;
  const badge = el.querySelector('.moved');
  badge.textContent = moved > 0 ? `▲ ${moved}` : moved < 0 ? `▼ ${-moved}` : '';
  badge.classList.toggle('show', moved !== 0);
  // The movement is news only for a moment; fade it so the next signal's stands out.
  clearTimeout(Number(badge.dataset.timer));
  if (moved) badge.dataset.timer = String(setTimeout(() => badge.classList.remove('show'), 2500));
  const mark = marks.get(r.id);
  const label = el.querySelector('.badge');
  label.hidden = !mark;
  label.textContent = mark === 'liked' ? '♥ liked' : 'skipped';
  el.classList.toggle('liked', mark === 'liked');
  el.classList.toggle('skipped', mark === 'skipped');
  el.dataset.mark = mark ?? '';
}

/** @param {FedClient['stats']} s */
function showStats(s) {
  setText('base-version', s.baseVersion ?? '–');
  setText('model-size', `${s.deltaRows} rows · ${formatBytes(s.deltaBytes)}`);
  setText('learned-on-device', s.learnedOnDevice);
  setText('events-queued', s.queued);
  setText('events-sent', s.sent);
  setText('events-dropped', s.dropped);
}

async function refreshServer() {
  if (!client) return;
  try {
    const model = await client.serverModel();
    setText('server-events-applied', model.events_applied);
    setText('server-model-rows', model.delta.features.length);
    setText('server-model-updated', `base ${model.base_version} · checked ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    showError(e);
  }
}

/** @param {unknown} e */
function showError(e) {
  setText('error', e instanceof Error ? e.message : String(e));
  if (!client) setText('status', 'failed');
}

function setText(id, value) {
  $(id).textContent = String(value);
}

/** @param {number} n */
function formatBytes(n) {
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KB`;
}

// The mobile dashboard: cards for the top symbols (with their perpetual's funding rate),
// signals, critical alerts and the beta summary — filled from /api/dashboard/mobile
// (≤ 50 KB), then kept live by /ws.

import {
  createAlertItem, newerVersion, newestFirst, takeList, updateAlertItem,
} from './alerts.js';
import {
  byId, el, find, formatNumber, setChoiceClass, setText, showChange, showPrice, syncList,
} from './dom.js';
import {
  keepLastPayload, registerServiceWorker, refreshWhenOnline, showOfflineRead,
} from './offline.js';
import { formatFundingRate } from './numbers.js';
import { pageSettings, startPage } from './page.js';
import {
  listingBadge, listingMark, renderBetaSummary, renderSignals, showListing,
} from './panels.js';
import { tickOf } from './prices.js';

const settings = pageSettings();
/** @type {Map<string, {node: HTMLElement, data: Record<string, any>}>} */
const cards = new Map();
/** @type {Map<string, import('./alerts.js').Alert>} */
const criticalAlerts = new Map();

/**
 * @param {string} symbol
 * @returns {{node: HTMLElement, data: Record<string, any>}}
 */
function createCard(symbol) {
  const node = el('article', 'card');
  node.dataset.key = symbol;
  const top = el('div', 'card-top');
  top.append(el('span', 'card-symbol', symbol), listingBadge(), el('span', 'card-signal'));
  const prices = el('div', 'card-prices');
  prices.append(el('span', 'card-price num'), el('span', 'card-change num'));
  const score = el('div', 'card-score');
  const meter = el('meter');
  meter.min = 0;
  meter.max = 100;
  meter.low = settings.thresholds.short;
  meter.high = settings.thresholds.long;
  meter.optimum = 50;
  meter.setAttribute('aria-label', `${symbol} confluence score`);
  score.append(el('span', 'card-score-label', 'Confluence'), meter, el('span', 'card-score-value num'));
  const funding = el('div', 'card-funding');
  funding.title = 'Funding rate of its perpetual swap, per funding interval (— without one)';
  funding.append(el('span', 'card-funding-label', 'Funding'), el('span', 'card-funding-value num'));
  node.append(top, prices, score, funding);
  return { node, data: { symbol } };
}

/**
 * @param {string} symbol
 * @param {Record<string, any>} fields
 */
function patchCard(symbol, fields) {
  const card = cards.get(symbol);
  if (!card) return; // not among the top symbols of this page
  const before = card.data.price;
  Object.assign(card.data, fields);
  const { node, data } = card;
  if (data.listing) Object.assign(data, { score: null, signal: null }); // none for a pair no longer listed
  showPrice(find(node, '.card-price'), data.price, before, tickOf(data));
  showChange(find(node, '.card-change'), data.change_24h);
  const signal = find(node, '.card-signal');
  setText(signal, data.signal || '—');
  setChoiceClass(signal, 'signal-', ['long', 'short', 'neutral'], data.signal);
  showMeter(/** @type {HTMLMeterElement} */ (find(node, 'meter')), data.score);
  setText(find(node, '.card-score-value'), formatNumber(data.score));
  setText(find(node, '.card-funding-value'), formatFundingRate(data.funding_rate));
  showListing(find(node, '.badge-listing'), node, listingMark(data.listing));
}

/**
 * The card's meter at `score`; without a score it shows none (no bar; its place kept).
 * @param {HTMLMeterElement} meter
 * @param {number | null | undefined} score
 */
function showMeter(meter, score) {
  const known = typeof score === 'number' && Number.isFinite(score);
  meter.style.visibility = known ? '' : 'hidden';
  if (known) meter.value = score;
}

/**
 * @param {Array<{symbol: string, price: number | null, change_24h: number | null,
 *   score: number | null, signal: string | null, tick_size?: number | null,
 *   listing?: import('./panels.js').Listing | null, funding_rate?: number | null}>} scores
 *   the top symbols, in order
 */
function renderCards(scores) {
  const container = byId('cards');
  const order = scores.map((row) => {
    const card = cards.get(row.symbol) || createCard(row.symbol);
    cards.set(row.symbol, card);
    patchCard(row.symbol, {
      price: row.price, change_24h: row.change_24h, score: row.score, signal: row.signal,
      tick_size: row.tick_size, listing: row.listing || null, funding_rate: row.funding_rate ?? null,
    });
    return card.node;
  });
  order.forEach((node, index) => {
    if (container.children[index] !== node) container.insertBefore(node, container.children[index] || null);
  });
}

/**
 * Shows the newest 10 pending critical alerts. `criticalAlerts` holds what the last
 * payload listed (pending then) and what /ws said since (any status, further along).
 */
function renderCriticalAlerts() {
  const pending = newestFirst(criticalAlerts, 10, (a) => a.status === 'pending');
  syncList(byId('critical-alerts'), pending, (a) => a.id, () => createAlertItem(null), updateAlertItem);
  byId('critical-empty').hidden = pending.length > 0;
}

/** @param {any} body /api/dashboard/mobile */
function render(body) {
  renderCards(body.confluence_scores);
  renderSignals(body.signals);
  renderBetaSummary(body.beta_summary);
  takeList(criticalAlerts, body.critical_alerts); // the payload's pending list is authoritative
  renderCriticalAlerts();
  showOfflineRead(body);
  lastPayload.fetched(body);
}

/**
 * What a card takes of a `market` update (null: no market data any more).
 * @param {{price?: number | null, change_24h?: number | null, listing?: any} | null} data
 * @returns {Record<string, any>}
 */
function marketFields(data) {
  if (!data) return { price: null, change_24h: null };
  return { price: data.price, change_24h: data.change_24h, ...('listing' in data ? { listing: data.listing } : {}) };
}

const DATA_URL = '/api/dashboard/mobile';
// The worker keeps the last payload fetched; with live updates, it is re-read once the
// data on screen is older than the stale threshold ahead of it.
const lastPayload = keepLastPayload(DATA_URL, settings.staleAfterMs);
/** @type {import('./header.js').Header | null} */
let pageHeader = null;

/** @type {import('./page.js').Handlers} */
const handlers = {
  update(channel, symbol, data) {
    showOfflineRead({}); // a live message: the network is back
    if (channel === 'dashboard' && pageHeader) lastPayload.shown(pageHeader.generatedAt);
    // null data: the value no longer exists (a delisted pair's confluence), shown blank
    if (channel === 'market') patchCard(symbol, marketFields(data));
    else if (channel === 'confluence') patchCard(symbol, { score: data?.score ?? null, signal: data?.signal ?? null });
    else if (channel === 'derivatives') patchCard(symbol, { funding_rate: data?.funding_rate ?? null });
    else if (channel === 'signals') renderSignals(data.signals);
    else if (channel === 'dashboard') renderBetaSummary(data.beta);
  },
  alert(alert) {
    if (alert.level !== 'critical') return; // new, or acknowledged/resolved: leaves the list
    criticalAlerts.set(alert.id, newerVersion(criticalAlerts.get(alert.id), alert));
    renderCriticalAlerts();
  },
};

// Offline: the service worker keeps the shell and the last payload (src/sw.js).
registerServiceWorker('/sw.js', '/mobile');

startPage({
  dataUrl: DATA_URL,
  subscriptions: (body) => [
    { channels: ['market', 'confluence', 'derivatives'], symbols: body.confluence_scores.map((/** @type {{symbol: string}} */ row) => row.symbol) },
    { channels: ['signals', 'dashboard', 'alerts'] },
  ],
  render,
  handlers,
}).then(({ header }) => {
  pageHeader = header;
  refreshWhenOnline(DATA_URL, (body, receivedAt) => {
    header.noteFetched(body, receivedAt);
    render(body);
  });
});

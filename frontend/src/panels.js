// Panels both pages share: movers, signals and the bitcoin-beta summary; and the
// desktop beta table. Each list keeps one node per key and patches it in place.

import {
  byId, el, find, formatNumber, formatPrice, formatTime, setChoiceClass, setText, showChange,
  showPrice, syncList, tickOf,
} from './dom.js';

export const BANDS = ['defensive', 'low', 'neutral', 'moderate', 'high'];

/**
 * Why the exchange does not list or serve a symbol now (a payload's `listing`).
 * @typedef {{status: string, since: number, reason: string, last_price?: number | null,
 *   last_seen?: number | null}} Listing
 */

/** @type {Record<string, string>} */
const LISTING_TEXT = { delisted: 'no longer listed', unserved: 'not served', not_listed: 'not listed' };

/**
 * The mark of a pair the exchange does not list or serve: its short text and the
 * explanation (reason, since when, last price); null while it is listed and served.
 * @param {Listing | null | undefined} listing
 * @returns {{text: string, title: string} | null}
 */
export function listingMark(listing) {
  if (!listing || typeof listing !== 'object') return null;
  const text = LISTING_TEXT[listing.status] || 'not served';
  const since = Number.isFinite(listing.since) ? ` since ${formatTime(listing.since)}` : '';
  const last = typeof listing.last_price === 'number' ? `; last price ${formatPrice(listing.last_price)}` : '';
  return { text, title: `${listing.reason || text}${since}${last}` };
}

/**
 * Shows the listing badge `badge` (hidden when the pair is listed and served) and marks
 * `holder` (its row, card or item) stale with the `delisted` class.
 * @param {HTMLElement | null} badge
 * @param {HTMLElement | null} holder
 * @param {{text: string, title: string} | null} mark
 */
export function showListing(badge, holder, mark) {
  if (holder) holder.classList.toggle('delisted', Boolean(mark));
  if (!badge) return;
  badge.hidden = !mark;
  setText(badge, mark ? mark.text : '');
  badge.title = mark ? mark.title : '';
}

/** @returns {HTMLSpanElement} a hidden listing badge (see showListing) */
export function listingBadge() {
  const badge = el('span', 'badge badge-listing');
  badge.hidden = true;
  return badge;
}

/**
 * A list item of symbol, price and 24h change (movers, watchlist). With `action`,
 * the symbol is a button of that accessible name (the caller handles its click).
 * @param {string} className
 * @param {string} [action]
 * @returns {HTMLLIElement}
 */
export function quoteItem(className, action) {
  const item = el('li', className);
  /** @type {HTMLElement} */
  let symbol = el('span', 'quote-symbol');
  if (action) {
    const button = el('button', 'quote-symbol link-button');
    button.type = 'button';
    button.setAttribute('aria-label', action);
    symbol = button;
  }
  item.append(symbol, listingBadge(), el('span', 'quote-price num'), el('span', 'quote-change num'));
  return item;
}

/**
 * @typedef {{symbol: string, price?: number | null, change_24h?: number | null,
 *   tick_size?: number | null, price_precision?: number | null,
 *   listing?: Listing | null}} Quote
 */

/** A watched symbol the page has no data of: the service does not serve it now. */
const UNSERVED_HERE = {
  text: 'not served',
  title: 'This service does not serve this symbol now (delisted, or no longer configured); '
    + 'it stays in your watchlist until you remove it (×)',
};

/**
 * @param {HTMLElement} item a node of quoteItem
 * @param {Quote} quote a quote; one with no price field at all is a symbol the page
 *   has no data of (marked "not served")
 */
export function updateQuote(item, quote) {
  setText(find(item, '.quote-symbol'), quote.symbol);
  const unknown = !('price' in quote) && !quote.listing;
  showListing(find(item, '.badge-listing'), item, unknown ? UNSERVED_HERE : listingMark(quote.listing));
  showPrice(find(item, '.quote-price'), quote.price, undefined, tickOf(quote));
  showChange(find(item, '.quote-change'), quote.change_24h);
}

/**
 * @param {{gainers: Quote[], losers: Quote[]} | null | undefined} movers
 * @param {(symbol: string) => number | null} [tickFor] a symbol's tick size when the
 *   movers themselves do not carry it (e.g. from the symbol table)
 */
export function renderMovers(movers, tickFor = () => null) {
  if (!movers) return;
  /** @param {Quote} m */
  const withTick = (m) => (tickOf(m) === null ? { ...m, tick_size: tickFor(m.symbol) } : m);
  for (const side of /** @type {const} */ (['gainers', 'losers'])) {
    const list = byId(`movers-${side}`);
    if (list) syncList(list, movers[side].map(withTick), (m) => m.symbol, () => quoteItem('mover'), updateQuote);
  }
}

/** @param {Array<{symbol: string, signal: string, score: number | null}> | null | undefined} signals */
export function renderSignals(signals) {
  if (!signals) return;
  syncList(byId('signals-list'), signals, (s) => s.symbol, () => {
    const item = el('li', 'signal-item');
    item.append(el('span', 'signal-symbol'), el('span', 'signal-kind'), el('span', 'signal-score num'));
    return item;
  }, (item, signal) => {
    setText(find(item, '.signal-symbol'), signal.symbol);
    const kind = find(item, '.signal-kind');
    setText(kind, signal.signal.toUpperCase());
    setChoiceClass(kind, 'signal-', ['long', 'short'], signal.signal);
    setText(find(item, '.signal-score'), formatNumber(signal.score));
  });
  byId('signals-empty').hidden = signals.length > 0;
}

/** The beta overview: market beta, correlation, regime and the count per risk band. */
/**
 * @param {{market_beta: number | null, average_correlation: number | null, regime: string,
 *   bands?: Record<string, number>} | null | undefined} summary
 */
export function renderBetaSummary(summary) {
  if (!summary) return;
  setText(byId('beta-summary'),
    `Market beta ${formatNumber(summary.market_beta, 2)} · avg correlation ${formatNumber(summary.average_correlation, 2)} · ${summary.regime}`);
  const bands = BANDS.map((band) => ({ band, count: (summary.bands || {})[band] || 0 }));
  syncList(byId('beta-bands'), bands, (b) => b.band, (b) => el('li', `band band-${b.band}`), (item, b) => {
    setText(item, `${b.band} ${b.count}`);
  });
}

/**
 * @typedef {{beta: number, correlation: number | null, r_squared: number | null, risk_band: string}} Beta
 */

/** Desktop: every symbol's headline beta, highest first. */
export class BetaTable {
  /** @param {HTMLElement} body the table's <tbody> */
  constructor(body) {
    this.body = body;
    /** @type {Map<string, Beta & {symbol: string}>} */
    this.betas = new Map();
  }

  /**
   * @param {string} symbol
   * @param {Beta | null | undefined} beta null: none (BTC itself, or not enough data)
   */
  set(symbol, beta) {
    if (beta) this.betas.set(symbol, { symbol, ...beta });
    else this.betas.delete(symbol);
  }

  render() {
    const rows = [...this.betas.values()].sort((a, b) => b.beta - a.beta);
    syncList(this.body, rows, (r) => r.symbol, () => {
      const tr = el('tr');
      tr.append(el('td'), el('td', 'num'), el('td', 'num'), el('td', 'num'), el('td', 'band'));
      return tr;
    }, (tr, row) => {
      const [symbol, beta, correlation, r2, band] = tr.cells;
      setText(symbol, row.symbol);
      setText(beta, formatNumber(row.beta, 2));
      setText(correlation, formatNumber(row.correlation, 2));
      setText(r2, formatNumber(row.r_squared, 2));
      setText(band, row.risk_band);
      setChoiceClass(band, 'band-', BANDS, row.risk_band);
    });
  }
}

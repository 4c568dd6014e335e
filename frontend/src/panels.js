// Panels both pages share: movers, signals and the bitcoin-beta summary; and the
// desktop beta table. Each list keeps one node per key and patches it in place.

import {
  byId, el, find, formatNumber, setChoiceClass, setText, showChange, showPrice, syncList, tickOf,
} from './dom.js';

export const BANDS = ['defensive', 'low', 'neutral', 'moderate', 'high'];

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
  item.append(symbol, el('span', 'quote-price num'), el('span', 'quote-change num'));
  return item;
}

/**
 * @typedef {{symbol: string, price?: number | null, change_24h?: number | null,
 *   tick_size?: number | null, price_precision?: number | null}} Quote
 */

/**
 * @param {HTMLElement} item a node of quoteItem
 * @param {Quote} quote
 */
export function updateQuote(item, quote) {
  setText(find(item, '.quote-symbol'), quote.symbol);
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

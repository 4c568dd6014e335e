// Panels both pages share: movers, signals and the bitcoin-beta summary; and the
// desktop beta table. Each list keeps one node per key and patches it in place.

import {
  byId, el, formatNumber, setChoiceClass, setText, showChange, showPrice, syncList,
} from './dom.js';

export const BANDS = ['defensive', 'low', 'neutral', 'moderate', 'high'];

/** A list item of symbol, price and 24h change (movers, watchlist). */
export function quoteItem(className) {
  const item = el('li', className);
  item.append(el('span', 'quote-symbol'), el('span', 'quote-price num'), el('span', 'quote-change num'));
  return item;
}

export function updateQuote(item, quote) {
  setText(item.querySelector('.quote-symbol'), quote.symbol);
  showPrice(item.querySelector('.quote-price'), quote.price);
  showChange(item.querySelector('.quote-change'), quote.change_24h);
}

export function renderMovers(movers) {
  if (!movers) return;
  for (const side of ['gainers', 'losers']) {
    const list = byId(`movers-${side}`);
    if (list) syncList(list, movers[side], (m) => m.symbol, () => quoteItem('mover'), updateQuote);
  }
}

export function renderSignals(signals) {
  if (!signals) return;
  syncList(byId('signals-list'), signals, (s) => s.symbol, () => {
    const item = el('li', 'signal-item');
    item.append(el('span', 'signal-symbol'), el('span', 'signal-kind'), el('span', 'signal-score num'));
    return item;
  }, (item, signal) => {
    setText(item.querySelector('.signal-symbol'), signal.symbol);
    const kind = item.querySelector('.signal-kind');
    setText(kind, signal.signal.toUpperCase());
    setChoiceClass(kind, 'signal-', ['long', 'short'], signal.signal);
    setText(item.querySelector('.signal-score'), formatNumber(signal.score));
  });
  byId('signals-empty').hidden = signals.length > 0;
}

/** The beta overview: market beta, correlation, regime and the count per risk band. */
export function renderBetaSummary(summary) {
  if (!summary) return;
  setText(byId('beta-summary'),
    `Market beta ${formatNumber(summary.market_beta, 2)} · avg correlation ${formatNumber(summary.average_correlation, 2)} · ${summary.regime}`);
  const bands = BANDS.map((band) => ({ band, count: (summary.bands || {})[band] || 0 }));
  syncList(byId('beta-bands'), bands, (b) => b.band, (b) => el('li', `band band-${b.band}`), (item, b) => {
    setText(item, `${b.band} ${b.count}`);
  });
}

/** Desktop: every symbol's headline beta, highest first. */
export class BetaTable {
  constructor(body) {
    this.body = body;
    this.betas = new Map();
  }

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

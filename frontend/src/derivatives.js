// The desktop derivatives panel: per symbol with a perpetual swap, its funding rate as a
// heatmap cell (coloured around the neutral +0.01 % per interval), the open-interest
// change over 1 h and 24 h and the long/short account ratio; symbols without a perpetual
// listed with the reason the service gives. Filled from /api/market/derivatives, then
// kept live by the `derivatives` channel (see docs/websocket.md).

import {
  byId, el, formatAge, formatMagnitude, formatZoned, setText, showChange, syncList,
} from './dom.js';
import {
  NEUTRAL_FUNDING_RATE, formatFundingRate, formatRatio, fundingHeat,
} from './numbers.js';

export const DERIVATIVES_URL = '/api/market/derivatives';
/** Shown for a symbol whose live row became null until the view says why. */
const NO_DATA_NOW = 'no derivatives data now';
const HEAT_CLASSES = [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5].map(heatClass);

/**
 * A row of /api/market/derivatives (fields as docs/websocket.md and the API describe them).
 * @typedef {{symbol: string, contract: string, funding_rate: number | null,
 *   funding_interval_hours: number,
 *   next_funding_time: number | null, open_interest: number | null,
 *   open_interest_value: number | null, open_interest_change_pct_1h: number | null,
 *   open_interest_change_pct_24h: number | null, long_short_ratio: number | null,
 *   updated_at: number, sentiment: number | null}} DerivativesRow
 * @typedef {{symbol: string, reason: string}} Unavailable
 * @typedef {{generated_at: number, stale?: boolean, derivatives: DerivativesRow[],
 *   unavailable: Unavailable[]}} DerivativesView
 */

/** @param {number} level */
function heatClass(level) {
  if (level === 0) return 'heat-0';
  return level > 0 ? `heat-p${level}` : `heat-m${-level}`;
}

export class DerivativesPanel {
  /**
   * @param {import('./clock.js').ServerClock} clock the page's server clock
   * @param {number} staleAfterMs values read longer ago than this are flagged stale
   * @param {() => void} wantReasons asks for the view again (a live row became null:
   *   the view says why)
   */
  constructor(clock, staleAfterMs, wantReasons) {
    this.clock = clock;
    this.staleAfterMs = staleAfterMs;
    this.wantReasons = wantReasons;
    /** @type {Map<string, {row: DerivativesRow, at: number}>} */
    this.rows = new Map();
    /** @type {Map<string, {reason: string, at: number}>} */
    this.unavailable = new Map();
    /** @type {string[]} the symbols in the order the service lists them */
    this.order = [];
    /** @type {number | null} generated_at of a view the server served stale */
    this.servedStaleAt = null;
    this.newestAt = 0;
  }

  start() {
    setInterval(() => this.renderTimes(), 1000);
  }

  /**
   * A whole view (the first load, or a poll while the socket is down). What a symbol
   * shows is replaced only by information at least as new (`generated_at`).
   * @param {DerivativesView} view
   */
  applyView(view) {
    const at = view.generated_at;
    const order = [...view.derivatives.map((r) => r.symbol), ...view.unavailable.map((u) => u.symbol)];
    const listed = new Set(order);
    for (const row of view.derivatives) this.putRow(row.symbol, row, at);
    for (const { symbol, reason } of view.unavailable) this.putUnavailable(symbol, reason, at);
    for (const symbol of [...this.rows.keys(), ...this.unavailable.keys()]) {
      if (!listed.has(symbol) && this.infoAt(symbol) <= at) this.forget(symbol);
    }
    // the view's order; a symbol known only from newer live messages after it
    this.order = [...order, ...this.order.filter((s) => !listed.has(s) && this.infoAt(s) > 0)];
    this.servedStaleAt = view.stale ? at : null;
    this.render();
  }

  /**
   * A live `derivatives` message: the symbol's row, or null when it has none now.
   * @param {string} symbol
   * @param {DerivativesRow | null} row
   * @param {number} generatedAt the message's generated_at (missing: now)
   */
  applyUpdate(symbol, row, generatedAt) {
    const at = Number.isFinite(generatedAt) ? generatedAt : this.clock.now();
    if (!this.order.includes(symbol)) this.order.push(symbol);
    if (this.servedStaleAt !== null && at > this.servedStaleAt) this.servedStaleAt = null;
    const known = this.unavailable.get(symbol);
    if (row) this.putRow(symbol, row, at);
    else if (known) known.at = Math.max(known.at, at); // still none: its reason holds
    else if (this.putUnavailable(symbol, NO_DATA_NOW, at)) this.wantReasons();
    this.render();
  }

  /**
   * @param {string} symbol
   * @returns {number} generated_at of what the panel shows of `symbol` (0: nothing)
   */
  infoAt(symbol) {
    return this.rows.get(symbol)?.at ?? this.unavailable.get(symbol)?.at ?? 0;
  }

  /**
   * @param {string} symbol
   * @param {DerivativesRow} row
   * @param {number} at
   */
  putRow(symbol, row, at) {
    if (at < this.infoAt(symbol)) return;
    this.unavailable.delete(symbol);
    this.rows.set(symbol, { row, at });
  }

  /**
   * @param {string} symbol
   * @param {string} reason
   * @param {number} at
   * @returns {boolean} whether it was taken
   */
  putUnavailable(symbol, reason, at) {
    if (at < this.infoAt(symbol)) return false;
    this.rows.delete(symbol);
    this.unavailable.set(symbol, { reason, at });
    return true;
  }

  /** @param {string} symbol */
  forget(symbol) {
    this.rows.delete(symbol);
    this.unavailable.delete(symbol);
    this.order = this.order.filter((s) => s !== symbol);
  }

  render() {
    const rows = this.order.flatMap((s) => this.rows.get(s)?.row ?? []);
    syncList(byId('derivatives-body'), rows, (r) => r.symbol, createRow, (tr, row) => this.updateRow(tr, row));
    const missing = this.order.flatMap((s) => {
      const entry = this.unavailable.get(s);
      return entry ? [{ symbol: s, reason: entry.reason }] : [];
    });
    syncList(byId('derivatives-unavailable'), missing, (u) => u.symbol, () => {
      const item = el('li', 'unavailable-item');
      item.append(el('span', 'unavailable-symbol'), el('span', 'unavailable-reason'));
      return item;
    }, (item, u) => {
      setText(/** @type {HTMLElement} */ (item.firstChild), u.symbol);
      setText(/** @type {HTMLElement} */ (item.lastChild), u.reason);
    });
    byId('derivatives-none').hidden = missing.length === 0;
    byId('derivatives-empty').hidden = rows.length > 0 || missing.length > 0;
    this.newestAt = Math.max(0, ...rows.map((r) => r.updated_at));
    this.renderTimes();
  }

  /**
   * @param {HTMLTableRowElement} tr
   * @param {DerivativesRow} row
   */
  updateRow(tr, row) {
    const [symbol, funding, oiValue, oi1h, oi24h, ratio] = tr.cells;
    setText(symbol, row.symbol);
    setText(/** @type {HTMLElement} */ (funding.firstChild), formatFundingRate(row.funding_rate));
    const heat = fundingHeat(row.funding_rate, row.funding_interval_hours);
    for (const name of HEAT_CLASSES) funding.classList.toggle(name, heat !== null && name === heatClass(heat));
    this.showNextFunding(funding, row);
    setText(oiValue, formatMagnitude(row.open_interest_value));
    oiValue.title = row.open_interest === null ? 'open interest unknown'
      : `${formatMagnitude(row.open_interest)} contracts open (${row.contract})`;
    showChange(oi1h, row.open_interest_change_pct_1h);
    showChange(oi24h, row.open_interest_change_pct_24h);
    setText(ratio, formatRatio(row.long_short_ratio));
  }

  /**
   * The funding cell's explanation (title, and for screen readers its hidden text):
   * the rate per interval and the time to the next settlement.
   * @param {HTMLTableCellElement} cell
   * @param {DerivativesRow} row
   */
  showNextFunding(cell, row) {
    const next = row.next_funding_time;
    let when = 'next funding time unknown';
    if (typeof next === 'number' && Number.isFinite(next)) {
      const left = next - this.clock.now();
      when = left > 0 ? `next funding in ${formatAge(left)} (${formatZoned(next, 'minutes')})`
        : `funding settling now (${formatZoned(next, 'minutes')})`;
    }
    const rate = row.funding_rate === null ? 'funding rate unknown'
      : `funding ${formatFundingRate(row.funding_rate)} per ${row.funding_interval_hours} h (neutral ${formatFundingRate((NEUTRAL_FUNDING_RATE * row.funding_interval_hours) / 8)})`;
    const title = `${row.symbol} ${rate}; ${when}`;
    if (cell.title !== title) cell.title = title;
    setText(/** @type {HTMLElement} */ (cell.lastChild), `; ${when}`);
  }

  /** The panel's age (since the newest read), its stale mark and the countdowns. */
  renderTimes() {
    const age = byId('derivatives-age');
    const stale = byId('derivatives-stale');
    if (!this.newestAt) {
      setText(age, '—');
      stale.hidden = true;
      return;
    }
    const ms = this.clock.ageOf(this.newestAt);
    setText(age, `read ${formatAge(ms)} ago`);
    age.title = `Derivatives read at ${formatZoned(this.newestAt, 'stamp')}`;
    stale.hidden = !(ms > this.staleAfterMs || this.servedStaleAt !== null);
    for (const tr of /** @type {HTMLCollectionOf<HTMLTableRowElement>} */ (byId('derivatives-body').children)) {
      const entry = this.rows.get(tr.dataset.key || '');
      if (entry) this.showNextFunding(tr.cells[1], entry.row);
    }
  }
}

/** @returns {HTMLTableRowElement} a row: symbol, funding (heat cell), OI, OI 1h, OI 24h, L/S */
function createRow() {
  const tr = el('tr');
  const funding = el('td', 'num funding heat');
  funding.append(el('span', 'funding-rate'), el('span', 'sr-only funding-next'));
  tr.append(
    el('th', 'symbol'), funding, el('td', 'num oi-value'), el('td', 'num oi-1h'),
    el('td', 'num oi-24h'), el('td', 'num long-short'),
  );
  /** @type {HTMLElement} */ (tr.firstChild).setAttribute('scope', 'row');
  return tr;
}

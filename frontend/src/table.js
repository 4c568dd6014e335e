// The desktop symbol table: one row per symbol, created once and patched in place by
// every update; sortable by any column, filterable by text and by watchlist.

import {
  el, formatNumber, formatVolume, setChoiceClass, setText, showChange, showPrice, tickOf,
} from './dom.js';
import { listingBadge, listingMark, showListing } from './panels.js';

// sentiment: funding, long/short and the funding trend; null (—) where there is no perpetual
const COMPONENTS = ['technical', 'volume', 'orderflow', 'orderbook', 'price_structure', 'sentiment'];
const SIGNALS = ['long', 'short', 'neutral'];

/**
 * What a row shows: the symbol and its latest fields (price, change_24h, volume_24h,
 * score, signal and the component scores), any of them missing until known, the
 * market's tick_size once a payload gave it (tick_size or price_precision), and its
 * listing (null while the exchange lists and serves it; else the row is marked).
 * @typedef {{symbol: string} & Record<string, any>} RowData
 * @typedef {{tr: HTMLTableRowElement, cells: Record<string, HTMLElement>, star: HTMLButtonElement,
 *   chart: HTMLButtonElement, data: RowData}} Row
 */

/**
 * @param {HTMLElement} node
 * @param {number | null | undefined} score
 * @param {{long: number, short: number}} thresholds
 */
function scoreClass(node, score, { long, short }) {
  if (typeof score !== 'number') score = NaN; // a missing score is neither long nor short
  node.classList.toggle('score-long', score >= long);
  node.classList.toggle('score-short', score <= short);
}

/** The ☆ button's state: its name says what pressing it does (WCAG 4.1.2). */
/**
 * @param {HTMLButtonElement} star
 * @param {string} symbol
 * @param {boolean} watched
 */
function showStar(star, symbol, watched) {
  setText(star, watched ? '★' : '☆');
  star.classList.toggle('watched', watched);
  star.setAttribute('aria-pressed', String(watched));
  star.setAttribute('aria-label', watched ? `Remove ${symbol} from watchlist` : `Add ${symbol} to watchlist`);
  star.title = star.getAttribute('aria-label') || '';
}

export class SymbolTable {
  /**
   * @param {HTMLTableElement} table the table with its <thead> of sort buttons
   * @param {{long: number, short: number}} thresholds
   * @param {(symbol: string) => void} onSelect charts a symbol
   * @param {(symbol: string) => void} onStar toggles a symbol in the watchlist
   */
  constructor(table, thresholds, onSelect, onStar) {
    this.table = table;
    this.body = table.tBodies[0];
    this.thresholds = thresholds;
    this.onSelect = onSelect;
    this.onStar = onStar;
    /** @type {Map<string, Row>} */
    this.rows = new Map();
    this.sortKey = 'volume_24h';
    this.descending = true;
    this.filterText = '';
    this.watchlistOnly = false;
    /** @type {Set<string>} */
    this.watchlist = new Set();
    this.sortPending = false;
    /** @type {string | null} the charted symbol */
    this.selected = null;
    for (const button of table.querySelectorAll('th button[data-sort]')) {
      const key = /** @type {HTMLElement} */ (button).dataset.sort || 'symbol';
      button.addEventListener('click', () => this.sortBy(key));
    }
  }

  /**
   * The full list (initial load or poll): rows patched, new ones created.
   * @param {Array<{symbol: string, price?: number | null, change_24h?: number | null,
   *   volume_24h?: number | null, confluence?: Confluence | null,
   *   tick_size?: number | null, price_precision?: number | null,
   *   listing?: import('./panels.js').Listing | null}>} symbols
   */
  setAll(symbols) {
    for (const row of symbols) {
      const tick = tickOf(row);
      this.patch(row.symbol, {
        price: row.price, change_24h: row.change_24h, volume_24h: row.volume_24h,
        listing: row.listing || null,
        ...(tick !== null ? { tick_size: tick } : {}),
        // a pair no longer listed has no confluence: its old scores are not shown
        ...(row.confluence || row.listing ? confluenceFields(row.confluence || EMPTY) : {}),
      });
    }
    this.sortSoon();
  }

  /**
   * A `market` update of one symbol; null: it has no market data any more (blanked).
   * @param {string} symbol
   * @param {{price?: number | null, change_24h?: number | null, volume_24h?: number | null,
   *   tick_size?: number | null, price_precision?: number | null,
   *   listing?: import('./panels.js').Listing | null} | null} data
   */
  applyMarket(symbol, data) {
    const market = data || { price: null, change_24h: null, volume_24h: null };
    const tick = tickOf(market);
    const listing = 'listing' in market ? { listing: market.listing || null } : {};
    this.patch(symbol, {
      price: market.price, change_24h: market.change_24h, volume_24h: market.volume_24h,
      ...listing,
      ...(tick !== null ? { tick_size: tick } : {}),
      ...(market.listing ? confluenceFields(EMPTY) : {}),
    });
    this.sortSoon();
  }

  /**
   * A `confluence` update of one symbol; null: it has none any more (a delisted pair),
   * so its score, components and signal are blanked.
   * @param {string} symbol
   * @param {Confluence | null} confluence
   */
  applyConfluence(symbol, confluence) {
    this.patch(symbol, confluenceFields(confluence || EMPTY));
    this.sortSoon();
  }

  /**
   * @param {string} symbol
   * @returns {RowData | null}
   */
  data(symbol) {
    const row = this.rows.get(symbol);
    return row ? row.data : null;
  }

  /**
   * @param {string} symbol
   * @param {Record<string, any>} fields
   */
  patch(symbol, fields) {
    let row = this.rows.get(symbol);
    if (!row) row = this.createRow(symbol);
    const before = row.data.price;
    Object.assign(row.data, fields);
    const { cells, data } = row;
    showPrice(cells.price, data.price, before, data.tick_size);
    showChange(cells.change_24h, data.change_24h);
    setText(cells.volume_24h, formatVolume(data.volume_24h));
    setText(cells.score, formatNumber(data.score));
    scoreClass(cells.score, data.score, this.thresholds);
    for (const name of COMPONENTS) {
      setText(cells[name], formatNumber(data[name], 0));
      scoreClass(cells[name], data[name], this.thresholds);
    }
    setText(cells.signal, data.signal || '—');
    setChoiceClass(cells.signal, 'signal-', SIGNALS, data.signal);
    const mark = listingMark(data.listing);
    showListing(cells.listing, row.tr, mark);
    if (symbol === this.selected) showChartListing(mark);
  }

  /**
   * @param {string} symbol
   * @returns {Row}
   */
  createRow(symbol) {
    const tr = el('tr');
    tr.dataset.symbol = symbol;
    const star = el('button', 'star');
    star.type = 'button';
    showStar(star, symbol, this.watchlist.has(symbol));
    star.addEventListener('click', (event) => {
      event.stopPropagation();
      this.onStar(symbol);
    });
    const starCell = el('td', 'star-col');
    starCell.append(star);
    /** @type {Record<string, HTMLElement>} */
    const cells = {};
    tr.append(starCell);
    for (const name of ['symbol', 'price', 'change_24h', 'volume_24h', 'score', ...COMPONENTS, 'signal']) {
      const cell = el('td', name === 'symbol' || name === 'signal' ? name : `num ${name}`);
      cells[name] = cell;
      tr.append(cell);
    }
    // The row is clickable anywhere; the symbol is its control for the keyboard
    // (Enter/Space on the button; its click bubbles to the row's handler).
    const chartButton = el('button', 'link-button chart-symbol', symbol);
    chartButton.type = 'button';
    chartButton.setAttribute('aria-label', `Chart ${symbol}`);
    cells.listing = listingBadge();
    cells.symbol.append(chartButton, cells.listing);
    tr.addEventListener('click', () => this.onSelect(symbol));
    const row = { tr, cells, star, chart: chartButton, data: { symbol } };
    this.rows.set(symbol, row);
    this.body.append(tr);
    this.applyFilterTo(row);
    return row;
  }

  /** @param {string} symbol */
  select(symbol) {
    this.selected = symbol;
    const charted = this.rows.get(symbol);
    showChartListing(listingMark(charted ? charted.data.listing : null));
    for (const [name, row] of this.rows) {
      row.tr.classList.toggle('selected', name === symbol);
      if (name === symbol) row.chart.setAttribute('aria-current', 'true');
      else row.chart.removeAttribute('aria-current');
    }
  }

  // --- sorting and filtering -----------------------------------------------------------

  /**
   * Sorts by column `key`; the same key again reverses the order. The header cell
   * of the key says its direction (aria-sort), the others none.
   * @param {string} key
   */
  sortBy(key) {
    this.descending = key === this.sortKey ? !this.descending : key !== 'symbol';
    this.sortKey = key;
    for (const th of this.table.rows[0].cells) {
      const button = th.querySelector('button');
      if (button && button.dataset.sort === key) th.setAttribute('aria-sort', this.descending ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    this.sort();
  }

  sortSoon() {
    if (this.sortPending) return;
    this.sortPending = true;
    requestAnimationFrame(() => {
      this.sortPending = false;
      this.sort();
    });
  }

  /** Reorders the existing rows (moves nodes; nothing is rebuilt). */
  sort() {
    const key = this.sortKey;
    const sign = this.descending ? -1 : 1;
    const ordered = [...this.rows.values()].sort((a, b) => compare(a.data[key], b.data[key], sign));
    ordered.forEach((row, index) => {
      if (this.body.children[index] !== row.tr) this.body.insertBefore(row.tr, this.body.children[index] || null);
    });
  }

  /**
   * @param {string} text part of a symbol, any case
   * @param {boolean} watchlistOnly
   */
  filter(text, watchlistOnly) {
    this.filterText = text.trim().toUpperCase();
    this.watchlistOnly = watchlistOnly;
    for (const row of this.rows.values()) this.applyFilterTo(row);
  }

  /** @param {Set<string>} symbols */
  setWatchlist(symbols) {
    this.watchlist = symbols;
    for (const [symbol, row] of this.rows) {
      showStar(row.star, symbol, symbols.has(symbol));
      this.applyFilterTo(row);
    }
  }

  /** @param {Row} row */
  applyFilterTo(row) {
    const symbol = row.data.symbol;
    const matches = symbol.includes(this.filterText) && (!this.watchlistOnly || this.watchlist.has(symbol));
    row.tr.hidden = !matches;
  }
}

/**
 * @typedef {{score: number | null, signal: string | null, components?: Record<string, number | null>}} Confluence
 */

/** No confluence (a pair no longer listed has none). */
/** @type {Confluence} */
const EMPTY = { score: null, signal: null };

/**
 * Marks the chart's header (#chart-listing, desktop) when the charted pair is not
 * listed or served.
 * @param {{text: string, title: string} | null} mark
 */
function showChartListing(mark) {
  showListing(document.getElementById('chart-listing'), document.getElementById('chart-title'), mark);
}

/**
 * @param {Confluence} confluence
 * @returns {Record<string, any>}
 */
function confluenceFields(confluence) {
  /** @type {Record<string, any>} */
  const fields = { score: confluence.score, signal: confluence.signal };
  for (const name of COMPONENTS) fields[name] = confluence.components ? confluence.components[name] : null;
  return fields;
}

/**
 * Numbers or strings in the direction `sign` (1 or -1); missing values always last.
 * @param {any} a
 * @param {any} b
 * @param {number} sign
 */
function compare(a, b, sign) {
  const missingA = a === null || a === undefined;
  const missingB = b === null || b === undefined;
  if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1;
  return sign * (typeof a === 'string' ? a.localeCompare(b) : a - b);
}

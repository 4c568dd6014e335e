// The user's watchlist, kept on the server under the session cookie
// (GET/PUT /api/session/watchlist). A saved symbol the service no longer serves
// (delisted, no longer configured) never locks the list: the server keeps it and names
// it in `unserved` (the page says so); should a server refuse a list for such symbols
// anyway, it is saved without them and the user is told.

import { ApiError, callApi, errorText } from './api.js';

const URL = '/api/session/watchlist';

export class Watchlist {
  /**
   * @param {(symbols: Set<string>, problem: string | null) => void} onChange called with
   *   the symbols after every load or save, and what went wrong (or was dropped) if anything
   */
  constructor(onChange) {
    /** @type {Set<string>} */
    this.symbols = new Set();
    this.onChange = onChange;
    /** @type {() => void} */
    this.markLoaded = () => {};
    /** Settles once the saved list is known: a change made before builds on it. */
    this.loaded = new Promise((resolve) => { this.markLoaded = () => resolve(undefined); });
  }

  async load() {
    try {
      const body = await callApi('GET', URL);
      this.symbols = new Set(symbolsOf(body));
    } catch {
      this.symbols = new Set();
    }
    this.markLoaded();
    this.tell(null);
  }

  /**
   * @param {string} symbol
   * @returns {boolean}
   */
  has(symbol) {
    return this.symbols.has(symbol);
  }

  /** Adds or removes `symbol`; the server's answer is the truth. */
  /** @param {string} symbol */
  async toggle(symbol) {
    await this.loaded; // a star pressed before the list arrived must not replace it
    const wanted = new Set(this.symbols);
    if (wanted.has(symbol)) wanted.delete(symbol);
    else wanted.add(symbol);
    try {
      const { saved, dropped, unserved } = await save([...wanted]);
      this.symbols = new Set(saved);
      const notes = [];
      if (dropped.length) notes.push(`Removed from your watchlist, no longer served here: ${dropped.join(', ')}.`);
      if (unserved.length) notes.push(`Kept in your watchlist, not served now: ${unserved.join(', ')}.`);
      this.tell(notes.join(' ') || null);
    } catch (error) {
      this.tell(`Watchlist not saved: ${errorText(error)}`);
    }
  }

  /** @param {string | null} problem */
  tell(problem) {
    try {
      this.onChange(this.symbols, problem);
    } catch (error) {
      console.warn('watchlist display failed', error); // never break the page's handlers
    }
  }
}

/**
 * The symbols of a watchlist answer (strings only; anything else is no symbol).
 * @param {any} body
 * @returns {string[]}
 */
function symbolsOf(body) {
  const list = body && Array.isArray(body.watchlist) ? body.watchlist : [];
  return list.filter((/** @type {unknown} */ s) => typeof s === 'string');
}

/**
 * The unserved symbols of a watchlist answer.
 * @param {any} body
 * @returns {string[]}
 */
function unservedOf(body) {
  return symbolsOf({ watchlist: body && body.unserved });
}

/**
 * Saves `symbols`. When the server refuses the list (400) and some of its symbols are
 * no longer among those it serves (/api/symbols), they are left out and the rest is
 * saved: the answer names them in `dropped`. `unserved`: what the server kept but does
 * not serve now. Throws ApiError otherwise.
 * @param {string[]} symbols
 * @returns {Promise<{saved: string[], dropped: string[], unserved: string[]}>}
 */
async function save(symbols) {
  try {
    const body = await callApi('PUT', URL, { watchlist: symbols });
    return { saved: symbolsOf(body), dropped: [], unserved: unservedOf(body) };
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 400) throw error;
    const served = new Set(symbolsOf({ watchlist: await servedSymbols() }));
    const dropped = symbols.filter((s) => !served.has(s));
    if (!dropped.length) throw error;
    const kept = symbols.filter((s) => served.has(s));
    const body = await callApi('PUT', URL, { watchlist: kept });
    return { saved: symbolsOf(body), dropped, unserved: unservedOf(body) };
  }
}

/** @returns {Promise<string[]>} the symbols the service serves now */
async function servedSymbols() {
  const body = await callApi('GET', '/api/symbols');
  const rows = body && Array.isArray(body.symbols) ? body.symbols : [];
  return rows.map((/** @type {{symbol: string}} */ row) => row.symbol);
}

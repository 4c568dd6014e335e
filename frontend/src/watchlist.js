// The user's watchlist, kept on the server under the session cookie
// (GET/PUT /api/session/watchlist).

import { callApi, errorText } from './api.js';

export class Watchlist {
  /**
   * @param {(symbols: Set<string>, problem: string | null) => void} onChange called with
   *   the symbols after every load or save, and what went wrong if it failed
   */
  constructor(onChange) {
    /** @type {Set<string>} */
    this.symbols = new Set();
    this.onChange = onChange;
  }

  async load() {
    try {
      const body = await callApi('GET', '/api/session/watchlist');
      this.symbols = new Set(body.watchlist);
    } catch {
      this.symbols = new Set();
    }
    this.onChange(this.symbols, null);
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
    const wanted = new Set(this.symbols);
    if (wanted.has(symbol)) wanted.delete(symbol);
    else wanted.add(symbol);
    try {
      const body = await callApi('PUT', '/api/session/watchlist', { watchlist: [...wanted] });
      this.symbols = new Set(body.watchlist);
      this.onChange(this.symbols, null);
    } catch (error) {
      this.onChange(this.symbols, `Watchlist not saved: ${errorText(error)}`);
    }
  }
}

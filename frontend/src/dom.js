// DOM helpers shared by the pages. Every value reaches the page through
// textContent (HTML is never parsed), so exchange data and user text are always escaped.

import { formatZoned, sameDay, zoneLabel } from './clock.js';
import { formatPrice } from './prices.js';

/**
 * The element of `id`. Typed as present: the page templates hold the ids the modules
 * ask for (a caller that allows absence, e.g. a desktop-only panel, checks for null).
 * @param {string} id
 * @returns {HTMLElement}
 */
export const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * A form control of the page by id (an <input>, or a <select> that has `value` too).
 * @param {string} id
 * @returns {HTMLInputElement}
 */
export const inputById = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));

/**
 * The descendant of `root` matching `selector`, typed as present (the node was built
 * with it, e.g. by quoteItem).
 * @param {ParentNode} root
 * @param {string} selector
 * @returns {HTMLElement}
 */
export const find = (root, selector) => /** @type {HTMLElement} */ (root.querySelector(selector));

/**
 * A new element with an optional class and text.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, className = '', text = '') {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== '') node.textContent = text;
  return node;
}

/**
 * Sets a node's text only when it differs; tells whether it changed.
 * @param {Node} node
 * @param {unknown} text
 * @returns {boolean}
 */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent === value) return false;
  node.textContent = value;
  return true;
}

/**
 * Briefly marks a node as having moved up or down (CSS animation).
 * @param {HTMLElement} node
 * @param {number} direction
 */
export function flash(node, direction) {
  // .flash-again alternates between two identical animations (base.css): a flash that
  // repeats restarts without reading layout (offsetWidth forced one per changed cell).
  // Toggled once per frame: a second toggle before the browser styles the node would
  // put back the animation it is running, and the second change would not flash.
  if (!restartedThisFrame.has(node)) {
    if (restartedThisFrame.size === 0) requestAnimationFrame(() => restartedThisFrame.clear());
    restartedThisFrame.add(node);
    node.classList.toggle('flash-again');
  }
  node.classList.toggle('flash-up', direction > 0);
  node.classList.toggle('flash-down', !(direction > 0));
}

/** Nodes whose flash was restarted since the last frame (see flash). @type {Set<Element>} */
const restartedThisFrame = new Set();

/**
 * Sets the class among `choices` that matches `value` on `node` (others removed).
 * @param {Element} node
 * @param {string} prefix
 * @param {readonly string[]} choices
 * @param {string | null | undefined} value
 */
export function setChoiceClass(node, prefix, choices, value) {
  for (const choice of choices) node.classList.toggle(`${prefix}${choice}`, choice === value);
}

/**
 * Makes `container`'s children match `items`, reusing the child of each key:
 * existing nodes are updated in place and moved, never rebuilt.
 * @template T
 * @template {HTMLElement} N
 * @param {HTMLElement} container
 * @param {readonly T[]} items
 * @param {(item: T) => string | number} keyOf
 * @param {(item: T) => N} create
 * @param {(node: N, item: T) => void} update
 */
export function syncList(container, items, keyOf, create, update) {
  /** @type {Map<string | undefined, N>} */
  const existing = new Map();
  for (const child of /** @type {HTMLCollectionOf<N>} */ (container.children)) existing.set(child.dataset.key, child);
  /** @type {N | null} */
  let previous = null;
  for (const item of items) {
    const key = String(keyOf(item));
    let node = existing.get(key);
    if (node) existing.delete(key);
    else {
      node = create(item);
      node.dataset.key = key;
    }
    update(node, item);
    /** @type {ChildNode | null} */
    const wanted = previous ? previous.nextSibling : container.firstChild;
    if (wanted !== node) container.insertBefore(node, wanted);
    previous = node;
  }
  for (const stale of existing.values()) stale.remove();
}

// --- formatting ---------------------------------------------------------------------

// Prices: by tick size or significant digits, tiny ones as 0.0ₙ… (prices.js).
export { formatPrice, tickOf } from './prices.js';

/**
 * @param {number | null | undefined} value
 * @param {number} [digits]
 * @returns {string}
 */
export function formatPercent(value, digits = 2) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return `${value > 0 ? '+' : ''}${value.toFixed(digits)}%`;
}

// Volumes, turnover, open interest and any large value: K, M, B, T, then ×10ⁿ (numbers.js).
export { formatMagnitude, formatMagnitude as formatVolume } from './numbers.js';

/**
 * @param {number | null | undefined} value
 * @param {number} [digits]
 * @returns {string}
 */
export function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return value.toFixed(digits);
}

/**
 * @param {number} ms
 * @returns {string}
 */
export function formatAge(ms) {
  if (!Number.isFinite(ms)) return '—';
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

// Times: every time on a page in the user's own time zone, named once by the page's
// #time-zone label (clock.js formatZoned and zoneLabel).
export { formatZoned } from './clock.js';

/**
 * The time of an event (an alert) in the user's time zone: 14:05:03 today,
 * 21 Sep 14:05:03 on another day.
 * @param {number} epochMs
 * @param {number} [nowMs]
 * @returns {string}
 */
export function formatTime(epochMs, nowMs = Date.now()) {
  return formatZoned(epochMs, sameDay(epochMs, nowMs) ? 'time' : 'daytime');
}

/** Names the page's time zone in its #time-zone label (once per page). */
export function showTimeZone() {
  const node = document.getElementById('time-zone');
  if (node) {
    setText(node, zoneLabel());
    node.title = 'Every time on this page (chart, alerts, data time) is in this time zone';
  }
}

/**
 * -1, 0 or 1: the sign class of a change.
 * @param {number | null | undefined} value
 * @returns {number}
 */
export function direction(value) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value === 0) return 0;
  return value > 0 ? 1 : -1;
}

/**
 * @param {Element} node
 * @param {number | null | undefined} value
 */
export function setDirectionClass(node, value) {
  const sign = direction(value);
  node.classList.toggle('up', sign > 0);
  node.classList.toggle('down', sign < 0);
}

/**
 * A 24h change in %, coloured up or down.
 * @param {HTMLElement} node
 * @param {number | null | undefined} value
 */
export function showChange(node, value) {
  setText(node, formatPercent(value));
  setDirectionClass(node, value);
}

/**
 * A price (by the market's tick size when known); flashes up or down when it moved
 * from `previous`. The exact price is the node's title (the text may be rounded or
 * compact).
 * @param {HTMLElement} node
 * @param {number | null | undefined} price
 * @param {number | null | undefined} [previous]
 * @param {number | null} [tickSize]
 */
export function showPrice(node, price, previous, tickSize = null) {
  const changed = setText(node, formatPrice(price, tickSize));
  const exact = typeof price === 'number' && Number.isFinite(price)
    ? price.toLocaleString('en-US', { maximumFractionDigits: 20, useGrouping: false }) : '';
  if (node.title !== exact) node.title = exact;
  if (changed && typeof price === 'number' && typeof previous === 'number' && Number.isFinite(previous)) {
    flash(node, price - previous);
  }
}

// Offline use of the mobile page: registers its service worker (src/sw.js, served at
// /sw.js), shows when the data on screen is the last payload kept by that worker
// (it marks such an answer `offline: true`), and fetches fresh data as soon as the
// browser is back online.

import { byId, formatAge, setText } from './dom.js';

/**
 * Registers the service worker that keeps the mobile shell and its last payload.
 * Browsers without service workers (or a page that is not a secure context) simply
 * keep needing the network.
 * @param {string} scriptUrl
 * @param {string} scope
 */
export function registerServiceWorker(scriptUrl, scope) {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register(scriptUrl, { scope }).catch((error) => {
    console.warn(`offline support unavailable: ${error instanceof Error ? error.message : error}`);
  });
}

/**
 * Shows or hides the OFFLINE badge: shown while the payload on screen was answered
 * by the service worker without network (the age is the payload's own).
 * @param {{offline?: boolean, age_ms?: number}} payload
 */
export function showOfflineRead(payload) {
  const badge = byId('badge-offline');
  if (!badge) return;
  const offline = payload.offline === true;
  badge.hidden = !offline;
  if (offline) {
    const age = typeof payload.age_ms === 'number' ? formatAge(payload.age_ms) : 'unknown age';
    setText(badge, 'offline');
    badge.title = `No network: showing the last data received (${age} old when loaded)`;
  }
}

/**
 * Calls `refresh` with fresh data of `url` whenever the browser comes back online
 * (and once more on the next tick should the first try still be answered offline).
 * @param {string} url
 * @param {(body: any, receivedAt: number) => void} refresh
 */
export function refreshWhenOnline(url, refresh) {
  /** @param {number} attempt */
  const fetchFresh = async (attempt) => {
    try {
      const response = await fetch(url, { cache: 'no-store' });
      if (response.ok) {
        const body = await response.json();
        if (body.offline !== true) {
          refresh(body, Date.now());
          return;
        }
      }
    } catch {
      // still unreachable: try again below
    }
    if (attempt < 5) setTimeout(() => fetchFresh(attempt + 1), 1000 * (attempt + 1));
  };
  window.addEventListener('online', () => fetchFresh(0));
}

/**
 * Keeps the worker's last payload close to what the page shows while live updates
 * arrive over the WebSocket (which no service worker sees). Measured in data time:
 * once the data on screen is `spacingMs` newer than the payload the worker keeps, the
 * page re-reads `url` through the worker (which keeps the answer; the page ignores it).
 * @param {string} url
 * @param {number} spacingMs
 * @returns {{fetched: (payload: {generated_at?: number, offline?: boolean}) => void,
 *   shown: (generatedAt: number | null) => void}} `fetched`: a payload the page got over
 *   HTTP; `shown`: the generated_at of the newest data on screen
 */
export function keepLastPayload(url, spacingMs) {
  /** @type {number | null} generated_at of the payload the worker keeps, when known */
  let kept = null;
  let busy = false;
  const controlled = () => 'serviceWorker' in navigator && navigator.serviceWorker.controller !== null;
  return {
    fetched(payload) {
      if (controlled() && payload.offline !== true && typeof payload.generated_at === 'number') {
        kept = Math.max(kept ?? 0, payload.generated_at);
      }
    },
    shown(generatedAt) {
      if (busy || generatedAt === null || !controlled()) return;
      if (kept !== null && generatedAt - kept < spacingMs) return;
      busy = true;
      fetch(url, { cache: 'no-store' })
        .then((response) => (response.ok ? response.json() : null))
        .then((body) => { if (body && body.offline !== true) kept = body.generated_at; })
        .catch(() => {}) // offline: nothing new to keep
        .finally(() => { busy = false; });
    },
  };
}

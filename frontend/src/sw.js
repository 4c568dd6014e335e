// The mobile page's service worker (registered by mobile.js with scope /mobile).
//
// - The shell (the /mobile HTML, its script, chunk and style bundles) is precached at
//   install in a cache named after the shell's version and served cache-first. The
//   version is derived by the server from the bundles' content hashes (GET /sw.js
//   prepends `self.VIRTUOSO_SHELL = {version, shell, data}`), so a deploy changes the
//   worker's bytes: the browser installs the new worker, which fills its own caches
//   and deletes every older one on activate.
// - The data (/api/dashboard/mobile) is network-first: a successful answer is kept as
//   the last payload; when the network is gone the last payload is answered instead,
//   marked `offline: true`, `stale: true`, with `age_ms` grown by the time since it was
//   saved, so the page shows it as stale with its true age.
// - Only same-origin GETs are ever cached, and only successful (200, not redirected)
//   answers. Anything else (POSTs, other origins, the WebSocket, other paths) is left
//   to the browser untouched.

/**
 * What the server tells the worker: its version and the URLs it keeps.
 * @typedef {{version: string, shell: string[], data: string[]}} ShellManifest
 */

const sw = /** @type {ServiceWorkerGlobalScope & {VIRTUOSO_SHELL?: ShellManifest}} */ (
  /** @type {unknown} */ (self)
);

const PREFIX = 'virtuoso-mobile-';
const MANIFEST = sw.VIRTUOSO_SHELL || { version: 'unversioned', shell: [], data: [] };
const SHELL_CACHE = `${PREFIX}shell-${MANIFEST.version}`;
const DATA_CACHE = `${PREFIX}data-${MANIFEST.version}`;
/** The pages navigated to that the shell answers (the first shell URL is the page). */
const PAGES = new Set(MANIFEST.shell.filter((url) => !url.startsWith('/static/')));
const SHELL_URLS = new Set(MANIFEST.shell);
const DATA_PATHS = new Set(MANIFEST.data);
/** Local epoch ms when a kept payload was received (a header of the cached copy). */
const SAVED_AT = 'X-Virtuoso-Saved-At';

/**
 * A response worth keeping: same-origin ("basic"), status 200, not a redirect.
 * @param {Response} response
 * @returns {boolean}
 */
function cacheable(response) {
  return response.status === 200 && response.type === 'basic' && !response.redirected;
}

sw.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL_CACHE);
    await Promise.all(MANIFEST.shell.map(async (url) => {
      const response = await fetch(url, { cache: 'no-store' });
      if (!cacheable(response)) throw new Error(`shell ${url}: HTTP ${response.status}`);
      await cache.put(url, response);
    }));
    // The data as of now, so that the page that installed the worker (its own first
    // request went straight to the network) has a last payload to show offline.
    const data = await caches.open(DATA_CACHE);
    await Promise.all(MANIFEST.data.map(async (url) => {
      try {
        const response = await fetch(url, { cache: 'no-store' });
        if (cacheable(response)) await data.put(url, await savedCopy(response));
      } catch {
        // no data yet: the page's next request through the worker keeps one
      }
    }));
    await sw.skipWaiting();
  })());
});

sw.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    const keep = new Set([SHELL_CACHE, DATA_CACHE]);
    const names = await caches.keys();
    await Promise.all(names
      .filter((name) => name.startsWith(PREFIX) && !keep.has(name))
      .map((name) => caches.delete(name)));
    await sw.clients.claim();
  })());
});

sw.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== sw.location.origin) return;
  if (DATA_PATHS.has(url.pathname) && !url.search) {
    event.respondWith(networkFirst(request, url.pathname));
  } else if (request.mode === 'navigate' ? PAGES.has(url.pathname) : SHELL_URLS.has(url.pathname + url.search)) {
    event.respondWith(cacheFirst(request, request.mode === 'navigate' ? url.pathname : url.pathname + url.search));
  }
});

/**
 * The shell: the cached copy, else the network (kept when cacheable).
 * @param {Request} request
 * @param {string} key the cache key (a navigation's query string is ignored)
 * @returns {Promise<Response>}
 */
async function cacheFirst(request, key) {
  const cache = await caches.open(SHELL_CACHE);
  const cached = await cache.match(key, { ignoreVary: true });
  if (cached) return cached;
  const response = await fetch(request);
  if (cacheable(response)) await cache.put(key, response.clone());
  return response;
}

/**
 * The data: the network's answer (a 200 is kept as the last payload), else the last
 * payload marked offline; with neither, the network error stands.
 * @param {Request} request
 * @param {string} key
 * @returns {Promise<Response>}
 */
async function networkFirst(request, key) {
  const cache = await caches.open(DATA_CACHE);
  /** @type {Response} */
  let response;
  try {
    response = await fetch(request);
  } catch (error) {
    const saved = await cache.match(key, { ignoreVary: true });
    if (!saved) throw error;
    return offlineCopy(saved);
  }
  if (cacheable(response)) await cache.put(key, await savedCopy(response.clone()));
  return response;
}

/**
 * The copy kept in the cache: the body and its content type, stamped with the local
 * time it arrived (no ETag: an offline read must not make the page's next request
 * conditional on data it never got from the server).
 * @param {Response} response
 * @returns {Promise<Response>}
 */
async function savedCopy(response) {
  const body = await response.text();
  return new Response(body, {
    status: 200,
    headers: {
      'Content-Type': response.headers.get('Content-Type') || 'application/json',
      [SAVED_AT]: String(Date.now()),
    },
  });
}

/**
 * The last payload, answered without network: marked offline and stale, its age the
 * age it had when it arrived plus the time since (the page measures ages as
 * generated_at + age_ms on the server's clock, so this keeps them true).
 * @param {Response} saved
 * @returns {Promise<Response>}
 */
async function offlineCopy(saved) {
  const payload = await saved.json();
  const savedAt = Number(saved.headers.get(SAVED_AT));
  const elapsed = Number.isFinite(savedAt) && savedAt > 0 ? Math.max(0, Date.now() - savedAt) : 0;
  const ageAtSave = typeof payload.age_ms === 'number' && Number.isFinite(payload.age_ms) ? payload.age_ms : 0;
  const marked = { ...payload, age_ms: ageAtSave + elapsed, stale: true, offline: true };
  return new Response(JSON.stringify(marked), {
    status: 200,
    headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' },
  });
}

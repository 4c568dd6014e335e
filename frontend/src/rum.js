// Real-user monitoring: once the first data is on screen, the page reports its
// load timings to POST /api/rum (the page-load KPIs' source).

const MAX_MS = 120000;

/** @param {number} ms */
function clamp(ms) {
  return Math.round(Math.min(MAX_MS, Math.max(0, ms)) * 10) / 10;
}

/** @returns {PerformanceNavigationTiming | undefined} */
function navigationTiming() {
  return /** @type {PerformanceNavigationTiming | undefined} */ (performance.getEntriesByType('navigation')[0]);
}

/** @returns {Promise<void>} */
function domReady() {
  return new Promise((resolve) => {
    const navigation = navigationTiming();
    if (navigation && navigation.domContentLoadedEventEnd > 0) resolve();
    else window.addEventListener('load', () => setTimeout(resolve, 0), { once: true });
  });
}

/**
 * Call when the first data was rendered: measures now, reports once the DOM is ready.
 * @param {string | undefined} device
 * @param {string | undefined} page
 */
export async function reportPageLoad(device, page) {
  const firstDataMs = performance.now();
  await domReady();
  const navigation = navigationTiming();
  if (!navigation) return;
  const beacon = {
    device,
    page,
    ttfb_ms: clamp(navigation.responseStart - navigation.startTime),
    dom_ready_ms: clamp(navigation.domContentLoadedEventEnd - navigation.startTime),
    first_data_ms: clamp(firstDataMs - navigation.startTime),
  };
  try {
    await fetch('/api/rum', {
      method: 'POST',
      keepalive: true,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(beacon),
    });
  } catch {
    // monitoring must never disturb the page
  }
}

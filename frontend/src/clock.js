// The server's clock as seen from the page, and times as the page shows them (below).
// Data ages are measured on the server's clock (generated_at is the server's epoch
// ms), so a browser whose clock is off still shows true ages: the offset is learned
// from every response and pong. No DOM here: node tests it alone.

export class ServerClock {
  constructor() {
    this.offsetMs = 0;
    this.known = false;
  }

  /**
   * The server said its time was `serverMs`, received locally at `receivedMs`.
   * @param {number} serverMs
   * @param {number} [receivedMs]
   * @param {number} [roundTripMs]
   */
  observe(serverMs, receivedMs = Date.now(), roundTripMs = 0) {
    if (!Number.isFinite(serverMs)) return;
    this.offsetMs = serverMs + roundTripMs / 2 - receivedMs;
    this.known = true;
  }

  now() {
    return Date.now() + this.offsetMs;
  }

  /**
   * How old data generated at `generatedAtMs` (server time) is now.
   * @param {number} generatedAtMs
   * @returns {number}
   */
  ageOf(generatedAtMs) {
    return this.now() - generatedAtMs;
  }
}

// --- times as the page shows them -------------------------------------------------------
//
// One convention on every page: every time is in the user's own time zone (the
// browser's, Intl.DateTimeFormat().resolvedOptions().timeZone), named once on the page
// by zoneLabel ("times in Asia/Tokyo (UTC+9)"). Times are formatted from the instant
// (epoch ms) by Intl in that zone, so daylight-saving changes are right whatever the
// date; the format is the same in every locale: 24-hour clock, English month names
// ("21 Sep 2026 14:05").

/** @typedef {'time' | 'minutes' | 'daytime' | 'datetime' | 'stamp' | 'day' | 'month' | 'year'} TimeStyle */

/** @type {Map<string, Intl.DateTimeFormat>} */
const zonedFormats = new Map();

/** @type {string | undefined} */
let pageTimeZone;

/**
 * The user's time zone (an IANA name such as "Asia/Tokyo"), read once per page: the page
 * names it once (zoneLabel), and a new Intl.DateTimeFormat per formatted time was the
 * largest script cost of a desktop page load.
 * @returns {string}
 */
export const userTimeZone = () =>
  (pageTimeZone ??= new Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC');

/**
 * @param {string} timeZone
 * @returns {Intl.DateTimeFormat}
 */
function zonedFormat(timeZone) {
  let format = zonedFormats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      year: 'numeric',
      month: 'short',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
    });
    zonedFormats.set(timeZone, format);
  }
  return format;
}

/**
 * The calendar fields of an instant in a time zone.
 * @param {number} epochMs
 * @param {string} timeZone
 * @returns {Record<string, string>}
 */
function fieldsOf(epochMs, timeZone) {
  /** @type {Record<string, string>} */
  const fields = {};
  for (const part of zonedFormat(timeZone).formatToParts(epochMs)) fields[part.type] = part.value;
  return fields;
}

/**
 * An instant (epoch ms) as text in the user's time zone (or `timeZone`):
 * time 14:05:03 · minutes 14:05 · daytime 21 Sep 14:05:03 · datetime 21 Sep 2026 14:05 ·
 * stamp 21 Sep 2026 14:05:03 · day 21 · month Sep · year 2026. Not a finite number: "—".
 * @param {number | null | undefined} epochMs
 * @param {TimeStyle} [style]
 * @param {string} [timeZone]
 * @returns {string}
 */
export function formatZoned(epochMs, style = 'time', timeZone = userTimeZone()) {
  if (typeof epochMs !== 'number' || !Number.isFinite(epochMs)) return '—';
  const f = fieldsOf(epochMs, timeZone);
  const date = `${f.day} ${f.month}`;
  const minutes = `${f.hour}:${f.minute}`;
  /** @type {Record<TimeStyle, string>} */
  const styles = {
    time: `${minutes}:${f.second}`,
    minutes,
    daytime: `${date} ${minutes}:${f.second}`,
    datetime: `${date} ${f.year} ${minutes}`,
    stamp: `${date} ${f.year} ${minutes}:${f.second}`,
    day: f.day,
    month: f.month,
    year: f.year,
  };
  return styles[style];
}

/**
 * Whether two instants fall on the same calendar day in the time zone.
 * @param {number} aMs
 * @param {number} bMs
 * @param {string} [timeZone]
 */
export function sameDay(aMs, bMs, timeZone = userTimeZone()) {
  return formatZoned(aMs, 'datetime', timeZone).slice(0, 11) === formatZoned(bMs, 'datetime', timeZone).slice(0, 11);
}

/**
 * The zone's offset from UTC at an instant: "UTC+9", "UTC-4", "UTC+5:30", "UTC+0".
 * @param {string} timeZone
 * @param {number} atMs
 * @returns {string}
 */
export function utcOffset(timeZone, atMs) {
  const part = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'shortOffset' })
    .formatToParts(atMs).find((p) => p.type === 'timeZoneName');
  const offset = (part?.value || 'GMT').replace(/^GMT/, '');
  return `UTC${offset || '+0'}`;
}

/**
 * The page's one time-zone label: "times in Asia/Tokyo (UTC+9)", "times in UTC".
 * @param {string} [timeZone]
 * @param {number} [atMs] the instant whose offset is shown (now)
 * @returns {string}
 */
export function zoneLabel(timeZone = userTimeZone(), atMs = Date.now()) {
  if (/^(Etc\/)?(UTC|GMT|UCT|Universal|Zulu)$/.test(timeZone)) return 'times in UTC';
  return `times in ${timeZone} (${utcOffset(timeZone, atMs)})`;
}

/** lightweight-charts' TickMarkType values (Year … TimeWithSeconds) → the label's style. */
/** @type {TimeStyle[]} */
const TICK_STYLES = ['year', 'month', 'day', 'minutes', 'time'];

/**
 * A label of the chart's time axis: the tick's instant in the zone, at the tick's
 * granularity (a year, a month, a day of the month, a time with or without seconds).
 * @param {number} epochMs
 * @param {number} tickMarkType lightweight-charts' TickMarkType (0 Year … 4 TimeWithSeconds)
 * @param {string} [timeZone]
 * @returns {string}
 */
export function chartTickLabel(epochMs, tickMarkType, timeZone = userTimeZone()) {
  return formatZoned(epochMs, TICK_STYLES[tickMarkType] || 'datetime', timeZone);
}

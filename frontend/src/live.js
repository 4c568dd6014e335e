// One WebSocket to /ws per page: a single subscribe, snapshots and updates handed to
// the page, heartbeats answered, automatic reconnect with exponential back-off and
// jitter, resync on a sequence gap, and polling with If-None-Match while the socket
// is down. Protocol: docs/websocket.md.

const PING_EVERY_MS = 5000; // measures the server clock and detects a dead socket
const PONG_WITHIN_MS = 10000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30000;
const RESYNC_SPACING_MS = 2000;

/**
 * @typedef {object} LiveOptions
 * @property {string} url the ws:// URL
 * @property {Array<{channels: string[], symbols?: string[]}>} subscriptions sent on every connect
 * @property {import('./clock.js').ServerClock} clock
 * @property {(channel: string, items: any[]) => void} onSnapshot
 * @property {(message: any) => void} onUpdate
 * @property {(message: any) => void} onAlert
 * @property {(state: string) => void} onState
 * @property {Poll[]} polls what is fetched while the socket is down, each with its own
 *   ETag (If-None-Match: an unchanged answer is a cheap 304)
 */

/**
 * One URL polled while the socket is down. `onData` gets each changed body (never a
 * 304, a failure, or an answer that arrives after the socket is back).
 * @typedef {{url: string, everyMs: number, onData: (body: any, at: number) => void}} Poll
 */

export class LiveFeed {
  /** @param {LiveOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.attempt = 0;
    /** @type {Map<string, number>} */
    this.lastSeq = new Map();
    this.lastResync = 0;
    /** @type {number | undefined} */
    this.pingTimer = undefined;
    /** @type {number | undefined} */
    this.pongTimer = undefined;
    this.pingSentAt = 0;
    /** @type {number | undefined} */
    this.reconnectTimer = undefined;
    /** @type {number[]} one interval per poll while polling, else empty */
    this.pollTimers = [];
    this.pollPeriod = 0; // counts polling periods: an answer from an ended one is dropped
    /** @type {Map<string, string | null>} the last ETag per polled URL */
    this.etags = new Map();
    this.state = 'connecting';
    // Channels followed for every symbol: there a seq gap means missed messages.
    this.everySymbol = new Set(
      options.subscriptions.filter((s) => !s.symbols).flatMap((s) => s.channels),
    );
  }

  /**
   * @param {Record<string, string | null>} [etags] the ETags of data already on screen,
   *   by URL, for the polls
   */
  start(etags = {}) {
    for (const [url, etag] of Object.entries(etags)) this.etags.set(url, etag);
    this.connect();
  }

  connect() {
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let socket;
    try {
      socket = new WebSocket(this.options.url);
    } catch {
      // No socket at all (a refused URL, a blocked constructor): poll meanwhile, as
      // when one closes.
      this.startPolling();
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => this.onOpen();
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onclose = () => this.onClose(socket);
    socket.onerror = () => {}; // onclose follows and handles it
  }

  onOpen() {
    this.attempt = 0;
    this.lastSeq.clear();
    for (const subscription of this.options.subscriptions) {
      this.send({ type: 'subscribe', ...subscription });
    }
    this.stopPolling();
    this.setState('live');
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    this.ping();
  }

  /** @param {WebSocket} socket */
  onClose(socket) {
    if (socket !== this.socket) return;
    this.socket = null;
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.startPolling();
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.setState('reconnecting');
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** @param {object} message */
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  ping() {
    this.pingSentAt = Date.now();
    this.send({ type: 'ping' });
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => this.socket && this.socket.close(), PONG_WITHIN_MS);
  }

  /** @param {string} text */
  onMessage(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const { clock } = this.options;
    switch (message.type) {
      case 'snapshot':
        for (const item of message.items) this.noteSeq(message.channel, item.seq, true);
        this.options.onSnapshot(message.channel, message.items);
        break;
      case 'update':
        this.noteSeq(message.channel, message.seq, false);
        this.options.onUpdate(message);
        break;
      case 'alert':
        this.noteSeq(message.channel, message.seq, false);
        this.options.onAlert(message);
        break;
      case 'heartbeat':
        clock.observe(message.server_time * 1000); // server_time: epoch seconds
        this.send({ type: 'pong', nonce: message.nonce });
        break;
      case 'pong':
        clearTimeout(this.pongTimer);
        clock.observe(message.server_time * 1000, Date.now(), Date.now() - this.pingSentAt);
        break;
      case 'error':
        console.warn(`live updates: ${message.code}: ${message.message}`);
        break;
      default:
        break;
    }
  }

  /**
   * Sequence bookkeeping. On a channel followed for every symbol, a gap means missed
   * messages; on any channel a lower seq means the sequence restarted (Redis outage):
   * both ask for a resync. A symbol-filtered channel has gaps by design.
   * @param {string} channel
   * @param {number} seq
   * @param {boolean} fromSnapshot
   */
  noteSeq(channel, seq, fromSnapshot) {
    if (!Number.isFinite(seq)) return;
    const last = this.lastSeq.get(channel);
    if (fromSnapshot) {
      this.lastSeq.set(channel, Math.max(seq, last ?? 0));
      return;
    }
    this.lastSeq.set(channel, seq);
    if (last === undefined) return;
    const gap = this.everySymbol.has(channel) && seq > last + 1;
    if (seq < last || gap) this.resync(channel);
  }

  /** @param {string} channel */
  resync(channel) {
    const now = Date.now();
    if (now - this.lastResync < RESYNC_SPACING_MS) return;
    this.lastResync = now;
    this.lastSeq.delete(channel);
    this.send({ type: 'resync', channels: [channel] });
  }

  // --- polling while the socket is down ----------------------------------------------

  get polling() {
    return this.pollTimers.length > 0;
  }

  startPolling() {
    if (this.polling) return;
    for (const poll of this.options.polls) {
      this.pollTimers.push(setInterval(() => this.pollOnce(poll), poll.everyMs));
      this.pollOnce(poll);
    }
  }

  stopPolling() {
    for (const timer of this.pollTimers) clearInterval(timer);
    this.pollTimers = [];
    this.pollPeriod += 1;
  }

  /**
   * Fetches `poll.url` with If-None-Match; a changed body goes to `poll.onData` unless
   * the socket came back meanwhile (its snapshots are newer than this answer).
   * @param {Poll} poll
   */
  async pollOnce(poll) {
    const period = this.pollPeriod;
    const etag = this.etags.get(poll.url);
    /** @type {Record<string, string>} */
    const headers = etag ? { 'If-None-Match': etag } : {};
    try {
      const response = await fetch(poll.url, { headers, cache: 'no-store' });
      if (response.status === 304 || !response.ok) return;
      const body = await response.json();
      if (period !== this.pollPeriod) return; // live again: the snapshots are newer
      this.etags.set(poll.url, response.headers.get('ETag'));
      poll.onData(body, Date.now());
    } catch {
      // the server is unreachable too: the next tick tries again
    }
  }

  /** @param {string} state */
  setState(state) {
    if (this.state === state && state !== 'connecting') return;
    this.state = state;
    const shown = state !== 'live' && this.polling ? 'polling' : state;
    this.options.onState(shown);
  }
}

/**
 * ws:// or wss:// URL of `path` on this page's host.
 * @param {string} [path]
 * @returns {string}
 */
export function socketUrl(path = '/ws') {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

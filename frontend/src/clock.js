// The server's clock as seen from the page. Data ages are measured on the server's
// clock (generated_at is the server's epoch ms), so a browser whose clock is off
// still shows true ages: the offset is learned from every response and pong.

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

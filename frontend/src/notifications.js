// System notifications of critical alerts while the desktop tab is open. The browser's
// permission is asked only when the user presses the button (never on load); once
// granted, the same button turns them off (and on again) for this page, kept in
// localStorage. The permission is read from the Permissions API where there is one
// (it also says when the permission changes in the browser's settings), else from
// Notification.permission.

import { setText } from './dom.js';

/** localStorage key: '1' while the user has turned notifications off on this page. */
const OFF_KEY = 'virtuoso.notifications.off';

/** @returns {boolean} whether this browser has the Notification API */
function supported() {
  return typeof window.Notification === 'function';
}

/** @returns {boolean} whether the user turned notifications off on this page */
function turnedOff() {
  try {
    return window.localStorage.getItem(OFF_KEY) === '1';
  } catch {
    return false; // storage blocked: on, as granted
  }
}

/** @param {boolean} off */
function keepTurnedOff(off) {
  try {
    if (off) window.localStorage.setItem(OFF_KEY, '1');
    else window.localStorage.removeItem(OFF_KEY);
  } catch {
    // storage blocked: the choice lasts until the page is reloaded
  }
}

/**
 * The notification button and its status line, and the system notifications of the
 * critical alerts that arrive live: each one once (`tag`: the alert's id), never for a
 * warning or info alert, a status change, or the alerts replayed on a (re)connect.
 */
export class AlertNotifier {
  /**
   * @param {HTMLButtonElement} button
   * @param {HTMLElement} status a role="status" line saying the state
   */
  constructor(button, status) {
    this.button = button;
    this.status = status;
    /** Ids of the alerts shown as notifications (or passed over): each at most once. */
    this.notified = new Set();
    /** Off on this page (the user's choice), read once. */
    this.off = turnedOff();
    /** @type {NotificationPermission} the permission as last read */
    this.permission = supported() ? Notification.permission : 'denied';
  }

  start() {
    this.button.addEventListener('click', () => this.press());
    this.render();
    if (supported()) this.followPermission();
  }

  /** Reads the permission from the Permissions API, and again whenever it changes. */
  async followPermission() {
    if (!navigator.permissions) return;
    try {
      const answer = await navigator.permissions.query({ name: 'notifications' });
      const take = () => {
        this.permission = answer.state === 'prompt' ? 'default' : answer.state;
        this.render();
      };
      answer.addEventListener('change', take);
      take();
    } catch {
      // no such permission name here: Notification.permission, read at start, stands
    }
  }

  /** @returns {boolean} whether a critical alert would be shown now */
  get active() {
    return supported() && this.permission === 'granted' && !this.off;
  }

  render() {
    if (!supported()) {
      this.button.hidden = true;
      setText(this.status, 'System notifications are not supported by this browser.');
      return;
    }
    const now = this.permission;
    if (now === 'denied') {
      setText(this.button, 'Notifications blocked');
      setText(this.status, 'Notifications are blocked in the browser settings for this site.');
    } else if (now === 'granted') {
      setText(this.button, this.off ? 'Turn notifications on' : 'Turn notifications off');
      setText(this.status, this.off
        ? 'Notifications are off on this page.'
        : 'Notifications on: critical alerts show while this tab is open.');
    } else {
      setText(this.button, 'Enable notifications');
      setText(this.status, '');
    }
  }

  /** The button: asks for the permission (the first time), else turns notifications off or on. */
  async press() {
    if (!supported()) return;
    if (this.permission === 'default') {
      this.button.disabled = true;
      try {
        this.permission = (await Notification.requestPermission()) || this.permission;
      } catch {
        // an old callback-only API: the Permissions API's change event says
      } finally {
        this.button.disabled = false;
      }
      if (this.permission === 'granted') this.setOff(false);
    } else if (this.permission === 'granted') {
      this.setOff(!this.off);
    }
    this.render();
  }

  /** @param {boolean} off */
  setOff(off) {
    this.off = off;
    keepTurnedOff(off);
  }

  /**
   * An alert message as it arrives (`live`: an `alert` message of /ws, not an item of a
   * snapshot or a poll); `known`: whether the page had this alert already. Shows a new
   * pending critical alert as a system notification, once.
   * @param {import('./alerts.js').Alert} alert
   * @param {boolean} live
   * @param {boolean} known
   */
  take(alert, live, known) {
    if (this.notified.has(alert.id)) return;
    if (known || !live) {
      this.notified.add(alert.id); // replayed or listed before: never shown later
      return;
    }
    if (alert.level !== 'critical' || alert.status !== 'pending' || !this.active) return;
    this.notified.add(alert.id);
    try {
      new Notification(alert.title, { body: alert.message, tag: alert.id });
    } catch (error) {
      console.warn(`notification not shown: ${error}`);
    }
  }
}

// JSON calls to the service's API. Writes to alerts carry the API token the user
// entered, kept in sessionStorage (this tab only, gone when it closes).

const TOKEN_KEY = 'virtuoso.apiToken';

/** @returns {string} */
export function apiToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** @param {string} token */
export function setApiToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * The text of a caught error (an Error's message, else the value itself).
 * @param {unknown} error
 * @returns {string}
 */
export function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Calls `url`; returns the parsed JSON body (null for 204); throws ApiError otherwise.
 * @param {string} method
 * @param {string} url
 * @param {unknown} [body] sent as JSON when given
 * @param {{authorized?: boolean}} [options] authorized: send the API token
 * @returns {Promise<any>}
 */
export async function callApi(method, url, body = undefined, { authorized = false } = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (authorized && apiToken()) headers.Authorization = `Bearer ${apiToken()}`;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const payload = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const reason = payload && payload.message ? payload.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, reason);
  }
  return payload;
}

/**
 * Writes need the API token: without one, say so instead of sending a doomed request.
 * @param {string} action what the user wanted, said in the message
 * @param {(text: string) => void} say
 * @returns {boolean} true when a token is there
 */
export function needsToken(action, say) {
  if (apiToken()) return true;
  say(`Could not ${action}: enter the API token first.`);
  return false;
}

/**
 * What to tell the user when a write failed.
 * @param {unknown} error
 * @param {string} action
 * @returns {string}
 */
export function explainFailure(error, action) {
  if (error instanceof ApiError && error.status === 401) {
    return `Could not ${action}: the API token was refused.`;
  }
  return `Could not ${action}: ${errorText(error)}`;
}

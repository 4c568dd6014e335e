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

// JSON calls to the service's API. Writes to alerts carry the API token the user
// entered, kept in sessionStorage (this tab only, gone when it closes).

const TOKEN_KEY = 'virtuoso.apiToken';

export function apiToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setApiToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls `url`; returns the parsed JSON body (null for 204); throws ApiError otherwise. */
export async function callApi(method, url, body = undefined, { authorized = false } = {}) {
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

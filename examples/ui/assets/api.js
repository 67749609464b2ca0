// The console is an ordinary client of the public /v1/ API on this origin.
// The token lives in this tab's session storage only: never in local
// storage, a cookie or a URL, and it is forgotten when the tab closes or
// the operator signs out.

const TOKEN_KEY = 'strongroom.token';

export const session = {
  token() {
    return window.sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    window.sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    window.sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An API answer that was not a success: the HTTP status and Vault's
 * `errors` list. */
export class ApiError extends Error {
  constructor(status, errors, body) {
    const text = errors.length ? errors.join('; ') : `the server answered ${status}`;
    super(text);
    this.name = 'ApiError';
    this.status = status;
    this.errors = errors;
    this.body = body;
  }
}

/** Encodes a secret path for a URL, segment by segment. */
export function encodePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

/**
 * Calls `/v1/<path>`. `body` is sent as JSON; `auth: false` leaves the
 * token out (for the unauthenticated sys endpoints); `token` uses that
 * token instead of the session's; `query` is an object of query parameters. Resolves to the parsed JSON (null for 204); rejects
 * with ApiError, or with a TypeError when the server cannot be reached.
 */
export async function api(method, path, { body, auth = true, query, token: given } = {}) {
  const headers = { 'X-Vault-Request': 'true' };
  const token = given || session.token();
  if (auth && token) headers['X-Vault-Token'] = token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let url = `/v1/${path}`;
  if (query) {
    const params = new URLSearchParams(query);
    url += `?${params.toString()}`;
  }
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  if (response.status === 204) return null;
  let parsed = null;
  const text = await response.text();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch (_) {
      parsed = null;
    }
  }
  if (!response.ok) {
    const errors = parsed && Array.isArray(parsed.errors) ? parsed.errors.map(String) : [];
    throw new ApiError(response.status, errors, parsed);
  }
  return parsed;
}

/** What an operator should read when a call failed. */
export function describeError(err) {
  if (err instanceof ApiError) {
    if (err.status === 403) return 'Permission denied: the token is missing, expired, revoked or not allowed to do this.';
    if (err.status === 503 && !err.errors.length) return 'The node is sealed.';
    return err.message;
  }
  return `The server could not be reached (${err && err.message ? err.message : err}). Check that it is running.`;
}

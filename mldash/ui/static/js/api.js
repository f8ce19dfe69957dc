// The JSON API, with the read token (if the server asks for one) kept for the tab.

const KEY = "mldash-token";

export class AuthError extends Error {}

(function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(KEY, token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash); // keep it out of history
  }
})();

export function setToken(token) {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

export async function get(path, params = {}) {
  const url = new URL("api/" + path, document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => url.searchParams.append(key, String(v))); // key=a&key=b
    else url.searchParams.set(key, String(value));
  }
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(KEY);
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch(url, { headers, cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    let message = "";
    try { message = (await response.json()).error; } catch (_) { /* not JSON */ }
    throw new AuthError(message || "a read token is needed");
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    const error = new Error((body && body.error) || response.statusText);
    error.status = response.status;
    error.body = body; // e.g. filter_error: where a filter went wrong
    throw error;
  }
  return response.json();
}

/** Each run's value for each filter key (api/values), asking for at most 100 runs at a
 * time so no URL gets long: {ref: [value per key]} (null where a run has none). */
export async function values(keys, refs) {
  const out = new Map();
  const chunks = [];
  for (let i = 0; i < refs.length; i += 100) chunks.push(refs.slice(i, i + 100));
  const answers = await Promise.all(chunks.map((run) => get("values", { key: keys, run })));
  for (const answer of answers) for (const row of answer.runs) out.set(row.ref, row.values);
  return out;
}

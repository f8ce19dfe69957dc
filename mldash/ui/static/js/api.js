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

/** The URL of a run's file (api/file): {prefix, id | sha, view}. */
export function fileUrl(params) {
  const url = new URL("api/file", document.baseURI);
  for (const [key, value] of Object.entries(params)) if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, String(value));
  return url;
}

/** Whether the tab holds a read token (then file bytes are fetched, not linked). */
export function hasToken() {
  return Boolean(sessionStorage.getItem(KEY));
}

/** A run's file as a fetch Response (the token sent), e.g. {range: "bytes=0-262143"}. */
export async function file(params, { range = null } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(KEY);
  if (token) headers.authorization = "Bearer " + token;
  if (range) headers.range = range;
  const response = await fetch(fileUrl(params), { headers });
  if (response.status === 401 || response.status === 403) throw new AuthError("a read token is needed");
  if (!response.ok) {
    const error = new Error(response.status === 404 ? "file not found" : response.statusText || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response;
}

const blobUrls = new Map(); // "prefix\0id" -> object URL of an image's bytes, least recently used first
const MAX_BLOB_URLS = 200;

/** An object URL of an image file's bytes (kept for the tab, the least recently used go). */
export async function imageUrl(prefix, id) {
  const key = prefix + "\u0000" + id;
  if (blobUrls.has(key)) {
    const url = blobUrls.get(key);
    blobUrls.delete(key);
    blobUrls.set(key, url);
    return url;
  }
  const response = await file({ prefix, id, view: "image" });
  const type = response.headers.get("content-type") || "";
  if (!type.startsWith("image/")) throw new Error("not an image");
  const url = URL.createObjectURL(await response.blob());
  blobUrls.set(key, url);
  while (blobUrls.size > MAX_BLOB_URLS) {
    const [oldest, old] = blobUrls.entries().next().value;
    blobUrls.delete(oldest);
    URL.revokeObjectURL(old);
  }
  return url;
}

// Formatting values for display (always returns plain strings).

const AXIS = new Set(["step", "epoch", "timestamp", "time"]);

export function num(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-4 || abs >= 1e6)) return value.toExponential(4).replace(/\.?0+e/, "e");
    return String(Number(value.toPrecision(6)));
  }
  if (typeof value === "object") {
    // A big int or a non-finite float as stored: {"$int": "<digits>"} / {"$float": "NaN"}.
    const keys = Object.keys(value);
    if (keys.length === 1 && (keys[0] === "$int" || keys[0] === "$float") && typeof value[keys[0]] === "string") {
      return value[keys[0]];
    }
    return JSON.stringify(value);
  }
  return String(value);
}

function pad(n) { return String(n).padStart(2, "0"); }

export function when(seconds) {
  if (!seconds) return "–";
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function durationSeconds(row) {
  if (row.status === "RUNNING" && !row.stale && row.started_at) {
    return (row.duration || 0) + Date.now() / 1000 - (row.resumed_at || row.started_at);
  }
  return row.duration ?? null;
}

export function duration(row) {
  const s = durationSeconds(row);
  if (s === null || s === undefined) return "–";
  const total = Math.max(0, Math.floor(s));
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), sec = total % 60;
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

/** The value to show for a metric point: its `value` field, else its first number. */
export function headline(point) {
  const data = (point && point.data) || {};
  if ("value" in data) return data.value;
  for (const [key, value] of Object.entries(data)) {
    if (!AXIS.has(key) && typeof value === "number") return value;
  }
  const first = Object.values(data)[0];
  return first === undefined ? null : first;
}

export function statusText(row) {
  const status = row.status || "?";
  return row.stale ? `${status} (process gone)` : status;
}

export function statusClass(row) {
  return "status status-" + String(row.status || "unknown").toLowerCase() + (row.stale ? " stale" : "");
}

export function expHref(prefix) {
  return "#/exp/" + encodeURIComponent(prefix);
}

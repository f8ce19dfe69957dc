// Axes for the scatter and the parallel coordinates: a number axis (linear or log) or,
// when a key holds strings or bools, an ordinal one (its values in order, evenly
// spaced). Values come from api/values: numbers, strings, bools, null, and the tagged
// {"$int": "..."} / {"$float": "NaN"} the dashboard keeps big ints and NaN as.

import { num } from "./format.js";

/** A value as a plottable number, or null (missing, NaN, ±inf, or not a number). */
export function toNumber(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (value && typeof value === "object" && typeof value.$int === "string") return Number(value.$int);
  return null;
}

function isMissing(value) {
  if (value === null || value === undefined) return true;
  if (typeof value === "number") return !Number.isFinite(value);
  return typeof value === "object" && typeof value.$float === "string"; // NaN, ±inf as stored
}

/** The text a value shows as (never markup: callers put it in as text). */
export function label(value) {
  const text = isMissing(value) ? "–" : num(value);
  return text.length > 28 ? text.slice(0, 27) + "…" : text;
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const unit = raw / power;
  return (unit >= 5 ? 10 : unit >= 2 ? 5 : unit >= 1 ? 2 : 1) * power;
}

/**
 * axis(values, {log, ticks}) -> {kind, pos(value) -> 0..1 | null, ticks: [[text, t]], missing}
 * ``kind``: "number", "category" or "empty" (no value at all). ``pos`` is null for a
 * missing value (the caller draws those apart). A log axis needs every value > 0, else
 * it is linear. A number axis whose values are all equal puts them in the middle.
 */
export function axis(values, { log = false, ticks = 5 } = {}) {
  const present = values.filter((v) => !isMissing(v));
  const missing = values.length - present.length;
  if (!present.length) return { kind: "empty", pos: () => null, ticks: [], missing, log: false };
  const numbers = present.map(toNumber);
  if (numbers.every((n) => n !== null)) {
    const useLog = log && numbers.every((n) => n > 0);
    const f = useLog ? Math.log10 : (x) => x;
    let lo = Math.min(...numbers.map(f)), hi = Math.max(...numbers.map(f));
    const flat = lo === hi;
    if (flat) { lo -= 1; hi += 1; }
    const pos = (v) => {
      const n = isMissing(v) ? null : toNumber(v);
      return n === null ? null : (f(n) - lo) / (hi - lo);
    };
    const marks = [];
    if (useLog) {
      for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) marks.push([num(Math.pow(10, e)), (e - lo) / (hi - lo)]);
      if (marks.length < 2) marks.push([num(Math.pow(10, lo)), 0], [num(Math.pow(10, hi)), 1]);
    } else if (flat) {
      marks.push([num(numbers[0]), 0.5]);
    } else {
      const step = niceStep(hi - lo, ticks);
      for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) marks.push([num(Number(v.toPrecision(12))), (v - lo) / (hi - lo)]);
    }
    return { kind: "number", pos, ticks: marks, missing, log: useLog };
  }
  // Strings (or a mix): an ordinal axis of the distinct values, in natural order.
  const text = (v) => (typeof v === "string" ? v : label(v));
  const categories = [...new Set(present.map(text))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const at = new Map(categories.map((c, i) => [c, categories.length === 1 ? 0.5 : i / (categories.length - 1)]));
  const every = Math.max(1, Math.ceil(categories.length / 20)); // at most ~20 labels
  return {
    kind: "category",
    pos: (v) => (isMissing(v) ? null : at.get(text(v)) ?? null),
    ticks: categories.filter((_, i) => i % every === 0).map((c) => [c.length > 28 ? c.slice(0, 27) + "…" : c, at.get(c)]),
    missing,
    log: false,
  };
}

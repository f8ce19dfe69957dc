// Groups of runs for the compare view: runs with the same value of a parameter ("by"),
// or runs that differ only in that parameter ("over", e.g. seeds), and the aggregate of
// their series: the mean at each x with a min/max or a ±std band.

import { num } from "./format.js";

const same = (v) => JSON.stringify(v === undefined ? null : v);

/** Parameters whose values are not the same in every run (missing counts as a value). */
export function differingParams(runs) {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.params || {})))].sort();
  return keys.filter((k) => new Set(runs.map((r) => same((r.params || {})[k]))).size > 1);
}

function ordered(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

/**
 * groupRuns(runs, "by" | "over", param) -> [{label, refs}] in the order of their values.
 * "by": one group per value of ``param`` (runs without it form "param=–").
 * "over": one group per combination of the other differing parameters, so runs that
 * differ only in ``param`` (the seeds of one configuration) are averaged together.
 */
export function groupRuns(runs, mode, param) {
  const groups = new Map();
  const others = mode === "over" ? differingParams(runs).filter((k) => k !== param) : [param];
  for (const run of runs) {
    const params = run.params || {};
    const values = others.map((k) => params[k]);
    const key = values.map(same).join("\u0000");
    if (!groups.has(key)) {
      const label = others.length
        ? others.map((k, i) => `${k}=${values[i] === undefined ? "–" : num(values[i])}`).join(", ")
        : "all runs";
      groups.set(key, { label, values, refs: [] });
    }
    groups.get(key).refs.push(run.ref);
  }
  return [...groups.values()].sort((a, b) => {
    for (let i = 0; i < a.values.length; i++) {
      const c = a.values[i] === undefined ? 1 : b.values[i] === undefined ? -1 : ordered(a.values[i], b.values[i]);
      if (c) return c;
    }
    return 0;
  }).map(({ label, refs }) => ({ label, refs }));
}

/** The finite points of one run's series, x ascending (nulls and NaN left out). */
function clean(xs, ys) {
  const px = [], py = [];
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i], y = ys[i];
    if (x === null || y === null || y === undefined || !Number.isFinite(x) || !Number.isFinite(y)) continue;
    if (px.length && x < px[px.length - 1]) continue; // x went back (a resumed run re-logging): keep the first pass
    px.push(x);
    py.push(y);
  }
  return [px, py];
}

/**
 * aggregate([[xs, ys], ...]) -> {xs, mean, min, max, std, n}
 *
 * Alignment: the x values are the union of the runs' x values. At each x a run counts
 * with its own point there, or, when it has none but x lies between two of its points,
 * the value linearly interpolated between them; outside its first..last x it does not
 * count (never extrapolated), so ``n`` says how many runs each point averages. Runs that
 * log the same steps (seeds of one script) are thus averaged point for point.
 * ``std`` is the sample standard deviation (n - 1; 0 for a single run).
 */
export function aggregate(tables) {
  const runs = tables.map(([xs, ys]) => clean(xs, ys)).filter(([xs]) => xs.length);
  const all = [...new Set(runs.flatMap(([xs]) => xs))].sort((a, b) => a - b);
  const m = all.length;
  const sum = new Float64Array(m), sq = new Float64Array(m), n = new Int32Array(m);
  const min = new Array(m).fill(null), max = new Array(m).fill(null);
  for (const [xs, ys] of runs) {
    let j = 0; // xs[j] is the first x of the run >= the union's x
    for (let i = 0; i < m; i++) {
      const x = all[i];
      if (x < xs[0] || x > xs[xs.length - 1]) continue;
      while (xs[j] < x) j++;
      let y;
      if (xs[j] === x) {
        y = ys[j];
        // several points at one x (a downsampled view's min and max): their mean
        let k = j + 1, total = y, count = 1;
        while (k < xs.length && xs[k] === x) { total += ys[k]; count++; k++; }
        y = total / count;
      } else {
        const t = (x - xs[j - 1]) / (xs[j] - xs[j - 1]);
        y = ys[j - 1] + t * (ys[j] - ys[j - 1]);
      }
      sum[i] += y;
      sq[i] += y * y;
      n[i] += 1;
      if (min[i] === null || y < min[i]) min[i] = y;
      if (max[i] === null || y > max[i]) max[i] = y;
    }
  }
  const mean = new Array(m), std = new Array(m);
  for (let i = 0; i < m; i++) {
    if (!n[i]) { mean[i] = std[i] = null; continue; }
    mean[i] = sum[i] / n[i];
    std[i] = n[i] > 1 ? Math.sqrt(Math.max(0, (sq[i] - n[i] * mean[i] * mean[i]) / (n[i] - 1))) : 0;
  }
  return { xs: all, mean, min, max, std, n: Array.from(n) };
}

/** The band's edges for ``band`` ("minmax", "std" or "none"): [lower, upper] or null. */
export function bandEdges(agg, band) {
  if (band === "minmax") return [agg.min, agg.max];
  if (band === "std") {
    return [
      agg.mean.map((m, i) => (m === null ? null : m - agg.std[i])),
      agg.mean.map((m, i) => (m === null ? null : m + agg.std[i])),
    ];
  }
  return null;
}

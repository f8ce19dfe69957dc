// Charts of metric series on uPlot. The server sends at most a few points per
// pixel for the visible x range (min and max of every pixel bucket, so spikes
// stay); zooming asks it again for the new range, until points are exact.

import * as api from "./api.js";
import { h, clear } from "./dom.js";
import { num } from "./format.js";
import { aggregate, bandEdges } from "./groups.js";

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#c026d3", "#65a30d", "#475569", "#b45309"];

/** TensorBoard-style exponential moving average, debiased at the start. */
export function smooth(ys, weight) {
  if (!weight) return ys;
  let last = 0, n = 0;
  return ys.map((y) => {
    if (y === null || !Number.isFinite(y)) return y;
    last = last * weight + (1 - weight) * y;
    n += 1;
    return last / (1 - Math.pow(weight, n));
  });
}

function positiveOnly(ys) {
  return ys.map((y) => (y === null || y <= 0 ? null : y));
}

/** Shared chart options of a page: {x, smooth, log}. */
export function defaultOptions() {
  return { x: "step", smooth: 0, log: false };
}

class BaseChart {
  constructor(container, options, height = 220) {
    this.container = container;
    this.options = options;
    this.height = height;
    this.range = null; // [lo, hi] while zoomed
    this.plot = null;
    this.shape = "";
    this.body = h("div", { class: "chart-body" });
    this.note = h("div", { class: "chart-note muted" });
    container.append(this.body, this.note);
    this._loading = null;
  }

  width() {
    return Math.max(200, Math.floor(this.body.clientWidth || this.container.clientWidth || 600));
  }

  /** Fetch the points for the current range and redraw; safe to call while one is running. */
  async load() {
    if (this._loading) {
      this._again = true;
      return this._loading;
    }
    this._loading = (async () => {
      try {
        do {
          this._again = false;
          const result = await this.fetch();
          this.draw(result);
          if (result.coarse && !this.destroyed) {
            // The server is still reading this series for the first time and sent a
            // sample across the whole range; ask again for the real view (that
            // request waits until the series is read).
            await new Promise((resolve) => setTimeout(resolve, 50));
            this._again = true;
          }
        } while (this._again);
      } catch (error) {
        if (error instanceof api.AuthError) throw error;
        this.note.textContent = "could not load: " + error.message;
        this.note.classList.add("error-text");
      } finally {
        this._loading = null;
      }
    })();
    return this._loading;
  }

  zoom(lo, hi) {
    this.range = lo === null ? null : [lo, hi];
    return this.load();
  }

  /** ``series``: [{label, ys, spanGaps, color?, edge?}]; ``bands``: [[upper, lower, color]]
   * as indexes into ``series`` (drawn filled between); ``smoothed``: the ys are smoothed already. */
  draw({ xs, series, xKey, note, bands = [], smoothed = false }) {
    const width = this.width();
    const smoothing = smoothed ? 0 : Number(this.options.smooth) || 0;
    const data = [xs];
    const specs = [];
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      let ys = s.ys;
      if (this.options.log) ys = positiveOnly(ys);
      if (smoothing) {
        data.push(ys);
        specs.push({ label: s.label + " (raw)", stroke: color + "40", width: 1, points: { show: false }, spanGaps: s.spanGaps });
        data.push(smooth(ys, smoothing));
        specs.push({ label: s.label, stroke: color, width: 1.5, points: { show: false }, spanGaps: s.spanGaps, value: (u, v) => num(v) });
      } else if (s.edge) { // a band's edge: faint, the fill between the edges shows the spread
        data.push(ys);
        specs.push({ label: s.label, stroke: color + "66", width: 1, points: { show: false }, spanGaps: s.spanGaps, value: (u, v) => num(v) });
      } else {
        data.push(ys);
        specs.push({ label: s.label, stroke: color, width: 1.5, points: { show: xs.length < 60 }, spanGaps: s.spanGaps, value: (u, v) => num(v) });
      }
    });
    // uPlot counts series from 1 (0 is x); without smoothing there is one spec per series.
    const fills = smoothing ? [] : bands.map(([upper, lower, color]) => ({ series: [upper + 1, lower + 1], fill: color + "2e" }));
    const shape = JSON.stringify([specs.map((s) => s.label), xKey, this.options.log, smoothing > 0, fills]);
    if (!this.plot || shape !== this.shape || this.plot.width !== width) {
      if (this.plot) this.plot.destroy();
      clear(this.body);
      this.plot = new uPlot(this.plotOptions(specs, xKey, width, fills), data, this.body);
      this.shape = shape;
      // A band's edges stay out of the legend (uPlot has no option for it): the mean's
      // row names the group, and the fill shows the spread.
      const rows = this.plot.root.querySelectorAll(".u-legend .u-series");
      series.forEach((s, i) => { if (s.edge && !smoothing && rows[i + 1]) rows[i + 1].style.display = "none"; });
    } else {
      this.plot.setData(data, this.range === null);
    }
    if (this.range !== null) this.plot.setScale("x", { min: this.range[0], max: this.range[1] });
    this.note.classList.remove("error-text");
    this.note.textContent = note + (this.range !== null ? " · zoomed (double-click to reset)" : "");
  }

  plotOptions(specs, xKey, width, bands = []) {
    const isTime = xKey === "time";
    return {
      width,
      height: this.height,
      bands,
      scales: { x: { time: isTime }, y: { distr: this.options.log ? 3 : 1 } },
      axes: [{ label: isTime ? "" : xKey, size: isTime ? 50 : 40 }, { size: 60, values: (u, vals) => vals.map(num) }],
      series: [{ label: xKey, value: (u, v) => (v === null ? "–" : isTime ? new Date(v * 1000).toLocaleString() : num(v)) }, ...specs],
      legend: { live: true },
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 3) return;
            const lo = u.posToVal(u.select.left, "x");
            const hi = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            this.zoom(lo, hi);
          },
        ],
        ready: [
          (u) => {
            u.over.addEventListener("dblclick", () => this.zoom(null, null));
          },
        ],
      },
    };
  }

  destroy() {
    this.destroyed = true;
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

/** One metric series of one run; several y fields share the chart. */
export class SeriesChart extends BaseChart {
  /** ``fields``: only these y fields of a multi-field series (the System charts); default all. */
  constructor(container, prefix, name, options, fields = null) {
    super(container, options);
    this.prefix = prefix;
    this.name = name;
    this.fields = fields;
    this.lastXChoices = null;
  }

  async fetch() {
    const [lo, hi] = this.range || [null, null];
    let x = this.options.x;
    if (this.lastXChoices && !this.lastXChoices.includes(x)) x = "index"; // e.g. no step field
    let view = await api.get("series", { prefix: this.prefix, name: this.name, x, lo, hi, width: this.width() });
    this.lastXChoices = view.x_choices || [];
    if (view.x !== "index" && !this.lastXChoices.includes(view.x)) {
      view = await api.get("series", { prefix: this.prefix, name: this.name, x: "index", width: this.width() });
    }
    this.view = view;
    const shown = view.coarse ? " · reading all points… (a sample for now)" : view.exact ? "" : ` · showing ${view.points.x.length.toLocaleString()} (min/max per pixel)`;
    const note = `${view.total.toLocaleString()} points` + shown + (view.x !== this.options.x ? ` · x = ${view.x}` : "");
    const fields = this.fields ? view.fields.filter((f) => this.fields.includes(f)) : view.fields;
    return { xs: view.points.x, xKey: view.x, note, coarse: !!view.coarse, series: fields.map((f) => ({ label: f, ys: view.points[f], spanGaps: false })) };
  }
}

/** One metric overlaid across runs (the compare view). */
export class CompareChart extends BaseChart {
  /** ``field``: the y field to overlay (default "value", else the series' first). */
  constructor(container, prefixes, name, options, field = null, height = 340) {
    super(container, options, height);
    this.prefixes = prefixes;
    this.name = name;
    this.field = field;
    this.lacking = new Set(); // runs known not to have this metric: not asked (a 404 each)
  }

  views() {
    const [lo, hi] = this.range || [null, null];
    return Promise.all(
      this.prefixes.map((prefix) => this.lacking.has(prefix) ? null :
        api.get("series", { prefix, name: this.name, x: this.options.x, lo, hi, width: this.width() }).catch(() => null),
      ),
    );
  }

  /** [x column, y column] of one run's view, or null when it lacks the field or the x axis. */
  table(view) {
    if (!view || !view.fields.length || view.x !== this.options.x) return null;
    if (this.field && !view.fields.includes(this.field)) return null;
    const field = this.field || (view.fields.includes("value") ? "value" : view.fields[0]);
    return [view.points.x, view.points[field]];
  }

  async fetch() {
    const views = await this.views();
    const tables = [];
    const series = [];
    let total = 0;
    let coarse = false;
    views.forEach((view, i) => {
      const table = this.table(view);
      if (!table) return;
      coarse = coarse || !!view.coarse;
      tables.push(table);
      // the run's own colour (its place in the list), as in the compare view's legend
      series.push({ label: this.prefixes[i], ys: null, spanGaps: true, color: COLORS[i % COLORS.length] });
      total += view.total;
    });
    if (!tables.length) return { xs: [], xKey: this.options.x, note: "no run has this metric on this x axis", series: [] };
    const joined = uPlot.join(tables);
    series.forEach((s, i) => { s.ys = joined[i + 1]; });
    const missing = this.prefixes.length - tables.length;
    return { xs: joined[0], xKey: this.options.x, series, coarse, note: `${tables.length} runs, ${total.toLocaleString()} points` + (coarse ? " · reading all points…" : "") + (missing ? ` · ${missing} without this metric or x axis` : "") };
  }
}

/**
 * One metric across groups of runs: per group the mean (one line) and, for ``band``
 * "minmax" or "std", a filled band (groups.js says how runs with other steps align).
 * Each run is smoothed before the mean is taken, so smoothing and bands agree.
 */
export class GroupChart extends CompareChart {
  constructor(container, groups, name, options, band = "minmax", height = 340) {
    super(container, groups.flatMap((g) => g.refs), name, options, null, height);
    this.groups = groups;
    this.band = band;
  }

  async fetch() {
    const views = await this.views();
    const byRef = new Map(this.prefixes.map((ref, i) => [ref, views[i]]));
    const weight = Number(this.options.smooth) || 0;
    const tables = [], series = [], bands = [];
    let runs = 0, coarse = false;
    this.groups.forEach((group, g) => {
      const color = COLORS[g % COLORS.length];
      const own = [];
      for (const ref of group.refs) {
        const view = byRef.get(ref);
        const table = this.table(view);
        if (!table) continue;
        coarse = coarse || !!view.coarse;
        own.push([table[0], smooth(table[1], weight)]);
      }
      if (!own.length) return;
      runs += own.length;
      const agg = aggregate(own);
      const edges = bandEdges(agg, this.band);
      const label = `${group.label} (${own.length} run${own.length > 1 ? "s" : ""})`;
      series.push({ label, ys: null, spanGaps: true, color });
      if (edges) {
        const [lowName, highName] = this.band === "std" ? ["−std", "+std"] : ["min", "max"];
        series.push({ label: `${group.label} ${highName}`, ys: null, spanGaps: true, color, edge: true });
        series.push({ label: `${group.label} ${lowName}`, ys: null, spanGaps: true, color, edge: true });
        bands.push([series.length - 2, series.length - 1, color]);
        tables.push([agg.xs, agg.mean, edges[1], edges[0]]);
      } else {
        tables.push([agg.xs, agg.mean]);
      }
    });
    if (!tables.length) return { xs: [], xKey: this.options.x, note: "no run has this metric on this x axis", series: [] };
    const joined = uPlot.join(tables);
    series.forEach((s, i) => { s.ys = joined[i + 1]; });
    const shown = series.filter((s) => !s.edge).length;
    const band = this.band === "std" ? " · mean ± std" : this.band === "minmax" ? " · mean, min to max" : " · mean";
    const missing = this.prefixes.length - runs;
    return {
      xs: joined[0], xKey: this.options.x, series, bands, smoothed: true, coarse,
      note: `${shown} groups of ${runs} runs` + band + (coarse ? " · reading all points…" : "") + (missing ? ` · ${missing} without this metric or x axis` : ""),
    };
  }
}

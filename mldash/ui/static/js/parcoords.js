// Parallel coordinates: one vertical axis per chosen parameter and one for a metric, one
// line per compared run through its values, coloured by the metric (blue low, red high),
// so a sweep shows which settings lead where. Strings are ordinal axes; a run missing a
// value crosses that axis in the "none" slot below it. SVG, as for the scatter.

import * as api from "./api.js";
import { h, add, clear, select, svg } from "./dom.js";
import { expHref } from "./format.js";
import { axis, label } from "./axes.js";

const HEIGHT = 400;
const M = { l: 40, r: 60, t: 34, b: 46 };
const RAMP = [[37, 99, 235], [147, 51, 234], [220, 38, 38]]; // low -> high
const NO_VALUE = "#94a3b8";

/** The colour of ``t`` (0..1) on the ramp. */
export function ramp(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  const c = RAMP[i].map((a, k) => Math.round(a + f * (RAMP[i + 1][k] - a)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/**
 * parcoordsPanel(container, {runs, paramKeys, metricKeys, state, onChange})
 * ``state``: {params: [keys] | null (the first few that differ), metric}, kept by the caller;
 * ``onChange()`` after the user changes it (the caller keeps it in the URL).
 */
export function parcoordsPanel(container, { runs, paramKeys, defaultParams, metricKeys, state, onChange = () => {} }) {
  if (!state.params) state.params = defaultParams.slice(0, 6);
  state.params = state.params.filter((k) => paramKeys.includes(k));
  if (!metricKeys.includes(state.metric)) state.metric = metricKeys[0];
  const plot = h("div", { class: "plot", id: "parcoords-plot" });
  const tip = h("div", { class: "plot-tip", hidden: true });
  const note = h("div", { class: "muted small", id: "parcoords-note" });
  const picker = h("details", { class: "columns-box", id: "parcoords-params" }, h("summary", {}, "Parameters"),
    h("div", { class: "columns-list" }, paramKeys.map((key) => h("label", {},
      h("input", { type: "checkbox", checked: state.params.includes(key), dataset: { key }, onchange: (e) => {
        const chosen = new Set(state.params);
        if (e.target.checked) chosen.add(key); else chosen.delete(key);
        state.params = paramKeys.filter((k) => chosen.has(k)); // in the keys' order, not the clicks'
        redraw();
        onChange();
      } }), " " + key))));
  const redraw = () => load().catch((error) => { note.textContent = "could not load: " + error.message; });
  add(clear(container),
    h("div", { class: "toolbar" }, picker,
      h("label", {}, "metric ", select(metricKeys.map((k) => [k, k]), state.metric, (v) => { state.metric = v; redraw(); onChange(); }, { id: "parcoords-metric", "aria-label": "parallel coordinates metric" }))),
    h("div", { class: "plot-wrap" }, plot, tip),
    note);

  let keys = [];
  let got = new Map();

  async function load() {
    keys = [...state.params, state.metric].filter(Boolean);
    if (!state.metric) { note.textContent = "No metric to plot."; return; }
    got = await api.values(keys, runs.map((r) => r.ref));
    draw();
  }

  function draw() {
    clear(plot);
    const width = Math.max(360, Math.floor(plot.clientWidth || container.clientWidth || 700));
    const shown = runs.filter((r) => got.has(r.ref));
    const columns = keys.map((_, k) => shown.map((r) => got.get(r.ref)[k]));
    const axes = columns.map((values) => axis(values));
    const W = width - M.l - M.r, H = HEIGHT - M.t - M.b;
    const none = M.t + H + 22; // where missing values cross an axis
    const ax = (k) => M.l + (keys.length === 1 ? W / 2 : (k * W) / (keys.length - 1));
    const ay = (t) => M.t + (1 - t) * H;
    const metric = axes[axes.length - 1];
    const root = svg("svg", { width, height: HEIGHT, class: "parcoords", role: "img", "aria-label": `parallel coordinates of ${keys.join(", ")}` });
    const lines = svg("g", { class: "pc-lines" });
    root.append(lines);
    shown.forEach((run, i) => {
      const points = axes.map((a, k) => {
        const t = a.pos(columns[k][i]);
        return `${ax(k).toFixed(1)},${(t === null ? none : ay(t)).toFixed(1)}`;
      });
      const t = metric.kind === "number" ? metric.pos(columns[columns.length - 1][i]) : null;
      const line = svg("polyline", {
        points: points.join(" "), class: "pc-line", stroke: t === null ? NO_VALUE : ramp(t), dataset: { ref: run.ref },
        onmouseenter: (e) => { lines.append(line); showTip(run, i, e); }, // to the front
        onmousemove: (e) => moveTip(e),
        onmouseleave: () => { tip.hidden = true; },
        onclick: () => { location.hash = expHref(run.ref); },
      });
      lines.append(line);
    });
    axes.forEach((a, k) => {
      const x = ax(k);
      const g = svg("g", { class: "pc-axis", dataset: { key: keys[k], kind: a.kind } },
        svg("line", { x1: x, x2: x, y1: M.t, y2: M.t + H, class: "axis" }),
        svg("text", { x, y: M.t - 14, class: "axis-title", "text-anchor": "middle" }, keys[k].length > 32 ? keys[k].slice(0, 31) + "…" : keys[k]));
      for (const [text, t] of a.ticks) {
        g.append(svg("line", { x1: x - 3, x2: x + 3, y1: ay(t), y2: ay(t), class: "axis" }),
          svg("text", { x: x + 6, y: ay(t) + 4, class: "tick" }, text));
      }
      if (a.missing) g.append(svg("text", { x: x + 6, y: none + 4, class: "tick muted-tick" }, "none"));
      root.append(g);
    });
    plot.append(root);
    const colour = metric.kind === "number" ? ` · colour: ${state.metric}, blue low to red high` : "";
    note.textContent = `${shown.length} of ${runs.length} runs` + colour + " · click a line to open its run";
  }

  function showTip(run, i, e) {
    const values = got.get(run.ref);
    add(clear(tip), h("strong", {}, run.prefix), keys.map((key, k) => h("div", {}, `${key} = ${label(values[k])}`)));
    tip.hidden = false;
    moveTip(e);
  }

  function moveTip(e) {
    const box = plot.getBoundingClientRect();
    tip.style.left = `${Math.round(e.clientX - box.left + 12)}px`; // CSSOM: allowed by the CSP
    tip.style.top = `${Math.round(e.clientY - box.top + 12)}px`;
  }

  redraw();
  return { reload: redraw, redraw: draw };
}

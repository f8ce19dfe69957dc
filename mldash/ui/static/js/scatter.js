// The scatter: one point per compared run, x a parameter or a metric (last/min/max),
// y a metric; hover names the run, a click opens it. SVG: a few hundred points need no
// canvas, and each point is an element to hover and click.

import * as api from "./api.js";
import { h, add, clear, select, svg } from "./dom.js";
import { expHref } from "./format.js";
import { axis, label } from "./axes.js";

const HEIGHT = 380;
const M = { l: 72, r: 20, t: 14, b: 46 };

/**
 * scatterPanel(container, {runs, xKeys, yKeys, colorOf, state, onChange})
 * ``runs``: [{ref, prefix}]; ``state``: {x, y, logX, logY}, kept by the caller across views;
 * ``onChange()`` after the user changes it (the caller keeps it in the URL).
 */
export function scatterPanel(container, { runs, xKeys, yKeys, colorOf, state, onChange = () => {} }) {
  if (!xKeys.includes(state.x)) state.x = xKeys[0];
  if (!yKeys.includes(state.y)) state.y = yKeys[0];
  const plot = h("div", { class: "plot", id: "scatter-plot" });
  const tip = h("div", { class: "plot-tip", hidden: true });
  const note = h("div", { class: "muted small", id: "scatter-note" });
  const redraw = () => load().catch((error) => { note.textContent = "could not load: " + error.message; });
  const check = (id, key, text) => h("label", {}, h("input", { type: "checkbox", id, checked: state[key], onchange: (e) => { state[key] = e.target.checked; draw(); onChange(); } }), " " + text);
  add(clear(container),
    h("div", { class: "toolbar" },
      h("label", {}, "x ", select(xKeys.map((k) => [k, k]), state.x, (v) => { state.x = v; redraw(); onChange(); }, { id: "scatter-x", "aria-label": "scatter x" })),
      h("label", {}, "y ", select(yKeys.map((k) => [k, k]), state.y, (v) => { state.y = v; redraw(); onChange(); }, { id: "scatter-y", "aria-label": "scatter y" })),
      check("scatter-logx", "logX", "log x"), check("scatter-logy", "logY", "log y")),
    h("div", { class: "plot-wrap" }, plot, tip),
    note);

  let got = new Map();

  async function load() {
    if (!state.x || !state.y) { note.textContent = "No parameter or metric to plot."; return; }
    got = await api.values([state.x, state.y], runs.map((r) => r.ref));
    draw();
  }

  function draw() {
    clear(plot);
    const width = Math.max(320, Math.floor(plot.clientWidth || container.clientWidth || 600));
    const shown = runs.filter((r) => got.has(r.ref));
    const xs = shown.map((r) => got.get(r.ref)[0]);
    const ys = shown.map((r) => got.get(r.ref)[1]);
    const ax = axis(xs, { log: state.logX }), ay = axis(ys, { log: state.logY });
    const W = width - M.l - M.r, H = HEIGHT - M.t - M.b;
    // Points keep off the frame (categories more, so their labels have room).
    const px = (t) => M.l + (ax.kind === "category" ? 0.08 + 0.84 * t : 0.03 + 0.94 * t) * W;
    const py = (t) => M.t + (1 - (ay.kind === "category" ? 0.08 + 0.84 * t : 0.04 + 0.92 * t)) * H;
    const root = svg("svg", { width, height: HEIGHT, class: "scatter", role: "img", "aria-label": `${state.y} against ${state.x}` });
    root.append(svg("rect", { x: M.l, y: M.t, width: W, height: H, class: "plot-area" }));
    for (const [text, t] of ax.ticks) {
      root.append(svg("line", { x1: px(t), x2: px(t), y1: M.t, y2: M.t + H, class: "grid" }),
        svg("text", { x: px(t), y: M.t + H + 16, class: "tick", "text-anchor": "middle" }, text));
    }
    for (const [text, t] of ay.ticks) {
      root.append(svg("line", { x1: M.l, x2: M.l + W, y1: py(t), y2: py(t), class: "grid" }),
        svg("text", { x: M.l - 6, y: py(t) + 4, class: "tick", "text-anchor": "end" }, text));
    }
    root.append(svg("text", { x: M.l + W / 2, y: HEIGHT - 6, class: "axis-title", "text-anchor": "middle" }, state.x + (ax.log ? " (log)" : "")),
      svg("text", { x: 14, y: M.t + H / 2, class: "axis-title", "text-anchor": "middle", transform: `rotate(-90 14 ${M.t + H / 2})` }, state.y + (ay.log ? " (log)" : "")));
    let drawn = 0;
    shown.forEach((run, i) => {
      const tx = ax.pos(xs[i]), ty = ay.pos(ys[i]);
      if (tx === null || ty === null) return;
      drawn++;
      const point = svg("circle", {
        cx: px(tx), cy: py(ty), r: 5, fill: colorOf(run.ref), class: "pt", dataset: { ref: run.ref },
        onmouseenter: () => showTip(run, xs[i], ys[i], px(tx), py(ty)),
        onmouseleave: () => { tip.hidden = true; },
        onclick: () => { location.hash = expHref(run.ref); },
      });
      root.append(point);
    });
    plot.append(root);
    const left = shown.length - drawn;
    note.textContent = `${drawn} of ${runs.length} runs` + (left ? ` · ${left} without a value for x or y` : "") + (got.size < runs.length ? ` · ${runs.length - got.size} not found` : "") + " · click a point to open its run";
  }

  function showTip(run, x, y, left, top) {
    add(clear(tip), h("strong", {}, run.prefix), h("div", {}, `${state.x} = ${label(x)}`), h("div", {}, `${state.y} = ${label(y)}`));
    tip.hidden = false;
    tip.style.left = `${Math.round(left + 10)}px`; // CSSOM, not a style attribute: allowed by the CSP
    tip.style.top = `${Math.round(top + 10)}px`;
  }

  redraw();
  return { reload: redraw, redraw: draw };
}

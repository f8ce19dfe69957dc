// Compare: every metric of the selected runs at once (a grid, each chart made as it
// scrolls into view), overlaid per run or grouped by a parameter (the mean of each group
// with a min/max or ±std band), the System charts, a scatter and parallel coordinates
// across the runs, and the parameters that differ.
// #/compare?run=a&run=b[&group=by:<param>|over:<param>][&band=minmax|std|none]
//   [&sx=<key>&sy=<key>&slog=x|y|xy] (the scatter's axes) [&pc=<key>...&pm=<key>] (the
//   parallel coordinates' parameters and metric): a link shows the plots as they were.

import * as api from "./api.js";
import { h, add, clear, debounce, select } from "./dom.js";
import { num, statusText, statusClass, expHref } from "./format.js";
import { CompareChart, GroupChart, COLORS, defaultOptions } from "./chart.js";
import { isSystem, systemCharts } from "./system.js";
import { LazyGrid } from "./lazygrid.js";
import { differingParams, groupRuns } from "./groups.js";
import { keyText } from "./filterbox.js";
import { scatterPanel } from "./scatter.js";
import { parcoordsPanel } from "./parcoords.js";
import { CompareImagePanel, isMediaOnly, mediaFields } from "./media.js";

const options = defaultOptions();
// Chosen axes of the plots, kept for the tab (a new set of runs keeps what still applies).
const plotState = { scatter: { x: null, y: null, logX: false, logY: false }, parcoords: { params: null, metric: null } };
const AGGS = ["last", "min", "max"];

function plotsFromUrl(query) {
  const sc = plotState.scatter, pc = plotState.parcoords;
  if (query.has("sx")) sc.x = query.get("sx");
  if (query.has("sy")) sc.y = query.get("sy");
  if (query.has("slog")) { sc.logX = query.get("slog").includes("x"); sc.logY = query.get("slog").includes("y"); }
  if (query.has("pc")) pc.params = query.getAll("pc");
  if (query.has("pm")) pc.metric = query.get("pm");
}

function plotsToUrl(q) {
  const sc = plotState.scatter, pc = plotState.parcoords;
  if (sc.x) q.set("sx", sc.x);
  if (sc.y) q.set("sy", sc.y);
  if (sc.logX || sc.logY) q.set("slog", (sc.logX ? "x" : "") + (sc.logY ? "y" : ""));
  for (const key of pc.params || []) q.append("pc", key);
  if (pc.metric) q.set("pm", pc.metric);
}

export function compareView(main, ctx, query) {
  const prefixes = [...new Set(query.getAll("run"))];
  plotsFromUrl(query);
  const view = { group: query.get("group") || "", band: ["minmax", "std", "none"].includes(query.get("band")) ? query.get("band") : "minmax" };
  let stopped = false;
  let grid = null;
  let sysCharts = [];
  let timer = null;

  const controls = h("div", { class: "toolbar" });
  const runsBox = h("div", { id: "compare-runs" });
  const chartGrid = h("div", { class: "chart-grid", id: "compare-charts" });
  const chartFilter = h("input", { type: "search", placeholder: "Filter charts…", "aria-label": "filter charts", id: "compare-filter" });
  const systemGrid = h("div", { class: "chart-grid", id: "compare-system-charts" });
  const systemPanel = h("section", { class: "panel", id: "compare-system", hidden: true }, h("h2", {}, "System"), systemGrid);
  const scatterBox = h("div", { id: "scatter" });
  const parcoordsBox = h("div", { id: "parcoords" });
  const diffBox = h("div", { id: "param-diff" });
  const imagesGrid = h("div", { class: "media-grid", id: "compare-images" });
  const imagesPanel = h("section", { class: "panel", id: "compare-media", hidden: true }, h("h2", {}, "Images"), imagesGrid);
  // The plots across runs come before the metrics: with 50 metrics they would be far down.
  add(clear(main),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Compare runs"), controls), runsBox),
    h("div", { class: "two-col" },
      h("section", { class: "panel" }, h("h2", {}, "Scatter"), scatterBox),
      h("section", { class: "panel" }, h("h2", {}, "Parallel coordinates"), parcoordsBox)),
    h("section", { class: "panel", id: "compare-metrics" },
      h("div", { class: "panel-head" }, h("h2", {}, "Metrics"), h("div", { class: "toolbar" }, h("span", { class: "muted small", id: "compare-count" }), chartFilter)),
      chartGrid),
    imagesPanel,
    systemPanel,
    h("section", { class: "panel" }, h("h2", {}, "Parameters that differ"), diffBox),
  );
  ctx.crumbs([["Experiments", "#/"], ["Compare", location.hash]]);

  if (prefixes.length < 1) {
    add(clear(main), h("p", { class: "muted" }, "Select runs in the experiments table, then press Compare."));
    return () => {};
  }

  (async () => {
    let runs;
    try {
      runs = await Promise.all(prefixes.map((p) => api.get("experiment", { prefix: p }).catch((e) => {
        if (e instanceof api.AuthError) throw e;
        return null;
      })));
    } catch (error) {
      ctx.failed(error);
      return;
    }
    if (stopped) return;
    const found = runs.map((r, i) => [prefixes[i], r]).filter(([, r]) => r);
    const allNames = [...new Set(found.flatMap(([, r]) => r.metric_names || []))].sort();
    const counts = new Map(allNames.map((n) => [n, found.filter(([, r]) => (r.metric_names || []).includes(n)).length]));
    // Shared by every run first, then by fewer; by name within.
    const names = allNames.filter((n) => !isSystem(n) && !found.every(([, r]) => !(r.metric_names || []).includes(n) || isMediaOnly(r, n))).sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b));
    const members = found.map(([ref, r]) => ({ ref, prefix: r.prefix || ref, params: r.params || {} }));
    const differ = differingParams(members);
    const runColor = new Map(prefixes.map((p, i) => [p, COLORS[i % COLORS.length]]));

    // group: "by:<param>" (a group per value) or "over:<param>" (a group per setting of
    // the other parameters that differ: the seeds of one configuration averaged)
    const groupMode = () => {
      const [mode, ...rest] = view.group.split(":");
      const param = rest.join(":");
      return (mode === "by" || mode === "over") && differ.includes(param) ? [mode, param] : null;
    };
    const groups = () => {
      const g = groupMode();
      return g ? groupRuns(members, g[0], g[1]) : null;
    };
    const colorOf = (ref) => {
      const list = groups();
      if (!list) return runColor.get(ref);
      const g = list.findIndex((group) => group.refs.includes(ref));
      return COLORS[Math.max(0, g) % COLORS.length];
    };

    const renderLegend = () => {
      const list = groups();
      if (!list) {
        add(clear(runsBox), h("ul", { class: "legend-list" }, prefixes.map((p, i) => {
          const run = runs[i];
          return h("li", {}, h("span", { class: "swatch", dataset: { color: String(i % COLORS.length) } }),
            h("a", { href: expHref(p) }, p), " ",
            run ? h("span", { class: statusClass(run) }, statusText(run)) : h("span", { class: "error-text" }, "not found"));
        })));
        return;
      }
      add(clear(runsBox), h("ul", { class: "legend-list groups", id: "compare-groups" }, list.map((group, g) =>
        h("li", { dataset: { group: group.label } }, h("span", { class: "swatch", dataset: { color: String(g % COLORS.length) } }),
          h("strong", {}, group.label), h("span", { class: "muted" }, ` (${group.refs.length} run${group.refs.length > 1 ? "s" : ""}): `),
          group.refs.map((ref, k) => [k ? ", " : "", h("a", { href: expHref(ref) }, ref)])))));
    };

    const makeChart = (card, name) => {
      const list = groups();
      const chart = list
        ? new GroupChart(card, list, name, options, view.band, 260)
        : new CompareChart(card, prefixes, name, options, null, 260);
      chart.lacking = new Set(found.filter(([, r]) => !(r.metric_names || []).includes(name)).map(([ref]) => ref));
      chart.load().catch((e) => ctx.failed(e));
      return chart;
    };

    const keepInUrl = () => {
      const q = new URLSearchParams();
      for (const p of prefixes) q.append("run", p);
      if (groupMode()) { q.set("group", view.group); q.set("band", view.band); }
      plotsToUrl(q);
      history.replaceState(null, "", "#/compare?" + q.toString());
    };

    const regroup = () => {
      keepInUrl();
      renderLegend();
      bandSelect.disabled = !groupMode();
      grid.remake();
      scatter && scatter.redraw();
    };
    const groupSelect = select(
      [["", "no grouping"], ...differ.map((k) => [`by:${k}`, `group by ${k}`]), ...differ.map((k) => [`over:${k}`, `mean over ${k} (same other params)`])],
      groupMode() ? view.group : "", (v) => { view.group = v; regroup(); }, { id: "compare-group", "aria-label": "group runs" });
    const bandSelect = select([["minmax", "band: min–max"], ["std", "band: ±1 std"], ["none", "no band"]], view.band,
      (v) => { view.band = v; regroup(); }, { id: "compare-band", "aria-label": "band", disabled: !groupMode() });
    const smoothInput = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(options.smooth), "aria-label": "smoothing" });
    const reloadAll = () => { for (const c of grid.charts.values()) c.load(); sysCharts.forEach((c) => c.load()); };
    smoothInput.addEventListener("input", debounce(() => { options.smooth = Number(smoothInput.value); reloadAll(); }, 60));
    add(clear(controls),
      groupSelect, bandSelect,
      select([["step", "x: step"], ["epoch", "x: epoch"], ["index", "x: index"], ["time", "x: time"]], options.x, (v) => { options.x = v; grid.remake(); drawSystem(); }, { "aria-label": "x axis", id: "compare-x" }),
      h("label", {}, "smoothing ", smoothInput),
      h("label", {}, h("input", { type: "checkbox", checked: options.log, onchange: (e) => { options.log = e.target.checked; reloadAll(); } }), " log scale"),
    );

    renderLegend();
    grid = new LazyGrid(chartGrid, makeChart);
    grid.set(names.map((n) => [n, n, counts.get(n) < found.length ? `${counts.get(n)} of ${found.length} runs` : ""]));
    if (!names.length) chartGrid.append(h("p", { class: "muted" }, "These runs have no metrics."));
    document.getElementById("compare-count").textContent = names.length ? `${names.length} metrics` : "";
    chartFilter.addEventListener("input", () => {
      const q = chartFilter.value.toLowerCase();
      for (const card of chartGrid.querySelectorAll(".chart-card")) card.hidden = !card.dataset.metric.toLowerCase().includes(q);
    });

    // One chart per System field, across the runs (each field on its own: one y per run).
    const drawSystem = () => {
      for (const c of sysCharts) c.destroy();
      sysCharts = [];
      clear(systemGrid);
      for (const spec of systemCharts(allNames.filter(isSystem))) {
        for (const field of spec.fields) {
          const card = h("div", { class: "chart-card", dataset: { metric: spec.name, field } }, h("h3", {}, spec.fields.length > 1 ? `${spec.title}: ${field}` : spec.title));
          systemGrid.append(card);
          const c = new CompareChart(card, prefixes, spec.name, options, field, 220);
          sysCharts.push(c);
          c.load().catch((e) => ctx.failed(e));
        }
      }
      systemPanel.hidden = sysCharts.length === 0;
    };
    drawSystem();

    // One panel per image field the runs share: each run's image at one step.
    const imageFields = new Map(); // "series\0field" -> [series, field, runs having it]
    found.forEach(([ref, r]) => {
      for (const [name, field, type] of mediaFields(r)) {
        if (type !== "image") continue;
        const key = name + "\u0000" + field;
        if (!imageFields.has(key)) imageFields.set(key, [name, field, []]);
        imageFields.get(key)[2].push(ref);
      }
    });
    const shared = [...imageFields.values()].filter(([, , refs]) => refs.length >= Math.min(2, found.length));
    imagesPanel.hidden = !shared.length;
    const imagePanels = shared.map(([name, field, refs]) => {
      const card = h("div", { class: "chart-card media-card", dataset: { metric: name, field } }, h("h3", {}, field === "image" ? name : `${name} · ${field}`));
      imagesGrid.append(card);
      const panel = new CompareImagePanel(card, refs.map((ref) => ({ ref, label: ref, color: prefixes.indexOf(ref) % COLORS.length })), name, field);
      panel.load().catch((e) => ctx.failed(e));
      return panel;
    });

    // The scatter and the parallel coordinates read api/values: a filter's keys.
    const paramNames = [...new Set(members.flatMap((m) => Object.keys(m.params)))].sort();
    const paramKeys = paramNames.map((k) => keyText("params", k));
    const summaryKeys = [...new Set(found.flatMap(([, r]) => Object.keys(r.summary || {})))].sort().map((k) => keyText("summary", k));
    const metricKeys = names.flatMap((n) => AGGS.map((agg) => keyText("metrics", n, agg)));
    const differKeys = differ.map((k) => keyText("params", k));
    const sc = plotState.scatter;
    if (!sc.x || ![...paramKeys, ...metricKeys, ...summaryKeys].includes(sc.x)) sc.x = differKeys[0] || paramKeys[0] || metricKeys[0] || null;
    let scatter = null;
    if (found.length && (metricKeys.length || summaryKeys.length)) {
      scatter = scatterPanel(scatterBox, { runs: members, xKeys: [...paramKeys, ...metricKeys, ...summaryKeys], yKeys: [...metricKeys, ...summaryKeys], colorOf, state: sc, onChange: keepInUrl });
      parcoordsPanel(parcoordsBox, { runs: members, paramKeys, defaultParams: differKeys.length ? differKeys : paramKeys, metricKeys: [...metricKeys, ...summaryKeys], state: plotState.parcoords, onChange: keepInUrl });
      keepInUrl();
    } else {
      scatterBox.append(h("p", { class: "muted" }, "These runs have no metrics to plot."));
      parcoordsBox.append(h("p", { class: "muted" }, "These runs have no metrics to plot."));
    }

    // Parameters whose values are not the same in every run (missing counts as different).
    add(clear(diffBox), differ.length
      ? h("table", { class: "runs", id: "diff-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "parameter"), found.map(([p]) => h("th", {}, p)))),
        h("tbody", {}, differ.map((k) => h("tr", {}, h("th", {}, k), found.map(([, r]) => h("td", {}, k in (r.params || {}) ? num(r.params[k]) : "–"))))))
      : h("p", { class: "muted" }, found.length > 1 ? "All parameters are the same." : "Only one run found."));
    main.dataset.loaded = "1";

    const poll = () => {
      if (stopped) return;
      if (found.some(([, r]) => r.status === "RUNNING" && !r.stale)) {
        for (const c of grid.charts.values()) c.load().catch(() => {});
        sysCharts.forEach((c) => c.load().catch(() => {}));
      }
      timer = setTimeout(poll, 3000);
    };
    timer = setTimeout(poll, 3000);
  })();

  return () => { stopped = true; clearTimeout(timer); if (grid) grid.destroy(); sysCharts.forEach((c) => c.destroy()); };
}

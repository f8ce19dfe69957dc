// Compare: one metric overlaid across the selected runs, the System charts (sys/*)
// across them, and the parameters that differ.

import * as api from "./api.js";
import { h, add, clear, debounce, select } from "./dom.js";
import { num, headline, statusText, statusClass, expHref } from "./format.js";
import { CompareChart, COLORS, defaultOptions } from "./chart.js";
import { isSystem, systemCharts } from "./system.js";

const options = defaultOptions();

export function compareView(main, ctx, query) {
  const prefixes = query.getAll("run");
  let stopped = false;
  let chart = null;
  let sysCharts = [];
  let timer = null;

  const controls = h("div", { class: "toolbar" });
  const chartBox = h("div", { class: "chart-card wide", id: "compare-chart" });
  const diffBox = h("div", { id: "param-diff" });
  const runsBox = h("div", { id: "compare-runs" });
  const systemGrid = h("div", { class: "chart-grid", id: "compare-system-charts" });
  const systemPanel = h("section", { class: "panel", id: "compare-system", hidden: true }, h("h2", {}, "System"), systemGrid);
  add(clear(main), 
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Compare runs"), controls), runsBox, chartBox),
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
      runs = await Promise.all(prefixes.map((p) => api.get("experiment", { prefix: p }).catch(() => null)));
    } catch (error) {
      ctx.failed(error);
      return;
    }
    if (stopped) return;
    const found = runs.map((r, i) => [prefixes[i], r]).filter(([, r]) => r);
    const allNames = [...new Set(found.flatMap(([, r]) => r.metric_names || []))].sort();
    const names = allNames.filter((n) => !isSystem(n));
    const counts = (n) => found.filter(([, r]) => (r.metric_names || []).includes(n)).length;
    let metric = query.get("metric") || [...names].sort((a, b) => counts(b) - counts(a))[0];

    add(clear(runsBox), h("ul", { class: "legend-list" }, prefixes.map((p, i) => {
      const run = runs[i];
      return h("li", {}, h("span", { class: "swatch", dataset: { color: String(i % COLORS.length) } }),
        h("a", { href: expHref(p) }, p), " ",
        run ? h("span", { class: statusClass(run) }, statusText(run)) : h("span", { class: "error-text" }, "not found"),
        run && metric && run.metrics && run.metrics[metric] ? h("span", { class: "muted" }, ` ${metric} = ${num(headline(run.metrics[metric]))}`) : null);
    })));

    const draw = () => {
      if (chart) chart.destroy();
      clear(chartBox);
      if (!metric) { chartBox.append(h("p", { class: "muted" }, "These runs have no metrics.")); return; }
      chartBox.append(h("h3", {}, metric));
      chart = new CompareChart(chartBox, prefixes, metric, options);
      chart.load().catch((e) => ctx.failed(e));
    };
    const smoothInput = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(options.smooth), "aria-label": "smoothing" });
    smoothInput.addEventListener("input", debounce(() => { options.smooth = Number(smoothInput.value); chart && chart.load(); sysCharts.forEach((c) => c.load()); }, 60));
    add(clear(controls), 
      select(names.map((n) => [n, `${n} (${counts(n)}/${found.length})`]), metric, (v) => { metric = v; draw(); }, { id: "compare-metric", "aria-label": "metric" }),
      select([["step", "x: step"], ["epoch", "x: epoch"], ["index", "x: index"], ["time", "x: time"]], options.x, (v) => { options.x = v; draw(); drawSystem(); }, { "aria-label": "x axis", id: "compare-x" }),
      h("label", {}, "smoothing ", smoothInput),
      h("label", {}, h("input", { type: "checkbox", checked: options.log, onchange: (e) => { options.log = e.target.checked; chart && chart.load(); sysCharts.forEach((c) => c.load()); } }), " log scale"),
    );
    draw();

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

    // Parameters whose values are not the same in every run (missing counts as different).
    const keys = [...new Set(found.flatMap(([, r]) => Object.keys(r.params || {})))].sort();
    const differ = keys.filter((k) => new Set(found.map(([, r]) => JSON.stringify((r.params || {})[k] ?? null))).size > 1);
    add(clear(diffBox), differ.length
      ? h("table", { class: "runs", id: "diff-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "parameter"), found.map(([p]) => h("th", {}, p)))),
        h("tbody", {}, differ.map((k) => h("tr", {}, h("th", {}, k), found.map(([, r]) => h("td", {}, k in (r.params || {}) ? num(r.params[k]) : "–"))))))
      : h("p", { class: "muted" }, found.length > 1 ? "All parameters are the same." : "Only one run found."));
    main.dataset.loaded = "1";

    const poll = () => {
      if (stopped) return;
      if (found.some(([, r]) => r.status === "RUNNING" && !r.stale)) { chart && chart.load().catch(() => {}); sysCharts.forEach((c) => c.load().catch(() => {})); }
      timer = setTimeout(poll, 3000);
    };
    timer = setTimeout(poll, 3000);
  })();

  return () => { stopped = true; clearTimeout(timer); if (chart) chart.destroy(); sysCharts.forEach((c) => c.destroy()); };
}

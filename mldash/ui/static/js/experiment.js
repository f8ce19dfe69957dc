// One experiment: errors on top, a chart per metric series, the System section
// (sys/* series), parameters, summary, logs, the console tail and checkpoints;
// it polls while the run is going.

import * as api from "./api.js";
import { h, add, clear, debounce, select } from "./dom.js";
import { num, when, duration, statusText, statusClass, expHref } from "./format.js";
import { SeriesChart, defaultOptions } from "./chart.js";
import { isSystem, systemCharts } from "./system.js";
import { consoleRow, plainText } from "./console.js";
import { filesSection } from "./files.js";
import { mediaSection, isMediaOnly } from "./media.js";

const LEVELS = ["debug", "info", "warn", "error", "fatal"];
const CONSOLE_LINES = 500;
const chartOptions = defaultOptions(); // shared by every experiment page in this tab

function keyValueTable(entries, id) {
  return h("table", { class: "kv", id }, h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, num(v))))));
}

export function experimentView(main, ctx, prefix) {
  let row = null;
  let stopped = false;
  let timer = null;
  const charts = new Map(); // name -> SeriesChart
  const seenIndex = new Map(); // name -> last point index drawn
  const sysCharts = new Map(); // chart id -> [series name, SeriesChart]

  const header = h("section", { class: "exp-header", id: "exp-header" });
  const media = mediaSection(prefix, ctx); // image panels and histogram heatmaps
  const files = filesSection(prefix, ctx);
  const errors = h("section", { class: "errors", id: "errors" });
  const chartGrid = h("div", { class: "chart-grid", id: "charts" });
  const chartFilter = h("input", { type: "search", placeholder: "Filter charts…", "aria-label": "filter charts" });
  const systemGrid = h("div", { class: "chart-grid", id: "system-charts" });
  const systemPanel = h("section", { class: "panel", id: "system", hidden: true }, h("h2", {}, "System"), systemGrid);
  const consoleList = h("div", { class: "console", id: "console" });
  const consoleSearch = h("input", { type: "search", placeholder: "Search console…", "aria-label": "search console", id: "console-search" });
  const consoleStream = select([["", "stdout + stderr"], ["stdout", "stdout"], ["stderr", "stderr"]], "", () => renderConsole(), { id: "console-stream", "aria-label": "console stream" });
  const consoleNote = h("div", { class: "muted small", id: "console-note" });
  let consoleRecords = []; // the last CONSOLE_LINES records, superseded snapshots dropped
  let consoleNext = null; // the index to read from next (null: read the tail)
  let consoleTotal = 0;
  const paramsBox = h("div", { id: "params" });
  const paramSearch = h("input", { type: "search", placeholder: "Search parameters…", "aria-label": "search parameters", id: "param-search" });
  const summaryBox = h("div", { id: "summary" });
  const checkpointsBox = h("div", { id: "checkpoints" });
  const logList = h("div", { class: "logs", id: "logs" });
  const logSearch = h("input", { type: "search", placeholder: "Search logs…", "aria-label": "search logs", id: "log-search" });
  const logLevel = select([["", "all levels"], ...LEVELS.map((l) => [l, l + " and above"])], "", () => reloadLogs(), { id: "log-level", "aria-label": "log level" });
  const logNote = h("div", { class: "muted small" });
  let lastLogIndex = -1;
  let oldestShown = null;

  const xSelect = select([["step", "x: step"], ["epoch", "x: epoch"], ["index", "x: index"], ["time", "x: time"]], chartOptions.x, (v) => { chartOptions.x = v; redrawAll(true); }, { id: "x-axis", "aria-label": "x axis" });
  const smoothInput = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(chartOptions.smooth), id: "smoothing", "aria-label": "smoothing" });
  const smoothLabel = h("span", { class: "muted small" }, String(chartOptions.smooth));
  smoothInput.addEventListener("input", debounce(() => { chartOptions.smooth = Number(smoothInput.value); smoothLabel.textContent = smoothInput.value; redrawAll(false); }, 60));
  const logScale = h("input", { type: "checkbox", id: "log-scale", checked: chartOptions.log, onchange: (e) => { chartOptions.log = e.target.checked; redrawAll(false); } });
  chartFilter.addEventListener("input", () => {
    const q = chartFilter.value.toLowerCase();
    for (const card of chartGrid.children) card.hidden = !card.dataset.metric.toLowerCase().includes(q);
  });
  paramSearch.addEventListener("input", () => renderParams());
  logSearch.addEventListener("input", debounce(() => reloadLogs(), 250));
  consoleSearch.addEventListener("input", debounce(() => renderConsole(), 150));

  add(clear(main), 
    header,
    errors,
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", {}, "Metrics"),
        h("div", { class: "toolbar" }, xSelect, h("label", {}, "smoothing ", smoothInput, " ", smoothLabel), h("label", {}, logScale, " log scale"), chartFilter)),
      h("p", { class: "muted small" }, "Drag across a chart to zoom (the server sends exact points once few enough are in view); double-click to reset."),
      chartGrid),
    media.el,
    systemPanel,
    h("div", { class: "two-col" },
      h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Parameters"), paramSearch), paramsBox),
      h("section", { class: "panel" }, h("h2", {}, "Summary"), summaryBox, h("h2", {}, "Checkpoints"), checkpointsBox)),
    files.el,
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", {}, "Logs"), h("div", { class: "toolbar" }, logLevel, logSearch)),
      logNote, logList),
    h("section", { class: "panel", id: "console-panel" },
      h("div", { class: "panel-head" }, h("h2", {}, "Console"), h("div", { class: "toolbar" }, consoleStream, consoleSearch)),
      consoleNote, consoleList),
  );
  ctx.crumbs([["Experiments", "#/"], [prefix, expHref(prefix)]]);

  function renderHeader() {
    const facts = [
      ["started", when(row.started_at)],
      ["finished", when(row.finished_at)],
      ["duration", duration(row)],
      ["host", row.host ? `${row.host} (pid ${row.pid ?? "?"})` : null],
      ["command", (row.argv || []).join(" ") || null],
      ["git", row.git ? `${String(row.git.commit || "").slice(0, 12)}${row.git.dirty ? " (dirty)" : ""}` : null],
      ["best checkpoint", row.best_checkpoint ? `${row.best_checkpoint.path} (score ${num(row.best_checkpoint.score)})` : null],
    ].filter(([, v]) => v);
    add(clear(header), 
      h("div", { class: "title-row" },
        h("h1", { id: "exp-title" }, row.name || prefix),
        h("span", { class: statusClass(row), id: "exp-status" }, statusText(row))),
      h("div", { class: "muted" }, row.prefix),
      row.description ? h("p", { class: "description" }, row.description) : null,
      (row.tags || []).length ? h("div", {}, row.tags.map((t) => h("span", { class: "tag" }, t))) : null,
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    );
  }

  function renderErrors() {
    clear(errors);
    const list = row.errors || [];
    if (!list.length) { errors.hidden = true; return; }
    errors.hidden = false;
    errors.append(h("h2", {}, list.length === 1 ? "Error" : `Errors (${list.length}, newest first)`));
    for (const record of [...list].reverse()) {
      const meta = record.metadata || {};
      errors.append(h("article", { class: "error-box" },
        h("div", { class: "error-title" }, h("strong", {}, meta.error_type || record.level.toUpperCase()), " ", h("span", { class: "muted" }, when(record.timestamp))),
        h("div", { class: "error-message" }, record.message),
        meta.traceback ? h("pre", { class: "traceback" }, meta.traceback) : null));
    }
  }

  function renderParams() {
    const q = paramSearch.value.trim().toLowerCase();
    const entries = Object.entries(row.params || {}).sort((a, b) => a[0].localeCompare(b[0]))
      .filter(([k, v]) => !q || k.toLowerCase().includes(q) || num(v).toLowerCase().includes(q));
    add(clear(paramsBox), Object.keys(row.params || {}).length ? keyValueTable(entries, "params-table") : h("p", { class: "muted" }, "No parameters recorded."));
  }

  function renderSummary() {
    const entries = Object.entries(row.summary || {}).sort((a, b) => a[0].localeCompare(b[0]));
    add(clear(summaryBox), entries.length ? keyValueTable(entries, "summary-table") : h("p", { class: "muted" }, "No summary values."));
    const cps = row.checkpoints || [];
    if (!cps.length) { add(clear(checkpointsBox), h("p", { class: "muted" }, "No checkpoints recorded.")); return; }
    const keys = [...new Set(cps.flatMap((c) => Object.keys(c)))].filter((k) => !["path", "timestamp", "is_best"].includes(k));
    const best = row.best_checkpoint;
    add(clear(checkpointsBox), h("table", { class: "runs small" },
      h("thead", {}, h("tr", {}, h("th", {}, "path"), keys.map((k) => h("th", {}, k)), h("th", {}, "saved"))),
      h("tbody", {}, cps.map((c) => h("tr", { class: (c.is_best || (best && best.path === c.path && best.timestamp === c.timestamp)) ? "best" : "" },
        h("td", {}, c.is_best ? "★ " : "", c.path), keys.map((k) => h("td", { class: "num" }, num(c[k]))), h("td", { class: "nowrap" }, when(c.timestamp)))))));
  }

  function metricNames() {
    return (row.metric_names || []).filter((n) => !isSystem(n) && !isMediaOnly(row, n));
  }

  function ensureSystemCharts() {
    for (const spec of systemCharts((row.metric_names || []).filter(isSystem))) {
      if (sysCharts.has(spec.id)) continue;
      const card = h("div", { class: "chart-card", dataset: { metric: spec.name, fields: spec.fields.join(",") } }, h("h3", {}, spec.title));
      systemGrid.append(card);
      const chart = new SeriesChart(card, prefix, spec.name, chartOptions, spec.fields);
      chart.seenIndex = (row.metrics || {})[spec.name]?.index ?? -1;
      sysCharts.set(spec.id, [spec.name, chart]);
      chart.load().catch((e) => ctx.failed(e));
    }
    systemPanel.hidden = sysCharts.size === 0;
  }

  function renderConsole() {
    const q = consoleSearch.value.trim().toLowerCase();
    const stream = consoleStream.value;
    const atBottom = consoleList.scrollTop + consoleList.clientHeight >= consoleList.scrollHeight - 4;
    const shown = consoleRecords.filter((r) => (!stream || r.stream === stream) && (!q || plainText(r.text).toLowerCase().includes(q)));
    clear(consoleList).append(...shown.map(consoleRow));
    if (!shown.length) consoleList.append(h("p", { class: "muted empty" }, consoleTotal ? "No console line matches." : "No console output recorded."));
    if (atBottom) consoleList.scrollTop = consoleList.scrollHeight;
    const filtered = stream || q;
    consoleNote.textContent = `${consoleTotal.toLocaleString()} lines` + (consoleTotal > consoleRecords.length ? ` · the last ${consoleRecords.length.toLocaleString()}` : "") + (filtered ? ` · ${shown.length} match` : "");
  }

  async function pollConsole() {
    const got = await api.get("console", { prefix, start_index: consoleNext, limit: consoleNext === null ? CONSOLE_LINES : 1000 });
    const records = got.data || [];
    consoleTotal = got.total || 0;
    if (consoleNext !== null && !records.length) return;
    for (const record of records) {
      // a snapshot of a line still open is superseded by the next record of its stream
      const last = consoleRecords.findLastIndex((r) => r.stream === record.stream);
      if (last >= 0 && consoleRecords[last].partial) consoleRecords.splice(last, 1);
      consoleRecords.push(record);
    }
    if (consoleRecords.length > CONSOLE_LINES) consoleRecords = consoleRecords.slice(-CONSOLE_LINES);
    consoleNext = records.length ? records[records.length - 1].index + 1 : Math.max(consoleNext ?? 0, consoleTotal);
    renderConsole();
  }

  function ensureCharts() {
    ensureSystemCharts();
    for (const name of metricNames()) {
      if (charts.has(name)) continue;
      const card = h("div", { class: "chart-card", dataset: { metric: name } }, h("h3", {}, name));
      chartGrid.append(card);
      const chart = new SeriesChart(card, prefix, name, chartOptions);
      charts.set(name, chart);
      seenIndex.set(name, (row.metrics || {})[name]?.index ?? -1);
      chart.load().catch((e) => ctx.failed(e));
    }
    if (!metricNames().length && !chartGrid.children.length) chartGrid.append(h("p", { class: "muted", id: "no-metrics" }, "No metrics recorded."));
    if (metricNames().length) chartGrid.querySelector("#no-metrics")?.remove();
  }

  function redrawAll(refetch) {
    for (const chart of [...charts.values(), ...[...sysCharts.values()].map(([, c]) => c)]) {
      if (refetch) chart.range = null;
      chart.load().catch((e) => ctx.failed(e));
    }
  }

  function logRow(record) {
    const meta = record.metadata;
    return h("div", { class: "log level-" + record.level, dataset: { index: record.index } },
      h("span", { class: "log-time" }, when(record.timestamp)),
      h("span", { class: "log-level" }, record.level),
      h("span", { class: "log-message" }, record.message),
      meta && Object.keys(meta).length ? h("details", { class: "log-meta" }, h("summary", {}, "metadata"), h("pre", {}, JSON.stringify(meta, null, 2))) : null);
  }

  async function reloadLogs() {
    const got = await api.get("logs", { prefix, level: logLevel.value, q: logSearch.value.trim(), limit: 200 });
    clear(logList);
    appendLogs(got.data, got.total);
    oldestShown = got.data.length ? got.data[0].index : null;
    lastLogIndex = Math.max(got.total - 1, lastLogIndex);
    if (got.data.length === 200 && oldestShown > 0) {
      logList.prepend(h("button", { type: "button", class: "older", onclick: loadOlder }, "Load older logs"));
    }
  }

  async function loadOlder(e) {
    e.target.remove();
    const got = await api.get("logs", { prefix, level: logLevel.value, q: logSearch.value.trim(), limit: 200, before: oldestShown });
    const rows = got.data.map(logRow);
    logList.prepend(...rows);
    if (got.data.length) oldestShown = got.data[0].index;
    if (got.data.length === 200 && oldestShown > 0) logList.prepend(h("button", { type: "button", class: "older", onclick: loadOlder }, "Load older logs"));
  }

  function appendLogs(records, total) {
    const atBottom = logList.scrollTop + logList.clientHeight >= logList.scrollHeight - 4;
    logList.append(...records.map(logRow));
    if (!logList.querySelector(".log")) logList.append(h("p", { class: "muted empty" }, total ? "No log record matches." : "No logs yet."));
    else logList.querySelector(".empty")?.remove();
    if (atBottom) logList.scrollTop = logList.scrollHeight;
    const filtered = logLevel.value || logSearch.value.trim();
    logNote.textContent = `${total.toLocaleString()} records` + (filtered ? ` · showing ${logList.querySelectorAll(".log").length} that match` : "");
  }

  async function pollLogs() {
    const got = await api.get("logs", { prefix, level: logLevel.value, q: logSearch.value.trim(), after: lastLogIndex, limit: 1000 });
    if (got.data.length) appendLogs(got.data, got.total);
    else if (got.total - 1 !== lastLogIndex) appendLogs([], got.total);
    lastLogIndex = Math.max(lastLogIndex, got.total - 1);
  }

  async function refresh(first) {
    if (stopped) return;
    let wasRunning = row && row.status === "RUNNING";
    try {
      row = await api.get("experiment", { prefix });
      ctx.live(row.status === "RUNNING" && !row.stale); // at once, not after the logs and console
      renderHeader();
      renderErrors();
      renderParams();
      renderSummary();
      ensureCharts();
      media.update(row);
      files.update(row).catch((e) => ctx.failed(e));
      if (first) await reloadLogs();
      else await pollLogs();
      if (first || row.status === "RUNNING" || wasRunning) await pollConsole();
      if (!first) {
        for (const [name, chart] of charts) {
          const index = (row.metrics || {})[name]?.index ?? -1;
          if (index !== seenIndex.get(name)) {
            seenIndex.set(name, index);
            chart.load().catch((e) => ctx.failed(e));
          }
        }
        for (const [name, chart] of sysCharts.values()) {
          const index = (row.metrics || {})[name]?.index ?? -1;
          if (index !== chart.seenIndex) {
            chart.seenIndex = index;
            chart.load().catch((e) => ctx.failed(e));
          }
        }
      }
      main.dataset.loaded = "1";
    } catch (error) {
      if (!ctx.failed(error)) return;
    }
    const running = row && row.status === "RUNNING" && !row.stale;
    ctx.live(running);
    if (!stopped && (running || wasRunning)) timer = setTimeout(() => refresh(false), 2000);
    else if (!stopped) timer = setTimeout(() => refresh(false), 15000); // a resumed run shows up too
  }
  refresh(true);

  const onResize = debounce(() => redrawAll(false), 250);
  window.addEventListener("resize", onResize);
  return () => {
    stopped = true;
    clearTimeout(timer);
    window.removeEventListener("resize", onResize);
    media.destroy();
    files.destroy();
    for (const chart of charts.values()) chart.destroy();
    for (const [, chart] of sysCharts.values()) chart.destroy();
  };
}

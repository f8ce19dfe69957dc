// The experiments view: a projects/folders tree, a filterable, sortable table,
// and a selection to compare. The search box's text goes to the server (api/experiments?q=:
// the filter language, or plain words as a name search) and lives in the URL
// (#/?filter=...), so a filtered list can be shared and the back button undoes a filter.

import * as api from "./api.js";
import { h, add, clear, debounce, select } from "./dom.js";
import { num, when, duration, durationSeconds, headline, statusText, statusClass, expHref } from "./format.js";
import { filterBox } from "./filterbox.js";

const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const PAGE = 100; // rows drawn at a time

// Kept across navigation within the tab, so "back" returns to the same filters.
const state = {
  text: "",
  status: "",
  paramFilter: "",
  folder: "", // "" = all, else a project or project/folder prefix
  sort: { key: "started", desc: true },
  selected: new Set(),
  params: null, // chosen param columns (null = automatic)
  metrics: null,
};

/** Parse "lr=0.1, model.arch!=resnet, epochs>=10" into predicates over params. */
export function parseParamFilter(text) {
  const out = [];
  for (const part of text.split(",")) {
    const m = part.trim().match(/^([^=!<>~]+?)\s*(!=|>=|<=|=|>|<|~)\s*(.*)$/);
    if (!m) continue;
    const [, key, op, raw] = m;
    const want = raw.trim();
    out.push((params) => {
      const have = params[key.trim()];
      if (op === "~") return have !== undefined && String(have).toLowerCase().includes(want.toLowerCase());
      if (op === "=" || op === "!=") {
        const equal = have !== undefined && (String(have) === want || (typeof have === "number" && Number(want) === have && want !== ""));
        return op === "=" ? equal : !equal;
      }
      const a = Number(have), b = Number(want);
      if (have === undefined || Number.isNaN(a) || Number.isNaN(b)) return false;
      return op === ">" ? a > b : op === "<" ? a < b : op === ">=" ? a >= b : a <= b;
    });
  }
  return out;
}

function folderOf(row) {
  return [row.project, ...(row.folder ? String(row.folder).split("/") : [])].filter(Boolean).join("/");
}

function buildTree(rows) {
  const root = { name: "", path: "", count: 0, children: new Map() };
  for (const row of rows) {
    let node = root;
    root.count += 1;
    const parts = folderOf(row).split("/").filter(Boolean);
    parts.forEach((part, i) => {
      if (!node.children.has(part)) node.children.set(part, { name: part, path: parts.slice(0, i + 1).join("/"), count: 0, children: new Map() });
      node = node.children.get(part);
      node.count += 1;
    });
  }
  return root;
}

function sameJson(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function variedParams(rows) {
  const seen = new Map();
  for (const row of rows) {
    for (const [key, value] of Object.entries(row.params || {})) {
      if (!seen.has(key)) seen.set(key, new Set());
      seen.get(key).add(JSON.stringify(value));
    }
  }
  const keys = [...seen.keys()].sort();
  const varied = keys.filter((k) => seen.get(k).size > 1 || rows.some((r) => !(k in (r.params || {}))));
  return (varied.length ? varied : keys).slice(0, 6);
}

function commonMetrics(rows) {
  const counts = new Map();
  for (const row of rows) for (const name of Object.keys(row.metrics || {})) counts.set(name, (counts.get(name) || 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 6).map((e) => e[0]);
}

// What a row links to: the server's rows carry "namespace:prefix" (two namespaces may hold
// one prefix, and a bare prefix opens only one of them); a local root's prefix is unique.
function refOf(row) {
  return row.ref || row.prefix;
}

function sortValue(row, key) {
  if (key === "name") return row.prefix;
  if (key === "status") return row.status;
  if (key === "started") return row.started_at ?? null;
  if (key === "duration") return durationSeconds(row);
  if (key.startsWith("p:")) return (row.params || {})[key.slice(2)] ?? null;
  if (key.startsWith("m:")) return headline((row.metrics || {})[key.slice(2)]) ?? null;
  return null;
}

function compare(a, b) {
  if (a === null && b === null) return 0;
  if (a === null) return 1; // missing values last, either direction
  if (b === null) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

/** The list's address for a search text: #/?filter=... (or #/ for none). */
function listHash(text) {
  return text.trim() ? "#/?" + new URLSearchParams({ filter: text }).toString() : "#/";
}

export function experimentsView(main, ctx, query = new URLSearchParams()) {
  let rows = [];
  let lastSignature = "";
  let timer = null;
  let stopped = false;
  let observer = null;
  let keep = 0;
  let applied = null; // the search text whose result the table shows (null: none yet)
  let mode = "all"; // how the server read it: "filter", "text" (name search) or "all"
  let asked = 0; // requests made; an answer to an older one is dropped
  let keysFor = null; // [text, promise of keys] for completion over the runs shown
  let pushNext = true; // the first result after a commit gets a history entry of its own

  // The URL is the filter's home: a shared link or the back button sets it. A bare "#/"
  // coming from the list itself (back past the first filter) clears it; from a run's page
  // (the "Experiments" link) the list comes back as it was left.
  if (query.has("filter")) state.text = query.get("filter");
  else if (ctx.previous === "/") state.text = "";
  if (location.hash !== listHash(state.text) && (location.hash || state.text)) history.replaceState(null, "", listHash(state.text));

  const box = filterBox({
    value: state.text,
    id: "filter-text",
    placeholder: 'Filter: params.lr < 1e-3 and status = COMPLETED, or a name',
    keys: () => {
      const text = applied ?? "";
      if (!keysFor || keysFor[0] !== text) keysFor = [text, api.get("keys", { q: text }).then((d) => d.keys).catch(() => [])];
      return keysFor[1];
    },
    onInput: debounce((text) => { state.text = text; ask(); }, 250),
    onCommit: () => { pushNext = true; },
  });
  const search = box.el;
  const modeNote = h("span", { class: "muted small", id: "filter-mode" });
  const paramInput = h("input", { type: "search", placeholder: "Params: lr=0.1, epochs>=10, model~res", value: state.paramFilter, "aria-label": "filter parameters", id: "filter-params" });
  const statusSelect = select([["", "any status"], ...STATUSES.map((s) => [s, s])], state.status, (v) => { state.status = v; render(); }, { id: "filter-status", "aria-label": "filter status" });
  const compareButton = h("button", { id: "compare", type: "button", onclick: () => {
    const q = new URLSearchParams();
    for (const prefix of state.selected) q.append("run", prefix);
    location.hash = "#/compare?" + q.toString();
  } }, "Compare");
  const columnsBox = h("details", { class: "columns-box" });
  const tree = h("nav", { class: "tree", "aria-label": "projects and folders" });
  const table = h("table", { class: "runs", id: "runs" });
  const count = h("span", { class: "muted", id: "count" });

  paramInput.addEventListener("input", debounce(() => { state.paramFilter = paramInput.value; render(); }, 250));

  add(clear(main), 
    h("div", { class: "layout" },
      tree,
      h("section", { class: "content" },
        h("div", { class: "search-row" }, search, modeNote),
        h("div", { class: "toolbar" }, statusSelect, paramInput, columnsBox, compareButton, count),
        h("div", { class: "table-wrap" }, table),
      ),
    ),
  );
  ctx.crumbs([["Experiments", "#/"]]);

  // The search box was applied by the server; the tree, status and params boxes narrow here.
  function visibleRows() {
    const preds = parseParamFilter(state.paramFilter);
    return rows.filter((row) => {
      if (state.folder && !(folderOf(row) + "/").startsWith(state.folder + "/")) return false;
      if (state.status && row.status !== state.status) return false;
      return preds.every((p) => p(row.params || {}));
    });
  }

  function renderTree() {
    const top = buildTree(rows);
    const item = (node, depth) => {
      const active = state.folder === node.path;
      const link = h("a", { href: "#/", class: active ? "active" : "", dataset: { path: node.path }, onclick: (e) => { e.preventDefault(); state.folder = node.path; render(); } },
        node.path ? node.name : "All experiments", h("span", { class: "count" }, String(node.count)));
      const kids = [...node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
      return h("li", { style: null }, link, kids.length ? h("ul", {}, kids.map((k) => item(k, depth + 1))) : null);
    };
    add(clear(tree), h("ul", {}, item(top, 0)));
  }

  function renderColumns(allParams, allMetrics, params, metrics) {
    const open = columnsBox.open;
    const box = (list, chosen, which) => list.map((key) => h("label", {},
      h("input", { type: "checkbox", checked: chosen.includes(key), onchange: (e) => {
        const current = new Set(state[which] || chosen);
        if (e.target.checked) current.add(key); else current.delete(key);
        state[which] = [...current];
        render();
      } }), " ", key));
    add(clear(columnsBox), 
      h("summary", {}, "Columns"),
      h("div", { class: "columns-list" },
        h("strong", {}, "Parameters"), box(allParams, params, "params"),
        h("strong", {}, "Metrics"), box(allMetrics, metrics, "metrics")),
    );
    columnsBox.open = open;
  }

  function render() {
    renderTree();
    const shown = visibleRows();
    const allParams = [...new Set(rows.flatMap((r) => Object.keys(r.params || {})))].sort();
    const allMetrics = [...new Set(rows.flatMap((r) => Object.keys(r.metrics || {})))].sort();
    const params = (state.params || variedParams(shown)).filter((k) => allParams.includes(k));
    const metrics = (state.metrics || commonMetrics(shown)).filter((k) => allMetrics.includes(k));
    renderColumns(allParams, allMetrics, params, metrics);

    const { key, desc } = state.sort;
    shown.sort((a, b) => {
      const va = sortValue(a, key), vb = sortValue(b, key);
      if (va === null || vb === null) return compare(va, vb);
      return desc ? compare(vb, va) : compare(va, vb);
    });

    const header = (label, sortKey, cls = "") => h("th", {
      class: cls + (key === sortKey ? (desc ? " sorted desc" : " sorted asc") : ""),
      dataset: { sort: sortKey }, title: "sort by " + label,
      onclick: () => { state.sort = { key: sortKey, desc: key === sortKey ? !desc : sortKey === "started" }; render(); },
    }, label);
    const allBox = h("input", { type: "checkbox", "aria-label": "select all shown", checked: shown.length > 0 && shown.every((r) => state.selected.has(refOf(r))), onchange: (e) => {
      for (const r of shown) { if (e.target.checked) state.selected.add(refOf(r)); else state.selected.delete(refOf(r)); }
      render();
    } });
    const thead = h("thead", {}, h("tr", {},
      h("th", { class: "pick" }, allBox),
      header("status", "status"), header("experiment", "name"), header("started", "started"), header("duration", "duration", "num"),
      params.map((p) => header(p, "p:" + p, "param")),
      metrics.map((m) => header(m, "m:" + m, "num metric")),
    ));
    const tbody = h("tbody", {});
    const makeRow = (row) => {
      const p = row.params || {}, m = row.metrics || {};
      const ref = refOf(row);
      return h("tr", { class: state.selected.has(ref) ? "picked" : "", dataset: { prefix: row.prefix, ref } },
        h("td", { class: "pick" }, h("input", { type: "checkbox", "aria-label": "select " + ref, checked: state.selected.has(ref), onchange: (e) => {
          if (e.target.checked) state.selected.add(ref); else state.selected.delete(ref);
          e.target.closest("tr").classList.toggle("picked", e.target.checked);
          updateCompare();
        } })),
        h("td", {}, h("span", { class: statusClass(row) }, statusText(row))),
        h("td", { class: "name" }, h("a", { href: expHref(ref) }, row.name || row.prefix), h("div", { class: "muted small" }, folderOf(row)),
          (row.tags || []).map((t) => h("span", { class: "tag" }, t))),
        h("td", { class: "nowrap" }, when(row.started_at)),
        h("td", { class: "num" }, duration(row)),
        params.map((k) => h("td", { class: "param" }, k in p ? num(p[k]) : "")),
        metrics.map((k) => h("td", { class: "num" }, k in m ? num(headline(m[k])) : "")),
      );
    };
    // Rows go in by pages as the table scrolls into view: a table of thousands of
    // runs opens at once, and sorting and filtering still cover every run.
    let drawn = 0;
    const more = h("tr", { class: "more" }, h("td", { colspan: 5 + params.length + metrics.length, class: "muted" }));
    const drawPage = () => {
      const frag = document.createDocumentFragment();
      for (const row of shown.slice(drawn, drawn + PAGE)) frag.append(makeRow(row));
      drawn = Math.min(shown.length, drawn + PAGE);
      keep = Math.max(keep, drawn);
      more.remove();
      tbody.append(frag);
      if (drawn < shown.length) {
        more.firstChild.textContent = `showing ${drawn} of ${shown.length}; scroll for more`;
        tbody.append(more);
      }
    };
    if (observer) observer.disconnect();
    observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) drawPage(); }, { rootMargin: "400px" });
    observer.observe(more);
    const keepRows = keep; // a live refresh keeps as many rows as were scrolled into view
    keep = 0;
    drawPage();
    while (drawn < keepRows && drawn < shown.length) drawPage();
    add(clear(table), thead, tbody);
    if (!shown.length) tbody.append(h("tr", {}, h("td", { colspan: 5 + params.length + metrics.length, class: "muted empty" },
      rows.length ? "No experiment matches these filters." : "No experiments yet: run a script that uses mldash.Experiment, then they appear here.")));
    count.textContent = `${shown.length} of ${rows.length} experiments`;
    modeNote.textContent = mode === "filter" ? "filter" : mode === "text" ? "name search (not a filter)" : "";
    updateCompare();
  }

  function updateCompare() {
    const n = [...state.selected].filter((p) => rows.some((r) => refOf(r) === p)).length;
    compareButton.disabled = n < 2;
    compareButton.textContent = n ? `Compare ${n}` : "Compare";
  }

  // One request for the box's text. A filter that does not parse keeps the last good
  // result in the table and the error (with its caret) under the box; polling goes on
  // with the last good text, so the table stays live meanwhile.
  async function fetchRows(text, keepError = false) {
    const ticket = ++asked;
    let data;
    try {
      data = await api.get("experiments", { q: text });
    } catch (error) {
      if (ticket !== asked || stopped) return "stale";
      if (error.body && error.body.filter_error) {
        box.showError(error.message);
        main.dataset.filterError = "1";
        modeNote.textContent = applied === null ? "" : "the last result that worked";
        return "bad";
      }
      throw error;
    }
    if (ticket !== asked || stopped) return "stale";
    if (!keepError) {
      box.showError(null);
      delete main.dataset.filterError;
      remember(text);
    }
    const signature = JSON.stringify([data.mode, data.experiments]);
    const changed = signature !== lastSignature || applied !== text;
    applied = text;
    mode = data.mode;
    if (changed) {
      lastSignature = signature;
      rows = data.experiments;
      keysFor = null; // new runs may bring new keys to complete
      render();
    } else if (rows.some((r) => r.status === "RUNNING")) {
      render(); // durations tick
    }
    ctx.live(rows.some((r) => r.status === "RUNNING" && !r.stale));
    main.dataset.loaded = "1";
    return "ok";
  }

  // The URL holds the last text that worked (never a half-typed filter). Edits between
  // two commits (Enter, leaving the box) share one history entry, so "back" undoes a
  // whole edit rather than a keystroke.
  function remember(text) {
    const hash = listHash(text);
    if (hash === location.hash || (hash === "#/" && !location.hash)) return;
    if (pushNext) history.pushState(null, "", hash);
    else history.replaceState(null, "", hash);
    pushNext = false;
  }

  function ask() {
    fetchRows(state.text).catch((error) => ctx.failed(error));
  }

  async function refresh() {
    if (stopped) return;
    try {
      // While the box holds a bad filter, the table polls with the text it shows (every
      // run on a first visit), keeping the error under the box.
      const got = await fetchRows(state.text);
      if (got === "bad") await fetchRows(applied ?? "", true);
    } catch (error) {
      if (!ctx.failed(error)) return;
    }
    if (!stopped) timer = setTimeout(refresh, rows.some((r) => r.status === "RUNNING") ? 3000 : 10000);
  }
  refresh();

  return () => { stopped = true; clearTimeout(timer); if (observer) observer.disconnect(); };
}

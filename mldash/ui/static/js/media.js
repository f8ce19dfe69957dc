// Media fields of a run's series (api/media): an image panel per image field (a step
// slider, arrow keys, the caption and the image's size) and a heatmap per histogram field
// (histogram.js); and, for the compare view, one image panel across runs at one step.
// Captions and names are the run's: text only.

import * as api from "./api.js";
import { h, add, clear, debounce } from "./dom.js";
import { num } from "./format.js";
import { HistogramHeatmap } from "./histogram.js";

const AXES = new Set(["step", "epoch", "timestamp", "time"]);

/** Whether series ``name`` of ``row`` holds only media fields (no chart for it, then). */
export function isMediaOnly(row, name) {
  const fields = (row.media || {})[name];
  if (!fields) return false;
  const last = (row.metrics || {})[name];
  const data = (last && last.data) || {};
  return Object.keys(data).every((k) => k in fields || AXES.has(k));
}

/** [[series, field, type]] of a run's media fields, sorted. */
export function mediaFields(row) {
  const out = [];
  for (const [name, fields] of Object.entries(row.media || {})) for (const [field, type] of Object.entries(fields)) out.push([name, field, type]);
  return out.sort((a, b) => a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]));
}

function title(name, field) {
  return field === "image" || field === "hist" || field === "histogram" || field === "value" ? name : `${name} · ${field}`;
}

/** A slider over ``count`` positions; arrow keys on the panel move it too. */
function stepSlider(panel, onchange, label) {
  const input = h("input", { type: "range", min: "0", max: "0", step: "1", value: "0", class: "media-slider", "aria-label": label });
  input.addEventListener("input", () => onchange(Number(input.value)));
  panel.setAttribute("tabindex", "0");
  panel.addEventListener("keydown", (e) => {
    if (e.target === input || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return; // the range input moves itself
    const v = Number(input.value) + (e.key === "ArrowRight" ? 1 : -1);
    if (v < 0 || v > Number(input.max)) return;
    e.preventDefault();
    input.value = String(v);
    onchange(v);
  });
  return input;
}

/** One image field of one run: the image at the slider's step, its caption and size. */
export class ImagePanel {
  constructor(card, prefix, name, field) {
    Object.assign(this, { card, prefix, name, field, points: [], shown: -1, seq: 0 });
    this.img = h("img", { class: "media-image", alt: `${name} ${field}` });
    this.caption = h("div", { class: "media-caption" });
    this.meta = h("div", { class: "media-meta muted small" });
    this.slider = stepSlider(card, (i) => this.show(i), `${name} ${field} step`);
    add(card, h("div", { class: "media-frame" }, this.img), this.caption, this.meta, this.slider);
  }

  async load() {
    const got = await api.get("media", { prefix: this.prefix, name: this.name, limit: 2000 });
    const points = ((got.fields || {})[this.field] || {}).points || [];
    const atEnd = this.shown < 0 || this.shown >= this.points.length - 1;
    this.points = points;
    this.slider.max = String(Math.max(0, points.length - 1));
    this.slider.disabled = points.length < 2;
    if (!points.length) { this.meta.textContent = "no images yet"; return; }
    const target = atEnd ? points.length - 1 : Math.min(this.shown, points.length - 1);
    this.slider.value = String(target);
    await this.show(target);
  }

  async show(i) {
    const p = this.points[i];
    if (!p) return;
    this.shown = i;
    const seq = ++this.seq;
    this.card.dataset.step = String(p.step);
    this.caption.textContent = p.caption == null ? "" : String(p.caption);
    this.meta.textContent = `step ${num(p.step)} · ${num(p.width)}×${num(p.height)} px · ${i + 1} of ${this.points.length}`;
    try {
      const url = await api.imageUrl(this.prefix, p.file);
      if (seq === this.seq) { this.img.src = url; this.img.dataset.file = String(p.file); }
    } catch (error) {
      if (error instanceof api.AuthError) throw error;
      if (seq === this.seq) { this.img.removeAttribute("src"); this.meta.textContent += " · could not load: " + error.message; }
    }
  }
}

/** One histogram field of one run as a heatmap over steps. */
export class HistogramPanel {
  constructor(card, prefix, name, field) {
    Object.assign(this, { card, prefix, name, field });
    this.note = h("div", { class: "muted small" });
    this.map = new HistogramHeatmap(card);
    card.append(this.note);
  }

  async load() {
    const got = await api.get("media", { prefix: this.prefix, name: this.name, limit: 400 });
    const entry = (got.fields || {})[this.field] || { points: [], total: 0 };
    this.map.set(entry.points);
    this.note.textContent = entry.points.length ? `${entry.total} histograms` + (entry.total > entry.points.length ? ` · ${entry.points.length} shown` : "") : "no histograms yet";
  }

  redraw() { this.map.draw(); }
}

/** The run page's media section: a panel per image or histogram field of its series. */
export function mediaSection(prefix, ctx) {
  const grid = h("div", { class: "media-grid", id: "media" });
  const el = h("section", { class: "panel", id: "media-panel", hidden: true }, h("h2", {}, "Media"), grid);
  const panels = new Map(); // "series\0field" -> panel
  const seen = new Map(); // series -> last point index loaded

  function update(row) {
    const fields = mediaFields(row);
    el.hidden = !fields.length;
    for (const [name, field, type] of fields) {
      const key = name + "\u0000" + field;
      if (panels.has(key)) continue;
      const card = h("div", { class: "chart-card media-card", dataset: { metric: name, field, type } }, h("h3", {}, title(name, field)));
      grid.append(card);
      panels.set(key, type === "image" ? new ImagePanel(card, prefix, name, field) : new HistogramPanel(card, prefix, name, field));
    }
    for (const [key, panel] of panels) {
      const index = (row.metrics || {})[panel.name]?.index ?? -1;
      if (seen.get(key) === index) continue;
      seen.set(key, index);
      panel.load().catch((e) => ctx.failed(e));
    }
  }

  const onResize = debounce(() => { for (const p of panels.values()) if (p.redraw) p.redraw(); }, 250);
  window.addEventListener("resize", onResize);
  return { el, update, destroy() { window.removeEventListener("resize", onResize); } };
}

/** Compare: one image field across runs, each run's image at the nearest step at or
 * below the slider's (side by side). runs: [{ref, label, color}]. */
export class CompareImagePanel {
  constructor(card, runs, name, field) {
    Object.assign(this, { card, runs, name, field, steps: [], byRun: new Map(), seq: 0 });
    this.stepLabel = h("div", { class: "media-meta muted small" });
    this.slider = stepSlider(card, (i) => this.show(i), `${name} ${field} step`);
    this.row = h("div", { class: "compare-images" });
    add(card, this.row, this.stepLabel, this.slider);
    this.cells = new Map();
    for (const run of runs) {
      const img = h("img", { class: "media-image", alt: `${run.label} ${name}` });
      const caption = h("div", { class: "media-caption" });
      const meta = h("div", { class: "media-meta muted small" });
      const cell = h("figure", { class: "compare-image", dataset: { run: run.ref } },
        h("figcaption", { class: "compare-run" }, h("span", { class: "swatch", dataset: { color: String(run.color) } }), String(run.label)),
        h("div", { class: "media-frame" }, img), caption, meta);
      this.row.append(cell);
      this.cells.set(run.ref, { img, caption, meta, cell });
    }
  }

  async load() {
    const answers = await Promise.all(this.runs.map((run) => api.get("media", { prefix: run.ref, name: this.name, limit: 2000 }).catch((e) => {
      if (e instanceof api.AuthError) throw e;
      return null;
    })));
    const all = new Set();
    answers.forEach((got, i) => {
      const points = ((got && got.fields || {})[this.field] || {}).points || [];
      const sorted = points.filter((p) => typeof p.step === "number").sort((a, b) => a.step - b.step);
      this.byRun.set(this.runs[i].ref, sorted);
      for (const p of sorted) all.add(p.step);
    });
    this.steps = [...all].sort((a, b) => a - b);
    this.slider.max = String(Math.max(0, this.steps.length - 1));
    this.slider.disabled = this.steps.length < 2;
    this.slider.value = String(Math.max(0, this.steps.length - 1));
    await this.show(Number(this.slider.value));
  }

  /** A run's point at the largest step <= ``step`` (binary search), or null. */
  static at(points, step) {
    let lo = 0, hi = points.length - 1, found = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid].step <= step) { found = points[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  }

  async show(i) {
    const step = this.steps[i];
    if (step === undefined) { this.stepLabel.textContent = "no images"; return; }
    const seq = ++this.seq;
    this.card.dataset.step = String(step);
    this.stepLabel.textContent = `step ${num(step)} · ${i + 1} of ${this.steps.length}`;
    await Promise.all(this.runs.map(async (run) => {
      const { img, caption, meta, cell } = this.cells.get(run.ref);
      const p = CompareImagePanel.at(this.byRun.get(run.ref) || [], step);
      cell.dataset.step = p ? String(p.step) : "";
      if (!p) { img.removeAttribute("src"); caption.textContent = ""; meta.textContent = `no image at or before step ${num(step)}`; return; }
      caption.textContent = p.caption == null ? "" : String(p.caption);
      meta.textContent = `step ${num(p.step)} · ${num(p.width)}×${num(p.height)} px`;
      try {
        const url = await api.imageUrl(run.ref, p.file);
        if (seq === this.seq) { img.src = url; img.dataset.file = String(p.file); }
      } catch (error) {
        if (error instanceof api.AuthError) throw error;
        if (seq === this.seq) meta.textContent += " · could not load: " + error.message;
      }
    }));
  }
}

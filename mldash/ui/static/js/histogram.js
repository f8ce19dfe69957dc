// A histogram field over steps as a heatmap on a canvas: x = step (one column per point
// sent, in step order), y = the values' bins, colour = the bin's count. Hovering shows the
// step, the bin's range and its count.

import { h } from "./dom.js";
import { num } from "./format.js";

const PAD = { left: 56, right: 10, top: 8, bottom: 26 };
// A sequential ramp (light to dark blue-violet); an empty bin is left as background.
const RAMP = [[222, 235, 247], [158, 202, 225], [66, 146, 198], [33, 113, 181], [8, 69, 148], [63, 0, 125]];

function colour(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export class HistogramHeatmap {
  /** points: [{step, bins: [edges], counts: [...]}] in step order. */
  constructor(container, height = 220) {
    this.container = container;
    this.height = height;
    this.points = [];
    this.canvas = h("canvas", { class: "heatmap", "aria-label": "histogram over steps" });
    this.tip = h("div", { class: "heatmap-tip", hidden: true });
    this.box = h("div", { class: "heatmap-box" }, this.canvas, this.tip);
    container.append(this.box);
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
  }

  set(points) {
    this.points = points.filter((p) => Array.isArray(p.bins) && Array.isArray(p.counts) && p.bins.length === p.counts.length + 1);
    this.draw();
  }

  layout() {
    const width = Math.max(200, Math.floor(this.box.clientWidth || this.container.clientWidth || 600));
    let lo = Infinity, hi = -Infinity, top = 0;
    for (const p of this.points) {
      lo = Math.min(lo, p.bins[0]);
      hi = Math.max(hi, p.bins[p.bins.length - 1]);
      for (const c of p.counts) top = Math.max(top, c);
    }
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    const plotW = width - PAD.left - PAD.right;
    const plotH = this.height - PAD.top - PAD.bottom;
    const colW = this.points.length ? plotW / this.points.length : plotW;
    return { width, lo, hi, top, plotW, plotH, colW, y: (v) => PAD.top + plotH * (1 - (v - lo) / (hi - lo)) };
  }

  draw() {
    const L = this.layout();
    this.L = L;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(L.width * dpr);
    this.canvas.height = Math.round(this.height * dpr);
    this.canvas.style.width = L.width + "px";
    this.canvas.style.height = this.height + "px";
    const g = this.canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, L.width, this.height);
    g.fillStyle = "#fafafa";
    g.fillRect(PAD.left, PAD.top, L.plotW, L.plotH);
    this.points.forEach((p, i) => {
      const x0 = PAD.left + i * L.colW;
      const w = Math.max(1, L.colW + 0.5);
      for (let k = 0; k < p.counts.length; k++) {
        const c = p.counts[k];
        if (!c) continue;
        const yTop = L.y(p.bins[k + 1]), yBottom = L.y(p.bins[k]);
        g.fillStyle = colour(L.top ? Math.sqrt(c / L.top) : 0);
        g.fillRect(x0, yTop, w, Math.max(1, yBottom - yTop));
      }
    });
    // axes: the value range on the left, the steps below
    g.fillStyle = "#555";
    g.font = "11px system-ui, sans-serif";
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const v of [L.lo, (L.lo + L.hi) / 2, L.hi]) g.fillText(num(v), PAD.left - 4, L.y(v));
    g.textAlign = "center";
    g.textBaseline = "top";
    const n = this.points.length;
    if (n) {
      const ticks = n === 1 ? [0] : [0, Math.floor((n - 1) / 2), n - 1];
      for (const i of [...new Set(ticks)]) g.fillText(num(this.points[i].step), PAD.left + (i + 0.5) * L.colW, this.height - PAD.bottom + 6);
    }
    g.strokeStyle = "#ccc";
    g.strokeRect(PAD.left + 0.5, PAD.top + 0.5, L.plotW - 1, L.plotH - 1);
  }

  /** The point and bin under (x, y) in CSS pixels of the canvas, or null. */
  at(x, y) {
    const L = this.L;
    if (!L || !this.points.length) return null;
    const i = Math.floor((x - PAD.left) / L.colW);
    if (i < 0 || i >= this.points.length || y < PAD.top || y > PAD.top + L.plotH) return null;
    const p = this.points[i];
    const value = L.lo + (1 - (y - PAD.top) / L.plotH) * (L.hi - L.lo);
    for (let k = 0; k < p.counts.length; k++) {
      if (value >= p.bins[k] && value <= p.bins[k + 1]) return { point: p, bin: k };
    }
    return { point: p, bin: null };
  }

  hover(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top;
    const hit = this.at(x, y);
    if (!hit) { this.tip.hidden = true; return; }
    const p = hit.point;
    this.tip.textContent = hit.bin === null
      ? `step ${num(p.step)} · outside [${num(p.min ?? p.bins[0])}, ${num(p.max ?? p.bins[p.bins.length - 1])}]`
      : `step ${num(p.step)} · [${num(p.bins[hit.bin])}, ${num(p.bins[hit.bin + 1])}) · count ${num(p.counts[hit.bin])}`;
    this.tip.hidden = false;
    this.tip.style.left = Math.min(x + 12, (this.L.width || 300) - 180) + "px";
    this.tip.style.top = Math.max(0, y - 28) + "px";
  }
}

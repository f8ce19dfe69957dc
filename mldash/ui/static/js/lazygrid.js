// A grid of chart cards whose charts are made only as they scroll near the view: the
// compare view of 50 metrics across 20 runs asks for the few charts on screen, not
// for 1,000 series at once.

import { h, clear } from "./dom.js";

export class LazyGrid {
  /** ``make(card, key)`` builds and starts loading the chart of ``key`` in ``card``
   * (an object with load() and destroy()). */
  constructor(container, make) {
    this.container = container;
    this.make = make;
    this.cards = new Map(); // key -> card
    this.charts = new Map(); // key -> chart, for the cards made so far
    this.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) if (entry.isIntersecting) this.open(entry.target.dataset.metric);
    }, { rootMargin: "300px" }); // a little ahead, so scrolling finds them drawn
  }

  /** One card per key: [key, title, note] (note: e.g. "3 of 4 runs"). */
  set(items) {
    this.destroyCharts();
    clear(this.container);
    this.cards.clear();
    for (const [key, title, note] of items) {
      const card = h("div", { class: "chart-card", dataset: { metric: key } },
        h("h3", {}, title, note ? h("span", { class: "muted small" }, " · " + note) : null));
      this.cards.set(key, card);
      this.container.append(card);
      this.observer.observe(card);
    }
  }

  open(key) {
    const card = this.cards.get(key);
    if (!card || this.charts.has(key)) return;
    this.observer.unobserve(card);
    card.dataset.loaded = "1";
    this.charts.set(key, this.make(card, key));
  }

  /** Make every chart again (new grouping, new x axis); those on screen come back at once. */
  remake() {
    this.destroyCharts();
    for (const card of this.cards.values()) {
      delete card.dataset.loaded;
      while (card.children.length > 1) card.lastChild.remove(); // keep the title
      this.observer.observe(card);
    }
  }

  destroyCharts() {
    for (const chart of this.charts.values()) chart.destroy();
    this.charts.clear();
  }

  destroy() {
    this.observer.disconnect();
    this.destroyCharts();
  }
}

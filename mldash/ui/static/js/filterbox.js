// The experiments search box: the filter language (docs/analysis.md) or plain words,
// with a dropdown completing the key under the cursor and the server's error (its
// caret under the place) in a monospace block below. It only edits text and reports
// it; what the text selects is decided by the server (api/experiments?q=).

import { h, clear } from "./dom.js";

const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const MAX_SHOWN = 12;
// The word completion replaces: back from the cursor to a space, bracket, comma or operator.
const WORD_BEFORE = /[^\s()[\],=<>!~]*$/;
const WORD_AFTER = /^[^\s()[\],=<>!~]*/;
// Text ending so marks a value's place (status = |, lr in [1, |): keys make no sense there.
const VALUE_PLACE = /(=|<|>|~|\[|,|\bcontains|\bin)\s*$/i;

const BARE = /^[^\s()[\],=<>!~"']+$/;

/** A key as the filter language spells it: params.lr, metrics.val/loss.min,
 * params."learning rate" (as mldash._filter.Key.text). */
export function keyText(scope, name, agg = null) {
  const shown = BARE.test(name) ? name : '"' + name.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
  return `${scope}.${shown}` + (agg ? "." + agg : "");
}

/** Keys for ``word``: those starting with it first, then those containing it (case-blind). */
export function suggest(keys, word) {
  const w = word.toLowerCase();
  const starts = [], inside = [];
  for (const key of keys) {
    const k = key.toLowerCase();
    if (k.startsWith(w)) starts.push(key);
    else if (w && k.includes(w)) inside.push(key);
  }
  return [...starts, ...inside].slice(0, MAX_SHOWN);
}

// A quoted key being typed (params."learning rate, params."<b>): operators inside are text.
const QUOTED_BEFORE = /(params|summary|metrics)\.("([^"\\]|\\.)*|'([^'\\]|\\.)*)$/;

/** The word under ``cursor`` in ``text``: [start, end, what comes before it]. */
export function wordAt(text, cursor) {
  const before = text.slice(0, cursor);
  const quoted = before.match(QUOTED_BEFORE);
  if (quoted) return [cursor - quoted[0].length, cursor, text.slice(0, cursor - quoted[0].length)];
  const start = cursor - before.match(WORD_BEFORE)[0].length;
  const end = cursor + text.slice(cursor).match(WORD_AFTER)[0].length;
  return [start, end, text.slice(0, start)];
}

/**
 * filterBox({value, placeholder, id, keys, onInput, onCommit})
 * ``keys()`` returns (a promise of) the keys to complete; ``onInput(text)`` runs on every
 * edit, ``onCommit(text)`` on Enter (list closed) and on leaving the box.
 * Returns {el, input, showError(message | null)}.
 */
export function filterBox({ value = "", placeholder = "", id = "filter-text", keys, onInput, onCommit }) {
  const input = h("input", {
    type: "search", id, value, placeholder, autocomplete: "off", spellcheck: "false",
    role: "combobox", "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": id + "-suggest",
    "aria-label": "filter experiments", "aria-describedby": id + "-error",
  });
  const list = h("ul", { class: "suggest", id: id + "-suggest", role: "listbox", hidden: true });
  const error = h("pre", { class: "filter-error", id: id + "-error", hidden: true, "aria-live": "polite" });
  const el = h("div", { class: "filter-box" }, input, list, error);
  let items = [];
  let active = -1;
  let word = [0, 0];

  const close = () => {
    items = [];
    active = -1;
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  };

  const show = () => {
    clear(list);
    items.forEach((key, i) => list.append(h("li", {
      role: "option", id: `${id}-option-${i}`, class: i === active ? "active" : "", "aria-selected": String(i === active), dataset: { key },
      // mousedown, not click: the input keeps its focus (a blur would close the list first)
      onmousedown: (e) => { e.preventDefault(); accept(i); },
    }, key)));
    list.hidden = items.length === 0;
    input.setAttribute("aria-expanded", String(!list.hidden));
    if (active >= 0) {
      input.setAttribute("aria-activedescendant", `${id}-option-${active}`);
      list.children[active].scrollIntoView({ block: "nearest" });
    } else input.removeAttribute("aria-activedescendant");
  };

  async function update(force = false) {
    const text = input.value;
    const cursor = input.selectionStart ?? text.length;
    const [start, end, before] = wordAt(text, cursor);
    const current = text.slice(start, cursor);
    word = [start, end];
    let found = [];
    if (VALUE_PLACE.test(before)) {
      // a value's place: only status has a fixed set of values worth offering
      if (/\bstatus\s*(=|!=|in\s*\[)[^\]]*$/i.test(before)) found = suggest(STATUSES, current);
    } else if (current || force) {
      const known = await keys();
      if (input.value !== text) return; // typed on meanwhile: that edit updates the list
      found = suggest(known, current);
    }
    if (found.length === 1 && found[0] === text.slice(start, end)) found = []; // already there
    items = found;
    active = force && found.length ? 0 : -1;
    show();
  }

  function accept(i) {
    const key = items[i];
    const text = input.value;
    const [start, end] = word;
    const atEnd = end >= text.length;
    const inserted = key + (atEnd ? " " : "");
    input.value = text.slice(0, start) + inserted + text.slice(end);
    const cursor = start + inserted.length;
    input.setSelectionRange(cursor, cursor);
    close();
    onInput(input.value);
  }

  input.addEventListener("input", () => { onInput(input.value); update(); });
  input.addEventListener("keydown", (e) => {
    const open = !list.hidden && items.length > 0;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (!open) { update(true); return; }
      const step = e.key === "ArrowDown" ? 1 : -1;
      active = (active + step + items.length) % items.length;
      show();
    } else if ((e.key === "Enter" || e.key === "Tab") && open && (active >= 0 || e.key === "Tab")) {
      e.preventDefault();
      accept(Math.max(active, 0));
    } else if (e.key === "Escape" && open) {
      e.preventDefault(); // the list closes; the text stays
      close();
    } else if (e.key === "Enter") {
      close();
      onCommit(input.value);
    }
  });
  input.addEventListener("blur", () => { close(); onCommit(input.value); });

  return {
    el,
    input,
    /** The server's message (the filter, a caret under the place, what was expected), or null. */
    showError(message) {
      error.textContent = message || "";
      error.hidden = !message;
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    },
  };
}

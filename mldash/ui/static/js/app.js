// Hash routing: #/[?filter=...] (experiments), #/exp/<prefix>, #/compare?run=a&run=b[&group=...].

import * as api from "./api.js";
import { h, add, clear } from "./dom.js";
import { experimentsView } from "./experiments.js";
import { experimentView } from "./experiment.js";
import { compareView } from "./compare.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
let teardown = null;

const ctx = {
  crumbs(list) {
    add(clear(crumbs), ...list.flatMap(([label, href], i) => [i ? h("span", { class: "sep" }, "›") : null, h("a", { href }, label)]));
  },
  live(on) {
    live.textContent = on ? "● live" : "";
  },
  /** Show an error; returns whether polling should go on. */
  failed(error) {
    if (error instanceof api.AuthError) {
      showTokenForm(error.message);
      return false;
    }
    let box = document.getElementById("problem");
    if (!box) {
      box = h("div", { id: "problem", class: "problem" });
      main.prepend(box);
    }
    box.textContent = "Could not load: " + error.message;
    return true;
  },
};

function showTokenForm(message) {
  if (teardown) teardown();
  teardown = null;
  const input = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "API token", "aria-label": "API token" });
  add(clear(main), h("form", { class: "panel token-form", onsubmit: (e) => { e.preventDefault(); api.setToken(input.value.trim()); route(); } },
    h("h2", {}, "Sign in"), h("p", {}, message), h("p", { class: "muted" }, "Paste an API token with read scope. It is kept for this tab only."),
    input, " ", h("button", { type: "submit" }, "Open")));
  input.focus();
}

let current = null; // the view's path, so the next one knows where it came from (ctx.previous)

function route() {
  if (teardown) teardown();
  teardown = null;
  delete main.dataset.loaded;
  delete main.dataset.filterError;
  const hash = location.hash.replace(/^#/, "") || "/";
  const cut = hash.indexOf("?");
  const path = cut < 0 ? hash : hash.slice(0, cut);
  const query = new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1)); // a filter may hold "?"
  ctx.previous = current;
  current = path.startsWith("/exp/") ? "/exp/" : path;
  if (path.startsWith("/exp/")) {
    teardown = experimentView(main, ctx, decodeURIComponent(path.slice(5)));
  } else if (path === "/compare") {
    teardown = compareView(main, ctx, query);
  } else {
    teardown = experimentsView(main, ctx, query);
  }
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", route);
api.get("info").then((info) => { if (info.title) document.title = info.title; }).catch(() => {});
route();

// The run's Files section: a table of its saved files (path, name, size, time, tags), a
// download link for each, and a preview pane for images, JSON (pretty) and text (the
// first 256 KB). Names, tags, metadata and contents are the run's: text only, always.

import * as api from "./api.js";
import { h, add, clear, debounce } from "./dom.js";

const PREVIEW_BYTES = 256 * 1024;
const MAX_ROWS = 500;
const IMAGE_EXT = /\.(png|jpe?g|gif|webp)$/i;
const JSON_EXT = /\.(json|ipynb|jsonl)$/i;
const TEXT_EXT = /\.(txt|log|md|rst|csv|tsv|ya?ml|toml|ini|cfg|conf|py|sh|out|err|diff|patch|tex|r|js|ts|c|h|cpp|rs|go|java)$/i;
const NEVER = /\.(html?|xht(ml)?|svgz?|xml)$/i;

export function sizeText(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "–";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function timeText(iso) {
  if (typeof iso !== "string") return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "image" | "json" | "text" | null: how a file may be previewed. */
export function previewKind(record) {
  const name = String(record.filename || "");
  const type = String(record.contentType || "").toLowerCase();
  if (NEVER.test(name) || /html|svg|xml/.test(type)) return null;
  if (IMAGE_EXT.test(name) || /^image\/(png|jpeg|gif|webp)$/.test(type)) return "image";
  if (JSON_EXT.test(name) || type.includes("json")) return "json";
  if (TEXT_EXT.test(name) || type.startsWith("text/")) return "text";
  return null;
}

function fullPath(record) {
  const folder = String(record.path || "/").replace(/^\/+|\/+$/g, "");
  return folder ? `/${folder}/${record.filename}` : `/${record.filename}`;
}

/** A download link: a plain link (the browser streams it), or with a token a fetch. */
export function downloadLink(prefix, record, label = "download") {
  const href = api.fileUrl({ prefix, id: record.id }).toString();
  const link = h("a", { href, download: String(record.filename || "file"), class: "download", rel: "noopener" }, label);
  link.addEventListener("click", async (event) => {
    if (!api.hasToken()) return; // the link carries no token: fetch it with one instead
    event.preventDefault();
    try {
      const blob = await (await api.file({ prefix, id: record.id })).blob();
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: String(record.filename || "file") });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      link.textContent = "download failed: " + error.message;
    }
  });
  return link;
}

export function filesSection(prefix, ctx) {
  let files = [];
  let signature = "";
  let selected = null; // the id previewed
  let loading = false;
  const search = h("input", { type: "search", placeholder: "Filter files…", "aria-label": "filter files", id: "files-search" });
  const showMedia = h("input", { type: "checkbox", id: "files-media" });
  const note = h("div", { class: "muted small", id: "files-note" });
  const tableBox = h("div", { class: "files-table-box" });
  const preview = h("div", { class: "file-preview", id: "file-preview", hidden: true });
  const el = h("section", { class: "panel", id: "files", hidden: true },
    h("div", { class: "panel-head" }, h("h2", {}, "Files"),
      h("div", { class: "toolbar" }, h("label", {}, showMedia, " media images"), search)),
    note, h("div", { class: "files-body" }, tableBox, preview));
  search.addEventListener("input", debounce(() => render(), 150));
  showMedia.addEventListener("change", () => render());

  function shown() {
    const q = search.value.trim().toLowerCase();
    return files.filter((f) => (showMedia.checked || !fullPath(f).startsWith("/media/"))
      && (!q || fullPath(f).toLowerCase().includes(q) || (f.tags || []).some((t) => String(t).toLowerCase().includes(q))));
  }

  function render() {
    const list = shown();
    const media = files.filter((f) => fullPath(f).startsWith("/media/")).length;
    note.textContent = `${files.length} file${files.length === 1 ? "" : "s"}` + (media ? ` (${media} media images${showMedia.checked ? "" : ", hidden"})` : "")
      + (list.length > MAX_ROWS ? ` · the first ${MAX_ROWS} shown` : "");
    if (!list.length) {
      add(clear(tableBox), h("p", { class: "muted", id: "no-files" }, files.length ? "No file matches." : "No files saved."));
      return;
    }
    add(clear(tableBox), h("table", { class: "runs small", id: "files-table" },
      h("thead", {}, h("tr", {}, ["path", "name", "size", "saved", "tags", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, list.slice(0, MAX_ROWS).map((f) => {
        const kind = previewKind(f);
        const name = kind
          ? h("button", { type: "button", class: "linkish file-open", title: "preview", onclick: () => openPreview(f) }, String(f.filename))
          : h("span", {}, String(f.filename));
        return h("tr", { dataset: { id: String(f.id) }, class: f.id === selected ? "selected" : "" },
          h("td", { class: "muted" }, String(f.path || "/")),
          h("td", { class: "file-name" }, name),
          h("td", { class: "num nowrap" }, sizeText(f.sizeBytes)),
          h("td", { class: "nowrap" }, timeText(f.uploadedAt)),
          h("td", {}, (f.tags || []).map((t) => h("span", { class: "tag" }, String(t)))),
          h("td", {}, downloadLink(prefix, f)));
      }))));
  }

  async function openPreview(record) {
    selected = record.id;
    for (const tr of tableBox.querySelectorAll("tr[data-id]")) tr.classList.toggle("selected", tr.dataset.id === String(record.id));
    const kind = previewKind(record);
    const body = h("div", { class: "preview-body" }, h("p", { class: "muted" }, "Loading…"));
    const meta = record.metadata && typeof record.metadata === "object" && Object.keys(record.metadata).length
      ? h("details", { class: "file-meta" }, h("summary", {}, "metadata"), h("pre", {}, JSON.stringify(record.metadata, null, 2))) : null;
    add(clear(preview),
      h("div", { class: "preview-head" },
        h("strong", { class: "preview-name" }, fullPath(record)), " ",
        h("span", { class: "muted small" }, `${sizeText(record.sizeBytes)} · ${record.contentType || "unknown type"}`), " ",
        downloadLink(prefix, record),
        h("button", { type: "button", class: "close", "aria-label": "close preview", onclick: () => { preview.hidden = true; selected = null; render(); } }, "×")),
      record.description ? h("p", { class: "description" }, String(record.description)) : null,
      meta, body);
    preview.hidden = false;
    preview.dataset.kind = kind || "";
    try {
      if (kind === "image") {
        const url = await api.imageUrl(prefix, record.id);
        if (selected !== record.id) return;
        add(clear(body), h("img", { src: url, alt: String(record.filename), class: "preview-image", id: "preview-image" }));
      } else if (kind === "json" || kind === "text") {
        const response = await api.file({ prefix, id: record.id, view: "text" }, { range: `bytes=0-${PREVIEW_BYTES - 1}` });
        const buffer = await response.arrayBuffer();
        if (selected !== record.id) return;
        const whole = record.sizeBytes <= PREVIEW_BYTES;
        let text = new TextDecoder("utf-8", { fatal: false }).decode(buffer.slice(0, PREVIEW_BYTES));
        if (kind === "json" && whole) {
          try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* shown as it is */ }
        }
        add(clear(body), h("pre", { class: "preview-text", id: "preview-text" }, text),
          whole ? null : h("p", { class: "muted small" }, `the first ${sizeText(PREVIEW_BYTES)} of ${sizeText(record.sizeBytes)}; download it for the rest`));
      } else {
        add(clear(body), h("p", { class: "muted" }, "No preview for this type; download it."));
      }
    } catch (error) {
      if (error instanceof api.AuthError) { ctx.failed(error); return; }
      add(clear(body), h("p", { class: "error-text" }, "could not load: " + error.message));
    }
  }

  async function update(row) {
    if (!row.has_files) { el.hidden = true; return; }
    if (loading) return;
    loading = true;
    try {
      const got = await api.get("files", { prefix });
      el.hidden = false;
      const list = got.files || [];
      const sig = list.length + ":" + (list.length ? list[list.length - 1].id : "");
      if (sig === signature) return;
      signature = sig;
      files = list;
      render();
    } catch (error) {
      if (error.status === 404) { el.hidden = true; return; }
      throw error;
    } finally {
      loading = false;
    }
  }

  return { el, update, destroy() {} };
}

// The console tail of a run: ANSI colours (SGR 30-37, 90-97, 1, 0) become spans with
// classes; every piece of text goes in through text nodes, never as HTML.

import { h } from "./dom.js";

const SGR = /\x1b\[([0-9;]*)m/g;
const OTHER_ESCAPES = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[()][A-Za-z0-9]?|[\x00-\x08\x0b-\x1f\x7f]/g;

/** The text of a console line as a list of {text, classes} runs. */
export function ansiRuns(text) {
  const runs = [];
  let bold = false;
  let fg = null;
  let last = 0;
  const source = String(text ?? "");
  const emit = (piece) => {
    const clean = piece.replace(OTHER_ESCAPES, "");
    if (!clean) return;
    const classes = [];
    if (bold) classes.push("ansi-bold");
    if (fg !== null) classes.push("ansi-fg-" + fg);
    runs.push({ text: clean, classes });
  };
  for (const match of source.matchAll(SGR)) {
    emit(source.slice(last, match.index));
    last = match.index + match[0].length;
    const codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
    for (const code of codes) {
      if (code === 0) { bold = false; fg = null; }
      else if (code === 1) bold = true;
      else if (code === 22) bold = false;
      else if (code === 39) fg = null;
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) fg = code;
    }
  }
  emit(source.slice(last));
  return runs;
}

/** Plain text of a line (its colours dropped), for searching. */
export function plainText(text) {
  return ansiRuns(text).map((r) => r.text).join("");
}

/** One console record as a DOM row. */
export function consoleRow(record) {
  const line = h("span", { class: "console-text" });
  for (const run of ansiRuns(record.text)) {
    line.append(run.classes.length ? h("span", { class: run.classes.join(" ") }, run.text) : document.createTextNode(run.text));
  }
  return h("div", { class: "console-line stream-" + (record.stream === "stderr" ? "stderr" : "stdout") + (record.partial ? " partial" : ""), dataset: { index: record.index, stream: record.stream || "" } }, line);
}

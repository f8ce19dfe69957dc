// The System section: the sys/* series (docs/capture.md), a few fields each, charted
// apart from the run's own metrics.

/** Is ``name`` one of the system series (kept out of the metrics grid)? */
export function isSystem(name) {
  return String(name).startsWith("sys/");
}

/** The charts for the sys/ series in ``names``: [{id, name, title, fields}]. */
export function systemCharts(names) {
  const out = [];
  const has = new Set(names);
  const push = (name, title, fields) => { if (has.has(name)) out.push({ id: name + ":" + fields.join(","), name, title, fields }); };
  push("sys/cpu", "CPU %", ["process_percent", "system_percent"]);
  push("sys/memory", "memory %", ["percent"]);
  push("sys/disk", "disk %", ["percent"]);
  push("sys/network", "network bytes/s", ["sent_bytes_per_s", "recv_bytes_per_s"]);
  const gpus = names.filter((n) => /^sys\/gpu\/\d+$/.test(n)).sort((a, b) => Number(a.split("/")[2]) - Number(b.split("/")[2]));
  for (const name of gpus) {
    const i = name.split("/")[2];
    push(name, `GPU ${i} utilization %`, ["utilization_percent"]);
    push(name, `GPU ${i} memory used`, ["memory_used_bytes"]);
  }
  return out;
}

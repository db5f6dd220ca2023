// hpo dashboard: draws the pages from the JSON API and polls it (If-None-Match: a study
// that has not changed answers 304), so a running study advances without a reload.
"use strict";

const body = document.body;
const REFRESH = Number(body.dataset.refresh || 2000);
const PAGE = body.dataset.page;
const COLOURS = { random: "#1f77b4", bayesian: "#d62728" };
// Stages by their stored names (the ledger's), as people read them.
const STAGE_NAMES = { random: "random", bayesian: "narrow" };
const PLOT_CONFIG = { displaylogo: false, responsive: true };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = v;
    else if (k === "cls") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function fmt(v, digits = 4) {
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  if (typeof v === "boolean") return v ? "✓" : "✗";
  return String(v);
}

function ago(epoch, now) {
  if (!epoch) return "–";
  let s = Math.max(0, Math.round(now - epoch));
  if (s < 120) return `${s} s`;
  s = Math.round(s / 60);
  if (s < 120) return `${s} min`;
  s = Math.round(s / 60);
  return s < 48 ? `${s} h` : `${Math.round(s / 24)} d`;
}

function banner(id, text) {
  const node = document.getElementById(id);
  node.textContent = text || "";
  node.hidden = !text;
}

// Poll `url`; `draw(data)` on every change. A failed fetch shows a message and keeps trying.
function poll(url, draw) {
  let etag = null;
  const live = document.getElementById("live");
  async function tick() {
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const response = await fetch(url, { headers, cache: "no-store" });
      if (response.status !== 304) {
        const fetched = performance.now();
        const data = await response.json();
        etag = response.headers.get("ETag");
        banner("error", data.error || (response.ok ? "" : `HTTP ${response.status}`));
        const parsed = performance.now();
        draw(data);
        // what the last change cost in this browser (benchmarks/dashboard.py reads it)
        window.hpoTimings = { parse_ms: parsed - fetched, draw_ms: performance.now() - parsed, ...(window.hpoParts || {}) };
      }
      live.className = "live";
      live.dataset.polls = String(Number(live.dataset.polls || 0) + 1);
    } catch (e) {
      banner("error", `the dashboard server does not answer (${e.message}); retrying`);
      live.className = "live down";
    }
    setTimeout(tick, REFRESH);
  }
  tick();
}

// ----------------------------------------------------------------- sortable, filterable tables

// A table whose rows are `rows` (objects) and columns `columns` [{key, label, cell?}].
// Clicking a header sorts by it (again: the other way); `filter` keeps rows containing it.
class Table {
  constructor(table, { limit = 200, onShown = null } = {}) {
    this.table = table;
    this.limit = limit;
    this.onShown = onShown;
    this.sortKey = null;
    this.sortDir = 1;
    this.filter = "";
    this.rows = [];
    this.columns = [];
  }
  set(columns, rows) {
    this.columns = columns;
    this.rows = rows;
    this.render();
  }
  sortBy(key) {
    this.sortDir = this.sortKey === key ? -this.sortDir : 1;
    this.sortKey = key;
    this.render();
  }
  render() {
    const thead = this.table.tHead || this.table.createTHead();
    thead.replaceChildren(
      el("tr", {}, ...this.columns.map((c) => {
        const mark = this.sortKey === c.key ? (this.sortDir > 0 ? " ▲" : " ▼") : "";
        const th = el("th", { "data-key": c.key, cls: c.num ? "num" : "", title: c.title || "sort" }, c.label + mark);
        th.addEventListener("click", () => this.sortBy(c.key));
        return th;
      }))
    );
    let rows = this.rows;
    if (this.filter) {
      const f = this.filter.toLowerCase();
      rows = rows.filter((r) => this.columns.some((c) => String(r[c.key] ?? "").toLowerCase().includes(f)));
    }
    if (this.sortKey) {
      const k = this.sortKey, d = this.sortDir;
      rows = [...rows].sort((a, b) => {
        const x = a[k], y = b[k];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true })) * d;
      });
    }
    const tbody = this.table.tBodies[0] || this.table.createTBody();
    tbody.replaceChildren(...rows.slice(0, this.limit).map((r) => el("tr", { cls: r.status && r.status !== "succeeded" ? "failed" : "" },
      ...this.columns.map((c) => {
        const td = el("td", { cls: c.num ? "num" : "", "data-key": c.key, "data-value": r[c.key] === null || r[c.key] === undefined ? "" : String(r[c.key]) });
        const shown = c.cell ? c.cell(r) : fmt(r[c.key]);
        td.append(shown);
        return td;
      }))));
    if (this.onShown) this.onShown(Math.min(rows.length, this.limit), rows.length, this.rows.length);
  }
}

// {columns, data} (as the server sends big tables) -> one object per row.
function unpack(table) {
  return table.data.map((row) => Object.fromEntries(table.columns.map((c, i) => [c, row[i]])));
}

function configText(r, hyperparams) {
  return hyperparams.filter((h) => r[h] !== null && r[h] !== undefined).map((h) => `${h}=${r[h]}`).join(", ");
}

function link(href, text) {
  return el("a", { href }, text);
}

function card(label, value, key, title) {
  return el("div", { cls: "card", "data-key": key, title }, el("div", { cls: "label" }, label), el("div", { cls: "value" }, value));
}

// ----------------------------------------------------------------- studies list

function studiesPage() {
  const table = new Table(document.getElementById("studies"));
  const columns = [
    { key: "name", label: "study", cell: (r) => link(`/study?id=${encodeURIComponent(r.id)}`, r.name) },
    { key: "phase", label: "phase", cell: (r) => r.error ? el("span", { cls: "bad", title: r.error }, `${r.phase || "unreadable"} ⚠ ${r.error}`) : fmt(r.phase) },
    { key: "stage", label: "stage" },
    { key: "done", label: "done / total", num: true, cell: (r) => `${fmt(r.done)} / ${r.total === null || r.total === undefined ? "–" : (r.total_is_bound ? "≤" : "") + r.total}` + (r.taken ? ` (+ ${r.taken} taken from warm start)` : "") },
    { key: "running", label: "running", num: true, cell: (r) => liveCount(r) },
    { key: "queued", label: "queued", num: true, cell: (r) => liveCount(r, "queued") },
    { key: "failed", label: "failed", num: true },
    { key: "best_val", label: "best val MAE", num: true },
    { key: "live", label: "runner", cell: (r) => liveBadge(r, table.now) },
    { key: "started", label: "age", num: true, cell: (r) => ago(r.started, table.now) },
    { key: "updated", label: "last training", num: true, cell: (r) => r.updated ? `${ago(r.updated, table.now)} ago` : "–" },
  ];
  poll("/api/studies", (data) => {
    table.now = data.now;
    table.set(columns, data.studies || []);
    banner("empty", data.empty);
  });
}

// ----------------------------------------------------------------- one study

function hoverText(r, val) {
  return `${r.trial} seed ${r.seed} (${r.stage})<br>val MAE ${fmt(r[val])}<br>${(r.config || "").replaceAll(", ", "<br>")}`;
}

function bestSoFar(d) {
  const ok = d.trainings.filter((r) => r.status === "succeeded" && r[d.val] !== null);
  const x = ok.map((_, i) => i + 1);
  let best = Infinity;
  const bests = ok.map((r) => (best = Math.min(best, r[d.val])));
  const traces = ["random", "bayesian"].map((stage) => {
    const idx = ok.map((r, i) => (r.stage === stage ? i : -1)).filter((i) => i >= 0);
    return {
      type: "scatter", mode: "markers", name: STAGE_NAMES[stage], x: idx.map((i) => x[i]), y: idx.map((i) => ok[i][d.val]),
      marker: { color: COLOURS[stage], size: 6, opacity: 0.7 },
      text: idx.map((i) => hoverText(ok[i], d.val)), hovertemplate: "%{text}<extra></extra>",
    };
  });
  traces.push({ type: "scatter", mode: "lines", name: "best so far", x, y: bests, line: { color: "black", shape: "hv" }, hoverinfo: "skip" }); // hover is for the trainings' points
  const hand = ok.findIndex((r) => r.stage === "bayesian");
  const layout = baseLayout("training (in the order they finished)", "validation MAE");
  if (hand >= 0) {
    layout.shapes = [{ type: "line", x0: hand + 0.5, x1: hand + 0.5, yref: "paper", y0: 0, y1: 1, line: { dash: "dot", color: "grey" } }];
    layout.annotations = [{ x: hand + 0.5, yref: "paper", y: 1, text: " hand-over to the narrow stage", showarrow: false, xanchor: "left", yanchor: "top", font: { size: 11 } }];
  }
  layout.yaxis.type = "log";
  const ys = ok.map((r) => r[d.val]).filter((v) => v > 0);
  if (ys.length) {
    const t = logTicks(Math.min(...ys), Math.max(...ys));
    Object.assign(layout.yaxis, { tickmode: "array", tickvals: t.tickvals, ticktext: t.ticktext });
  }
  if (x.length) Object.assign(layout.xaxis, intTicks(x));
  draw("chart-best", traces, layout);
}

// Tick labels a reader reads as numbers: 0.05, 1e-3 (plotly's own log ticks read "5 4 3 2").
function tickLabel(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 0.01 && a < 1e4 ? String(+v.toPrecision(3)) : v.toExponential().replace(/\.?0+e/, "e").replace("e+", "e");
}

// Ticks of a log axis over [lo, hi]: 1, 2, 5 x 10^k inside it (two at least: the ends).
function logTicks(lo, hi) {
  const vals = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of [1, 2, 5]) {
      const v = +(m * 10 ** k).toPrecision(3);
      if (v >= lo && v <= hi) vals.push(v);
    }
  }
  if (vals.length < 3 && hi > lo) { // less than a decade: even steps inside [lo, hi]
    vals.length = 0;
    for (const div of [1, 2, 5, 10]) {
      const step = 10 ** Math.floor(Math.log10(hi - lo)) / div;
      vals.length = 0;
      for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) vals.push(+v.toPrecision(3));
      if (vals.length >= 3) break;
    }
  }
  return { tickvals: vals, ticktext: vals.map(tickLabel) };
}

// An axis of whole numbers (depth, seeds, epochs, trainings): whole ticks, never 1.5.
function intTicks(values) {
  const lo = Math.min(...values), hi = Math.max(...values);
  return hi - lo <= 10 ? { tickformat: "d", dtick: 1 } : { tickformat: "d" };
}

function baseLayout(xtitle, ytitle) {
  return {
    margin: { l: 60, r: 20, t: 30, b: 50 }, height: 340, hovermode: "closest",
    xaxis: { title: { text: xtitle } }, yaxis: { title: { text: ytitle } },
    legend: { orientation: "h", y: -0.25 },
  };
}

function draw(id, traces, layout) {
  Plotly.react(document.getElementById(id), traces, layout, PLOT_CONFIG);
}

function byDepth(d) {
  const ok = d.trainings.filter((r) => r.status === "succeeded" && r[d.val] !== null);
  const traces = ["random", "bayesian"].map((stage) => {
    const rows = ok.filter((r) => r.stage === stage);
    return {
      type: "box", name: STAGE_NAMES[stage], x: rows.map((r) => r.hidden_layers), y: rows.map((r) => r[d.val]),
      // every point (each hovers its configuration) up to 2,000; outliers only past that
      boxpoints: ok.length > 2000 ? "outliers" : "all", jitter: 0.4, pointpos: 0, marker: { color: COLOURS[stage], size: 5 },
      text: rows.map((r) => hoverText(r, d.val)), hovertemplate: "%{text}<extra></extra>",
    };
  });
  const layout = baseLayout("hidden layers", "validation MAE");
  layout.boxmode = "group";
  layout.xaxis.dtick = 1;
  draw("chart-depth", traces, layout);
}

function seedSpread(d) {
  const rows = d.final.rows;
  const traces = rows.map((r) => ({
    type: "box", name: `#${r.rank} ${r.trial}`, y: r.seed_scores.map((s) => s.val), boxpoints: "all", pointpos: 0, jitter: 0.3,
    text: r.seed_scores.map((s) => `${r.trial} seed ${s.seed}<br>val MAE ${fmt(s.val)}<br>${r.config.replaceAll(", ", "<br>")}`),
    hovertemplate: "%{text}<extra></extra>", marker: { color: COLOURS[r.stage] || "#555" },
  }));
  const layout = baseLayout("final group (rank, trial)", "validation MAE per seed");
  layout.showlegend = false;
  if (!rows.length) layout.annotations = [{ text: "no final group until the study finishes", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  draw("chart-seeds", traces, layout);
}

function parcoords(d) {
  const rows = d.configurations.filter((r) => r.val_mae_mean !== null && r.val_mae_mean !== undefined);
  const dims = [];
  for (const h of d.hyperparams) {
    const values = rows.map((r) => r[h]);
    if (new Set(values.map(String)).size < 2) continue; // one value: nothing to compare
    if (values.every((v) => typeof v === "number")) {
      const log = (h === "learning_rate" || h === "l2") && values.every((v) => v > 0);
      if (log) { // drawn on log10, labelled with the values themselves
        const t = logTicks(Math.min(...values), Math.max(...values));
        dims.push({ label: `${h} (log)`, values: values.map(Math.log10), tickvals: t.tickvals.map(Math.log10), ticktext: t.ticktext });
      } else if (values.every(Number.isInteger)) {
        const levels = [...new Set(values)].sort((a, b) => a - b);
        const ticks = levels.length <= 12 ? levels : undefined; // else plotly's, whole
        dims.push({ label: h, values, tickvals: ticks, ticktext: ticks && ticks.map(String), tickformat: "d" });
      } else {
        dims.push({ label: h, values, tickformat: ".3~g" });
      }
    } else {
      const levels = [...new Set(values.map(String))].sort();
      dims.push({ label: h, values: values.map((v) => levels.indexOf(String(v))), tickvals: levels.map((_, i) => i), ticktext: levels });
    }
  }
  dims.push({ label: "val MAE", values: rows.map((r) => r.val_mae_mean) });
  const trace = { type: "parcoords", dimensions: dims, line: { color: rows.map((r) => r.val_mae_mean), colorscale: "Viridis", reversescale: true, showscale: true, colorbar: { title: { text: "val MAE" } } } };
  const layout = { margin: { l: 60, r: 80, t: 40, b: 20 }, height: 340 };
  draw("chart-parcoords", rows.length ? [trace] : [], layout);
}

function progress(d) {
  const box = document.getElementById("progress");
  box.replaceChildren(...d.progress.map((p) => el("div", { cls: "stage", "data-stage": p.stage },
    el("span", { cls: "stage-name" }, p.stage),
    el("progress", { max: String(p.planned || 1), value: String(p.done + p.failed) }),
    el("span", { cls: "stage-count", "data-done": String(p.done), "data-failed": String(p.failed), "data-taken": String(p.taken || 0) },
      `${p.done} done, ${p.failed} failed of ${p.planned === null ? "?" : p.planned}` +
      (p.taken ? ` (+ ${p.taken} taken from warm start)` : "")))));
}

// The runner's live status (status.json): running trainings (or queued: in pods waiting for
// the cluster's capacity; 0 for a local runner) and whether it still writes.
function liveCount(r, key = "running") {
  const v = r[key] === null || r[key] === undefined ? null : String(r[key]);
  return el("span", { [`data-${key}`]: v === null ? "" : v }, v === null ? "–" : v);
}

function liveBadge(r, now) {
  if (!r.live) return el("span", { "data-live": "", title: "no status.json: a study run before it existed" }, "–");
  const seen = r.heartbeat ? ` (status ${ago(r.heartbeat, now)} ago)` : "";
  const title = r.live === "stale"
    ? `its runner has not written status.json for over ${Math.round(r.stale_after_s)} s: stopped, died or cut off from the store`
    : `status.json written by the study's runner${seen}`;
  return el("span", { "data-live": r.live, cls: r.live === "stale" ? "bad" : "", title }, r.live);
}

function summaryCards(s) {
  const total = s.total === null ? "?" : (s.total_is_bound ? "≤" : "") + s.total;
  document.getElementById("summary").replaceChildren(
    card("phase", s.phase, "phase"), card("stage", s.stage, "stage"),
    card("done / total", `${s.done} / ${total}` + (s.taken ? ` (+ ${s.taken} taken from warm start)` : ""), "done",
      [s.total_is_bound ? "at most: seed racing skips seeds of configurations that cannot win" : null,
       s.live ? "this study's own trainings, as its runner reports them (status.json)" : "this study's own trainings, as recorded: the ledger is written at most 30 s after a result"].filter(Boolean).join("; ")),
    card("running", liveCount(s), "running"),
    card("queued", liveCount(s, "queued"), "queued", "in trainer pods waiting for the cluster's capacity (unschedulable, held by a queue): no attempt is charged"),
    card("failed", String(s.failed), "failed"),
    card("runner", liveBadge(s, Date.now() / 1000), "live"),
    card("best val MAE", s.best_val === null ? "–" : fmt(s.best_val), "best_val"),
    card("best configuration", s.best_trial ? link(configHref(s.id, s.best_trial), s.best_trial) : "–", "best_trial"));
}

function configHref(sid, trial) {
  return `/config?id=${encodeURIComponent(sid)}&trial=${encodeURIComponent(trial)}`;
}

function finalTable(d) {
  const box = document.getElementById("final");
  const rows = d.final.rows;
  if (!rows.length) return;
  const th = d.final.thresholds;
  const cols = [
    { key: "rank", label: "rank", num: true },
    { key: "trial", label: "trial", cell: (r) => link(configHref(d.summary.id, r.trial), r.trial) },
    { key: "stage", label: "stage" },
    { key: "val_mae_mean", label: "val MAE mean", num: true },
    { key: "val_mae_std", label: "± std", num: true },
    { key: "test_mae_mean", label: "test MAE mean", num: true },
    { key: "seeds", label: "seeds", num: true },
  ];
  for (const l of d.labels) {
    const t = th[l] || {};
    const mark = (r) => (r[`${l}_pass`] === undefined ? "" : r[`${l}_pass`] ? " ✓" : " ✗");
    const limit = [t.max_mae ? `≤ ${t.max_mae}` : "", t.max_pct ? `≤ ${t.max_pct}%` : ""].filter(Boolean).join(", ");
    cols.push({ key: `${l}_mae`, label: `${l} MAE`, num: true, title: limit ? `threshold ${limit}` : "no threshold", cell: (r) => fmt(r[`${l}_mae`]) });
    cols.push({ key: `${l}_pct`, label: `${l} %${limit ? " (" + limit + ")" : ""}`, num: true, cell: (r) => el("span", { cls: r[`${l}_pass`] === false ? "bad" : r[`${l}_pass`] ? "good" : "" }, fmt(r[`${l}_pct`], 2) + mark(r)) });
  }
  cols.push({ key: "passes_all", label: "passes all", cell: (r) => el("span", { cls: r.passes_all ? "good" : "bad" }, r.passes_all ? "✓ yes" : "✗ no") });
  const table = el("table", { id: "final-table", cls: "grid" });
  box.replaceChildren(table);
  new Table(table).set(cols, rows);
}

function failuresTable(d) {
  const box = document.getElementById("failures");
  if (!d.failures.length) { box.replaceChildren(el("p", { cls: "muted" }, "no failed trainings")); return; }
  const table = el("table", { id: "failures-table", cls: "grid" });
  box.replaceChildren(table);
  new Table(table).set([
    { key: "count", label: "trainings", num: true }, { key: "reason", label: "reason" },
    { key: "trainings", label: "which", cell: (r) => r.trainings.join(", ") + (r.count > r.trainings.length ? ", …" : "") },
  ], d.failures);
}

function studyPage() {
  const sid = body.dataset.study;
  const shown = document.getElementById("shown");
  const table = new Table(document.getElementById("trainings"), {
    onShown: (n, matching, all) => { shown.textContent = `${matching} of ${all} trainings${n < matching ? ` (first ${n} shown)` : ""}`; },
  });
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => { table.filter = filter.value; table.render(); });
  poll(`/api/study?id=${encodeURIComponent(sid)}`, (data) => {
    const d = data.detail;
    if (!d) return;
    d.trainings = unpack(d.trainings);
    d.configurations = unpack(d.configurations);
    for (const r of d.trainings) r.config = configText(r, d.hyperparams);
    banner("warning", data.error ? `showing the study as read at ${new Date(data.read_at * 1000).toLocaleTimeString()}: ${data.error}` : "");
    if (data.error) banner("error", "");
    document.getElementById("title").textContent = d.summary.name;
    const parts = {};
    const timed = (name, f) => { const t = performance.now(); f(d); parts[name] = performance.now() - t; };
    timed("cards", (x) => { summaryCards(x.summary); progress(x); });
    timed("best_ms", bestSoFar);
    timed("depth_ms", byDepth);
    timed("seeds_ms", seedSpread);
    timed("final_ms", (x) => { finalTable(x); failuresTable(x); });
    const cols = [
      { key: "trial", label: "trial", cell: (r) => link(configHref(sid, r.trial), r.trial) },
      { key: "stage", label: "stage" }, { key: "seed", label: "seed", num: true },
      ...d.hyperparams.map((h) => ({ key: h, label: h, num: h !== "activation" && h !== "optimizer" && h !== "lr_schedule" })),
      { key: d.val, label: "val MAE", num: true }, { key: d.test, label: "test MAE", num: true },
      ...d.labels.map((l) => ({ key: `${l}_mae`, label: `${l} MAE`, num: true })),
      { key: "runtime_s", label: "runtime s", num: true, cell: (r) => fmt(r.runtime_s, 1) },
      { key: "status", label: "status" }, { key: "error", label: "error", cell: (r) => el("span", { cls: "err" }, r.error || "") },
    ];
    timed("table_ms", () => table.set(cols, d.trainings));
    document.getElementById("spec").textContent = d.spec;
    window.hpoParts = parts;
    parts.shown_at_ms = performance.now(); // since the page was opened
    // Last, after the rest is painted: Plotly draws it with WebGL, the slowest part.
    requestAnimationFrame(() => setTimeout(() => {
      const t = performance.now();
      parcoords(d);
      Object.assign(window.hpoTimings || {}, { parcoords_ms: performance.now() - t, all_drawn_at_ms: performance.now() });
    }, 0));
  });
}

// ----------------------------------------------------------------- one configuration

function configPage() {
  const sid = body.dataset.study, trial = body.dataset.trial;
  const table = new Table(document.getElementById("seeds"));
  poll(`/api/config?id=${encodeURIComponent(sid)}&trial=${encodeURIComponent(trial)}`, (data) => {
    const c = data.config;
    if (!c) return;
    const s = c.summary || {};
    document.getElementById("summary").replaceChildren(
      card("rank", fmt(s.rank), "rank"), card("stage", fmt(s.stage), "stage"),
      card("val MAE mean", fmt(s.val_mae_mean), "val_mae_mean"), card("± std", fmt(s.val_mae_std), "val_mae_std"),
      card("test MAE mean", fmt(s.test_mae_mean), "test_mae_mean"), card("seeds", `${fmt(s.seeds)} ok, ${fmt(s.failed)} failed`, "seeds"));
    document.getElementById("hyper").tBodies[0].replaceChildren(...Object.entries(c.hyperparams).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", { "data-key": k }, fmt(v, 6)))));
    const cols = [
      { key: "seed", label: "seed", num: true }, { key: "status", label: "status" },
      { key: c.val, label: "val MAE", num: true }, { key: c.test, label: "test MAE", num: true },
    ];
    for (const l of c.labels) {
      cols.push({ key: `${l}_mae`, label: `${l} MAE`, num: true });
      cols.push({ key: `${l}_pct`, label: `${l} %`, num: true, cell: (r) => fmt(r[`${l}_pct`], 2) });
    }
    cols.push({ key: "epochs", label: "epochs", num: true }, { key: "error", label: "error" });
    cols.push({ key: "artifacts", label: "artifacts", cell: (r) => el("span", { cls: "artifacts" }, ...r.artifacts.map((name) =>
      el("a", { cls: "artifact", download: "", href: `/artifact?id=${encodeURIComponent(sid)}&trial=${encodeURIComponent(trial)}&seed=${r.seed}&name=${encodeURIComponent(name)}` }, name))) });
    table.set(cols, c.seeds);
    document.getElementById("load-cli").textContent = c.load_cli;
    document.getElementById("load-api").textContent = c.load_api;
  });
}

({ studies: studiesPage, study: studyPage, config: configPage })[PAGE]();

// One job: its state while it runs, then its result — counts, the points in their top three principal
// components, the eigenvalue spectra, the discovery curve, a sortable table and downloads.

import { api, download } from "./api.js";
import { fill, fmtComplex, fmtNumber, fmtSeconds, fmtTime, h, shortId, showError, statusBadge } from "./dom.js";
import { follow, progressBar, updateProgress } from "./jobs.js";

const INDEX_COLORS = ["#1d2125", "#e08a00", "#d03b2f", "#8e3fb0", "#1f77b4", "#2a9d8f", "#b5651d"];
const TABLE_LIMIT = 2000;

export async function renderResult({ signal, view }, jobId) {
  let job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
  const models = await api("/v1/models", { signal });
  const model = models.find((m) => m.id === job.model_id);
  const badge = h("span", { id: "job-status" }, statusBadge(job.status));
  const bar = progressBar(job);
  bar.id = "job-progress";
  const cancel = h("button", { type: "button", onclick: () => api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }) }, "Cancel");
  const error = h("p", { class: "error", hidden: true, id: "job-error" });
  const body = h("div", { id: "result" });
  fill(view,
    h("h1", {}, "Job ", h("span", { class: "mono" }, shortId(job.id))),
    h("section", { class: "card" },
      h("dl", { class: "kv" },
        h("dt", {}, "Status"), h("dd", {}, badge, " ", bar, " ", cancel),
        h("dt", {}, "Model"), h("dd", { id: "job-model" }, model ? model.filename || model.id : job.model_id),
        h("dt", {}, "Method"), h("dd", { id: "job-method" }, job.options.method || "auto"),
        h("dt", {}, "Initial states"), h("dd", {}, `${job.n_initial_states}${model && model.n_states ? ` × ${model.n_states}` : ""}`),
        h("dt", {}, "Submitted"), h("dd", {}, fmtTime(job.created_at)),
        h("dt", {}, "Took"), h("dd", { id: "job-took" }, fmtSeconds(job.timings.total_s))),
      error),
    body);

  const show = (current) => {
    job = current;
    fill(badge, statusBadge(job.status));
    updateProgress(bar, job);
    cancel.hidden = !["queued", "running"].includes(job.status);
    view.querySelector("#job-took").textContent = fmtSeconds(job.timings.total_s);
    if (job.error) showError(error, { message: job.error.detail || job.error.title, code: job.error.code });
  };
  show(job);
  if (["queued", "running"].includes(job.status)) await follow(job, signal, show);
  if (job.status === "succeeded" && !signal.aborted) {
    const data = await api(`/web/jobs/${job.id}/view`, { signal });
    renderView(body, job, data);
  }
}

function renderView(body, job, data) {
  const counts = data.counts;
  const saddles = Object.entries(counts.saddles_by_index);
  const card = (key, label, value) =>
    h("div", { class: "count", dataset: { count: key } }, h("span", { class: "value" }, value ?? "–"), h("span", { class: "label" }, label));
  const tabs = ["3-D view", "Spectra", "Discovery", "Table"];
  const panels = {
    "3-D view": h("div", { class: "plot", id: "plot-3d" }),
    Spectra: h("div", { class: "plot", id: "plot-spectra" }),
    Discovery: h("div", { class: "plot short", id: "plot-discovery" }),
    Table: h("div", { class: "table-wrap", id: "points-table" }),
  };
  const drawn = new Set();
  const draw = {
    "3-D view": () => plot3d(panels["3-D view"], data),
    Spectra: () => plotSpectra(panels.Spectra, data),
    Discovery: () => plotDiscovery(panels.Discovery, data),
    Table: () => pointsTable(panels.Table, data),
  };
  const buttons = tabs.map((name) => h("button", { type: "button", role: "tab", dataset: { tab: name }, onclick: () => select(name) }, name));
  function select(name) {
    for (const button of buttons) button.setAttribute("aria-selected", String(button.dataset.tab === name));
    for (const [key, panel] of Object.entries(panels)) panel.hidden = key !== name;
    if (!drawn.has(name)) {
      drawn.add(name);
      draw[name]();
    } else if (name !== "Table") {
      window.Plotly.Plots.resize(panels[name]);
    }
  }
  const ran = data.info.method;
  const method = document.getElementById("job-method");
  if (method && ran && ran !== method.textContent) method.textContent = `${method.textContent} (ran ${ran})`;
  const warnings = (data.info.warnings || []).map((w) => h("p", { class: "error" }, w));
  if (data.info.partial) warnings.unshift(h("p", { class: "error" }, `Partial result: ${data.info.partial_reason || "the time limit stopped the search"}`));
  fill(body,
    h("div", { class: "counts", id: "counts" },
      card("fixed_points", "fixed points", counts.fixed_points),
      card("stable", "stable", counts.stable),
      saddles.map(([index, n]) => card(`saddle_${index}`, `saddles of index ${index}`, n)),
      card("non_isolated", "non-isolated", counts.non_isolated),
      card("slow_points", "slow points", counts.slow_points),
      card("certified", "certified", counts.certified)),
    warnings,
    h("div", { class: "toolbar" },
      h("div", { class: "tabs", role: "tablist" }, buttons),
      h("span", { class: "muted" }, `${data.n_points} points in ${data.n_states} dimensions (${data.dynamics})`),
      h("button", { type: "button", id: "download-npz", onclick: () => download(`/v1/jobs/${job.id}/result?format=npz`, `${job.id}.npz`) }, "Download .npz"),
      h("button", { type: "button", id: "download-json", onclick: () => download(`/v1/jobs/${job.id}/result?format=json`, `${job.id}.json`) }, "Download JSON")),
    Object.values(panels));
  select("3-D view");
}

function pointLabel(data, i) {
  const p = data.points;
  const lines = [`point ${i}`, `q = ${fmtNumber(p.q ? p.q[i] : null)}`];
  if (p.is_stable) lines.push(p.is_stable[i] ? "stable" : `unstable, index ${p.n_unstable ? p.n_unstable[i] : "?"}`);
  if (p.certified) lines.push(p.certified[i] ? "certified" : "not certified");
  if (p.is_nonisolated && p.is_nonisolated[i]) lines.push("possibly non-isolated");
  if (p.leading_eigvals) lines.push(`leading λ: ${p.leading_eigvals[i].map((z) => fmtComplex(z)).join(", ")}`);
  return lines.join("<br>");
}

function axisTitles(data) {
  return data.explained_variance.map((v, i) => (v === null ? `PC ${i + 1}` : `PC ${i + 1} (${(100 * v).toFixed(v < 0.1 ? 1 : 0)}%)`));
}

function plot3d(node, data) {
  const p = data.points;
  const groups = new Map(); // 0: stable, i: saddle index i (-1: stability not computed)
  for (let i = 0; i < data.n_points; i++) {
    const key = p.is_stable ? (p.is_stable[i] ? 0 : Math.max(1, p.n_unstable ? p.n_unstable[i] : 1)) : -1;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(i);
  }
  const traces = [...groups.keys()].sort((a, b) => a - b).map((key) => {
    const members = groups.get(key);
    return {
      type: "scatter3d", mode: "markers",
      name: key === 0 ? "stable" : key < 0 ? "fixed points" : `saddle, index ${key}`,
      meta: key === 0 ? "stable" : "unstable",
      x: members.map((i) => p.x[i]), y: members.map((i) => p.y[i]), z: members.map((i) => p.z[i]),
      hovertext: members.map((i) => pointLabel(data, i)), hoverinfo: "text",
      marker: { size: 5, color: key < 0 ? "#777" : INDEX_COLORS[Math.min(key, INDEX_COLORS.length - 1)] },
    };
  });
  if (data.modes && data.modes.point.length) {
    const line = { x: [], y: [], z: [] };
    data.modes.point.forEach((_, n) => {
      for (const axis of ["x", "y", "z"]) line[axis].push(...data.modes[axis][n], null);
    });
    traces.push({ type: "scatter3d", mode: "lines", name: "unstable modes", meta: "modes", hoverinfo: "skip",
      ...line, line: { color: "#d03b2f", width: 3 } });
  }
  if (data.slow_points && data.slow_points.x.length) {
    traces.push({ type: "scatter3d", mode: "markers", name: "slow points", meta: "slow",
      x: data.slow_points.x, y: data.slow_points.y, z: data.slow_points.z,
      hovertext: (data.slow_points.q || []).map((q) => `slow point<br>q = ${fmtNumber(q)}`), hoverinfo: "text",
      marker: { size: 3, color: "#9aa5b1" } });
  }
  const [tx, ty, tz] = axisTitles(data);
  window.Plotly.newPlot(node, traces, {
    margin: { l: 0, r: 0, t: 10, b: 0 }, legend: { x: 0, y: 1 },
    scene: { xaxis: { title: { text: tx } }, yaxis: { title: { text: ty } }, zaxis: { title: { text: tz } } },
  }, { responsive: true, displaylogo: false });
}

function plotSpectra(node, data) {
  const s = data.spectra;
  if (!s) {
    fill(node, h("p", { class: "muted" }, "The job did not decompose the Jacobians (do_decompose_jacobians=False)."));
    return;
  }
  const stable = { x: [], y: [] };
  const unstable = { x: [], y: [] };
  s.point.forEach((point, n) => {
    const target = data.points.is_stable && data.points.is_stable[point] ? stable : unstable;
    target.x.push(s.re[n]);
    target.y.push(s.im[n]);
  });
  const discrete = data.dynamics !== "continuous";
  const finite = [...s.re, ...s.im].filter((v) => v !== null).map(Math.abs);
  const reach = 1.1 * Math.max(1, ...finite);
  const boundary = discrete
    ? { type: "circle", x0: -1, y0: -1, x1: 1, y1: 1, line: { color: "#888", dash: "dash" } }
    : { type: "line", x0: 0, x1: 0, y0: -reach, y1: reach, line: { color: "#888", dash: "dash" } };
  const shown = s.per_point < s.of ? ` (leading ${s.per_point} of ${s.of} per point)` : "";
  window.Plotly.newPlot(node, [
    { type: "scattergl", mode: "markers", name: "at stable points", meta: "stable", ...stable, marker: { size: 5, color: "#1d2125", opacity: 0.6 } },
    { type: "scattergl", mode: "markers", name: "at unstable points", meta: "unstable", ...unstable, marker: { size: 5, color: "#d03b2f", opacity: 0.6 } },
  ], {
    title: { text: `Eigenvalues of the Jacobians against the ${discrete ? "unit circle" : "imaginary axis"}${shown}` },
    xaxis: { title: { text: "Re λ" }, range: [-reach, reach], zeroline: false },
    yaxis: { title: { text: "Im λ" }, range: [-reach, reach], scaleanchor: "x", zeroline: false },
    shapes: [boundary], margin: { t: 50 },
  }, { responsive: true, displaylogo: false });
}

function plotDiscovery(node, data) {
  const curve = data.discovery_curve;
  if (!curve) {
    fill(node, h("p", { class: "muted" }, "This result has no discovery curve."));
    return;
  }
  window.Plotly.newPlot(node, [{
    type: "scatter", mode: "lines+markers", x: curve.n_initial_states, y: curve.n_certified_roots, name: "certified roots",
  }], {
    title: { text: "Distinct certified points reached by the first N initial states" },
    xaxis: { title: { text: "initial states N" }, type: "log" },
    yaxis: { title: { text: "certified points" }, rangemode: "tozero" },
    margin: { t: 50 },
  }, { responsive: true, displaylogo: false });
}

function pointsTable(node, data) {
  const p = data.points;
  const rows = Array.from({ length: data.n_points }, (_, i) => i);
  const sortKeys = {
    q: (i) => (p.q ? p.q[i] ?? Infinity : 0),
    index: (i) => (p.n_unstable ? p.n_unstable[i] : 0),
  };
  let sortBy = "q";
  let ascending = true;
  const tbody = h("tbody");
  const header = (key, title) => h("th", { class: "sortable num", dataset: { sort: key }, onclick: () => {
    ascending = sortBy === key ? !ascending : true;
    sortBy = key;
    render();
  } }, title);
  const note = data.n_points > TABLE_LIMIT ? h("p", { class: "muted" }, `The first ${TABLE_LIMIT} of ${data.n_points} points in this order; the downloads hold all.`) : null;
  // Rows are built once; sorting moves them (rebuilding 2,000 rows on each click is slow).
  const built = new Map();
  const rowOf = (i) => {
    if (!built.has(i)) {
      built.set(i, h("tr", { dataset: { point: i } },
        h("td", { class: "num" }, i),
        h("td", { class: "num" }, fmtNumber(p.q ? p.q[i] : null)),
        h("td", { class: "num" }, p.n_unstable ? p.n_unstable[i] : "–"),
        h("td", {}, p.is_stable ? (p.is_stable[i] ? "yes" : "no") : "–"),
        h("td", {}, p.certified ? (p.certified[i] ? "yes" : "no") : "–"),
        h("td", {}, p.is_nonisolated ? (p.is_nonisolated[i] ? "yes" : "") : "–"),
        h("td", {}, p.leading_eigvals ? p.leading_eigvals[i].map((z) => fmtComplex(z)).join(", ") : "–"),
        h("td", { class: "num" }, [p.x[i], p.y[i], p.z[i]].map((v) => fmtNumber(v)).join(", "))));
    }
    return built.get(i);
  };
  function render() {
    const key = sortKeys[sortBy];
    rows.sort((a, b) => (key(a) - key(b)) * (ascending ? 1 : -1) || a - b);
    tbody.replaceChildren(...rows.slice(0, TABLE_LIMIT).map(rowOf));
  }
  fill(node, note, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), header("q", "q"), header("index", "index"),
      h("th", {}, "stable"), h("th", {}, "certified"), h("th", {}, "non-isolated"), h("th", {}, "leading λ"),
      h("th", { class: "num" }, "PC 1, 2, 3"))),
    tbody));
  render();
}

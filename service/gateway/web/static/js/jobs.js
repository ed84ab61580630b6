// The tenant's jobs, newest first, with live progress; for an admin, the cluster at a glance.

import { api, events } from "./api.js";
import { fill, fmtSeconds, fmtTime, h, shortId, showError, statusBadge } from "./dom.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 4000;
// Browsers keep ~6 connections per server; leave most of them to the page's other requests.
const MAX_STREAMS = 3;

const ACTIVE = new Set(["queued", "running"]);

/** A <progress> for ``job``: converged fraction while it runs, full once it succeeded. */
export function progressBar(job) {
  const bar = h("progress", { max: 1, value: 0, dataset: { jobProgress: job.id } });
  updateProgress(bar, job);
  return bar;
}

export function updateProgress(bar, job) {
  const fraction = job.status === "succeeded" ? 1 : job.progress ? job.progress.fraction_converged : 0;
  bar.value = fraction;
  bar.title = job.progress ? `${job.progress.phase}: ${job.progress.n_converged} of ${job.progress.n_total} converged`
    : job.status;
}

/** Follow ``job``'s event stream, calling ``onJob`` with each new state, until it ends or ``signal`` aborts. */
export async function follow(job, signal, onJob) {
  try {
    for await (const { event, data } of events(`/v1/jobs/${encodeURIComponent(job.id)}/events`, signal)) {
      if (data) onJob(data);
      if (event === "end") return;
    }
  } catch (error) {
    if (!signal.aborted) throw error;
  }
}

export async function renderJobs({ session, signal, view }) {
  const filter = h("select", { "aria-label": "status filter", id: "status-filter" },
    h("option", { value: "" }, "all statuses"), STATUSES.map((s) => h("option", { value: s }, s)));
  const error = h("p", { class: "error", hidden: true });
  const body = h("tbody");
  const cluster = h("section", { class: "card", hidden: true, id: "cluster" });
  fill(view,
    h("h1", {}, "Jobs"),
    cluster,
    h("div", { class: "toolbar" }, filter, h("a", { href: "#/new" }, "New job")),
    error,
    h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "Status", "Method", "Model", "States", "Submitted", "Took", "Progress", ""]
        .map((title) => h("th", {}, title)))),
      body));

  const models = new Map();
  const streams = new Map(); // job id -> AbortController
  const rows = new Map(); // job id -> {row, job}

  async function refresh() {
    const query = filter.value ? `?status=${filter.value}` : "";
    const [jobs, modelList] = await Promise.all([api(`/v1/jobs${query}`, { signal }), api("/v1/models", { signal })]);
    for (const model of modelList) models.set(model.id, model);
    error.hidden = true;
    rows.clear();
    fill(body, jobs.map((job) => row(job)));
    if (!jobs.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, filter.value ? `No ${filter.value} jobs.` : "No jobs yet.")));
    for (const [id, controller] of streams) {
      if (!rows.has(id) || !ACTIVE.has(rows.get(id).job.status)) {
        controller.abort();
        streams.delete(id);
      }
    }
    for (const job of jobs.filter((j) => ACTIVE.has(j.status))) {
      if (streams.size >= MAX_STREAMS || streams.has(job.id)) continue;
      const controller = new AbortController();
      signal.addEventListener("abort", () => controller.abort());
      streams.set(job.id, controller);
      follow(job, controller.signal, update).catch(() => {}).finally(() => streams.delete(job.id));
    }
  }

  function row(job) {
    const model = models.get(job.model_id);
    const dims = model && model.n_states ? ` × ${model.n_states}` : "";
    const cancel = h("button", { type: "button", onclick: () => act(api(`/v1/jobs/${job.id}/cancel`, { method: "POST" })) },
      "Cancel");
    const remove = h("button", { type: "button", class: "danger",
      onclick: () => act(api(`/v1/jobs/${job.id}`, { method: "DELETE" })) }, "Delete");
    cancel.hidden = !ACTIVE.has(job.status);
    const tr = h("tr", { dataset: { jobId: job.id } },
      h("td", { class: "mono" }, h("a", { href: `#/jobs/${job.id}` }, shortId(job.id))),
      h("td", { class: "status-cell" }, statusBadge(job.status)),
      h("td", {}, job.options.method || "auto"),
      h("td", {}, model ? model.filename || shortId(model.id) : shortId(job.model_id)),
      h("td", { class: "num" }, `${job.n_initial_states}${dims}`),
      h("td", {}, fmtTime(job.created_at)),
      h("td", { class: "num took" }, fmtSeconds(job.timings.total_s)),
      h("td", {}, progressBar(job)),
      h("td", {}, cancel, " ", remove));
    rows.set(job.id, { row: tr, job });
    return tr;
  }

  function update(job) {
    const entry = rows.get(job.id);
    if (!entry) return;
    entry.job = job;
    const { row: tr } = entry;
    fill(tr.querySelector(".status-cell"), statusBadge(job.status));
    tr.querySelector(".took").textContent = fmtSeconds(job.timings.total_s);
    updateProgress(tr.querySelector("progress"), job);
    tr.querySelector("button").hidden = !ACTIVE.has(job.status);
  }

  async function act(request) {
    try {
      await request;
      await refresh();
    } catch (e) {
      showError(error, e);
    }
  }

  filter.addEventListener("change", () => refresh().catch((e) => showError(error, e)));
  await refresh();
  if (session.is_admin) await showCluster(cluster, signal);
  const timer = setInterval(() => {
    refresh().catch((e) => signal.aborted || showError(error, e));
    if (session.is_admin) showCluster(cluster, signal).catch(() => {});
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

async function showCluster(section, signal) {
  const cluster = await api("/web/cluster", { signal });
  const byWorker = new Map();
  for (const job of cluster.running) {
    if (!byWorker.has(job.worker)) byWorker.set(job.worker, []);
    byWorker.get(job.worker).push(job);
  }
  section.hidden = false;
  fill(section,
    h("h2", {}, "Cluster"),
    h("dl", { class: "kv" },
      h("dt", {}, "Queue depth"), h("dd", { id: "queue-depth" }, String(cluster.queue_depth)),
      h("dt", {}, "Jobs by state"),
      h("dd", {}, STATUSES.map((s) => `${s} ${cluster.jobs_by_state[s] || 0}`).join(" · ")),
      h("dt", {}, "Workers answering"),
      h("dd", { id: "workers" }, cluster.workers.length ? cluster.workers.join(", ") : "none")),
    h("h2", {}, "Running now"),
    cluster.running.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Worker process", "Job", "Tenant", "Converged"].map((t) => h("th", {}, t)))),
        h("tbody", {}, [...byWorker].flatMap(([worker, jobs]) => jobs.map((job) => h("tr", {},
          h("td", { class: "mono" }, worker || ""),
          h("td", { class: "mono" }, h("a", { href: `#/jobs/${job.id}` }, shortId(job.id))),
          h("td", {}, job.tenant),
          h("td", {}, job.progress ? `${job.progress.n_converged} / ${job.progress.n_total}` : "starting"))))))
      : h("p", { class: "muted" }, "No job is running."));
}


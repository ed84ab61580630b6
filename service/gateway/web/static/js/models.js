// The tenant's models: upload by drag and drop (or a file picker) with format and size hints, and
// their validation status, error text, list and delete.

import { api } from "./api.js";
import { fill, fmtBytes, fmtTime, h, shortId, showError, statusBadge } from "./dom.js";

const POLL_MS = 1000;

export async function renderModels({ session, signal, view }) {
  const picker = h("input", { type: "file", id: "model-file", class: "hidden" });
  const drop = h("div", { class: "drop", id: "drop-zone", tabindex: 0 },
    "Drop a model file here (TorchScript .pt, ONNX .onnx, SavedModel as .zip), or ",
    h("button", { type: "button", onclick: () => picker.click() }, "choose a file"),
    h("div", { class: "muted" }, `Largest upload: ${fmtBytes(session.max_body_bytes)}.`));
  const format = h("select", { name: "format" },
    h("option", { value: "" }, "detect"), ["torchscript", "onnx", "savedmodel"].map((f) => h("option", { value: f }, f)));
  const nStates = h("input", { name: "n_states", type: "number", min: 1, placeholder: "from the model" });
  const nInputs = h("input", { name: "n_inputs", type: "number", min: 0, placeholder: "from the model" });
  const dynamics = h("select", { name: "dynamics" }, ["discrete", "continuous"].map((d) => h("option", { value: d }, d)));
  const status = h("p", { class: "muted", id: "upload-status" });
  const error = h("p", { class: "error", hidden: true, id: "upload-error" });
  const body = h("tbody");
  fill(view,
    h("h1", {}, "Models"),
    h("section", { class: "card" },
      h("h2", {}, "Upload"),
      drop, picker,
      h("div", {},
        h("label", {}, "Format", format),
        h("label", {}, "States (hint)", nStates),
        h("label", {}, "Inputs (hint)", nInputs),
        h("label", {}, "Dynamics", dynamics)),
      status, error),
    h("table", { id: "models" },
      h("thead", {}, h("tr", {}, ["File", "Id", "Status", "Format", "States", "Inputs", "Size", "Uploaded", "Error", ""]
        .map((t) => h("th", {}, t)))),
      body));

  let timer = null;
  async function refresh() {
    const models = await api("/v1/models", { signal });
    fill(body, models.map(row));
    if (!models.length) body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No models yet.")));
    clearTimeout(timer);
    if (models.some((m) => m.status === "validating") && !signal.aborted) {
      timer = setTimeout(() => refresh().catch((e) => signal.aborted || showError(error, e)), POLL_MS);
    }
  }
  signal.addEventListener("abort", () => clearTimeout(timer));

  function row(model) {
    const detail = model.error ? model.error.detail || model.error.title || model.error.code : "";
    return h("tr", { dataset: { modelId: model.id } },
      h("td", { class: "filename" }, model.filename || ""),
      h("td", { class: "mono" }, shortId(model.id)),
      h("td", {}, statusBadge(model.status)),
      h("td", {}, model.format || ""),
      h("td", { class: "num" }, model.n_states ?? ""),
      h("td", { class: "num" }, model.n_inputs ?? ""),
      h("td", { class: "num" }, fmtBytes(model.size_bytes)),
      h("td", {}, fmtTime(model.created_at)),
      h("td", { class: "error model-error" }, detail),
      h("td", {}, h("button", { type: "button", class: "danger", onclick: () => remove(model) }, "Delete")));
  }

  async function remove(model) {
    try {
      await api(`/v1/models/${model.id}`, { method: "DELETE" });
      await refresh();
    } catch (e) {
      showError(error, e);
    }
  }

  async function upload(file) {
    error.hidden = true;
    if (file.size > session.max_body_bytes) {
      showError(error, new Error(`${file.name} is ${fmtBytes(file.size)}; the server takes at most ${fmtBytes(session.max_body_bytes)}`));
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    for (const [name, input] of [["format", format], ["n_states", nStates], ["n_inputs", nInputs], ["dynamics", dynamics]]) {
      if (input.value !== "") form.append(name, input.value);
    }
    status.textContent = `Uploading ${file.name}…`;
    try {
      const model = await api("/v1/models", { method: "POST", body: form });
      status.textContent = `Uploaded ${file.name}: ${model.status}.`;
    } catch (e) {
      status.textContent = "";
      showError(error, e);
    }
    await refresh();
  }

  picker.addEventListener("change", () => picker.files[0] && upload(picker.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) upload(file);
  });
  await refresh();
}

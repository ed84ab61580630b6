// A new job: a ready model, initial states (an .npz or .npy file, or sampled around zero), the
// common options; sent as multipart with an .npz, as the API takes it.

import { api } from "./api.js";
import { fill, h, shortId, showError } from "./dom.js";
import { gaussian, npyFloat32, npyShape, zipStored } from "./npz.js";

const METHODS = ["auto", "lm", "lm_krylov", "newton_krylov", "anderson", "adam"];

export async function renderNewJob({ session, view }) {
  const models = (await api("/v1/models")).filter((m) => m.status === "ready");
  if (!models.length) {
    fill(view, h("h1", {}, "New job"),
      h("p", {}, "No model is ready yet: ", h("a", { href: "#/models" }, "upload one"), " first."));
    return;
  }
  const model = h("select", { id: "job-model", name: "model" },
    models.map((m) => h("option", { value: m.id }, `${m.filename || shortId(m.id)} — ${m.n_states ?? "?"} states, ${m.n_inputs ?? "?"} inputs`)));
  const sample = h("input", { type: "radio", name: "source", value: "sample", checked: true, id: "source-sample" });
  const fromFile = h("input", { type: "radio", name: "source", value: "file", id: "source-file" });
  const count = h("input", { type: "number", id: "n-samples", min: 1, max: session.max_initial_states, value: 1024 });
  const scale = h("input", { type: "number", id: "sample-scale", min: 0, step: "any", value: 0.5 });
  const nStates = h("input", { type: "number", id: "sample-n-states", min: 1 });
  const statesFile = h("input", { type: "file", id: "states-file", accept: ".npz,.npy" });
  const inputsFile = h("input", { type: "file", id: "inputs-file", accept: ".npy" });
  const method = h("select", { id: "opt-method" }, METHODS.map((m) => h("option", { value: m }, m)));
  const tolQ = h("input", { id: "opt-tol-q", type: "number", step: "any", min: 0, value: "1e-12" });
  const maxIters = h("input", { id: "opt-max-iters", type: "number", min: 1, value: 5000 });
  const qSlow = h("input", { id: "opt-q-slow", type: "number", step: "any", min: 0, placeholder: "off" });
  const error = h("p", { class: "error", hidden: true, id: "submit-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit-job" }, "Submit");

  const selected = () => models.find((m) => m.id === model.value);
  const syncStates = () => {
    const m = selected();
    nStates.value = m.n_states ?? "";
    nStates.disabled = m.n_states !== null;
  };
  model.addEventListener("change", syncStates);
  syncStates();

  const form = h("form", { class: "card", id: "new-job" },
    h("label", {}, "Model", model),
    h("fieldset", {}, h("legend", {}, "Initial states"),
      h("label", { class: "inline" }, sample, "Sample from a Gaussian around zero"),
      h("div", {}, h("label", {}, "How many", count), h("label", {}, "Standard deviation", scale),
        h("label", {}, "States per sample", nStates)),
      h("label", { class: "inline" }, fromFile, "From a file"),
      h("div", {}, h("label", {}, ".npz with initial_states (n, n_states) and optionally inputs, or an .npy of the states",
        statesFile))),
    h("fieldset", {}, h("legend", {}, "Inputs"),
      h("label", {}, "An .npy of shape (1 | n, n_inputs); zeros when none (an .npz brings its own)", inputsFile)),
    h("fieldset", {}, h("legend", {}, "Options"),
      h("label", {}, "Method", method), h("label", {}, "tol_q", tolQ), h("label", {}, "max_iters", maxIters),
      h("label", {}, "q_slow (slow points)", qSlow)),
    submit, error);
  fill(view, h("h1", {}, "New job"), form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const body = new FormData();
      body.append("model_id", model.value);
      body.append("options", JSON.stringify(options()));
      body.append("arrays", await arrays(), "arrays.npz");
      const job = await api("/v1/jobs", { method: "POST", body });
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      showError(error, e);
    } finally {
      submit.disabled = false;
    }
  });

  function options() {
    const out = { method: method.value };
    if (tolQ.value !== "") out.tol_q = Number(tolQ.value);
    if (maxIters.value !== "") out.max_iters = Number(maxIters.value);
    if (qSlow.value !== "") out.q_slow = Number(qSlow.value);
    return out;
  }

  async function arrays() {
    const members = {};
    if (fromFile.checked) {
      const file = statesFile.files[0];
      if (!file) throw new Error("choose a file of initial states");
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (file.name.toLowerCase().endsWith(".npz")) {
        if (inputsFile.files[0]) throw new Error("an .npz brings its own inputs; leave the inputs file empty");
        return new Blob([bytes]);
      }
      const shape = npyShape(bytes);
      if (shape.length !== 2) throw new Error(`the states must be (n, n_states); the file holds shape (${shape.join(", ")})`);
      members["initial_states.npy"] = bytes;
    } else {
      const n = Number(count.value);
      const d = Number(nStates.value);
      if (!(n >= 1 && d >= 1)) throw new Error("give how many states to sample and how many states each has");
      members["initial_states.npy"] = npyFloat32(gaussian(n * d, Number(scale.value)), [n, d]);
    }
    if (inputsFile.files[0]) {
      const bytes = new Uint8Array(await inputsFile.files[0].arrayBuffer());
      npyShape(bytes);
      members["inputs.npy"] = bytes;
    }
    return zipStored(members);
  }
}

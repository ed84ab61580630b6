// The page's entry: who is signed in, and which view the address (#/jobs, #/models, #/new, #/jobs/<id>) shows.

import { api, apiKey } from "./api.js";
import { fill, h, showError } from "./dom.js";
import { renderJobs } from "./jobs.js";
import { renderModels } from "./models.js";
import { renderNewJob } from "./new-job.js";
import { renderResult } from "./result.js";

const view = document.getElementById("view");
const signIn = document.getElementById("sign-in");
const signInError = document.getElementById("sign-in-error");
const signOut = document.getElementById("sign-out");
const whoami = document.getElementById("whoami");

let session = null;
let leaving = null; // an AbortController that ends the current view's streams and timers

/** Ask who the tab's key belongs to; returns the server's answer (signed_in false with the reason). */
async function loadSession() {
  const answer = await api("/web/session");
  session = answer.signed_in ? answer : null;
  whoami.textContent = session ? `${session.tenant} (${session.role})${session.keys_required ? "" : ", no keys"}` : "";
  signOut.hidden = !(session && session.keys_required);
  return answer;
}

function showSignIn(message) {
  leaving?.abort();
  view.replaceChildren();
  signIn.hidden = false;
  signInError.hidden = !message;
  signInError.textContent = message || "";
  document.getElementById("api-key").focus();
}

async function route() {
  leaving?.abort();
  leaving = new AbortController();
  const signal = leaving.signal;
  if (!session) return showSignIn();
  signIn.hidden = true;
  const path = location.hash.replace(/^#/, "") || "/jobs";
  const [, section, id] = path.split("/");
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  const context = { session, signal, view };
  try {
    if (section === "jobs" && id) await renderResult(context, decodeURIComponent(id));
    else if (section === "models") await renderModels(context);
    else if (section === "new") await renderNewJob(context);
    else await renderJobs(context);
  } catch (error) {
    if (signal.aborted || error.status === 401) return;
    const box = h("p", { class: "error" });
    showError(box, error);
    fill(view, box);
  }
}

document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  apiKey.set(input.value.trim());
  input.value = "";
  try {
    const answer = await loadSession();
    if (answer.signed_in) {
      signIn.hidden = true;
      route();
      return;
    }
    showSignIn(`That key was not accepted: ${answer.detail}`);
  } catch (error) {
    showSignIn(error.message);
  }
  apiKey.clear();
});

signOut.addEventListener("click", () => {
  apiKey.clear();
  session = null;
  whoami.textContent = "";
  signOut.hidden = true;
  showSignIn();
});

window.addEventListener("fpf:unauthenticated", () => {
  if (!session) return;
  apiKey.clear();
  session = null;
  showSignIn("The server no longer accepts this key; sign in again.");
});

window.addEventListener("hashchange", route);

loadSession().then(route, (error) => {
  const notice = document.getElementById("notice");
  showError(notice, error);
});

// Calls to the gateway with the tab's API key, problem documents as errors, and server-sent events
// read through fetch() (EventSource cannot send the Authorization header).

const KEY = "fpf.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An RFC 9457 problem document answered by the gateway. */
export class ProblemError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "internal";
    this.problem = problem;
  }
}

function headersWithKey(extra) {
  const headers = new Headers(extra || {});
  const key = apiKey.get();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

/** fetch() with the key; resolves to the parsed JSON (null for 204), or the Response when raw. */
export async function api(path, { method = "GET", body, headers, signal, raw = false } = {}) {
  const response = await fetch(path, {
    method, body, signal, headers: headersWithKey(headers), credentials: "omit", cache: "no-store",
  });
  if (!response.ok) {
    let problem;
    try {
      problem = await response.json();
    } catch {
      problem = { detail: `${response.status} ${response.statusText}` };
    }
    const error = new ProblemError(response.status, problem);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("fpf:unauthenticated", { detail: error }));
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** The events of a server-sent event stream, as {event, data} with data parsed as JSON. */
export async function* events(path, signal) {
  const response = await api(path, { raw: true, signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Save a response body as a file, asking with the key (a plain link could not send it). */
export async function download(path, filename) {
  const response = await api(path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

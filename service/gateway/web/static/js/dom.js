// Building DOM nodes. Every string becomes a text node or an attribute value, never HTML.

/** Create <tag> with properties ({class, dataset, on*, other attributes}) and children (nodes or text). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of ``node``. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function statusBadge(status) {
  return h("span", { class: `status ${status}`, dataset: { status } }, status);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 1 ? `${(seconds * 1000).toFixed(0)} ms` : `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

export function fmtNumber(x, digits = 3) {
  if (x === null || x === undefined) return "–";
  if (x === 0) return "0";
  const magnitude = Math.abs(x);
  return magnitude < 1e-3 || magnitude >= 1e5 ? x.toExponential(digits - 1) : x.toPrecision(digits);
}

export function fmtComplex([re, im], digits = 3) {
  if (re === null) return "NaN";
  if (!im) return fmtNumber(re, digits);
  return `${fmtNumber(re, digits)} ${im < 0 ? "−" : "+"} ${fmtNumber(Math.abs(im), digits)}i`;
}

export function shortId(id) {
  return id.slice(0, 12);
}

/** Show ``error`` (a ProblemError or any Error) in ``node`` as text. */
export function showError(node, error) {
  node.hidden = false;
  node.textContent = error.code ? `${error.message} (${error.code})` : error.message;
}

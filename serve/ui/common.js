// What every arena-serve page shares: the API key kept for this tab, calls to the gateway with
// errors in the page, and elements built with text only (model output is never HTML).

const KEYS = { client: "arena-serve.client-key", admin: "arena-serve.admin-key" };

/** An error the gateway answered with (status, its message and code), or could not answer. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The key of this kind kept in the tab's session storage ("" when none). */
export function storedKey(kind) {
  return sessionStorage.getItem(KEYS[kind]) || "";
}

function keep(kind, value) {
  if (value) sessionStorage.setItem(KEYS[kind], value);
  else sessionStorage.removeItem(KEYS[kind]);
}

/** An element with attributes and children; strings become text nodes, never markup. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show `text` in the page's message region (`kind`: "error" or "info"; "" clears it). */
export function say(text, kind = "error") {
  const box = document.getElementById("message");
  box.className = `message ${kind}`;
  box.textContent = text;
}

/** Words for an error, with what to do about a refused key. */
export function explain(error, kind) {
  if (!(error instanceof ApiError)) return `Something went wrong in this page: ${error.message}`;
  if (error.status === 401 || error.status === 403) {
    const which = kind === "admin" ? "an admin key" : "a client key";
    return `The gateway refused the key (${error.status}): ${error.message}. Enter ${which} above.`;
  }
  if (error.status === 0) return error.message;
  return `The gateway answered ${error.status}: ${error.message}`;
}

/** Call the gateway with the stored key of `kind`; the JSON answer, or an ApiError. */
export async function api(path, { method = "GET", body, kind = "client", headers = {} } = {}) {
  const response = await send(path, { method, body, kind, headers });
  return response.json();
}

/** The raw response of a call that succeeded (for streams); an ApiError otherwise. */
export async function send(path, { method = "GET", body, kind = "client", headers = {} } = {}) {
  const key = storedKey(kind);
  const all = { ...headers };
  if (key) all.Authorization = `Bearer ${key}`;
  if (body !== undefined) all["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (failure) {
    throw new ApiError(0, `The gateway did not answer (${failure.message}).`, "unreachable");
  }
  if (!response.ok) {
    let message = response.statusText || "request failed";
    let code;
    try {
      const problem = await response.json();
      message = problem?.error?.message || message;
      code = problem?.error?.code;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, message, code);
  }
  return response;
}

/** Wire the page's key form: save, forget, and call `changed` after either. */
export function keyForm(kind, changed) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  input.value = storedKey(kind);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    keep(kind, input.value.trim());
    say("");
    changed();
  });
  document.getElementById("forget-key").addEventListener("click", () => {
    input.value = "";
    keep(kind, "");
    changed();
  });
}

/** A number for reading: `digits` significant places, "–" for none. */
export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toPrecision(digits);
}

/** "value [low, high]" of an interval. */
export function interval(i, digits = 3) {
  if (!i || i.value === null || i.value === undefined) return "–";
  return `${fmt(i.value, digits)} [${fmt(i.low, digits)}, ${fmt(i.high, digits)}]`;
}

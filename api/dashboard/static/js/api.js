// The dashboard's only door to Juice: the public /v1 API with the signed-in key as a Bearer token.
const KEY = "juice.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
}

export function signIn(key, remember) {
  signOutLocally();
  (remember ? localStorage : sessionStorage).setItem(KEY, key);
}

export function signOutLocally() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export function requireSignIn() {
  if (apiKey()) return true;
  const next = location.pathname + location.search;
  location.replace("/sign-in?next=" + encodeURIComponent(next));
  return false;
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || null;
    this.param = error?.param || null;
  }
}

async function raise(resp) {
  let error = null;
  try { error = (await resp.json()).error; } catch { /* not JSON */ }
  if (resp.status === 401) {
    signOutLocally();
    requireSignIn();
  }
  throw new ApiError(resp.status, error);
}

export async function api(path, { method = "GET", body, form, key, signal } = {}) {
  const headers = { Authorization: "Bearer " + (key || apiKey()) };
  let payload;
  if (form) payload = form;  // the browser sets the multipart boundary
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const resp = await fetch("/v1" + path, { method, headers, body: payload, signal });
  if (!resp.ok) await raise(resp);
  return resp.json();
}

// Server-Sent Events over fetch: EventSource cannot send an Authorization header. Reconnects with
// Last-Event-ID after a dropped connection and stops for good on the server's `end` event.
export function followEvents(path, { onEvent, onState, lastEventId = null }) {
  const controller = new AbortController();
  let stopped = false;
  (async () => {
    let delay = 1000;
    while (!stopped) {
      try {
        const headers = { Authorization: "Bearer " + apiKey(), Accept: "text/event-stream" };
        if (lastEventId !== null) headers["Last-Event-ID"] = String(lastEventId);
        const resp = await fetch("/v1" + path, { headers, signal: controller.signal });
        if (!resp.ok) { await raise(resp); }
        onState?.("live");
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const ev = parseBlock(block);
            if (ev.retry) delay = ev.retry;
            if (ev.id !== null) lastEventId = ev.id;
            if (ev.data === null) continue;
            onEvent(ev.event, JSON.parse(ev.data));
            if (ev.event === "end") { stopped = true; onState?.("ended"); return; }
          }
        }
      } catch (err) {
        if (stopped || err.name === "AbortError") return;
        if (err instanceof ApiError && err.status < 500) { onState?.("error"); return; }
      }
      onState?.("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
    }
  })();
  return () => { stopped = true; controller.abort(); };
}

// A streamed chat completion (POST /v1/chat/completions, stream: true): onDelta(text) per content chunk.
// Resolves with the finish reason; an `error` event or a non-2xx answer rejects with an ApiError.
export async function streamChat(body, onDelta, signal) {
  const headers = { Authorization: "Bearer " + apiKey(), "Content-Type": "application/json" };
  const resp = await fetch("/v1/chat/completions", {
    method: "POST", headers, body: JSON.stringify({ ...body, stream: true }), signal,
  });
  if (!resp.ok) await raise(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return finish;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const ev = parseBlock(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (ev.data === null || ev.data === "[DONE]") continue;
      const chunk = JSON.parse(ev.data);
      if (chunk.error) throw new ApiError(500, chunk.error);
      for (const choice of chunk.choices || []) {
        if (choice.delta?.content) onDelta(choice.delta.content);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
}

export function parseBlock(block) {
  const ev = { event: "message", data: null, id: null, retry: null };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    else if (field === "data") ev.data = ev.data === null ? value : ev.data + "\n" + value;
    else if (field === "id") ev.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) ev.retry = Number(value);
  }
  return ev;
}

// ---- small shared page helpers ----

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function flash(message, kind = "error") {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = "flash " + kind;
  box.hidden = !message;
}

export function fmtTime(unix) {
  if (!unix) return "—";
  const d = new Date(unix * 1000);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                       second: "2-digit" });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) return "—";
  seconds = Math.round(seconds);
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

export function fmtNumber(v, digits = 4) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}

export function fmtBytes(n) {
  if (!n && n !== 0) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

// Method aliases, as api/methods.py's ALIASES (tests/api/test_methods.py pins the two together).
export const METHOD_ALIASES = {"supervised": "sft"};

export function methodOf(job) {
  const t = job.method?.type || "sft";
  return METHOD_ALIASES[t] || t;
}

export function hyperparametersOf(job) {
  const t = job.method?.type;
  return (t && job.method[t]?.hyperparameters) || job.hyperparameters || {};
}

export function progressOf(job) {
  const p = job.progress || {};
  const step = p.step || 0, total = p.total_steps || 0;
  if (job.status === "succeeded") return { step: total || step, total: total || step, fraction: 1 };
  return { step, total, fraction: total ? Math.min(step / total, 1) : 0 };
}

export function durationOf(job, now = Date.now() / 1000) {
  if (!job.started_at) return null;
  return (job.finished_at || now) - job.started_at;
}

export function statusBadge(status, cancelRequested = false, pauseRequested = false) {
  const pending = FINAL.has(status) ? "" : cancelRequested ? " (cancelling)" : pauseRequested ? " (pausing)" : "";
  const text = status + pending;
  return el("span", { class: "badge " + status, "data-status": status }, text);
}

// Every page: show who is signed in and wire the sign-out button.
export function initChrome() {
  const page = document.body.dataset.page;
  document.querySelector(`[data-nav="${page}"]`)?.classList.add("active");
  const key = apiKey();
  const out = document.getElementById("sign-out");
  if (key) {
    document.getElementById("whoami").textContent = key.slice(0, 12) + "…";
    out.hidden = false;
    out.addEventListener("click", () => { signOutLocally(); location.assign("/sign-in"); });
  }
}

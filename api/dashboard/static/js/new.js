// New job: upload or pick files, choose model and method; the hyperparameter form is generated from
// GET /v1/fine_tuning/methods, so its defaults and bounds are the API's own.
import { api, el, flash, initChrome, requireSignIn } from "./api.js";

const state = { methods: [], method: null, entered: {}, files: new Map() };

function fileLabel(f) {
  const what = [f.format, f.examples !== undefined ? `${f.examples} examples` : null].filter(Boolean).join(", ");
  return `${f.filename}${what ? ` (${what})` : ""} · ${f.id}`;
}

async function loadFiles() {
  const page = await api("/files?limit=100");
  state.files = new Map(page.data.map((f) => [f.id, f]));
  for (const id of ["training-file", "validation-file"]) {
    const select = document.getElementById(id);
    const keep = select.value;
    [...select.options].slice(1).forEach((o) => o.remove());
    select.append(...page.data.filter((f) => f.purpose === "fine-tune")
      .map((f) => el("option", { value: f.id }, fileLabel(f))));
    select.value = keep;
  }
  showTrainingHint();
}

// Each method trains on some file formats only (its `training_file_formats`, from the methods endpoint):
// SFT, IRFT and RFT on demonstrations, DPO on preference pairs. Any format may be the validation file.
function trainingFileProblem() {
  const file = state.files.get(document.getElementById("training-file").value);
  const formats = state.method?.training_file_formats;
  if (!file || !formats || formats.includes(file.format)) return null;
  const fits = state.methods.filter((m) => m.training_file_formats.includes(file.format)).map((m) => m.id);
  return `${file.filename} is a ${file.format} file, but ${state.method.id} trains on ` +
    `${formats.join(" or ")} files` + (fits.length ? `; pick ${fits.join(" or ")} to train on it.` : ".");
}

function showTrainingHint() {
  const hint = document.getElementById("training-hint");
  const problem = trainingFileProblem();
  hint.textContent = problem || "";
  hint.hidden = !problem;
}

// Show the rejected line itself, read from the user's own copy of the file.
async function offendingLine(file, message) {
  const m = /line (\d+)/.exec(message);
  if (!m) return null;
  const n = Number(m[1]);
  const text = await file.slice(0, 64 * 1024 * 1024).text();
  const line = text.split("\n")[n - 1];
  return line === undefined ? null : { n, line: line.length > 400 ? line.slice(0, 400) + "…" : line };
}

function bindUpload(inputId, selectId, errorId) {
  const input = document.getElementById(inputId);
  const error = document.getElementById(errorId);
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    error.hidden = true;
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    input.disabled = true;
    try {
      const created = await api("/files", { method: "POST", form });
      await loadFiles();
      document.getElementById(selectId).value = created.id;
      showTrainingHint();
    } catch (err) {
      const bad = await offendingLine(file, err.message).catch(() => null);
      error.replaceChildren(el("div", {}, `${file.name} was rejected: ${err.message}`),
        err.code ? el("div", { class: "muted" }, `code: ${err.code}`) : null,
        bad ? el("pre", { class: "bad-line" }, el("span", { class: "line-no" }, `${bad.n} │ `), bad.line) : null);
      error.hidden = false;
    } finally {
      input.disabled = false;
      input.value = "";
    }
  });
}

async function loadModels() {
  const page = await api("/models");
  const select = document.getElementById("model");
  const base = page.data.filter((m) => m.owned_by === "juice");
  const tuned = page.data.filter((m) => m.owned_by !== "juice");
  select.replaceChildren(
    el("optgroup", { label: "Base models" }, ...base.map((m) => el("option", { value: m.id }, m.id))),
    tuned.length ? el("optgroup", { label: "Your fine-tuned models" },
                      ...tuned.map((m) => el("option", { value: m.id }, m.id))) : null);
  if (!page.data.length) flash("No base models are installed: run `juice models import-gguf` or set JUICE_MODEL_ROOTS.");
}

function bounds(hp) {
  const lo = hp.minimum !== null && hp.minimum !== undefined ? `${hp.minimum} ${hp.exclusive_minimum ? "<" : "≤"} ` : "";
  const hi = hp.maximum !== null && hp.maximum !== undefined ? ` ${hp.exclusive_maximum ? "<" : "≤"} ${hp.maximum}` : "";
  return lo || hi ? `${lo}x${hi}` : "";
}

function fieldFor(hp) {
  const id = "hp-" + hp.name.replace(/\./g, "-");
  const prior = state.entered[hp.name];
  let input;
  if (hp.type === "boolean") {
    input = el("input", { id, type: "checkbox", checked: prior ?? hp.default === true });
  } else if (hp.enum) {
    input = el("select", { id }, ...hp.enum.map((v) => el("option", { value: v, selected: (prior ?? hp.default) === v }, v)));
  } else {
    const placeholder = hp.default === null || hp.default === undefined ? "none" : String(hp.default);
    input = el("input", { id, type: "text", placeholder, value: prior ?? "", spellcheck: "false",
                          inputmode: hp.type === "integer" || hp.type === "number" ? "decimal" : null });
  }
  input.dataset.name = hp.name;
  // Remembered across method switches, so a value typed for one method carries to the next.
  input.addEventListener("input", () => { state.entered[hp.name] = input.type === "checkbox" ? input.checked : input.value; });
  const hint = [hp.description, bounds(hp), hp.auto ? "accepts auto" : ""].filter(Boolean).join(" · ");
  return el("div", { class: "hp", "data-field": hp.name },
    el("label", { for: id }, hp.name), input,
    el("small", { class: "muted" }, `default ${JSON.stringify(hp.default)}${hint ? " · " + hint : ""}`),
    el("small", { class: "field-error", hidden: true }));
}

function renderMethod(id) {
  state.method = state.methods.find((m) => m.id === id);
  document.getElementById("method-description").textContent =
    `${state.method.description} Trains on ${state.method.training_file_formats.join(" or ")} files.`;
  document.getElementById("hyperparameters").replaceChildren(...state.method.hyperparameters.map(fieldFor));
  // The reinforcement method's reward is a grader, given as OpenAI's JSON.
  document.getElementById("grader-box").hidden = state.method.id !== "reinforcement";
  showTrainingHint();
}

// The grader's JSON, or null (with the reason shown) when it does not parse; the API checks the rest.
function collectGrader() {
  const problem = document.getElementById("grader-error");
  problem.hidden = true;
  try {
    return JSON.parse(document.getElementById("grader").value);
  } catch (err) {
    problem.textContent = `The grader is not valid JSON: ${err.message}`;
    problem.hidden = false;
    return null;
  }
}

async function loadMethods() {
  const page = await api("/fine_tuning/methods");
  state.methods = page.data;
  document.getElementById("methods").replaceChildren(...page.data.map((m, i) => el("label", { class: "inline" },
    el("input", { type: "radio", name: "method", value: m.id, checked: i === 0,
                  onchange: () => renderMethod(m.id) }), " " + m.id)));
  renderMethod(page.data[0].id);
}

// Check one value against its descriptor; returns [value, error].
function parse(hp, raw) {
  if (hp.type === "boolean") return [raw, null];
  if (hp.enum) return [raw, null];
  const text = String(raw).trim();
  if (hp.auto && text === "auto") return ["auto", null];
  if (hp.type === "string") return [text, null];
  if (hp.type === "string_list") {
    if (text === "all-linear") return [text, null];
    const items = text.split(",").map((s) => s.trim()).filter(Boolean);
    return items.length ? [items, null] : [null, "give module names separated by commas, or all-linear"];
  }
  const v = Number(text);
  if (!isFinite(v) || text === "") return [null, `not a number${hp.auto ? " (or auto)" : ""}`];
  if (hp.type === "integer" && !Number.isInteger(v)) return [null, "must be a whole number"];
  if (hp.minimum !== null && hp.minimum !== undefined && (hp.exclusive_minimum ? v <= hp.minimum : v < hp.minimum)) {
    return [null, `must be ${hp.exclusive_minimum ? ">" : "≥"} ${hp.minimum}`];
  }
  if (hp.maximum !== null && hp.maximum !== undefined && (hp.exclusive_maximum ? v >= hp.maximum : v > hp.maximum)) {
    return [null, `must be ${hp.exclusive_maximum ? "<" : "≤"} ${hp.maximum}`];
  }
  return [v, null];
}

function setPath(obj, dotted, value) {
  const parts = dotted.split(".");
  let node = obj;
  for (const p of parts.slice(0, -1)) node = node[p] ||= {};
  node[parts[parts.length - 1]] = value;
}

function markField(name, message) {
  const box = document.querySelector(`.hp[data-field="${CSS.escape(name)}"]`);
  if (!box) return false;
  const err = box.querySelector(".field-error");
  err.textContent = message;
  err.hidden = false;
  box.classList.add("invalid");
  box.scrollIntoView({ block: "center" });
  return true;
}

function collectHyperparameters() {
  const out = {};
  let ok = true;
  document.querySelectorAll(".hp").forEach((box) => {
    box.classList.remove("invalid");
    box.querySelector(".field-error").hidden = true;
  });
  for (const hp of state.method.hyperparameters) {
    const input = document.querySelector(`[data-name="${CSS.escape(hp.name)}"]`);
    const raw = input.type === "checkbox" ? input.checked : input.value;
    const isDefault = input.type === "checkbox" || input.tagName === "SELECT" ? raw === hp.default : raw.trim() === "";
    if (isDefault) continue;
    const [value, error] = parse(hp, raw);
    if (error) { markField(hp.name, error); ok = false; continue; }
    setPath(out, hp.name, value);
  }
  return ok ? out : null;
}

async function submit(e) {
  e.preventDefault();
  const error = document.getElementById("submit-error");
  error.hidden = true;
  const hyperparameters = collectHyperparameters();
  if (!hyperparameters) return;
  const body = {
    model: document.getElementById("model").value,
    training_file: document.getElementById("training-file").value,
    method: { type: state.method.id, [state.method.id]: { hyperparameters } },
  };
  if (state.method.id === "reinforcement") {
    const grader = collectGrader();
    if (!grader) return;
    body.method.reinforcement.grader = grader;
  }
  const validation = document.getElementById("validation-file").value;
  if (validation) body.validation_file = validation;
  const suffix = document.getElementById("suffix").value.trim();
  if (suffix) body.suffix = suffix;
  const seed = document.getElementById("seed").value.trim();
  if (seed) body.seed = Number.isInteger(Number(seed)) ? Number(seed) : seed;  // the API explains a bad seed
  if (!body.training_file) {
    error.textContent = "Choose or upload a training file.";
    error.hidden = false;
    return;
  }
  const problem = trainingFileProblem();
  if (problem) {
    error.textContent = problem;
    error.hidden = false;
    return;
  }
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const job = await api("/fine_tuning/jobs", { method: "POST", body });
    location.assign(`/jobs/${job.id}`);
  } catch (err) {
    const hpParam = /hyperparameters\.(.+)$/.exec(err.param || "");
    if (!(hpParam && markField(hpParam[1], err.message))) {
      error.textContent = err.message + (err.param ? ` (field: ${err.param})` : "");
      error.hidden = false;
    }
  } finally {
    button.disabled = false;
  }
}

async function main() {
  if (!requireSignIn()) return;
  initChrome();
  bindUpload("training-upload", "training-file", "training-error");
  bindUpload("validation-upload", "validation-file", "validation-error");
  document.getElementById("training-file").addEventListener("change", showTrainingHint);
  document.getElementById("new-job").addEventListener("submit", submit);
  const results = await Promise.allSettled([loadFiles(), loadModels(), loadMethods()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) flash(`Could not load the form: ${failed.reason.message}`);
  document.body.dataset.ready = "1";
}

main();

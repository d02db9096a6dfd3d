// Job page: facts, live charts over SSE, events, generated samples, checkpoints, "Try it" (base
// model and a checkpoint side by side), config, pause, resume, cancel.
import {
  api, durationOf, el, FINAL, flash, fmtBytes, fmtDuration, fmtNumber, fmtTime, followEvents,
  hyperparametersOf, initChrome, methodOf, progressOf, requireSignIn, statusBadge, streamChat,
} from "./api.js";
import {
  baseLayout, bindChartControls, chartLayoutFor, COLORS, PLOT_CONFIG, plotlyLoaded, seriesTraces,
} from "./charts.js";

const jobId = document.body.dataset.jobId;
const MAX_POINTS = 2000;
// A live series grows point by point; past this many raw points, fetch a fresh downsampled copy.
const REFETCH_AT = 4 * MAX_POINTS;

const state = { job: null, series: {}, lastSeq: 0, charts: new Map(), stopStream: null, streamEnded: false };
let controls;

async function loadSeries() {
  const page = await api(`/fine_tuning/jobs/${jobId}/metrics/series?max_points=${MAX_POINTS}`);
  state.series = page.series;
  state.lastSeq = page.last_seq;
}

function renderCharts() {
  if (!window.Plotly) return;  // a control touched before the bundle arrived; main() draws once it has
  const names = Object.keys(state.series).filter((n) => state.series[n].step.length);
  const layout = chartLayoutFor(names);
  const box = document.getElementById("charts");
  document.getElementById("charts-empty").hidden = names.length > 0;
  const { smoothing, logY, xMode } = controls();
  for (const chart of layout) {
    let div = state.charts.get(chart.key);
    if (!div) {
      div = el("div", { class: "chart", "data-chart": chart.key, "data-metrics": chart.names.join(",") });
      box.append(div);
      state.charts.set(chart.key, div);
    }
    const traces = chart.names.flatMap((name, i) => {
      const s = state.series[name];
      const xs = xMode === "time" ? s.time.map((t) => t * 1000) : s.step;
      return seriesTraces(name, xs, s.value, COLORS[i % COLORS.length], smoothing, { meta: name });
    });
    const lay = baseLayout({ title: chart.title, logY, xMode, showLegend: chart.names.length > 1 });
    Plotly.react(div, traces, lay, PLOT_CONFIG);
  }
  // Keep the DOM in the page's order when a new chart appears mid-run.
  layout.forEach((c) => box.append(state.charts.get(c.key)));
}

let redrawQueued = false;
function scheduleRedraw() {
  if (redrawQueued) return;
  redrawQueued = true;
  setTimeout(() => { redrawQueued = false; renderCharts(); }, 400);
}

function onMetric(p) {
  state.lastSeq = Math.max(state.lastSeq, Number(p.seq));
  let refetch = false;
  for (const [name, value] of Object.entries(p.values)) {
    if (!isFinite(value)) continue;
    const s = (state.series[name] ||= { step: [], time: [], value: [], total_points: 0, downsampled: false });
    const n = s.step.length;
    if (n && s.step[n - 1] >= p.step) {
      // A resumed attempt re-logs steps after the last checkpoint: replace, don't duplicate.
      const at = s.step.findIndex((x) => x >= p.step);
      s.step.length = s.time.length = s.value.length = at;
    }
    s.step.push(p.step); s.time.push(p.created_at); s.value.push(value);
    s.total_points += 1;
    if (s.step.length > REFETCH_AT) refetch = true;
  }
  const job = state.job;
  if (job && job.progress && p.step > (job.progress.step || 0)) {  // progress moves with the stream
    job.progress.step = p.step;
    renderProgress(job);
  }
  if (refetch) restartStream(); else scheduleRedraw();
}

function restartStream() {
  state.stopStream?.();
  state.stopStream = null;
  loadSeries().then(() => { renderCharts(); startStream(); });
}

function startStream() {
  if (state.stopStream || (state.job && FINAL.has(state.job.status) && state.streamEnded)) return;
  const live = document.getElementById("live-indicator");
  state.stopStream = followEvents(`/fine_tuning/jobs/${jobId}/metrics/stream?after_seq=${state.lastSeq}`, {
    lastEventId: state.lastSeq,
    onEvent: (type, data) => {
      if (type === "metric") onMetric(data);
      else if (type === "status" && data.status !== state.job?.status) refreshJob();
      else if (type === "end") { state.streamEnded = true; refreshJob(); }
    },
    onState: (s) => {
      live.textContent = { live: "● live", reconnecting: "reconnecting…", ended: "", error: "" }[s] ?? "";
      live.className = s === "live" ? "live" : "muted";
      if (s === "ended" || s === "error") state.stopStream = null;
    },
  });
}

// Which checkpoint the fine-tuned model is: the one select_checkpoint chose (selected_step), else the final one.
function modelStepLabel(job) {
  return job.selected_step == null ? "final model" : `model (step ${job.selected_step})`;
}

function fineTunedModelLabel(job) {
  if (!job.fine_tuned_model) return "—";
  return job.selected_step == null ? job.fine_tuned_model : `${job.fine_tuned_model} (step ${job.selected_step})`;
}

function renderJob(job) {
  state.job = job;
  const status = document.getElementById("job-status");
  status.replaceWith(Object.assign(statusBadge(job.status, job.cancel_requested, job.pause_requested), { id: "job-status" }));
  document.title = `${job.id} · ${job.status} · Juice`;
  const hp = hyperparametersOf(job);
  const facts = [
    ["Method", methodOf(job) + (hp.outer_iterations ? ` (T=${hp.outer_iterations})` : "")],
    ["Base model", job.model], ["Fine-tuned model", fineTunedModelLabel(job)],
    ["Training file", job.training_file], ["Validation file", job.validation_file || "—"],
    ["Created", fmtTime(job.created_at)], ["Started", fmtTime(job.started_at)],
    ["Finished", fmtTime(job.finished_at)], ["Duration", fmtDuration(durationOf(job))],
    ["Trained tokens", job.trained_tokens ?? "—"], ["Attempt", job.attempt],
  ];
  document.getElementById("job-facts").replaceChildren(
    ...facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));
  renderProgress(job);
  const error = document.getElementById("job-error");
  error.hidden = !job.error;
  if (job.error) error.textContent = `${job.error.code}: ${job.error.message}` +
    (job.error.param ? ` (param: ${job.error.param})` : "");
  const cancellable = !FINAL.has(job.status) && !job.cancel_requested;
  document.getElementById("cancel").hidden = !cancellable;
  if (!cancellable) document.getElementById("cancel-confirm").hidden = true;
  // OpenAI's pause/resume: pause a queued or running job (it checkpoints and frees its worker),
  // resume a paused one (or withdraw a pause still pending).
  document.getElementById("pause").hidden =
    !["queued", "running"].includes(job.status) || job.cancel_requested || job.pause_requested;
  document.getElementById("resume").hidden = !(job.status === "paused" || job.pause_requested);
  document.getElementById("config").textContent = JSON.stringify({
    model: job.model, method: job.method, training_file: job.training_file,
    validation_file: job.validation_file, seed: job.seed, suffix: job.suffix, metadata: job.metadata,
  }, null, 2);
}

function renderProgress(job) {
  const p = progressOf(job);
  document.getElementById("job-progress-bar").style.width = `${(p.fraction * 100).toFixed(1)}%`;
  let text = p.total ? `step ${p.step} / ${p.total} (${(p.fraction * 100).toFixed(0)}%)` : "";
  if (job.status === "running" && job.estimated_finish) {
    text += ` · ETA ${fmtDuration(job.estimated_finish - Date.now() / 1000)}`;
  }
  document.getElementById("job-progress-text").textContent = text;
}

async function refreshJob() {
  try {
    const job = await api(`/fine_tuning/jobs/${jobId}`);
    renderJob(job);
    refreshScores(job).catch((err) => flash(`Could not load the demonstration scores: ${err.message}`));
  } catch (err) {
    flash(err.status === 404 ? `No job ${jobId} for this API key.` : `Could not load the job: ${err.message}`);
    throw err;
  }
}

async function refreshEvents() {
  const page = await api(`/fine_tuning/jobs/${jobId}/events?limit=200`);
  const list = document.getElementById("events");
  list.replaceChildren(...page.data.map((e) => el("li", { class: "level-" + e.level },
    el("time", {}, fmtTime(e.created_at)), " ", el("span", { class: "msg" }, e.message),
    // Samples have their own card; other data (a failure's traceback, data stats) folds out in place.
    e.data && !e.data.samples ? el("details", {}, el("summary", {}, "details"),
      el("pre", { class: "event-data" }, typeof e.data.traceback === "string" ? e.data.traceback
                                                                            : JSON.stringify(e.data, null, 2))) : null)));
  renderSamples(page.data.filter((e) => Array.isArray(e.data?.samples)));
}

function renderSamples(events) {
  const card = document.getElementById("samples-card");
  card.hidden = events.length === 0;
  const byIteration = [...events].sort((a, b) => (a.data.outer_iteration || 0) - (b.data.outer_iteration || 0));
  document.getElementById("samples").replaceChildren(...byIteration.map((e) => el("details",
    { open: e === byIteration[byIteration.length - 1] },
    el("summary", {}, e.message),
    ...e.data.samples.map((s) => el("div", { class: "sample" },
      el("div", { class: "prompt" }, el("b", {}, "prompt "), s.prompt ?? ""),
      el("div", { class: "generated" }, el("b", {}, "generated "), s.generated ?? ""))))));
}

// A reward-learning job's training lines that its learned reward rates lowest (docs/methods.md §10).
const SCORED_METHODS = new Set(["rft", "irft", "dpo", "iql"]);
const SCORE_KINDS = {
  reward_model: "the reward model's score",
  implicit_reward: "the implicit reward β·log(π/π₀)",
  implicit_reward_margin: "the implicit reward margin, chosen minus rejected",
  implied_reward: "the implied reward Σ Q − γV",
};

function lastText(messages, role) {
  const m = [...(messages || [])].reverse().find((x) => x.role === role);
  return typeof m?.content === "string" ? m.content : JSON.stringify(m?.content ?? "");
}

// (prompt, response) of a training line in any accepted shape; the response is what was scored.
function lineText(ex) {
  if (!ex) return ["(the training file was deleted)", ""];
  if (ex.messages) return [lastText(ex.messages, "user"), lastText(ex.messages, "assistant")];
  if (ex.input) return [lastText(ex.input.messages, "user"),
    `${lastText(ex.preferred_output, "assistant")}  ≻  ${lastText(ex.non_preferred_output, "assistant")}`];
  if ("chosen" in ex) return [String(ex.prompt ?? ""), `${ex.chosen}  ≻  ${ex.rejected}`];
  return [String(ex.prompt ?? ""), String(ex.completion ?? "")];
}

let scoresShown = false;
async function refreshScores(job) {
  if (scoresShown || job.status !== "succeeded" || !SCORED_METHODS.has(job.method?.type)) return;
  scoresShown = true;
  let page;
  try {
    page = await api(`/fine_tuning/jobs/${jobId}/demonstration_scores?limit=10`);
  } catch (err) {
    if (err.status === 404) return;  // the scores file was deleted: nothing to show
    throw err;
  }
  if (!page.data.length) return;
  document.getElementById("scores-card").hidden = false;
  document.getElementById("scores-note").textContent =
    `Scored by ${SCORE_KINDS[page.data[0].kind] ?? page.data[0].kind}: the lowest look least like the rest of ` +
    "the training file. All of them: the job's demonstration_scores.jsonl result file.";
  document.querySelector("#scores tbody").replaceChildren(...page.data.map((s) => {
    const [prompt, response] = lineText(s.example);
    return el("tr", { "data-line": s.line },
      el("td", { class: "num" }, s.rank), el("td", { class: "num" }, s.line),
      el("td", { class: "num" }, fmtNumber(s.score)), el("td", { class: "num" }, fmtNumber(s.score_per_token)),
      el("td", { class: "num" }, fmtNumber(s.log_likelihood_per_token)),
      el("td", { class: "text" }, prompt), el("td", { class: "text" }, response));
  }));
}

async function refreshCheckpoints() {
  const page = await api(`/fine_tuning/jobs/${jobId}/checkpoints?limit=100`);
  renderTryModels(page.data.filter((c) => c.kind === "model"));
  document.getElementById("checkpoints-empty").hidden = page.data.length > 0;
  document.querySelector("#checkpoints tbody").replaceChildren(...page.data.map((c) => el("tr",
    { "data-checkpoint": c.id },
    el("td", {}, c.step_number), el("td", {}, c.kind), el("td", {}, fmtTime(c.created_at)),
    el("td", { class: "num" }, fmtBytes(c.size_bytes)),
    el("td", { class: "num" }, fmtNumber(c.metrics.train_loss)),
    el("td", {}, el("button", { class: "download", title: c.fine_tuned_model_checkpoint,
                                onclick: () => download(c) }, "Download")))));
}

async function download(ckpt) {
  // A short-lived signed link: the browser streams the tar straight to disk, no blob in memory.
  try {
    const link = await api(`/fine_tuning/jobs/${jobId}/checkpoints/${ckpt.id}/link`, { method: "POST", body: {} });
    location.assign(link.url);
  } catch (err) {
    flash(`Download failed: ${err.message}`);
  }
}

// "Try it": the model names chat completions take for this job's checkpoints, newest first.
function renderTryModels(checkpoints) {
  const select = document.getElementById("try-model");
  const names = [...checkpoints].sort((a, b) => b.step_number - a.step_number)
    .map((c) => [c.fine_tuned_model_checkpoint, `step ${c.step_number}`]);
  if (state.job?.fine_tuned_model) names.unshift([state.job.fine_tuned_model, modelStepLabel(state.job)]);
  const wanted = select.value;
  if ([...select.options].map((o) => o.value).join() === names.map(([n]) => n).join()) return;
  select.replaceChildren(...names.map(([name, label]) => el("option", { value: name, title: name }, label)));
  if (names.some(([n]) => n === wanted)) select.value = wanted;
  document.getElementById("try-send").disabled = names.length === 0;
  document.getElementById("try-note").textContent = names.length ? "" : "No checkpoint yet.";
}

function bindTryIt() {
  const send = document.getElementById("try-send");
  send.disabled = true;
  send.addEventListener("click", async () => {
    const text = document.getElementById("try-prompt").value.trim();
    if (!text) { flash("Write a message first."); return; }
    const common = {
      messages: [{ role: "user", content: text }],
      max_tokens: Number(document.getElementById("try-max-tokens").value) || 64,
      temperature: Number(document.getElementById("try-temperature").value) || 0,
    };
    const tuned = document.getElementById("try-model").value;
    document.getElementById("try-base-name").textContent = state.job.model;
    document.getElementById("try-tuned-name").textContent = tuned;
    send.disabled = true;
    document.getElementById("try-note").textContent = "answering…";
    const one = async (model, box) => {
      const out = document.getElementById(box);
      out.textContent = "";
      try {
        const finish = await streamChat({ ...common, model }, (delta) => { out.textContent += delta; });
        out.dataset.finish = finish || "";
      } catch (err) {
        out.textContent = `error: ${err.message}`;
        out.dataset.finish = "error";
      }
    };
    // one after the other: the inference server decodes one reply at a time anyway
    await one(state.job.model, "try-base");
    await one(tuned, "try-tuned");
    document.getElementById("try-note").textContent = "";
    send.disabled = false;
  });
}

function bindCancel() {
  const cancel = document.getElementById("cancel");
  const confirm = document.getElementById("cancel-confirm");
  let timer;
  cancel.addEventListener("click", () => {
    cancel.hidden = true; confirm.hidden = false;
    timer = setTimeout(() => { confirm.hidden = true; cancel.hidden = FINAL.has(state.job.status); }, 6000);
  });
  confirm.addEventListener("click", async () => {
    clearTimeout(timer);
    confirm.disabled = true;
    try {
      renderJob(await api(`/fine_tuning/jobs/${jobId}/cancel`, { method: "POST" }));
      flash("Cancellation requested: the worker stops within seconds.", "info");
    } catch (err) {
      flash(`Cancel failed: ${err.message}`);
    } finally {
      confirm.disabled = false; confirm.hidden = true;
    }
  });
}

function bindPauseResume() {
  for (const [id, verb, done] of [
    ["pause", "pause", "Pause requested: the job checkpoints at the next step and frees its worker."],
    ["resume", "resume", "Resumed: the job is queued and continues from its checkpoint."],
  ]) {
    const button = document.getElementById(id);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        renderJob(await api(`/fine_tuning/jobs/${jobId}/${verb}`, { method: "POST" }));
        flash(done, "info");
      } catch (err) {
        flash(`${id[0].toUpperCase() + id.slice(1)} failed: ${err.message}`);
      } finally {
        button.disabled = false;
      }
    });
  }
}

async function pollLoop() {
  // Job facts, events and checkpoints change slowly: poll them; metrics come over the stream.
  for (;;) {
    await new Promise((r) => setTimeout(r, 2000));
    const wasFinal = FINAL.has(state.job.status);
    await Promise.allSettled([refreshJob(), refreshEvents(), refreshCheckpoints()]);
    if (wasFinal) return;  // one last refresh after the job finished
  }
}

async function main() {
  if (!requireSignIn()) return;
  initChrome();
  controls = bindChartControls(() => renderCharts());
  bindCancel();
  bindPauseResume();
  bindTryIt();
  await Promise.all([refreshJob(), loadSeries(), plotlyLoaded()]);
  renderCharts();
  document.body.dataset.readyAt = String(Math.round(performance.now()));  // ms since navigation start
  document.body.dataset.ready = "1";  // charts drawn and controls wired: the page is interactive
  startStream();
  await Promise.allSettled([refreshEvents(), refreshCheckpoints()]);
  pollLoop();
}

main().catch((err) => { if (err.status !== 404) flash(err.message); });

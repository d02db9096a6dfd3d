// Compare page: one metric of several jobs overlaid, and their configurations side by side.
import { api, el, FINAL, flash, hyperparametersOf, initChrome, methodOf, requireSignIn } from "./api.js";
import { baseLayout, bindChartControls, COLORS, PLOT_CONFIG, plotlyLoaded, seriesTraces } from "./charts.js";

const MAX_POINTS = 2000;
const state = { ids: [], jobs: new Map(), series: new Map() };
let controls;

function chosenFromUrl() {
  const raw = new URLSearchParams(location.search).get("jobs") || "";
  return [...new Set(raw.split(",").map((s) => s.trim()).filter(Boolean))];
}

// The URL names the jobs and the metric, so a comparison can be bookmarked or shared.
function syncUrl() {
  const q = new URLSearchParams();
  if (state.ids.length) q.set("jobs", state.ids.join(","));
  const metric = document.getElementById("metric").value;
  if (metric) q.set("metric", metric);
  history.replaceState(null, "", q.toString() ? `/compare?${q.toString().replace(/%2C/g, ",")}` : "/compare");
}

async function load(id) {
  const [job, series] = await Promise.all([
    api(`/fine_tuning/jobs/${id}`),
    api(`/fine_tuning/jobs/${id}/metrics/series?max_points=${MAX_POINTS}`),
  ]);
  state.jobs.set(id, job);
  state.series.set(id, series.series);
}

function label(job) {
  return `${job.id.slice(0, 14)}… ${methodOf(job)}${job.suffix ? " " + job.suffix : ""}`;
}

function renderMetricChoices() {
  const select = document.getElementById("metric");
  const names = new Set();
  for (const s of state.series.values()) Object.keys(s).forEach((n) => names.add(n));
  const current = select.value || new URLSearchParams(location.search).get("metric") || "train/loss";
  const sorted = [...names].sort((a, b) => (a === "train/loss" ? -1 : b === "train/loss" ? 1 : a.localeCompare(b)));
  select.replaceChildren(...sorted.map((n) => el("option", { value: n, selected: n === current }, n)));
  if (!names.has(current) && sorted.length) select.value = sorted[0];
}

function renderChart() {
  if (!window.Plotly) return;  // main() draws once the bundle has arrived
  const metric = document.getElementById("metric").value;
  const div = document.getElementById("compare-chart");
  document.getElementById("compare-empty").hidden = state.ids.length >= 2;
  const { smoothing, logY, xMode } = controls();
  const traces = [];
  state.ids.forEach((id, i) => {
    const s = state.series.get(id)?.[metric];
    const job = state.jobs.get(id);
    if (!s || !job) return;
    // Wall-clock times of different jobs don't line up; elapsed seconds since each job's first point do.
    const t0 = s.time[0] || 0;
    const xs = xMode === "time" ? s.time.map((t) => t - t0) : s.step;
    traces.push(...seriesTraces(label(job), xs, s.value, COLORS[i % COLORS.length], smoothing,
                                { meta: id }));
  });
  const layout = baseLayout({ title: metric || "", logY, xMode: xMode === "time" ? "elapsed" : "step",
                              height: 420, showLegend: true });
  layout.xaxis.title = { text: xMode === "time" ? "seconds since the first point" : "step" };
  div.dataset.jobs = String(new Set(traces.map((t) => t.meta)).size);
  Plotly.react(div, traces, layout, PLOT_CONFIG);
}

function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj ?? {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out[key] = Array.isArray(v) ? v.join(", ") : v;
  }
  return out;
}

function configOf(job) {
  return flatten({ model: job.model, method: methodOf(job), training_file: job.training_file,
                   validation_file: job.validation_file, seed: job.seed, suffix: job.suffix,
                   hyperparameters: hyperparametersOf(job) });
}

function renderDiff() {
  const jobs = state.ids.map((id) => state.jobs.get(id)).filter(Boolean);
  const configs = jobs.map(configOf);
  const keys = [...new Set(configs.flatMap((c) => Object.keys(c)))].sort((a, b) =>
    (a.startsWith("hyperparameters.") - b.startsWith("hyperparameters.")) || a.localeCompare(b));
  const onlyDiff = document.getElementById("only-diff").checked;
  const table = document.getElementById("config-diff");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "setting"),
    ...jobs.map((j, i) => el("th", {}, el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }),
                          el("a", { href: `/jobs/${j.id}` }, label(j))))));
  const rows = keys.map((k) => {
    const values = configs.map((c) => (k in c ? c[k] : undefined));
    const differs = new Set(values.map((v) => JSON.stringify(v ?? null))).size > 1;
    return { k, values, differs };
  }).filter((r) => !onlyDiff || r.differs);
  table.tBodies[0].replaceChildren(...rows.map((r) => el("tr", { class: r.differs ? "differs" : "", "data-key": r.k },
    el("th", {}, r.k.replace(/^hyperparameters\./, "")),
    ...r.values.map((v) => el("td", {}, v === undefined ? "—" : String(v))))));
}

function renderChips() {
  document.getElementById("chosen").replaceChildren(...state.ids.map((id, i) => {
    const job = state.jobs.get(id);
    return el("span", { class: "chip", "data-job": id },
      el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }),
      el("a", { href: `/jobs/${id}` }, job ? label(job) : id), job ? ` · ${job.status}` : "",
      el("button", { class: "link", "aria-label": "remove " + id, onclick: () => remove(id) }, "×"));
  }));
}

function renderAll() {
  renderChips();
  renderMetricChoices();
  renderChart();
  renderDiff();
}

function remove(id) {
  state.ids = state.ids.filter((x) => x !== id);
  syncUrl();
  renderAll();
}

async function add(id) {
  if (!id || state.ids.includes(id)) return;
  try {
    await load(id);
    state.ids.push(id);
    syncUrl();
    renderAll();
  } catch (err) {
    flash(`Could not load ${id}: ${err.message}`);
  }
}

async function fillPicker() {
  const page = await api("/fine_tuning/jobs?limit=100");
  const select = document.getElementById("add-job");
  select.append(...page.data.map((j) => el("option", { value: j.id },
    `${j.id} · ${methodOf(j)} · ${j.status}${j.suffix ? " · " + j.suffix : ""}`)));
  select.addEventListener("change", () => { add(select.value); select.value = ""; });
}

async function refreshLive() {
  const live = state.ids.filter((id) => !FINAL.has(state.jobs.get(id)?.status));
  if (!live.length) return;
  await Promise.allSettled(live.map(load));
  renderAll();
}

async function main() {
  if (!requireSignIn()) return;
  initChrome();
  controls = bindChartControls(renderChart);
  document.getElementById("metric").addEventListener("change", () => { syncUrl(); renderChart(); });
  document.getElementById("only-diff").addEventListener("change", renderDiff);
  const wanted = chosenFromUrl();
  const [results] = await Promise.all([Promise.allSettled(wanted.map(load)), plotlyLoaded()]);
  results.forEach((r, i) => { if (r.status === "rejected") flash(`Could not load ${wanted[i]}: ${r.reason.message}`); });
  state.ids = wanted.filter((id) => state.jobs.has(id));
  renderAll();
  syncUrl();
  document.body.dataset.ready = "1";
  fillPicker().catch((err) => flash(err.message));
  setInterval(() => { if (!document.hidden) refreshLive(); }, 5000);
}

main();

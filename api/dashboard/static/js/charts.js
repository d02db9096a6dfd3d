// Chart helpers shared by the job and compare pages (Plotly is loaded as a global by the page).

// Plotly's bundle loads async (it is large); pages fetch their data meanwhile and await this to draw.
export function plotlyLoaded() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  const script = document.getElementById("plotly-js");
  return new Promise((resolve, reject) => {
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error("could not load the charting library")));
  });
}

// Series that read better side by side share one chart; everything else gets its own.
const GROUPS = [
  { title: "log-probs: real vs generated", names: ["logps/real", "logps/generated"] },
  { title: "rewards: real vs generated", names: ["rewards/real", "rewards/generated"] },
  { title: "rewards: demos vs samples", names: ["rewards/demonstrations", "rewards/generations"] },
  { title: "log-probs: chosen vs rejected", names: ["logps/chosen", "logps/rejected"] },
  { title: "rewards: chosen vs rejected", names: ["rewards/chosen", "rewards/rejected"] },
];
// Charts users look for first come first; the rest follow alphabetically.
const ORDER = ["train/loss", "eval/loss", "rewards/margin", "rewards/accuracy", "eval/logp_gap",
               "eval/logp_gap_accuracy", "train/lr", "train/grad_norm", "train/tokens_per_s"];
const HIDDEN = new Set(["train/tokens", "train/epoch", "train/outer_iteration"]);

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

export function chartLayoutFor(names) {
  const present = new Set(names.filter((n) => !HIDDEN.has(n)));
  const charts = [];
  for (const g of GROUPS) {
    const members = g.names.filter((n) => present.has(n));
    if (members.length > 1) {
      charts.push({ key: members.join("+"), title: g.title, names: members });
      members.forEach((n) => present.delete(n));
    }
  }
  for (const n of present) charts.push({ key: n, title: n, names: [n] });
  const rank = (c) => {
    const i = ORDER.indexOf(c.names[0]);
    return i < 0 ? ORDER.length : i;
  };
  return charts.sort((a, b) => rank(a) - rank(b) || a.title.localeCompare(b.title));
}

// TensorBoard's debiased exponential moving average: the first points are not dragged towards zero.
export function ema(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = 0, debias = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!isFinite(v)) { out[i] = v; continue; }
    last = last * weight + (1 - weight) * v;
    debias = debias * weight + (1 - weight);
    out[i] = last / debias;
  }
  return out;
}

// One or two traces per series: the raw line faded under its smoothed line once smoothing is on.
export function seriesTraces(label, xs, ys, color, smoothing, extra = {}) {
  const rawOpacity = smoothing > 0 ? 0.25 : 1;
  const traces = [{
    type: "scatter", mode: "lines", name: label, x: xs, y: ys, line: { color, width: 1.4 },
    opacity: rawOpacity, hovertemplate: "%{y:.5g}<extra>" + label + (smoothing > 0 ? " (raw)" : "") + "</extra>",
    showlegend: smoothing === 0, legendgroup: label, ...extra,
  }];
  if (smoothing > 0) {
    traces.push({
      type: "scatter", mode: "lines", name: label, x: xs, y: ema(ys, smoothing), line: { color, width: 2 },
      hovertemplate: "%{y:.5g}<extra>" + label + "</extra>", legendgroup: label, ...extra,
    });
  }
  return traces;
}

export function baseLayout({ title, logY, xMode, height = 260, showLegend = false }) {
  return {
    title: { text: title, font: { size: 13 }, x: 0.01, xanchor: "left" },
    height, margin: { l: 52, r: 12, t: 30, b: 34 },
    hovermode: "x unified", showlegend: showLegend,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.0, yanchor: "bottom", font: { size: 10 } },
    xaxis: { type: xMode === "time" ? "date" : "linear", title: { text: xMode === "step" ? "step" : "" },
             zeroline: false, automargin: true },
    yaxis: { type: logY ? "log" : "linear", zeroline: false, exponentformat: "e", automargin: true },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff", font: { family: "system-ui, sans-serif", size: 11 },
    // Keep the user's zoom while live points arrive, but start afresh when the axis types change:
    // a step range carried over to a date axis comes back reversed.
    uirevision: `${xMode}:${logY ? "log" : "linear"}`,
  };
}

export const PLOT_CONFIG = { responsive: true, displaylogo: false, scrollZoom: false,
                             modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"] };

// Sliders and toggles fire often; redraw at most once per animation frame.
export function throttledFrame(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(); });
  };
}

export function bindChartControls(onChange) {
  const smoothing = document.getElementById("smoothing");
  const out = document.getElementById("smoothing-value");
  const logScale = document.getElementById("log-scale");
  const xAxis = document.getElementById("x-axis");
  const saved = JSON.parse(localStorage.getItem("juice.chartControls") || "{}");
  if (saved.smoothing !== undefined) smoothing.value = saved.smoothing;
  if (saved.logY !== undefined) logScale.checked = saved.logY;
  if (saved.xMode) xAxis.value = saved.xMode;
  const state = () => ({ smoothing: Number(smoothing.value), logY: logScale.checked, xMode: xAxis.value });
  const redraw = throttledFrame(() => {
    const s = state();
    out.textContent = s.smoothing.toFixed(2);
    localStorage.setItem("juice.chartControls", JSON.stringify(s));
    onChange(s);
  });
  out.textContent = Number(smoothing.value).toFixed(2);
  for (const input of [smoothing, logScale, xAxis]) input.addEventListener("input", redraw);
  return state;
}

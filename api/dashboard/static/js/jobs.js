// Jobs page: the tenant's jobs, filterable by status and method, refreshed every few seconds.
import {
  api, durationOf, el, FINAL, flash, fmtDuration, fmtNumber, fmtTime, initChrome, methodOf, progressOf,
  requireSignIn, statusBadge,
} from "./api.js";

const REFRESH_MS = 3000;
const PAGE = 50;
const selected = new Set();
let shown = PAGE;

function filters() {
  return { status: document.getElementById("filter-status").value,
           method: document.getElementById("filter-method").value };
}

function syncUrl() {
  const q = new URLSearchParams(Object.entries(filters()).filter(([, v]) => v));
  history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
}

async function fetchJobs() {
  const { status, method } = filters();
  const jobs = [];
  let after = null, hasMore = true;
  while (hasMore && jobs.length < shown) {
    const q = new URLSearchParams({ limit: String(Math.min(100, shown - jobs.length)) });
    if (status) q.set("status", status);
    if (method) q.set("method", method);
    if (after) q.set("after", after);
    const page = await api(`/fine_tuning/jobs?${q}`);
    jobs.push(...page.data);
    hasMore = page.has_more;
    after = page.data.length ? page.data[page.data.length - 1].id : null;
    if (!after) break;
  }
  return { jobs, hasMore };
}

function finalLoss(job) {
  const m = job.latest_metrics || {};
  return m["train/loss"] ?? m["eval/loss"] ?? null;
}

function row(job) {
  const p = progressOf(job);
  let progress = "—";
  if (p.total || job.status === "running") {
    const eta = job.status === "running" && job.estimated_finish
      ? ` · ETA ${fmtDuration(job.estimated_finish - Date.now() / 1000)}` : "";
    progress = el("div", { class: "progress-cell" },
      el("div", { class: "progress small" }, el("div", { style: `width:${(p.fraction * 100).toFixed(1)}%` })),
      el("span", { class: "muted" }, `${p.step}/${p.total || "?"}${eta}`));
  }
  const box = el("input", { type: "checkbox", "aria-label": "select " + job.id, checked: selected.has(job.id),
                            onchange: (e) => { e.target.checked ? selected.add(job.id) : selected.delete(job.id);
                                               updateCompare(); } });
  return el("tr", { "data-job": job.id, "data-status": job.status },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/jobs/${job.id}` }, job.id), job.suffix ? el("span", { class: "muted" }, " " + job.suffix) : null),
    el("td", {}, methodOf(job)),
    el("td", { class: "model", title: job.model }, job.model),
    el("td", {}, statusBadge(job.status, job.cancel_requested, job.pause_requested)),
    el("td", {}, progress),
    el("td", {}, fmtTime(job.created_at)),
    el("td", {}, fmtDuration(durationOf(job))),
    el("td", { class: "num" }, fmtNumber(finalLoss(job))));
}

function updateCompare() {
  const button = document.getElementById("compare-selected");
  button.disabled = selected.size < 2;
  button.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
}

async function refresh() {
  try {
    const { jobs, hasMore } = await fetchJobs();
    document.querySelector("#jobs-table tbody").replaceChildren(...jobs.map(row));
    document.getElementById("jobs-empty").hidden = jobs.length > 0;
    document.getElementById("load-more").hidden = !hasMore;
    flash("");
    return jobs;
  } catch (err) {
    flash(`Could not load jobs: ${err.message}`);
    return [];
  }
}

async function main() {
  if (!requireSignIn()) return;
  initChrome();
  const q = new URLSearchParams(location.search);
  document.getElementById("filter-status").value = q.get("status") || "";
  document.getElementById("filter-method").value = q.get("method") || "";
  for (const id of ["filter-status", "filter-method"]) {
    document.getElementById(id).addEventListener("change", () => { syncUrl(); shown = PAGE; refresh(); });
  }
  document.getElementById("load-more").addEventListener("click", () => { shown += PAGE; refresh(); });
  document.getElementById("compare-selected").addEventListener("click", () => {
    location.assign(`/compare?jobs=${[...selected].join(",")}`);
  });
  await refresh();
  document.body.dataset.ready = "1";
  // Live: refresh while the tab is visible; a hidden tab costs the server nothing.
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
}

main();

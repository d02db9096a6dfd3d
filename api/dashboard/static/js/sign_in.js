// Sign-in: check the key against the API before keeping it.
import { initChrome, signIn } from "./api.js";

initChrome();
const form = document.getElementById("sign-in-form");
const error = document.getElementById("sign-in-error");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = document.getElementById("api-key").value.trim();
  error.hidden = true;
  try {
    const resp = await fetch("/v1/fine_tuning/jobs?limit=1", { headers: { Authorization: "Bearer " + key } });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new Error(body.error?.message || `HTTP ${resp.status}`);
    }
    signIn(key, document.getElementById("remember").checked);
    // The server put the ?next= path here only if it is one of this origin's (api/dashboard/routes.py
    // safe_next); the raw query is never read, so a key holder is never sent to another site.
    location.assign(form.dataset.next || "/");
  } catch (err) {
    error.textContent = `Sign-in failed: ${err.message}`;
    error.hidden = false;
  }
});

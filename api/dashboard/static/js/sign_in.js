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
    const next = new URLSearchParams(location.search).get("next");
    // Only same-site paths: never bounce a key holder to another origin.
    location.assign(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
  } catch (err) {
    error.textContent = `Sign-in failed: ${err.message}`;
    error.hidden = false;
  }
});

"""The dashboard in headless Chromium against a real deployment (API + Celery worker on Postgres/Redis).

Every page reads the public API with the signed-in key; these tests click through it as a user would and
save a screenshot of each page under test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from transformers import AutoModelForCausalLM

from api.db.status import JobStatus
from tests.conftest import Deployment
from tests.dashboard.conftest import shoot, signed_in_page
from tests.helpers import (
    FUZZY_GRADER,
    chat_jsonl,
    extract_tar,
    preference_jsonl,
    prompts_jsonl,
    sft_job_body,
    upload,
    wait_status,
)

pytestmark = pytest.mark.integration
FINAL = set(JobStatus.FINAL)


@pytest.fixture(scope="module")
def key(prod: Deployment) -> str:
    return prod.new_key("dashboard-user")


@pytest.fixture(scope="module")
def client(prod: Deployment, key: str) -> httpx.Client:
    return prod.client(key)


@pytest.fixture(scope="module")
def finished_jobs(client: httpx.Client) -> dict[str, dict]:
    """An SFT and an IRFT job on the same data, run to the end (the compare page's case)."""
    train = upload(client, chat_jsonl(8))
    val = upload(client, preference_jsonl(4), "val.jsonl")
    sft = client.post(
        "/fine_tuning/jobs",
        json={
            **sft_job_body("tiny-llama", train["id"], n_epochs=3, batch_size=2),
            "validation_file": val["id"],
        },
    )
    irft = client.post(
        "/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": train["id"],
            "validation_file": val["id"],
            "seed": 3,
            "suffix": "irft",
            "method": {
                "type": "irft",
                "irft": {
                    "hyperparameters": {
                        "n_epochs": 2,
                        "batch_size": 2,
                        "learning_rate": 5e-4,
                        "outer_iterations": 2,
                        "generation": {"max_new_tokens": 8, "batch_size": 4},
                        # the tiny model never stops within 8 tokens: train on its unfinished negatives
                        "truncated_negatives": "keep",
                    }
                },
            },
        },
    )
    assert sft.status_code == 200 and irft.status_code == 200, (sft.text, irft.text)
    jobs = {
        "sft": wait_status(client, sft.json()["id"], FINAL, timeout=300),
        "irft": wait_status(client, irft.json()["id"], FINAL, timeout=300),
    }
    assert {j["status"] for j in jobs.values()} == {"succeeded"}, jobs
    return jobs


def open_page(browser, prod: Deployment, key: str, path: str):
    """A signed-in page at `path`, once its script has drawn it and wired its controls."""
    page = signed_in_page(browser, prod.url, key)
    page.goto(path)
    page.wait_for_selector("body[data-ready='1']")
    return page


@contextmanager
def long_job_page(browser, prod: Deployment, key: str, client: httpx.Client) -> Iterator[tuple[dict, object]]:
    """An SFT job of a few hundred steps (long enough to watch) and its open page; the job is cancelled
    (if still running) and finished before the next test needs the worker."""
    train = upload(client, chat_jsonl(48))
    r = client.post(
        "/fine_tuning/jobs",
        json=sft_job_body("tiny-llama", train["id"], n_epochs=20, batch_size=1, learning_rate=1e-4),
    )
    assert r.status_code == 200, r.text
    job = r.json()
    try:
        yield job, open_page(browser, prod, key, f"/jobs/{job['id']}")
    finally:
        client.post(f"/fine_tuning/jobs/{job['id']}/cancel")  # 409 once it has finished: fine
        wait_status(client, job["id"], FINAL)


def chart_points(page, metric: str) -> int:
    return page.evaluate(
        """(m) => {
        const div = document.querySelector(`[data-chart="${m}"]`);
        return div && div.data && div.data.length ? div.data[0].x.length : 0;
    }""",
        metric,
    )


def test_sign_in_checks_the_key_and_shows_only_that_tenants_jobs(
    browser, prod: Deployment, key: str, client: httpx.Client
) -> None:
    other = prod.client(prod.new_key("someone-else"))
    theirs = other.post(
        "/fine_tuning/jobs", json=sft_job_body("tiny-llama", upload(other, chat_jsonl(2))["id"], n_epochs=1)
    ).json()
    mine = client.post(
        "/fine_tuning/jobs", json=sft_job_body("tiny-llama", upload(client, chat_jsonl(2))["id"], n_epochs=1)
    ).json()
    context = browser.new_context(base_url=prod.url)
    page = context.new_page()
    page.goto("/")
    page.wait_for_url(re.compile(r"/sign-in\?next="))  # no key: the dashboard asks for one
    page.fill("#api-key", "sk-juice-not-a-key")
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-in-error:not([hidden])")
    assert "Incorrect API key" in page.inner_text("#sign-in-error")
    page.fill("#api-key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{prod.url}/")
    page.wait_for_selector(f"tr[data-job='{mine['id']}']")
    assert page.locator(f"tr[data-job='{theirs['id']}']").count() == 0
    page.goto(f"/jobs/{theirs['id']}")  # another tenant's job: not found, not shown
    page.wait_for_selector("#flash:not([hidden])")
    assert "No job" in page.inner_text("#flash")
    shoot(page, "sign-in-jobs")
    context.close()
    for c, job in ((other, theirs), (client, mine)):
        wait_status(c, job["id"], FINAL)


def test_jobs_table_filters_by_method_and_status(
    browser, prod: Deployment, key: str, finished_jobs: dict[str, dict]
) -> None:
    page = open_page(browser, prod, key, "/")
    for job in finished_jobs.values():
        row = page.locator(f"tr[data-job='{job['id']}']")
        assert row.count() == 1
        cells = row.locator("td").all_inner_texts()
        assert job["model"] in cells and "succeeded" in " ".join(cells)
        assert re.fullmatch(r"\d+\.\d+|\d+(\.\d+)?e-?\d+", cells[-1]), cells  # final loss
    page.select_option("#filter-method", "irft")
    page.wait_for_selector(f"tr[data-job='{finished_jobs['sft']['id']}']", state="detached")
    assert page.locator(f"tr[data-job='{finished_jobs['irft']['id']}']").count() == 1
    assert "method=irft" in page.url
    page.select_option("#filter-method", "")
    page.select_option("#filter-status", "failed")
    page.wait_for_selector(f"tr[data-job='{finished_jobs['irft']['id']}']", state="detached")
    shoot(page, "jobs-filtered")
    assert page.js_errors == []


def test_live_loss_curve_grows_without_reload(
    browser, prod: Deployment, key: str, client: httpx.Client
) -> None:
    with long_job_page(browser, prod, key, client) as (_job, page):
        page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
        page.wait_for_function(
            "() => document.querySelector('[data-chart=\"train/loss\"]')?.data?.[0]?.x?.length >= 3",
            timeout=120_000,
        )
        first = chart_points(page, "train/loss")
        page.wait_for_function(
            "(n) => document.querySelector('[data-chart=\"train/loss\"]').data[0].x.length >= n",
            arg=first + 5,
            timeout=60_000,
        )
        assert page.evaluate("window.__sameDocument") is True
        assert page.inner_text("#live-indicator") == "● live"
        assert "running" in page.inner_text("#job-status")
        # The page shows the same points as the API, in step order.
        xs = page.evaluate("document.querySelector('[data-chart=\"train/loss\"]').data[0].x")
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        page.wait_for_selector("#job-progress-text:has-text('step')")
        shoot(page, "job-live")
        assert page.js_errors == []


def test_pause_and_resume_from_the_job_page(
    browser, prod: Deployment, key: str, client: httpx.Client
) -> None:
    with long_job_page(browser, prod, key, client) as (job, page):
        page.wait_for_selector("#job-status[data-status='running']", timeout=120_000)
        assert page.locator("#resume").is_hidden()
        deadline = time.monotonic() + 60
        while not client.get(f"/fine_tuning/jobs/{job['id']}").json()["progress"]["step"]:
            assert time.monotonic() < deadline, "no step was trained"
            time.sleep(0.1)
        page.click("#pause")
        page.wait_for_selector("#job-status[data-status='paused']", timeout=60_000)
        assert page.locator("#pause").is_hidden() and page.locator("#resume").is_visible()
        assert client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()[
            "data"
        ]  # paused = checkpointed
        shoot(page, "job-paused")
        page.click("#resume")
        page.wait_for_selector("#job-status[data-status='running']", timeout=120_000)
        assert page.locator("#resume").is_hidden() and page.locator("#pause").is_visible()
        assert page.js_errors == []


def test_cancel_from_the_job_page(browser, prod: Deployment, key: str, client: httpx.Client) -> None:
    with long_job_page(browser, prod, key, client) as (job, page):
        page.wait_for_selector("#job-status[data-status='running']", timeout=120_000)
        page.click("#cancel")
        page.click("#cancel-confirm")  # two clicks: a stray click never cancels a run
        page.wait_for_selector("#job-status[data-status='cancelled']", timeout=60_000)
        assert page.locator("#cancel").is_hidden()
        shoot(page, "job-cancelled")
        assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "cancelled"
        assert page.js_errors == []


def test_job_page_shows_reward_metrics_samples_checkpoints_and_config(
    browser, prod: Deployment, key: str, finished_jobs: dict[str, dict]
) -> None:
    job = finished_jobs["irft"]
    page = open_page(browser, prod, key, f"/jobs/{job['id']}")
    charts = set(page.eval_on_selector_all(".chart", "els => els.map(e => e.dataset.chart)"))
    assert {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "rewards/margin",
        "rewards/accuracy",
        "logps/real+logps/generated",
        "eval/logp_gap",
    } <= charts, charts
    page.wait_for_selector("#samples-card:not([hidden]) details")
    assert page.locator("#samples details").count() == 2  # one per outer iteration
    page.wait_for_selector("#checkpoints tbody tr")
    assert page.locator("#events li").count() >= 5
    assert '"outer_iterations": 2' in page.inner_text("#config")
    # Smoothing, log scale and wall-time axis redraw the charts in place.
    loss = page.locator("[data-chart='train/loss']")
    assert (
        page.evaluate("document.querySelector('[data-chart=\"train/loss\"]').data.length") == 2
    )  # raw + EMA
    page.fill("#smoothing", "0")
    page.wait_for_function("() => document.querySelector('[data-chart=\"train/loss\"]').data.length === 1")
    page.check("#log-scale")
    page.wait_for_function(
        "() => document.querySelector('[data-chart=\"train/loss\"]').layout.yaxis.type === 'log'"
    )
    page.select_option("#x-axis", "time")
    page.wait_for_function(
        "() => document.querySelector('[data-chart=\"train/loss\"]').layout.xaxis.type === 'date'"
    )
    first, last = page.evaluate(
        "() => document.querySelector('[data-chart=\"eval/logp_gap\"]')._fullLayout.xaxis.range"
    )
    assert first < last  # time runs left to right (a step range carried over once came back reversed)
    page.select_option("#x-axis", "step")
    page.uncheck("#log-scale")
    page.fill("#smoothing", "0.6")
    # Hover read-out: moving over the plot shows the value under the cursor.
    box = loss.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.wait_for_selector(
        "[data-chart='train/loss'] .hoverlayer .legend, [data-chart='train/loss'] .hovertext"
    )
    shoot(page, "job-irft")
    assert page.js_errors == []


def test_job_page_lists_the_lowest_scored_demonstrations_with_their_text(
    browser, prod: Deployment, key: str, client: httpx.Client, finished_jobs: dict[str, dict]
) -> None:
    job = finished_jobs["irft"]
    listed = client.get(f"/fine_tuning/jobs/{job['id']}/demonstration_scores", params={"limit": 10}).json()[
        "data"
    ]
    page = open_page(browser, prod, key, f"/jobs/{job['id']}")
    page.wait_for_selector("#scores-card:not([hidden]) #scores tbody tr")
    rows = page.eval_on_selector_all(
        "#scores tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [int(r[1]) for r in rows] == [s["line"] for s in listed] and len(rows) == 8  # all 8, lowest first
    first = listed[0]["example"]["messages"]
    assert rows[0][5] == first[-2]["content"] and rows[0][6] == first[-1]["content"]
    assert float(rows[0][4]) == pytest.approx(listed[0]["log_likelihood_per_token"], rel=1e-2, abs=1e-2)
    assert "implicit reward" in page.inner_text("#scores-note")
    # An SFT job learns no reward: no card.
    sft = open_page(browser, prod, key, f"/jobs/{finished_jobs['sft']['id']}")
    sft.wait_for_selector("#events li")
    assert sft.locator("#scores-card").is_hidden()
    assert page.js_errors == [] and sft.js_errors == []


def test_checkpoint_download_button_returns_a_loadable_tar(
    browser, prod: Deployment, key: str, finished_jobs: dict[str, dict], tmp_path: Path
) -> None:
    job = finished_jobs["sft"]
    page = signed_in_page(browser, prod.url, key)
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_selector("#checkpoints tbody tr button.download")
    with page.expect_download() as info:
        page.locator("#checkpoints tbody tr button.download").first.click()
    download = info.value
    assert download.suggested_filename.endswith(".tar")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    model_dir = extract_tar(saved.read_bytes(), tmp_path / "x")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "llama"
    assert page.js_errors == []


def test_try_it_sends_one_prompt_to_the_base_model_and_a_checkpoint(
    browser, prod: Deployment, prod_inference, key: str, client: httpx.Client, finished_jobs: dict[str, dict]
) -> None:
    job = finished_jobs["sft"]
    page = open_page(browser, prod, key, f"/jobs/{job['id']}")
    page.wait_for_selector("#try-model option", state="attached")
    options = page.eval_on_selector_all("#try-model option", "os => os.map(o => o.value)")
    assert options[0] == job["fine_tuned_model"] and len(options) > 1
    assert all(o.startswith(job["fine_tuned_model"] + ":ckpt-step-") for o in options[1:])
    page.fill("#try-prompt", "Name a colour.")
    page.fill("#try-max-tokens", "12")
    page.click("#try-send")
    page.wait_for_selector("#try-tuned[data-finish]", timeout=60_000)
    base, tuned = page.inner_text("#try-base"), page.inner_text("#try-tuned")
    assert page.get_attribute("#try-base", "data-finish") in ("stop", "length")
    assert page.get_attribute("#try-tuned", "data-finish") in ("stop", "length")
    ask = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12, "temperature": 0}
    for model, shown in ((job["model"], base), (job["fine_tuned_model"], tuned)):
        r = client.post("/chat/completions", json={**ask, "model": model})
        assert r.status_code == 200, r.text
        assert shown == r.json()["choices"][0]["message"]["content"]  # the panel shows the API's reply
    assert page.inner_text("#try-tuned-name") == job["fine_tuned_model"]
    shoot(page, "job-try-it")
    assert page.js_errors == []


def test_compare_overlays_two_jobs_and_diffs_their_configs(
    browser, prod: Deployment, key: str, finished_jobs: dict[str, dict]
) -> None:
    sft, irft = finished_jobs["sft"], finished_jobs["irft"]
    page = open_page(browser, prod, key, "/")
    page.check(f"tr[data-job='{sft['id']}'] input[type=checkbox]")
    page.check(f"tr[data-job='{irft['id']}'] input[type=checkbox]")
    page.click("#compare-selected")
    page.wait_for_url(re.compile(r"/compare\?jobs="))
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("#compare-chart", "data-jobs") == "2"
    metas = page.evaluate("[...new Set(document.getElementById('compare-chart').data.map(t => t.meta))]")
    assert sorted(metas) == sorted([sft["id"], irft["id"]])
    assert page.input_value("#metric") == "train/loss"
    diff = {
        r: page.locator(f"#config-diff tr[data-key='{r}'] td").all_inner_texts()
        for r in ("method", "hyperparameters.n_epochs", "hyperparameters.outer_iterations")
    }
    assert diff["method"] == ["sft", "irft"] and diff["hyperparameters.n_epochs"] == ["3", "2"]
    assert diff["hyperparameters.outer_iterations"] == ["—", "2"]  # a knob only IRFT has
    assert page.locator("#config-diff tr[data-key='model']").count() == 0  # same model: hidden diff row
    page.uncheck("#only-diff")
    assert page.locator("#config-diff tr[data-key='model'] td").all_inner_texts() == ["tiny-llama"] * 2
    page.select_option("#metric", "eval/logp_gap")
    page.wait_for_function(
        "() => document.getElementById('compare-chart').layout.title.text === 'eval/logp_gap'"
    )
    page.select_option("#metric", "train/loss")
    shoot(page, "compare")
    assert page.js_errors == []


def test_new_job_page_shows_line_errors_checks_bounds_and_submits(
    browser, prod: Deployment, key: str, client: httpx.Client, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = chat_jsonl(3).decode().splitlines()
    lines[1] = '{"messages": [{"role": "robot", "content": "beep"}]}'
    bad.write_text("\n".join(lines) + "\n")
    good = tmp_path / "good.jsonl"
    good.write_bytes(chat_jsonl(4))
    page = open_page(browser, prod, key, "/new")
    page.set_input_files("#training-upload", str(bad))
    page.wait_for_selector("#training-error:not([hidden])")
    text = page.inner_text("#training-error")
    assert "line 2" in text and '"robot"' in page.inner_text("#training-error pre.bad-line")
    shoot(page, "new-job-bad-file")
    page.set_input_files("#training-upload", str(good))
    page.wait_for_function("() => document.getElementById('training-file').value.startsWith('file-')")
    assert page.locator("#training-error").is_hidden()
    assert page.input_value("#model") == "tiny-llama"
    page.check("input[name=method][value=irft]")
    assert page.get_attribute("#hp-beta", "placeholder") == "0.1"  # the API's default
    page.fill("#hp-beta", "500")  # bound: beta <= 100
    page.fill("#hp-n_epochs", "1")
    page.fill("#hp-generation-max_new_tokens", "4")
    page.click("#submit")
    page.wait_for_selector(".hp[data-field='beta'].invalid")
    assert "≤ 100" in page.inner_text(".hp[data-field='beta'] .field-error")
    page.fill("#hp-beta", "0.2")
    page.fill("#suffix", "from-the-page")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = client.get(f"/fine_tuning/jobs/{job_id}").json()
    hp = job["method"]["irft"]["hyperparameters"]
    assert job["suffix"] == "from-the-page" and hp["beta"] == 0.2 and hp["n_epochs"] == 1
    assert hp["generation"]["max_new_tokens"] == 4 and hp["outer_iterations"] == 1
    client.post(f"/fine_tuning/jobs/{job_id}/cancel")
    wait_status(client, job_id, FINAL)
    assert page.js_errors == []


def test_new_job_page_trains_reinforcement_with_a_grader(
    browser, prod: Deployment, key: str, client: httpx.Client, tmp_path: Path
) -> None:
    """The form's grader box appears for reinforcement only; broken JSON is caught before posting; the
    job trains against the grader given, and its page charts the graded series."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(prompts_jsonl(4))
    page = open_page(browser, prod, key, "/new")
    assert page.locator("#grader-box").is_hidden()
    page.set_input_files("#training-upload", str(prompts))
    page.wait_for_function("() => document.getElementById('training-file').value.startsWith('file-')")
    page.check("input[name=method][value=reinforcement]")
    assert page.locator("#grader-box").is_visible() and page.locator("#training-hint").is_hidden()
    example = json.loads(page.input_value("#grader"))  # the box's example, templates intact
    assert example["input"] == "{{sample.output_text}}" and example["reference"] == "{{item.answer}}"
    page.fill("#grader", '{"type": "string_check",')
    page.click("#submit")
    page.wait_for_selector("#grader-error:not([hidden])")
    assert "not valid JSON" in page.inner_text("#grader-error") and "/new" in page.url
    page.fill("#grader", json.dumps(FUZZY_GRADER))
    page.fill("#hp-n_epochs", "1")
    page.fill("#hp-batch_size", "2")
    page.fill("#hp-samples_per_prompt", "2")
    page.fill("#hp-generation-max_new_tokens", "4")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = wait_status(client, job_id, FINAL)
    assert job["status"] == "succeeded", job
    assert job["method"]["reinforcement"]["grader"] == FUZZY_GRADER
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("[data-chart='train/reward']")
    charts = set(page.eval_on_selector_all(".chart", "els => els.map(e => e.dataset.chart)"))
    assert {"train/reward", "train/pass_rate", "train/kl"} <= charts, charts
    shoot(page, "reinforcement-job")
    assert page.js_errors == []


def test_new_job_page_trains_dpo_on_a_preference_file(
    browser, prod: Deployment, key: str, client: httpx.Client, tmp_path: Path
) -> None:
    """The form offers DPO (from /v1/fine_tuning/methods), says which method a preference file is for,
    and the finished DPO job's page pairs chosen with rejected in one chart each."""
    pref = tmp_path / "prefs.jsonl"
    pref.write_bytes(preference_jsonl(4))
    page = open_page(browser, prod, key, "/new")
    page.set_input_files("#training-upload", str(pref))
    page.wait_for_function("() => document.getElementById('training-file').value.startsWith('file-')")
    page.wait_for_selector("#training-hint:not([hidden])")  # SFT (the first method) trains on demonstrations
    assert "preference" in page.inner_text("#training-hint") and "pick dpo" in page.inner_text(
        "#training-hint"
    )
    page.click("#submit")
    page.wait_for_selector("#submit-error:not([hidden])")
    assert "pick dpo" in page.inner_text("#submit-error") and "/new" in page.url  # nothing was posted
    page.check("input[name=method][value=dpo]")
    assert page.locator("#training-hint").is_hidden()
    assert "preference" in page.inner_text("#method-description")
    assert page.get_attribute("#hp-beta", "placeholder") == "auto"  # OpenAI's beta: "auto" or a number
    page.fill("#hp-beta", "0")
    page.fill("#hp-n_epochs", "1")
    page.fill("#hp-batch_size", "2")
    page.click("#submit")
    page.wait_for_selector(".hp[data-field='beta'].invalid")  # beta > 0, checked before posting
    page.fill("#hp-beta", "0.2")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = wait_status(client, job_id, FINAL)
    assert job["status"] == "succeeded", job
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("[data-chart='rewards/chosen+rewards/rejected']")
    charts = set(page.eval_on_selector_all(".chart", "els => els.map(e => e.dataset.chart)"))
    assert {
        "train/loss",
        "rewards/margin",
        "rewards/accuracy",
        "rewards/chosen+rewards/rejected",
        "logps/chosen+logps/rejected",
    } <= charts, charts
    shoot(page, "job-dpo")
    assert page.js_errors == []

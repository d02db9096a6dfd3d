"""The dashboard's pure JS helpers, run in Chromium against hand-computed values."""

from __future__ import annotations

import pytest

from tests.conftest import Deployment

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def page(browser, prod: Deployment):
    context = browser.new_context(base_url=prod.url)
    p = context.new_page()
    p.goto("/sign-in")  # any page of the origin, so the modules import same-origin
    yield p
    context.close()


def run(page, body: str, arg=None):
    return page.evaluate(
        f"""async (arg) => {{
        const charts = await import('/static/js/charts.js');
        const api = await import('/static/js/api.js');
        {body}
    }}""",
        arg,
    )


def test_ema_is_debiased_like_tensorboard(page) -> None:
    # w=0.5 on [1, 2, 3]: (0.5)/(0.5)=1, (0.25+1)/0.75=5/3, (0.625+1.5)/0.875=17/7
    got = run(page, "return charts.ema([1, 2, 3], 0.5);")
    assert got == pytest.approx([1.0, 5 / 3, 17 / 7])
    assert run(page, "return charts.ema([4, 5], 0);") == [4, 5]  # smoothing off: the raw values
    assert run(page, "return charts.ema([7, 7, 7, 7], 0.99);") == pytest.approx([7, 7, 7, 7])  # no pull to 0


def test_paired_series_share_a_chart_and_loss_comes_first(page) -> None:
    names = [
        "train/lr",
        "logps/generated",
        "train/loss",
        "logps/real",
        "rewards/real",
        "train/tokens",
        "zeta/custom",
        "eval/loss",
    ]
    layout = run(page, "return charts.chartLayoutFor(arg).map(c => [c.key, c.names]);", names)
    assert layout == [
        ["train/loss", ["train/loss"]],
        ["eval/loss", ["eval/loss"]],
        ["train/lr", ["train/lr"]],
        ["logps/real+logps/generated", ["logps/real", "logps/generated"]],
        ["rewards/real", ["rewards/real"]],  # its partner is absent: a chart of its own
        ["zeta/custom", ["zeta/custom"]],
    ]  # train/tokens is a counter, not charted


def test_dpo_pairs_chosen_with_rejected(page) -> None:
    """A DPO job's chosen/rejected rewards and log-probs share a chart each, as IRFT's real/generated."""
    names = [
        "rewards/rejected",
        "logps/chosen",
        "rewards/margin",
        "train/loss",
        "rewards/chosen",
        "logps/rejected",
        "rewards/accuracy",
        "eval/logp_gap",
    ]
    layout = run(page, "return charts.chartLayoutFor(arg).map(c => [c.key, c.title, c.names]);", names)
    assert layout == [
        ["train/loss", "train/loss", ["train/loss"]],
        ["rewards/margin", "rewards/margin", ["rewards/margin"]],
        ["rewards/accuracy", "rewards/accuracy", ["rewards/accuracy"]],
        ["eval/logp_gap", "eval/logp_gap", ["eval/logp_gap"]],
        ["logps/chosen+logps/rejected", "log-probs: chosen vs rejected", ["logps/chosen", "logps/rejected"]],
        [
            "rewards/chosen+rewards/rejected",
            "rewards: chosen vs rejected",
            ["rewards/chosen", "rewards/rejected"],
        ],
    ]


def test_sse_blocks_parse_per_the_spec(page) -> None:
    cases = run(
        page,
        """return [
        api.parseBlock('id: 7\\nevent: metric\\ndata: {"a":1}'),
        api.parseBlock(': keep-alive'),
        api.parseBlock('retry: 2000'),
        api.parseBlock('data: line one\\ndata: line two'),
        api.parseBlock('data:no-space'),
    ];""",
    )
    assert cases[0] == {"event": "metric", "data": '{"a":1}', "id": "7", "retry": None}
    assert cases[1] == {"event": "message", "data": None, "id": None, "retry": None}
    assert cases[2]["retry"] == 2000 and cases[2]["data"] is None
    assert cases[3]["data"] == "line one\nline two"
    assert cases[4]["data"] == "no-space"


def test_number_and_duration_formats(page) -> None:
    got = run(
        page,
        """return [api.fmtNumber(0.000123), api.fmtNumber(2.345678), api.fmtNumber(123456),
                               api.fmtNumber(null), api.fmtDuration(59), api.fmtDuration(61),
                               api.fmtDuration(3725), api.fmtBytes(1536), api.fmtBytes(600 * 1024 * 1024)];""",
    )
    assert got == ["1.23e-4", "2.346", "1.23e+5", "—", "59s", "1m 01s", "1h 02m", "1.5 KiB", "600.0 MiB"]

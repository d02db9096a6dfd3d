"""Capture the README's dashboard screenshots from a running Juice (Debian's Chromium via Playwright).

    .venv/bin/python scripts/dashboard_screenshots.py --url http://127.0.0.1:8000 --key sk-juice-... \
        --job ftjob-IRFT --compare ftjob-SFT,ftjob-IRFT,ftjob-RFT [--metric eval/logp_gap] [--out docs/images]
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--job", required=True, help="job for the job-page screenshot")
    parser.add_argument("--compare", required=True, help="comma-separated jobs for the compare screenshot")
    parser.add_argument("--metric", default="train/loss", help="series shown on the compare page")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1400, "height": 900}, base_url=args.url, device_scale_factor=1
        )
        context.add_init_script(f"window.sessionStorage.setItem('juice.apiKey', {args.key!r});")
        page = context.new_page()
        for name, path in (
            ("job", f"/jobs/{args.job}"),
            ("compare", f"/compare?jobs={args.compare}&metric={args.metric}"),
        ):
            page.goto(path)
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_timeout(1500)  # events, checkpoints and samples arrive just after the charts
            # The job page runs long (config at the bottom): keep the charts, events, checkpoints, samples.
            height = min(page.evaluate("() => document.body.scrollHeight"), 2000 if name == "job" else 900)
            page.screenshot(
                path=str(out / f"{name}.png"),
                full_page=True,
                clip={"x": 0, "y": 0, "width": 1400, "height": height},
            )
            print(out / f"{name}.png")
        browser.close()


if __name__ == "__main__":
    main()

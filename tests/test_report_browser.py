"""The HTML report in a real headless chromium: loads cleanly, filters work, model text stays inert.

Needs Debian's chromium and the Playwright client (scripts/setup_browser.sh installs both).
Set TORL_SCREENSHOT_DIR to keep the screenshots.
"""

import os
import shutil
from pathlib import Path

import pytest
from test_report_build import expected_counts, make_eval_dir, make_train_run

from torl.analysis.report import build_report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium is not installed at /usr/bin/chromium: run scripts/setup_browser.sh")


@pytest.fixture
def browser_page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run scripts/setup_browser.sh")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        problems = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: problems.append(f"network request: {r.url}") if not r.url.startswith(("file:", "data:")) else None)
        yield page, problems
        context.close()


def visible_rows(page) -> int:
    return page.locator("tr.sample:visible").count()


def click_filter(page, group: str, value: str) -> None:
    page.locator(f'.grp[data-filter="{group}"] button[data-value="{value}"]').click()


def screenshot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("TORL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def test_training_report_filters_in_chromium(tmp_path, browser_page):
    page, problems = browser_page
    run = make_train_run(tmp_path / "run")
    build_report(run)
    page.goto((run / "report" / "index.html").as_uri())
    page.wait_for_selector("tr.sample")
    counts = expected_counts()

    assert visible_rows(page) == counts["all"]
    assert page.locator("#count").inner_text() == f"{counts['all']} of {counts['all']} shown"
    click_filter(page, "correct", "correct")
    assert visible_rows(page) == counts["correct"]
    click_filter(page, "correct", "incorrect")
    assert visible_rows(page) == counts["incorrect"]
    click_filter(page, "correct", "all")
    click_filter(page, "code", "with")
    assert visible_rows(page) == counts["with_code"]
    click_filter(page, "code", "without")
    assert visible_rows(page) == counts["all"] - counts["with_code"]
    click_filter(page, "code", "all")
    click_filter(page, "errors", "failed")
    assert visible_rows(page) == counts["failed"]
    click_filter(page, "errors", "sandbox")
    assert visible_rows(page) == counts["sandbox"]
    click_filter(page, "errors", "all")
    page.select_option("#group", "2")
    assert visible_rows(page) == 4
    page.select_option("#group", "")
    page.fill("#search", "__pwned")
    assert visible_rows(page) == 1

    # open the adversarial trajectory: its text shows as text, code/output/error render distinctly
    page.locator("tr.sample:visible").first.click()
    detail = page.locator("tr.detail")
    assert detail.locator(".codeblock").count() == 1
    assert detail.locator(".output.failed").count() == 1 and detail.locator(".stderr").count() == 0
    assert "<svg onload=window.__pwned=5>" in detail.locator(".output").inner_text()
    assert "</script><script>window.__pwned=3</script>" in detail.inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x'], img[src='y'], svg").count() == 0
    screenshot(page, tmp_path, "report_train_detail.png")

    page.fill("#search", "")
    click_filter(page, "correct", "unscored")
    click_filter(page, "code", "without")
    assert visible_rows(page) == 0 and page.locator("#empty").is_visible()
    assert problems == []


def test_eval_report_loads_cleanly(tmp_path, browser_page):
    page, problems = browser_page
    out = tmp_path / "rep"
    build_report(make_eval_dir(tmp_path / "ev"), out)
    page.goto((out / "index.html").as_uri())
    page.wait_for_selector("tr.sample")
    assert visible_rows(page) == 5
    assert page.locator("figure img").count() == 1
    assert page.evaluate("document.querySelector('figure img').naturalWidth") > 100  # the inline PNG decoded
    page.select_option("#group", "aime24")
    assert visible_rows(page) == 2
    page.select_option("#group", "")
    page.locator("tr.sample").nth(1).click()  # CONFIRMED: prose, code, ok output
    detail = page.locator("tr.detail")
    assert detail.locator(".output:not(.failed)").count() == 1 and detail.locator(".codeblock pre").inner_text() == "print(482*37)"
    screenshot(page, tmp_path, "report_eval.png")
    assert problems == []


def test_training_report_with_heldout_in_chromium(tmp_path, browser_page):
    """A block_close run with held-out before/after: the headline, the hint, rows that expand, clean output boxes."""
    from test_report_run import make_grpo_run

    page, problems = browser_page
    run = make_grpo_run(tmp_path / "run")
    build_report(run)
    page.goto((run / "report" / "index.html").as_uri())
    page.wait_for_selector("tr.sample")
    assert "held-out greedy accuracy 0.000 → 1.000" in page.locator("#headline").inner_text()
    assert page.locator("#expand-hint").is_visible() and "Click a row" in page.locator("#expand-hint").inner_text()
    assert page.evaluate("Array.from(document.querySelectorAll('figure img')).every(i => i.naturalWidth > 100)")

    page.select_option("#group", "held-out after")
    assert visible_rows(page) == 4
    row = page.locator("tr.sample:visible").nth(1)
    assert row.locator(".chev").inner_text() == "\u25b8"
    row.click()
    assert row.locator(".chev").inner_text() == "\u25be"
    detail = page.locator("tr.detail")
    assert detail.locator(".codeblock pre").inner_text() == "print(327*40)"
    assert detail.locator(".output pre").inner_text() == "13080"
    screenshot(page, tmp_path, "report_heldout_detail.png")
    row.click()
    assert page.locator("tr.detail").count() == 0 and row.locator(".chev").inner_text() == "\u25b8"

    page.select_option("#group", "")
    for tr in page.locator("tr.sample").all():  # open every trajectory: no box shows a fence line
        tr.click()
    outputs = page.locator(".output > pre").all_inner_texts()
    assert len(outputs) == 16 and not any("```" in text for text in outputs)
    assert problems == []

"""The report in a real browser: Debian's Chromium, driven by Playwright, loads the page with no
console error and no request beyond the file itself, and every plot is drawn.

Set ``DRIFTLINE_REPORT_SCREENSHOT=docs/report.png`` to keep this run's screenshot: the README's
picture is made that way.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.image import imread
from playwright.sync_api import Browser, sync_playwright

from driftline.service.report_plots import PANELS
from driftline.service.synthetic import ModelStream
from tests.unit.test_replay_cli import write_records

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "report.png"
# As root in a container, and with no network: no sandbox, no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium on PATH: run `make test` (deploy/ensure-tools.sh installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`driftline report` run as a user runs it, on a degrading and a stable model."""
    folder = tmp_path_factory.mktemp("browser")
    records = folder / "records.jsonl"
    degrading = ModelStream(
        "credit",
        seed=21,
        change_at=7000,
        accuracy_after=0.7,
        numeric_shift={"x1": 1.0},
        null_rate={"x2": 0.2},
    )
    write_records(records, [degrading, ModelStream("fraud", seed=22)], 12000)
    output = folder / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "driftline.service.cli", "report", "--input", records.name,
         "--output", output.name],
        check=False,  # the assertion shows stderr
        cwd=folder,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return output


def colored_share(png: bytes) -> float:
    """Share of pixels with a clear hue: plotted lines and bands, not text, axes or paper."""
    image = imread(io.BytesIO(png), format="png")[..., :3]
    spread = image.max(axis=-1) - image.min(axis=-1)
    return float((spread > 0.25).mean())


def test_the_report_loads_with_no_error_and_draws_every_panel(
    browser: Browser, report: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri(), wait_until="load")

    assert problems == []
    assert requests == [report.as_uri()]  # nothing fetched beyond the page itself
    assert page.locator("table").first.locator("tbody tr").count() == 2
    figures = page.locator("figure.plot svg")
    assert figures.count() == 2
    for index, model in enumerate(("credit", "fraud")):
        figure = figures.nth(index)
        box = figure.bounding_box()
        assert box is not None and box["width"] > 1000 and box["height"] > 900, model
        for panel in PANELS:
            drawn = page.locator(f'[id="{model}-{panel}"]')
            assert drawn.count() == 1, f"{model}: no {panel} panel"
            # A drawn curve covers far more than 0.2 % of its panel; an empty panel, or a
            # figure that failed to render, has no colour at all.
            assert colored_share(drawn.screenshot()) > 0.002, f"{model}: {panel} panel is blank"

    first_screen = page.screenshot(
        full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1700}
    )
    assert colored_share(first_screen) > 0.002  # the first model's KPI panel is on it
    keep = os.environ.get("DRIFTLINE_REPORT_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(first_screen)
    page.close()


def test_the_readme_shows_a_screenshot_of_the_report() -> None:
    """The README's picture exists, is a PNG made by this test (1280 wide) and stays small."""
    assert "docs/report.png" in (ROOT / "README.md").read_text()
    data = SCREENSHOT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) < 400_000
    assert imread(io.BytesIO(data), format="png").shape[1] == 1280

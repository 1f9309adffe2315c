"""The app end to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright
at the system executable: no browser download), on the embedded model and the bundled runs.

It starts ``streamlit run app.py`` on a free port bound to 127.0.0.1 and

* opens every page through a direct link on a freshly started server (the link a user shares),
  then through the home page's cards: no error box, the model picker there;
* clicks a head in the alpha heatmap and a cell in the transfer matrix and sees the drill-down
  (and the URL) follow;
* exports one PNG;
* starts a fit, opens a second tab that keeps working while it runs, and stops the fit;
* checks that a crafted ``?model=`` link shows no link or image;
* saves screenshots (to ``$WORKBENCH_SCREENSHOTS`` when set: ``make tour`` refreshes the
  README's, else to a temporary folder).

Skipped, saying why, only where no Chromium (or no Playwright) is installed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {  # page -> (a direct link's query, its title)
    "": ("", "Task Vector Workbench"),
    "evaluate": ("?task=antonym&shots=5", "Evaluate"),
    "compare": ("?task=antonym", "Compare methods"),
    "head_relevance": ("?task=antonym&layer=3&head=2", "Head relevance"),
    "transfer": ("?matrix=bundled", "Head transfer"),
    "regression": ("?family=linear&shift=noisy_y", "Function regression"),
    "adaptive": ("?task=antonym&scale=0.5", "Adaptive vectors"),
    "fit": ("?method=TV&task=antonym", "Fit a method"),
}
LOAD = 180_000  # ms: a fresh server imports torch and loads the embedded model

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - requirements.txt pins it
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="No Chromium here: install Debian's chromium (apt-get install chromium; make setup does it "
        "where it can) or set CHROMIUM to a Chromium executable.",
    ),
    pytest.mark.skipif(
        sync_playwright is None, reason="Playwright is not installed (pip install -r requirements.txt)."
    ),
]


# ----------------------------------------------------------------------------- server and browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def app_server(runs: Path, log: Path) -> Iterator[str]:
    """A freshly started ``streamlit run app.py`` on 127.0.0.1; yields its base URL."""
    port = free_port()
    env = {**os.environ, "WORKBENCH_RUNS": str(runs)}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
    ]
    with log.open("a") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_playwright() as playwright:
        profile = tmp_path_factory.mktemp("chromium-profile")
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
            accept_downloads=True,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("WORKBENCH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A private user run store: the pages show the bundled runs and what this test fits."""
    return tmp_path_factory.mktemp("user_runs")


def settled(page: Page, title: str) -> Page:
    """Wait until the page shows ``title`` with the model picker and its script run is over;
    then check it shows no error box or exception."""
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=LOAD)
    model_picker = page.locator("[data-testid=stSidebar]").get_by_role("combobox", name="Model")
    expect(model_picker).to_have_value(re.compile("smollm2-135m-instruct"), timeout=LOAD)
    quiet_since = None
    deadline = time.time() + LOAD / 1000
    while time.time() < deadline:  # the status widget shows while a script run is going on
        running = page.locator("[data-testid=stStatusWidget]").count() > 0
        quiet_since = None if running else (quiet_since or time.time())
        if quiet_since and time.time() - quiet_since > 1.5:
            break
        time.sleep(0.2)
    errors = page.locator("[data-testid=stAlertContentError], [data-testid=stException]")
    assert errors.count() == 0, errors.all_inner_texts()
    return page


def chart_cell_position(page: Page, chart_index: int, pick) -> tuple[dict, list]:
    """The position (in the chart's element) of one clickable cell of the ``chart_index``-th
    Plotly chart, and its customdata: ``pick(customdata list) -> index`` chooses the cell."""
    chart = page.locator(".js-plotly-plot").nth(chart_index)
    chart.scroll_into_view_if_needed()
    cells = chart.evaluate(
        """(el) => { const t = el._fullData.find(d => d.type === "scatter" && d.customdata);
                     return Array.from(t.x, (x, i) => [x, t.y[i], Array.from(t.customdata[i])]); }"""
    )
    x, y, data = cells[pick([c[2] for c in cells])]
    xy = chart.evaluate(
        """(el, [x, y]) => { const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis;
                             return [xa._offset + xa.d2p(x), ya._offset + ya.d2p(y)]; }""",
        [x, y],
    )
    return {"x": xy[0], "y": xy[1]}, data


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("path", list(PAGES))
def test_a_direct_link_on_a_fresh_server_opens_the_app(path, browser, runs, shots, tmp_path):
    query, title = PAGES[path]
    with app_server(runs, tmp_path / "server.log") as url:
        page = browser.new_page()
        page.goto(f"{url}/{path}{query}")
        settled(page, title)
        nav = page.locator("header").first.inner_text()
        assert "Head relevance" in nav and "head relevance" not in nav  # the app's navigation, not file names
        assert page.locator("[data-testid=stSidebarNav]").count() == 0
        if path == "head_relevance":  # the head the link names is the one picked
            expect(page.get_by_label("Layer", exact=True)).to_have_value("3")
            expect(page.get_by_label("Head", exact=True)).to_have_value("2")
        page.close()


def test_every_page_through_the_home_page_with_drill_downs_export_and_a_fit(browser, runs, shots, tmp_path):
    with app_server(runs, tmp_path / "server.log") as url:
        page = browser.new_page()
        page.goto(url)
        settled(page, "Task Vector Workbench")
        expect(page.get_by_text("Fitted runs")).to_be_visible()
        page.screenshot(path=shots / "home.png")
        for path, (_, title) in PAGES.items():
            if not path:
                continue
            page.goto(url)
            settled(page, "Task Vector Workbench")
            page.locator("[data-testid=stPageLink]").get_by_text(title, exact=True).click()
            settled(page, title)
            assert page.url.split("?")[0].endswith(f"/{path}")

        # Head relevance: click a head of the alpha map; the head across tasks follows it.
        page.goto(f"{url}/head_relevance?task=antonym")
        settled(page, "Head relevance")
        position, (layer, head, _) = chart_cell_position(page, 0, lambda cells: 40)
        page.locator(".js-plotly-plot").nth(0).click(position=position)
        expect(page.get_by_label("Layer", exact=True)).to_have_value(str(int(layer)), timeout=30_000)
        expect(page.get_by_label("Head", exact=True)).to_have_value(str(int(head)))
        settled(page, "Head relevance")
        assert f"layer={int(layer)}" in page.url and f"head={int(head)}" in page.url
        expect(
            page.locator(".js-plotly-plot", has_text=f"Layer {int(layer)}, head {int(head)}")
        ).to_have_count(1)
        page.screenshot(path=shots / "head_relevance.png")

        # Export one PNG of the alpha map.
        with page.expect_download(timeout=120_000) as download:
            page.get_by_role("button", name="PNG").first.click()
        png = tmp_path / "alpha_map.png"
        download.value.save_as(png)
        assert png.read_bytes()[:4] == b"\x89PNG"

        # Head transfer: click a cell of the bundled matrix; the per-query cell follows it.
        page.goto(f"{url}/transfer?matrix=bundled")
        settled(page, "Head transfer")
        position, (source, target, *_) = chart_cell_position(
            page, 0, lambda cells: next(i for i, c in enumerate(cells) if c[0] != c[1] and i > 5)
        )
        page.locator(".js-plotly-plot").nth(0).click(position=position)
        expect(page.get_by_role("combobox", name="Source A (its heads)")).to_have_value(
            source, timeout=30_000
        )
        expect(page.get_by_role("combobox", name="Target B (task, embedding)")).to_have_value(target)
        settled(page, "Head transfer")
        assert "source=" in page.url and "target=" in page.url
        page.screenshot(path=shots / "transfer.png")

        page.goto(f"{url}/compare")
        settled(page, "Compare methods")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()

        # A fit in one tab; a second tab keeps working meanwhile; then the fit is stopped.
        page.goto(f"{url}/fit?method=SITE&task=antonym")
        settled(page, "Fit a method")
        page.get_by_role("button", name="Fit SITE on antonym").click()
        expect(page.get_by_text("SITE on antonym (smollm2-135m-instruct): running")).to_be_visible(
            timeout=60_000
        )
        expect(page.locator("[data-testid=stProgress]")).to_be_visible(timeout=LOAD)  # its live progress
        other = browser.new_page()
        started = time.time()
        other.goto(f"{url}/head_relevance?task=country_capital")
        settled(other, "Head relevance")
        other_seconds = time.time() - started
        expect(page.get_by_text("SITE on antonym (smollm2-135m-instruct): running")).to_be_visible()
        page.get_by_text("Fits on this server").scroll_into_view_if_needed()
        page.screenshot(path=shots / "fit.png")
        other.close()
        page.locator('[class*="st-key-stop_"] button').click()  # the job's Stop, not Streamlit's
        expect(page.get_by_text("SITE on antonym (smollm2-135m-instruct): stopped")).to_be_visible(
            timeout=60_000
        )
        assert other_seconds < 60, f"the second tab took {other_seconds:.0f} s while the fit ran"

        # A crafted model link shows its name as text: no link, no image.
        crafted = (
            "[Log in](https://evil.example) ![x](https://evil.example/x.png) www.evil.example a@evil.example"
        )
        page.goto(f"{url}/?model={quote(crafted)}")
        expect(page.locator("[data-testid=stAlertContentError]").first).to_contain_text("evil", timeout=LOAD)
        assert page.locator("a[href*='evil.example'], img[src*='evil.example']").count() == 0
        page.close()

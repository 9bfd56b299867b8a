"""``interpretome report``: one self-contained HTML page per store, checked in a real headless browser."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from interpretome.cli import main
from interpretome.jobs.report import make_report
from interpretome.storage.store import group_info
from interpretome.viz.report import assign_figures, build_report, figure_html

from tests.jobfiles import write_job

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage")

DOT = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
"""A 1 x 1 PNG."""

STEPS = """
[[step]]
kind = "sweep"
fasta = "promoters.fa"
windows = [1, 6]
sequence_chunk = 2

[[step]]
kind = "ism"
fasta = "promoters.fa"
start = 100
end = 160
sequence_chunk = 2
"""


@pytest.fixture(scope="module")
def result_store(tmp_path_factory, client2):
    """A store with a sweep and an ISM group of 2 promoters, written by ``interpretome run``."""
    folder = tmp_path_factory.mktemp("report")
    from tests.jobfiles import promoters

    promoters(folder, n=2)
    path = write_job(folder, steps=STEPS)
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 0
    return folder / "out.zarr"


@pytest.fixture(scope="module")
def browser():
    """A headless Debian chromium driven by selenium (no network, a fresh profile)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them with apt-get)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not download anything
    profile = tempfile.mkdtemp(prefix="interpretome-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _screenshot(driver, path: Path) -> Path:
    height = min(12000, int(driver.execute_script("return document.documentElement.scrollHeight")))
    driver.set_window_size(1300, max(800, height))
    assert driver.save_screenshot(str(path))
    return path


def test_report__page_in_headless_browser(result_store, browser, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(result_store), "-o", str(out)]) == 0
    assert "report: " in capsys.readouterr().out
    page = out.read_text()
    # self-contained: no file or network reference besides inline data
    assert not re.search(r'src="(?!data:)', page) and "<link" not in page
    browser.get(out.resolve().as_uri())
    assert browser.title == "interpretome report: out.zarr"
    assert _console_errors(browser) == []
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.figure img')).map("
        "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    # one sweep figure and one ISM figure per sequence (2 promoters)
    assert sorted(a for a, *_ in images) == ["ism_promoter_00", "ism_promoter_01", "sweep_promoter_00",
                                             "sweep_promoter_01"]
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt
    # the summary tables, provenance and timings of each step
    text = browser.find_element("tag name", "body").text
    for group in ("sweep", "ism"):
        info = group_info(result_store, group)
        section = browser.find_element("id", f"group-{group}").text
        assert "complete" in section and info["task"] in section
        assert info["provenance"]["model"]["weights_sha256"] in section
        assert f"{info['timings'][0]['seconds']:.4g}" in section
        assert "torch" in section and "interpretome" in section
    assert "sweep_delta_mean" in text and "ism_delta" in text and "window" in text
    runs = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.runs tbody tr')).map(r => [r.cells[3].innerText, "
        "r.cells[6].innerText])")
    assert runs == [["sweep", "3"], ["ism", "2"]]
    steps = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.steps tbody tr')).map(r => r.cells[0].innerText)")
    assert steps == ["ism", "sweep"]
    shot = _screenshot(browser, tmp_path / "report.png")
    assert shot.stat().st_size > 10_000


def test_report__bokeh_figure_is_inlined_and_renders(result_store, browser, tmp_path):
    bokeh = pytest.importorskip("bokeh.plotting")
    from bokeh.embed import file_html
    from bokeh.resources import CDN

    fig = bokeh.figure(width=400, height=300, title="points")
    fig.scatter([1, 2, 3], [3, 1, 2], size=10)
    html_file = tmp_path / "scatter.html"
    page = file_html(fig, CDN, "points")
    panel_version = _version("panel")
    if panel_version:  # what holoviews/panel pages add: CDN stylesheets and a script under static/
        page = page.replace("</head>", (
            f'<link rel="stylesheet" href="https://cdn.holoviz.org/panel/{panel_version}/dist/css/loading.css">'
            '<script src="static/extensions/panel/bundled/reactiveesm/es-module-shims@^1.10.0/dist/'
            'es-module-shims.min.js"></script></head>'))
    html_file.write_text(page)
    assert "cdn.bokeh.org" in html_file.read_text()
    png = tmp_path / "dot.png"
    png.write_bytes(base64.b64decode(DOT))
    out = tmp_path / "with_bokeh.html"
    out.write_text(build_report(result_store, {"sweep": [html_file, png]}))
    page = out.read_text()
    inner = html.unescape(page)
    assert 'src="https://cdn.bokeh.org' not in inner, "BokehJS still comes from the network"
    assert "cdn.holoviz.org/panel" not in inner and 'src="static/' not in inner
    browser.get(out.resolve().as_uri())
    assert _console_errors(browser) == []
    frame = browser.find_element("css selector", "iframe.figure-html")
    browser.switch_to.frame(frame)
    try:
        import time

        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            ready = browser.execute_script(
                "return typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 && "
                "document.querySelectorAll('.bk-Figure, .bk-Plot, div[data-root-id]').length > 0")
            if ready:
                break
            time.sleep(0.2)
        assert ready, "BokehJS did not render the embedded figure"
    finally:
        browser.switch_to.default_content()
    assert _console_errors(browser) == []
    width = browser.execute_script("return document.querySelector('img[alt=dot]').naturalWidth")
    assert width == 1


def test_report__errors_and_unknown_files(result_store, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert "cannot embed notes.txt" in figure_html(other)
    page = build_report(result_store, errors={"ism": "the figures of 'ism' could not be drawn: boom"})
    assert '<p class="error">the figures of &#x27;ism&#x27; could not be drawn: boom</p>' in page
    assert assign_figures(result_store, ["f/sweep_promoter_00.png", "f/ism.png", "f/umap.png", "f/ism_x.html"]) == {
        "sweep": [Path("f/sweep_promoter_00.png")], "ism": [Path("f/ism.png"), Path("f/ism_x.html")],
        "": [Path("f/umap.png")]}
    loose = tmp_path / "umap.png"
    loose.write_bytes(base64.b64decode(DOT))
    page = build_report(result_store, {"": [loose]})
    assert '<section class="group" id="other-figures"><h2>Other figures</h2>' in page and 'alt="umap"' in page
    with pytest.raises(RuntimeError, match="is not an interpretome store"):
        make_report(tmp_path / "nothing.zarr", tmp_path / "r.html")
    with pytest.raises(RuntimeError, match=r"has no group 'tracks'; it has \['ism', 'sweep'\]"):
        make_report(result_store, tmp_path / "r.html", groups=["tracks"])


def test_report__demo_step_embeds_the_figures_it_is_given(result_store, tmp_path):
    from interpretome.jobs.demo import DEMO_STEPS, DemoContext
    from interpretome.jobs.report import render_store_figures, step_report

    assert DEMO_STEPS[-1] is step_report
    figures = render_store_figures(result_store, tmp_path / "figures")
    ctx = DemoContext(out=tmp_path, store=result_store, client=None, log=lambda msg: None,
                      figures=[p for paths in figures.values() for p in paths])
    (path,) = step_report(ctx)
    page = path.read_text()
    assert path == tmp_path / "report.html" and page.count('<figure class="figure">') == 4
    assert page.index('id="group-ism"') < page.index('alt="ism_promoter_00"') < page.index('id="group-sweep"')

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


ARTIFACTS = Path(os.environ.get("INTERPRETOME_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
"""Where the browser test saves its screenshot: ``$INTERPRETOME_TEST_ARTIFACTS`` or ``tests/artifacts/`` (git-ignored)."""

FOLD_SCORES = {"asw_label": [0.50, 0.60, 0.70], "asw_batch": [0.90, 0.92, 0.97]}
"""Synthetic clustering scores of 3 folds (the CI table is checked against scipy's t-interval)."""

CLASSES = ["B", "T", "NK"]
PLANTED = {"B": "CD79A", "T": "CD3E", "NK": "NKG7"}
"""The feature with the largest mean attribution to each class's own output in the synthetic summary."""


def _synthetic_groups(store: Path) -> None:
    """Write three small numpy-backed result groups (no model, no cluster): fold scores, an embedding
    of 60 items in 3 labels, and per-class attribution summaries with a planted top feature per class."""
    import numpy as np
    import xarray as xr

    from interpretome.storage.store import write_dataset

    metrics = list(FOLD_SCORES)
    folds = xr.Dataset({"score_fold": (("fold", "metric"), np.array([FOLD_SCORES[m] for m in metrics]).T)},
                       coords={"fold": ["f0", "f1", "f2"], "metric": metrics})
    write_dataset(folds, store, "scores", task="clustering_score_folds", params={"label": "item_label"})
    rs = np.random.default_rng(0)
    labels = np.repeat(CLASSES, [30, 20, 10])
    xy = rs.normal(size=(60, 2)).astype("float32") + np.repeat([[0, 0], [5, 0], [0, 5]], [30, 20, 10], axis=0)
    emb = xr.Dataset({"embedding_umap": (("item", "component"), xy), "item_label": ("item", labels)},
                     coords={"item": [f"cell{i:02d}" for i in range(60)], "component": ["umap1", "umap2"]})
    write_dataset(emb, store, "umap", task="embedding", params={"method": "umap", "n_components": 2})
    features = ["CD79A", "CD3E", "NKG7", "GAPDH", "ACTB", "MALAT1"]
    groups = ["all"] + CLASSES
    mean = rs.uniform(-0.1, 0.1, size=(len(groups), len(features), len(CLASSES))).astype("float32")
    for c, cls in enumerate(CLASSES):
        mean[groups.index(cls), features.index(PLANTED[cls]), c] = 1.0 + c
    dims = ("group", "feature", "target")
    n = np.full(mean.shape, 10, dtype="int64")
    std = np.full(mean.shape, 0.05, dtype="float32")
    summary = xr.Dataset({"feature_attribution_mean": (dims, mean), "feature_attribution_std": (dims, std),
                          "feature_attribution_n": (dims, n),
                          "feature_attribution_ci95": (dims, (1.96 * std / np.sqrt(n)).astype("float32"))},
                         coords={"group": groups, "feature": features, "target": CLASSES})
    write_dataset(summary, store, "summary", task="summarize_attributions", params={"by": "cell_type"})


@pytest.fixture(scope="module")
def result_store(tmp_path_factory, client2):
    """A store with a sweep and an ISM group of 2 promoters, written by ``interpretome run``, and three
    small synthetic groups (fold scores, an embedding, attribution summaries)."""
    folder = tmp_path_factory.mktemp("report")
    from tests.jobfiles import promoters

    promoters(folder, n=2)
    path = write_job(folder, steps=STEPS)
    assert main(["run", str(path), "--scheduler", client2.scheduler.address]) == 0
    _synthetic_groups(folder / "out.zarr")
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


def _open(store, group):
    import xarray as xr

    return xr.open_zarr(str(store), group=group, consolidated=False)


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


def _toc_broken(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('nav#contents a, a[href^=\"#\"]'))"
        ".map(a => a.getAttribute('href')).filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1)))")


def test_report__page_in_headless_browser(result_store, browser, tmp_path, capsys):
    import numpy as np
    from scipy import stats

    out = tmp_path / "report.html"
    assert main(["report", str(result_store), "--html", str(out)]) == 0
    assert "report: " in capsys.readouterr().out
    page = out.read_text()
    assert out.stat().st_size < 5_000_000
    # self-contained: every image is inline data (links to the full-size files are extras)
    assert not re.search(r'src="(?!data:)', page) and "<link" not in page
    browser.get(out.resolve().as_uri())
    assert browser.title == "interpretome report: out.zarr"
    assert _console_errors(browser) == []
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt
    alts = [a for a, *_ in images]
    assert len(alts) == len(set(alts)), "a figure is shown twice"
    for name in ("ism_promoter_00", "ism_promoter_01", "sweep_promoter_00", "sweep_promoter_01", "umap_embedding_umap",
                 "scores_folds", "summary_classes"):
        assert name in alts
    # a table of contents whose every entry resolves, in results order, provenance last
    toc = browser.execute_script("return Array.from(document.querySelectorAll('nav#contents a')).map(a => "
                                 "a.getAttribute('href'))")
    assert toc == ["#group-sweep", "#group-ism", "#group-summary", "#group-umap", "#group-scores", "#provenance"]
    assert _toc_broken(browser) == []
    assert page.index('id="group-scores"') < page.index('id="provenance"') < page.index('id="prov-group-sweep"')
    # captions say what a figure shows, not its file name
    captions = browser.execute_script("return Array.from(document.querySelectorAll('figcaption')).map(c => "
                                      "c.textContent)")
    assert captions and not [c for c in captions if re.search(r"\.(png|html)\b", c)]
    assert any(c.startswith("Perturbation sweep of promoter_00: change in prediction") for c in captions)
    # key tables: fold scores with scipy's 95 % t-interval, the planted top feature of each class
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#group-scores table.key tbody tr')).map(r => "
        "Array.from(r.cells).map(c => c.innerText))")
    for metric, values in FOLD_SCORES.items():
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert [metric, f"{np.mean(values):.4g}", f"{lo:.4g}", f"{hi:.4g}", f"{min(values):.4g}",
                f"{max(values):.4g}"] in rows
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#group-summary table.key tbody tr')).map(r => "
        "[r.cells[0].innerText, r.cells[1].innerText, r.cells[2].innerText])")
    for c, cls in enumerate(CLASSES):
        assert [cls, cls, f"{PLANTED[cls]} ({1.0 + c:.3g} ± {1.96 * 0.05 / np.sqrt(10):.2g})"] in rows
    counts = browser.execute_script(
        "return Array.from(document.querySelectorAll('#group-umap table.key tbody tr')).map(r => "
        "[r.cells[0].innerText, r.cells[1].innerText])")
    assert counts == [["B", "30"], ["T", "20"], ["NK", "10"]]
    # the sweep's strongest position per sequence, against the stored values
    ds = _open(result_store, "sweep")
    delta = ds["sweep_delta_mean"].isel(target=0)
    text = browser.find_element("id", "group-sweep").text
    for s in delta["sequence"].values:
        d = delta.sel(sequence=s)
        flat = d.stack(z=("window", "position"))
        z = flat.isel(z=int(np.nanargmax(np.abs(flat.values))))
        centre = float(z["position"]) + (int(z["window_length"]) - 1) / 2
        assert f"{s} k={int(z['window'])} {centre:.4g} {float(z):.4g}" in text
    # provenance and compute accounting at the end, folded; a section's link unfolds its block
    link = browser.find_element("css selector", 'a[href="#prov-group-sweep"]')
    assert browser.execute_script("return document.getElementById('prov-group-sweep').open") is False
    browser.execute_script("arguments[0].click()", link)
    assert browser.execute_script("return document.getElementById('prov-group-sweep').open") is True
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    for group in ("sweep", "ism"):
        info = group_info(result_store, group)
        section = browser.find_element("id", f"prov-group-{group}").text
        assert "complete" in section and info["task"] in section
        assert info["provenance"]["model"]["weights_sha256"] in section
        assert f"{info['timings'][0]['seconds']:.4g}" in section
        assert "torch" in section and "interpretome" in section
    text = browser.find_element("id", "provenance").text
    assert "sweep_delta_mean" in text and "ism_delta" in text and "window" in text
    runs = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.runs tbody tr')).map(r => [r.cells[3].innerText, "
        "r.cells[6].innerText])")
    assert runs == [["sweep", "3"], ["ism", "2"]]
    steps = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.steps tbody tr')).map(r => r.cells[0].innerText)")
    assert steps == ["sweep", "ism", "summary", "umap", "scores"]
    # the figures folder beside the page holds the full-size and interactive figures the page links to
    assert (tmp_path / "report_figures" / "umap" / "umap_embedding_umap.html").exists()
    assert 'href="report_figures/umap/umap_embedding_umap.html"' in page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = _screenshot(browser, ARTIFACTS / "report.png")
    assert shot.stat().st_size > 10_000


def test_report__group_restricts_the_whole_page(result_store, browser, tmp_path, capsys):
    out = tmp_path / "ism.html"
    assert main(["report", str(result_store), "--group", "ism", "-o", str(out)]) == 0
    page = out.read_text()
    browser.get(out.resolve().as_uri())
    assert _console_errors(browser) == [] and _toc_broken(browser) == []
    ids = browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)")
    assert ids == ["contents", "group-ism", "provenance", "prov-group-ism"]
    steps = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.steps tbody tr')).map(r => r.cells[0].innerText)")
    runs = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.runs tbody tr')).map(r => r.cells[3].innerText)")
    assert steps == ["ism"] and runs == ["ism"]
    for other in ("sweep_delta_mean", "sweep_promoter", "summarize_attributions", "clustering_score_folds", "group-umap"):
        assert other not in page


def test_report__images_are_downscaled_and_linked(result_store, browser, tmp_path):
    import numpy as np
    from PIL import Image

    from interpretome.viz.report import KEY_WIDTH, OTHER_WIDTH

    big = tmp_path / "sweep_big.png"
    rs = np.random.default_rng(0)
    Image.fromarray(rs.integers(0, 255, size=(600, 3000, 3), dtype=np.uint8)).save(big)
    small = tmp_path / "sweep_small.png"
    Image.fromarray(np.zeros((50, 80, 3), dtype=np.uint8)).save(small)
    out = tmp_path / "sized.html"
    out.write_text(build_report(result_store, {"sweep": [big, small, big]}, groups=["sweep"], base=tmp_path))
    page = out.read_text()
    assert page.count('alt="sweep_big"') == 1, "the same figure twice"
    browser.get(out.resolve().as_uri())
    sizes = dict(browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, [i.naturalWidth, i.naturalHeight]])"))
    assert sizes == {"sweep_big": [KEY_WIDTH, 200], "sweep_small": [80, 50]}
    assert 'href="sweep_big.png"' in page and OTHER_WIDTH < KEY_WIDTH


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
    out.write_text(build_report(result_store, {"sweep": [html_file, png]}, interactive="inline"))
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
    assert assign_figures(result_store, ["f/sweep_promoter_00.png", "f/ism.png", "f/loose.png", "f/ism_x.html"]) == {
        "sweep": [Path("f/sweep_promoter_00.png")], "ism": [Path("f/ism.png"), Path("f/ism_x.html")],
        "": [Path("f/loose.png")]}
    loose = tmp_path / "overview.png"
    loose.write_bytes(base64.b64decode(DOT))
    page = build_report(result_store, {"": [loose]})
    assert '<section class="group" id="other-figures"><h2>Other figures</h2>' in page and 'alt="overview"' in page
    assert '<a href="#other-figures">Other figures</a>' in page
    assert "overview" not in build_report(result_store, {"": [loose]}, groups=["ism"])
    with pytest.raises(RuntimeError, match="is not an interpretome store"):
        make_report(tmp_path / "nothing.zarr", tmp_path / "r.html")
    with pytest.raises(RuntimeError, match=r"has no group 'tracks'; it has \['ism', 'scores', 'summary', 'sweep', 'umap'\]"):
        make_report(result_store, tmp_path / "r.html", groups=["tracks"])


def test_report__demo_step_embeds_the_figures_it_is_given(result_store, tmp_path):
    from interpretome.jobs.demo import DEMO_STEPS, DemoContext
    from interpretome.jobs.report import render_store_figures, step_report

    assert DEMO_STEPS[-1] is step_report
    figures = render_store_figures(result_store, tmp_path / "figures")
    drawn = [p for paths in figures.values() for p in paths]
    ctx = DemoContext(out=tmp_path, store=result_store, client=None, log=lambda msg: None, figures=drawn + drawn[:3])
    (path,) = step_report(ctx)
    page = path.read_text()
    assert path == tmp_path / "report.html" and page.count('<figure class="figure') == len(drawn)
    assert page.index('id="group-sweep"') < page.index('alt="sweep_promoter_00"') < page.index('id="group-ism"')
    # the planted boxes of the demo are the markers of the sweep and ISM tables
    assert "mean Δ at -35" in page and "mean Δ at -10" in page and "mean Δ at TSS" in page


def test_report__key_tables_against_planted_values():
    """The key tables of ISM, CCC, coefficient comparisons and tracks find what was planted."""
    import numpy as np
    import xarray as xr

    from interpretome.viz import report_results as rr

    rs = np.random.default_rng(1)
    delta = rs.uniform(-0.01, 0.01, size=(3, 50, 4, 1)).astype("float32")
    delta[:, 20, 2, 0] = [-0.5, -0.7, -0.9]  # position 20 -> G hurts in every sequence
    delta[1, 33, 0, 0] = 0.8  # one strong gain
    ism = xr.Dataset({"ism_delta": (("sequence", "position", "base", "target"), delta)},
                     coords={"sequence": ["s0", "s1", "s2"], "position": np.arange(50), "base": list("ACGT"),
                             "target": ["y"]})
    by_position, single = rr.ism_tables(ism, {}, markers={"box": 18})
    assert by_position.rows[0][0] == 20 and by_position.rows[0][2] == "box +2"
    assert by_position.rows[0][1] == pytest.approx(-0.7, abs=1e-6)
    assert single.rows[0][:4] == ["s2", 20, "G", np.float32(-0.9)] and single.rows[1][:4] == ["s1", 33, "A",
                                                                                              np.float32(0.8)]
    m = rs.uniform(0, 0.2, size=(4, 4))
    m = (m + m.T) / 2
    m[1, 3] = m[3, 1] = 0.95
    names = ["a", "b", "c", "d"]
    ccc = xr.Dataset({"ccc_matrix": (("feature_i", "feature_j"), m)}, coords={"feature_i": names, "feature_j": names})
    (pairs,) = rr.ccc_tables(ccc, {})
    assert pairs.rows[0] == ["b", "d", 0.95] and len(pairs.rows) == 6
    corr = np.array([[[0.9, 0.8], [0.7, 0.6], [0.5, 0.4]]])  # (comparison, class, metric)
    coef = xr.Dataset({"coefficient_correlation": (("comparison", "class", "metric"), corr),
                       "coefficient_correlation_pvalue": (("comparison", "class", "metric"), np.full(corr.shape, 0.01))},
                      coords={"comparison": ["final:shuffled"], "class": ["x", "y", "z"], "metric": ["pearson", "ccc"]})
    (table,) = rr.coefficient_tables(coef, {})
    assert table.rows == [["final:shuffled", "0.7 (0.5 to 0.9)", "0.6 (0.4 to 0.8)", 0.01]]
    pred = np.full((1, 10, 1), np.nan)
    pred[0, 2:9, 0] = np.arange(7.0)
    pred[0, 6, 0] = 50.0
    track = xr.Dataset({"track_prediction": (("contig", "bin", "target"), pred)},
                       coords={"contig_name": ("contig", ["chrI"]), "target": ["p"],
                               "genome_position": (("contig", "bin"), np.arange(10)[None] * 100 + 50)})
    (t,) = rr.track_tables(track, {})
    assert t.rows == [["chrI", 7, float(np.mean([0, 1, 2, 3, 50, 5, 6])), 50.0, "650 bp"]]

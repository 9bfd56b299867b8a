"""``interpretome report STORE -o report.html``: one self-contained HTML page per store, results first.

Every complete group with a declared renderer (``jobs.registry.renderers``) is drawn into a folder beside the
page (``<page>_figures/``, full size and interactive figures, linked from the page), and the page shows each
analysis's key figures (downscaled, inlined) and tables, then provenance and compute accounting
(``interpretome.viz.report``). ``--group`` restricts the whole page to those groups.
"""

from __future__ import annotations

import argparse

import warnings
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..storage.store import StoreError, group_info, list_groups
from ..viz.report import write_report
from .registry import renderers
from .stores import add_selection_arguments, check_figure_folder, parse_markers


def render_store_figures(store: str | Path, out_dir: str | Path, *, groups: list[str] | None = None,
                         errors: dict[str, str] | None = None, log: Callable[[str], None] = print,
                         **options) -> dict[str, list[Path]]:
    """Draw the figures of every complete group of ``store`` that has a renderer into ``out_dir``.

    Returns ``{group: [paths]}``; a renderer that fails is recorded in ``errors`` (and ``log``)
    instead of stopping the others.
    """
    table = renderers()
    errors = {} if errors is None else errors
    figures: dict[str, list[Path]] = {}
    with warnings.catch_warnings():  # the chunk manifests (.interpretome/) are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        for g in groups or list_groups(store):
            info = group_info(store, g) or {}
            fn = table.get(info.get("task"))
            if fn is None or not info.get("complete"):
                continue
            try:
                figures[g] = [Path(p) for p in fn(store, g, Path(out_dir) / g, **options)]
            except Exception as e:  # noqa: BLE001 - one failing figure must not lose the page
                errors[g] = f"the figures of {g!r} could not be drawn: {type(e).__name__}: {e}"
                log(f"warning: {errors[g]}")
    return figures


def _check_page_folder(page: Path) -> None:
    """Raise ``InputError`` naming the fix when the folder of the report ``page`` cannot be created or written."""
    import tempfile

    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=page.parent, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"cannot write the report page {str(page)!r} ({e.strerror or e}): choose a writable "
                         f"path with --html PAGE") from None


def make_report(store: str | Path, out: str | Path | None = None, *, groups: list[str] | None = None,
                figures_dir: str | Path | None = None, log: Callable[[str], None] = print, **options) -> Path:
    """Draw every figure of ``store`` and write the HTML report to ``out`` (default STORE.html).

    The figures go to ``figures_dir`` (default ``<out without .html>_figures`` beside the page), which the
    page links to (full-size images, interactive HTML figures); the page itself inlines downscaled key
    figures and needs no other file. ``groups`` restricts the page to those groups. ``options`` go to the
    renderers (``sequences``, ``markers`` ...); ``markers`` also to the sweep / ISM tables. A renderer that
    fails is reported on the page and in ``log``; the page is still written.
    """
    store = Path(store)
    if not (store / ".zgroup").exists():
        raise StoreError(f"{str(store)!r} is not an interpretome store (no .zgroup): check the path")
    out = Path(out) if out else store.with_suffix(".html")
    every = list_groups(store)
    names = groups or every
    unknown = [g for g in names if g not in every]
    if unknown:
        raise StoreError(f"store {str(store)!r} has no group {unknown[0]!r}; it has {every}")
    figures_dir = Path(figures_dir) if figures_dir else out.with_name(out.stem + "_figures")
    # both places are checked before any figure is drawn (a page cannot be half written)
    _check_page_folder(out)
    check_figure_folder(figures_dir, "--figures")
    with warnings.catch_warnings():
        # the chunk manifests (.interpretome/) are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        errors: dict[str, str] = {}
        figures = render_store_figures(store, figures_dir, groups=names, errors=errors, log=log, **options)
        path = write_report(store, out, figures, errors=errors, groups=groups, markers=options.get("markers"))
    size = path.stat().st_size
    log(f"report: {path.resolve()} ({size / 1e6:.2g} MB, {len(names)} groups; "
        f"{sum(len(v) for v in figures.values())} figures in {figures_dir.resolve()}): open it in a browser")
    return path


def step_report(ctx) -> list[Path]:
    """Demo: one self-contained HTML page of the demo store, with the figures the other steps drew."""
    import time

    from ..datasets import MOTIF_10_START, MOTIF_35_START, TSS
    from ..viz.report import assign_figures

    t0 = time.perf_counter()
    figures = [p for p in ctx.figures if Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".svg", ".html")]
    markers = {"-35": MOTIF_35_START, "-10": MOTIF_10_START, "TSS": TSS}  # the planted boxes (step_dna)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        path = write_report(ctx.store, ctx.out / "report.html", assign_figures(ctx.store, figures),
                            title="interpretome demo report", markers=markers)
    ctx.log(f"[report] {path.resolve()} ({path.stat().st_size / 1e6:.2g} MB, {len(set(map(str, figures)))} figures, "
            f"{time.perf_counter() - t0:.1f} s): open it in a browser")
    return [path]


def _report_cmd(args) -> int:
    make_report(args.store, args.html, groups=args.group, sequences=args.sequence,
                markers=parse_markers(args.marker), figures_dir=args.figures)
    return 0


def register(sub) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser("report", help="one self-contained HTML page of a store: results first, then provenance",
                       description="Write one self-contained HTML page of STORE: a table of contents, each analysis's "
                                   "key figures and tables (top attributions per class, sweep / ISM at the markers, "
                                   "embeddings by label, scores with 95 % intervals ...), then parameters, provenance "
                                   "and compute accounting. --group restricts the whole page to those groups.")
    p.add_argument("store")
    p.add_argument("--html", default=None, metavar="PAGE",
                   help="HTML file to write (default STORE.html)")
    p.add_argument("-o", "--out", dest="html", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="folder of the full-size and interactive figures the page links to "
                        "(default PAGE_figures beside the page)")
    add_selection_arguments(p)
    p.set_defaults(func=_report_cmd)


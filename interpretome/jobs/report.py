"""``interpretome report STORE -o report.html``: one self-contained HTML page per store.

Every complete group with a declared renderer (``jobs.registry.renderers``) is drawn (into a temporary folder, then
inlined), next to the group's summary tables, parameters, provenance and timings
(``interpretome.viz.report``).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Callable

from ..storage.store import StoreError, group_info, list_groups
from ..viz.report import write_report
from .registry import renderers
from .stores import add_selection_arguments, parse_markers


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


def make_report(store: str | Path, out: str | Path | None = None, *, groups: list[str] | None = None,
                log: Callable[[str], None] = print, **options) -> Path:
    """Draw every figure of ``store`` and write the HTML report to ``out`` (default STORE.html).

    ``options`` go to the renderers (``sequences``, ``markers`` ...). A renderer that fails is
    reported on the page and in ``log``; the page is still written.
    """
    store = Path(store)
    if not (store / ".zgroup").exists():
        raise StoreError(f"{str(store)!r} is not an interpretome store (no .zgroup): check the path")
    out = Path(out) if out else store.with_suffix(".html")
    names = groups or list_groups(store)
    unknown = [g for g in names if g not in list_groups(store)]
    if unknown:
        raise StoreError(f"store {str(store)!r} has no group {unknown[0]!r}; it has {list_groups(store)}")
    with tempfile.TemporaryDirectory(prefix="interpretome-report-") as tmp, warnings.catch_warnings():
        # the chunk manifests (.interpretome/) are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        errors: dict[str, str] = {}
        figures = render_store_figures(store, tmp, groups=names, errors=errors, log=log, **options)
        path = write_report(store, out, figures, errors=errors)
    log(f"report: {path.resolve()} ({sum(len(v) for v in figures.values())} figures, {len(names)} groups)")
    return path


def step_report(ctx) -> list[Path]:
    """Demo: one self-contained HTML page of the demo store, with the figures the other steps drew."""
    import time

    from ..viz.report import assign_figures

    t0 = time.perf_counter()
    figures = [p for p in ctx.figures if Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".svg", ".html")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        path = write_report(ctx.store, ctx.out / "report.html", assign_figures(ctx.store, figures),
                            title="interpretome demo report")
    ctx.log(f"[report] {path.resolve()} ({len(figures)} figures, {time.perf_counter() - t0:.1f} s): open it in a browser")
    return [path]


def _report_cmd(args) -> int:
    make_report(args.store, args.out, groups=args.group, sequences=args.sequence,
                markers=parse_markers(args.marker))
    return 0


def register(sub) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser("report", help="one self-contained HTML page of a store (figures, tables, provenance)")
    p.add_argument("store")
    p.add_argument("-o", "--out", default=None, help="HTML file (default STORE.html)")
    add_selection_arguments(p)
    p.set_defaults(func=_report_cmd)


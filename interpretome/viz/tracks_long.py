"""Long tracks drawn with datashader (PNG) and bokeh (interactive HTML), with gene starts.

Reads stored groups only (never a model): the tiled track (``track_prediction`` with its
geometry attrs), optionally its min/max pyramid (``tasks.tiles.track_pyramid``) and a gene table
(``storage.annotation``). A view of ``n`` bins drawn ``width`` pixels wide reads the full track
when ``n <= oversample * width``; otherwise it reads the coarsest pyramid level that still has
at least ``oversample * width`` groups in view and draws each group as a vertical min-max
segment (M4-style: the pixel columns of a line through every bin are covered by the group's
min..max). So a whole-chromosome render reads work proportional to pixels, not positions.

Gene starts are drawn as red lines; a triangle on top points in the gene's direction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..storage.export import target_index
from ..storage.genome import TrackGeometry
from .figures import pyplot


def row_index(ds: xr.Dataset, contig) -> int:
    """Return the row of ``contig`` (an index, a region label or a contig name; None: the first)."""
    labels = [str(c) for c in ds["contig"].values]
    if isinstance(contig, (int, np.integer)):
        return int(contig)
    if contig is None:
        return 0
    if str(contig) in labels:
        return labels.index(str(contig))
    names = [str(c) for c in ds["contig_name"].values]
    if str(contig) in names:
        return names.index(str(contig))
    raise ValueError(f"the track has no contig or region {contig!r}; it has {labels[:10]}")


def track_points(track: xr.Dataset, contig=None, *, start=None, end=None, target=None, width: int = 1200,
                 pyramid: xr.Dataset | None = None, oversample: int = 2) -> tuple[pd.DataFrame, int]:
    """Return ``(points, level)``: the x (genome position), y values to draw and the level read.

    ``level`` 0 means the full-resolution track (one point per bin, at the bin centre); level
    ``l >= 1`` means pyramid groups of ``factor**l`` bins, two points per group (min then max) at
    the group's centre. ``start``/``end`` are genome coordinates (0-based) of the view.
    """
    geom = TrackGeometry.from_attrs(track.attrs)
    i, t = row_index(track, contig), target_index(track, target)
    rstart, rend = int(track["region_start"].values[i]), int(track["region_end"].values[i])
    length = rend - rstart
    n = geom.n_bins(length)
    lo = rstart if start is None else max(rstart, int(start))
    hi = rend if end is None else min(rend, int(end))
    if hi <= lo:
        raise ValueError(f"view {lo}-{hi} is empty or outside region {rstart}-{rend}: check start/end")
    b0, b1 = geom.bin_of(length, lo - rstart), geom.bin_of(length, hi - 1 - rstart) + 1
    level, factor = 0, 1
    if pyramid is not None and b1 - b0 > oversample * width:
        factor_base = int(pyramid.attrs["pyramid_factor"])
        for lv, off, n_l in pyramid.attrs["pyramid_levels"]:
            f = factor_base ** int(lv)
            if (b1 - b0) / f >= oversample * width:
                level, factor, offset, n_groups = int(lv), f, int(off), int(n_l)
    if level == 0:
        y = np.asarray(track["track_prediction"][i, b0:b1, t].values, np.float64)
        x = rstart + geom.centres(length, np.arange(b0, b1))
        return pd.DataFrame({"x": x.astype(np.float64), "y": y}), 0
    g0, g1 = b0 // factor, min(n_groups, -(-b1 // factor))
    sl = slice(offset + g0, offset + g1)
    mn = np.asarray(pyramid["track_pyramid_min"][i, sl, t].values, np.float64)
    mx = np.asarray(pyramid["track_pyramid_max"][i, sl, t].values, np.float64)
    g = np.arange(g0, g1)
    first, last = g * factor, np.minimum((g + 1) * factor, n) - 1
    xc = rstart + (geom.centres(length, first) + geom.centres(length, last)) / 2
    x = np.repeat(xc, 2)
    y = np.empty(2 * len(g))
    y[0::2], y[1::2] = mn, mx
    return pd.DataFrame({"x": x, "y": y}), level


def shade_points(points: pd.DataFrame, x_range, y_range, width: int, height: int, color: str = "#1f4e99"):
    """Return the datashader Image of a line through ``points`` (x, y) on a ``width`` x ``height`` canvas."""
    import datashader as dsh
    import datashader.transfer_functions as tf

    # float ranges and float64 columns always, so numba compiles the line kernel once per process
    cvs = dsh.Canvas(plot_width=int(width), plot_height=int(height), x_range=tuple(map(float, x_range)),
                     y_range=tuple(map(float, y_range)))
    points = points.astype({"x": np.float64, "y": np.float64})
    agg = cvs.line(points, "x", "y", agg=dsh.any())
    return tf.shade(agg, cmap=[color, color], how="linear", min_alpha=255)


def _y_range(points: pd.DataFrame):
    y = points["y"].to_numpy()
    y = y[np.isfinite(y)]
    if not y.size:
        return (0.0, 1.0)
    lo, hi = float(y.min()), float(y.max())
    pad = (hi - lo) * 0.05 or 0.5
    return lo - pad, hi + pad


def plot_track(track: xr.Dataset, contig=None, *, genes: pd.DataFrame | None = None, pyramid=None, start=None,
               end=None, target=None, width: int = 1200, height: int = 260, title: str | None = None):
    """Return a matplotlib Figure: the track rendered by datashader, gene starts as red lines.

    ``genes``: a table from ``storage.annotation`` (``contig``, ``tss``, ``strand``, ``name``);
    the genes of this contig whose start lies in view are drawn (names when at most 40).
    """
    plt = pyplot()
    i = row_index(track, contig)
    name = str(track["contig_name"].values[i])
    rstart, rend = int(track["region_start"].values[i]), int(track["region_end"].values[i])
    lo = rstart if start is None else max(rstart, int(start))
    hi = rend if end is None else min(rend, int(end))
    points, level = track_points(track, i, start=lo, end=hi, target=target, width=width, pyramid=pyramid)
    yr = _y_range(points)
    img = shade_points(points, (lo, hi), yr, width, height)
    rgba = img.data.view(np.uint8).reshape(img.shape + (4,))
    dpi = 100
    fw, fh = width / dpi + 1.4, height / dpi + 1.5  # inches: axes of width x height pixels plus margins
    fig = plt.figure(figsize=(fw, fh), dpi=dpi)
    ax = fig.add_axes([0.9 / fw, 0.6 / fh, width / dpi / fw, height / dpi / fh])
    ax.imshow(rgba, origin="lower", extent=(lo, hi, yr[0], yr[1]), aspect="auto", interpolation="nearest")
    if genes is not None and len(genes):
        sel = genes[(genes["contig"] == name) & (genes["tss"] >= lo) & (genes["tss"] < hi)]
        for _, g in sel.iterrows():
            ax.axvline(g["tss"], color="red", lw=0.8, alpha=0.8)
            ax.plot([g["tss"]], [yr[1]], marker=">" if g["strand"] != "-" else "<", color="red", ms=4, clip_on=False)
            if len(sel) <= 40:
                ax.text(g["tss"], yr[1], f" {g['name']}", color="red", fontsize=6, rotation=90, va="bottom",
                        ha="center", clip_on=False)
    tname = str(track["target"].values[target_index(track, target)])
    res = "full resolution" if level == 0 else f"pyramid level {level}"
    ax.set_xlim(lo, hi)
    ax.set_ylim(*yr)
    ax.set_xlabel(f"{name} position (bp)")
    ax.set_ylabel(tname)
    fig.suptitle(title or f"{tname} along {name}:{lo + 1:,}-{hi:,} ({res})", fontsize=9, y=0.995)
    return fig


def track_html(track: xr.Dataset, contig, path: str | Path, *, genes: pd.DataFrame | None = None, pyramid=None,
               start=None, end=None, target=None, max_points: int = 20000) -> Path:
    """Write an interactive bokeh HTML of a track region (bokeh JS inlined, so it works offline).

    At most about ``max_points`` points are drawn (the pyramid is used above that); gene starts
    are red vertical lines with a triangle on top whose hover gives the gene name and strand.
    (Plain bokeh rather than holoviews: the same figure, seconds less to import.)
    """
    from bokeh.embed import file_html
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    i = row_index(track, contig)
    name = str(track["contig_name"].values[i])
    rstart, rend = int(track["region_start"].values[i]), int(track["region_end"].values[i])
    lo = rstart if start is None else max(rstart, int(start))
    hi = rend if end is None else min(rend, int(end))
    points, level = track_points(track, i, start=lo, end=hi, target=target, width=max(1, max_points // 2),
                                 pyramid=pyramid, oversample=1)
    tname = str(track["target"].values[target_index(track, target)])
    title = f"{tname} along {name}:{lo + 1:,}-{hi:,}" + ("" if level == 0 else f" (pyramid level {level})")
    fig = figure(width=1100, height=320, title=title, x_axis_label=f"{name} position (bp)", y_axis_label=tname,
                 x_range=(lo, hi), tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom")
    src = ColumnDataSource({"x": points["x"].to_numpy(), "y": points["y"].to_numpy()})
    line = fig.line("x", "y", source=src, color="#1f4e99", line_width=1.2)
    fig.add_tools(HoverTool(renderers=[line], tooltips=[("position", "@x{0,0}"), (tname, "@y{0.0000}")],
                            mode="vline"))
    if genes is not None and len(genes):
        sel = genes[(genes["contig"] == name) & (genes["tss"] >= lo) & (genes["tss"] < hi)]
        if len(sel):
            y = points["y"].to_numpy()
            y = y[np.isfinite(y)]
            y0, y1 = (float(y.min()), float(y.max())) if y.size else (0.0, 1.0)
            gsrc = ColumnDataSource({"tss": sel["tss"].to_numpy(np.float64), "y0": [y0] * len(sel),
                                     "y1": [y1] * len(sel), "gene": sel["name"].astype(str).tolist(),
                                     "strand": sel["strand"].astype(str).tolist(),
                                     "angle": [np.pi / 2 if s == "-" else -np.pi / 2 for s in sel["strand"]]})
            fig.segment(x0="tss", y0="y0", x1="tss", y1="y1", source=gsrc, color="red", line_width=1, alpha=0.7)
            marks = fig.scatter("tss", "y1", source=gsrc, marker="triangle", angle="angle", size=9, color="red")
            fig.add_tools(HoverTool(renderers=[marks], tooltips=[("gene", "@gene"), ("strand", "@strand"),
                                                                 ("start", "@tss{0,0}")]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .report import inline_resources

    # inline also what other imported extensions (panel, once holoviews is loaded) add as relative URLs
    path.write_text(inline_resources(file_html(fig, INLINE, f"interpretome track {name}")))
    return path

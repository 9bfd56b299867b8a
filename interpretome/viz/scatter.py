"""Scatter plots of embeddings: datashader PNGs for 10^5..10^8 points, HTML pages, image-patch canvases.

- ``datashader_png(coords, out, labels=None | values=None)``: points aggregated chunk by chunk
  (numpy, memory-mapped, dask or zarr coordinates; memory bounded by one chunk plus the canvas),
  coloured by count, by category (with a legend) or by a continuous value, spread for sparse
  regions.
- ``matplotlib_png``: a plain scatter for small data (per-fold figures).
- ``scatter_html``: holoviews/bokeh page, real points with hover up to ``max_points``, above that a
  rasterised (datashaded) image.
- ``scatter3d_html``: a self-contained interactive 3-D scatter (drag to rotate, wheel to zoom) for
  up to ~10^5 points; no network needed to open it.
- ``patch_canvas``: thumbnails of image patches drawn at their 2-D coordinates, read chunk by chunk
  from an npy/zarr/dask image array.

Coordinates are ``(n, 2)`` (``(n, 3)`` for 3-D) arrays or an ``embedding_*`` DataArray.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from .figures import pyplot

GLASBEY = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
           "#e6550d", "#31a354", "#756bb1", "#636363", "#9c9ede", "#cedb9c", "#e7cb94", "#e7969c"]


CHUNK = 64_000_000
"""Points aggregated at once (their x and y as float32/float64 copies: 0.5-1 GB); more are done in chunks."""


def color_key(categories) -> dict[str, str]:
    """Return a stable category -> hex colour mapping (cycled past 24 categories)."""
    return {str(c): GLASBEY[i % len(GLASBEY)] for i, c in enumerate(categories)}


def _raw(a):
    return a.data if hasattr(a, "dims") and hasattr(a, "data") else a


def _check_coords(coords, ndim: int = 2):
    c = _raw(coords)
    if len(c.shape) != 2 or c.shape[1] < ndim:
        raise ValueError(f"coordinates have shape {tuple(c.shape)}; need (n, {ndim}) (an embedding_* variable)")
    return c


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _columns(c, s: int, e: int):
    """Return contiguous x and y arrays of rows [s, e) of an (n, >=2) array (numpy, memmap, dask, zarr)."""
    b = np.asarray(c[s:e, :2])
    return np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1])


def _ranges(c, chunk: int, first=None):
    lo = np.full(2, np.inf)
    hi = np.full(2, -np.inf)
    for s, e in _chunks(c.shape[0], chunk):
        cols = first if (first is not None and s == 0) else _columns(c, s, e)
        for k, v in enumerate(cols):                      # contiguous 1-D reductions are fast
            lo[k] = min(lo[k], float(np.nanmin(v)))
            hi[k] = max(hi[k], float(np.nanmax(v)))
    pad = np.where(hi > lo, (hi - lo) * 0.02, 1.0)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def aggregate(coords, *, labels=None, categories=None, values=None, width: int = 800, height: int = 800,
              x_range=None, y_range=None, chunk: int = CHUNK):
    """Return the datashader aggregate of the points, summed chunk by chunk, and the categories.

    ``labels`` (n,) gives a ``count_cat`` aggregate (y, x, category); ``values`` (n,) a
    ``(sum, count)`` pair for the mean; otherwise counts (y, x). At most ``chunk`` points are
    held at once.
    """
    import datashader as ds
    import pandas as pd

    c = _check_coords(coords)
    n = c.shape[0]
    first = _columns(c, 0, min(n, chunk))                # kept: a single-chunk input is read once
    if x_range is None or y_range is None:
        xr_, yr_ = _ranges(c, chunk, first)
        x_range, y_range = x_range or xr_, y_range or yr_
    cvs = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=x_range, y_range=y_range)
    lab = _raw(labels) if labels is not None else None
    val = _raw(values) if values is not None else None
    if lab is not None and categories is None:
        categories = np.unique(np.asarray(lab).astype(str))
    total = None
    for s, e in _chunks(n, chunk):
        bx, by = first if s == 0 else _columns(c, s, e)
        df = pd.DataFrame({"x": bx, "y": by}, copy=False)
        if lab is not None:
            df["c"] = pd.Categorical(np.asarray(lab[s:e]).astype(str), categories=[str(k) for k in categories])
            agg = cvs.points(df, "x", "y", ds.count_cat("c"))
        elif val is not None:
            df["v"] = np.asarray(val[s:e], dtype=np.float64)
            agg = (cvs.points(df, "x", "y", ds.sum("v")), cvs.points(df, "x", "y", ds.count("v")))
        else:
            agg = cvs.points(df, "x", "y", ds.count())
        if total is None:
            total = agg
        elif isinstance(agg, tuple):
            total = (total[0] + agg[0], total[1] + agg[1])
        else:
            total = total + agg
    return total, categories


def _legend_image(img, key: dict[str, str], title: str | None):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    rows = list(key.items())
    width = 20 + max([len(k) for k in key] + [len(title or "")]) * 7 + 30
    out = Image.new("RGBA", (img.width + width, max(img.height, 20 * len(rows) + 40)), "white")
    out.paste(img, (0, 0), img)
    d = ImageDraw.Draw(out)
    y = 10
    if title:
        d.text((img.width + 10, y), title, fill="black", font=font)
        y += 20
    for name, col in rows:
        d.rectangle([img.width + 10, y, img.width + 22, y + 12], fill=col)
        d.text((img.width + 28, y), name, fill="black", font=font)
        y += 18
    return out


def datashader_png(coords, out, *, labels=None, values=None, categories=None, width: int = 800,
                   height: int = 800, spread: int = 0, how: str = "eq_hist", cmap=None, legend: bool = True,
                   title: str | None = None, background: str = "white", chunk: int = CHUNK) -> Path:
    """Render the points with datashader to a PNG at ``out`` and return its path.

    Colour by count (default), by ``labels`` (categorical, legend at the right) or by the mean of
    ``values`` (continuous). ``spread`` > 0 enlarges isolated pixels by that many pixels
    (``tf.spread``); ``spread=-1`` uses ``tf.dynspread``.
    """
    import datashader.transfer_functions as tf

    agg, categories = aggregate(coords, labels=labels, categories=categories, values=values, width=width,
                                height=height, chunk=chunk)
    key = None
    if labels is not None:
        key = color_key(categories)
        img = tf.shade(agg, color_key=key, how=how)
    elif values is not None:
        s, cnt = agg
        mean = s.where(cnt > 0) / cnt.where(cnt > 0)
        img = tf.shade(mean, cmap=cmap or ["#313695", "#74add1", "#fee090", "#f46d43", "#a50026"], how="linear")
    else:
        img = tf.shade(agg, cmap=cmap or ["#c6dbef", "#08306b"], how=how)
    if spread > 0:
        img = tf.spread(img, px=int(spread))
    elif spread < 0:
        img = tf.dynspread(img, threshold=0.5, max_px=3)
    img = tf.set_background(img, background)
    pil = img.to_pil()
    if key is not None and legend:
        pil = _legend_image(pil, key, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pil.save(out)
    return out


def matplotlib_png(coords, out, *, labels=None, values=None, title: str | None = None, size: float = 4.0,
                   figsize=(6, 5)) -> Path:
    """Draw a matplotlib scatter (small data) coloured by ``labels`` (legend) or ``values`` (colour bar)."""
    plt = pyplot()
    c = np.asarray(_raw(coords))
    fig, ax = plt.subplots(figsize=figsize)
    if labels is not None:
        lab = np.asarray(_raw(labels)).astype(str)
        cats = np.unique(lab)
        key = color_key(cats)
        for k in cats:
            sel = lab == k
            ax.scatter(c[sel, 0], c[sel, 1], s=size, c=key[k], label=k, linewidths=0)
        ax.legend(markerscale=3, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    elif values is not None:
        sc = ax.scatter(c[:, 0], c[:, 1], s=size, c=np.asarray(_raw(values), float), cmap="viridis", linewidths=0)
        fig.colorbar(sc, ax=ax)
    else:
        ax.scatter(c[:, 0], c[:, 1], s=size, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def scatter_html(coords, out, *, labels=None, hover=None, title: str = "embedding", max_points: int = 50_000,
                 width: int = 800, height: int = 700) -> Path:
    """Write an interactive holoviews/bokeh page; above ``max_points`` the points are rasterised.

    ``hover`` is a dict name -> (n,) array shown in the tooltip (small data only).
    """
    import holoviews as hv
    import pandas as pd

    hv.extension("bokeh", logo=False)
    c = _check_coords(coords)
    n = c.shape[0]
    if n <= max_points:
        data = {"x": np.asarray(c[:, 0]), "y": np.asarray(c[:, 1])}
        vdims = []
        if labels is not None:
            data["label"] = np.asarray(_raw(labels)).astype(str)
            vdims.append("label")
        for k, v in (hover or {}).items():
            data[k] = np.asarray(_raw(v))
            vdims.append(k)
        pts = hv.Points(pd.DataFrame(data), ["x", "y"], vdims)
        opts = dict(width=width, height=height, size=4, tools=["hover"], title=title)
        if labels is not None:
            key = color_key(np.unique(data["label"]))
            opts.update(color="label", cmap=key, legend_position="right")
        plot = pts.opts(**opts)
    else:
        import datashader as ds
        from holoviews.operation.datashader import datashade, rasterize

        x_range, y_range = _ranges(c, CHUNK)
        data = {"x": np.asarray(c[:, 0]), "y": np.asarray(c[:, 1])}
        if labels is not None:
            data["label"] = pd.Categorical(np.asarray(_raw(labels)).astype(str))
            pts = hv.Points(pd.DataFrame(data), ["x", "y"], ["label"])
            key = color_key(data["label"].categories)
            plot = datashade(pts, aggregator=ds.count_cat("label"), color_key=key, dynamic=False,
                             x_range=x_range, y_range=y_range, width=width, height=height)
        else:
            pts = hv.Points(pd.DataFrame(data), ["x", "y"])
            plot = rasterize(pts, dynamic=False, x_range=x_range, y_range=y_range, width=width, height=height)
            plot = plot.opts(cmap="Blues", cnorm="eq_hist", colorbar=True)
        plot = plot.opts(width=width, height=height, title=f"{title} (rasterised, {n:,} points)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    hv.save(plot, out, backend="bokeh", resources="inline")
    return out


_HTML3D = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:0}}#c{{cursor:grab}}#legend{{position:absolute;top:10px;right:10px;
font-size:12px;background:#fffd;padding:6px}}</style></head>
<body><canvas id="c" width="{w}" height="{h}"></canvas><div id="legend"></div>
<script>
const D = {data};
const cv = document.getElementById('c'), g = cv.getContext('2d');
const n = D.x.length; let yaw = 0.6, pitch = 0.4, zoom = 1.0;
const leg = document.getElementById('legend');
leg.innerHTML = '<b>' + D.title + '</b><br>' + D.cats.map((k, i) =>
  '<span style="color:' + D.colors[i] + '">&#9632;</span> ' + k).join('<br>');
function draw() {{
  g.fillStyle = '#fff'; g.fillRect(0, 0, cv.width, cv.height);
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  const s = Math.min(cv.width, cv.height) * 0.4 * zoom, ox = cv.width / 2, oy = cv.height / 2;
  const zs = new Float32Array(n), px = new Float32Array(n), py = new Float32Array(n);
  for (let i = 0; i < n; i++) {{
    const x = D.x[i] * cy - D.z[i] * sy, z0 = D.x[i] * sy + D.z[i] * cy;
    const y = D.y[i] * cp - z0 * sp; zs[i] = D.y[i] * sp + z0 * cp;
    px[i] = ox + s * x; py[i] = oy - s * y;
  }}
  const order = Array.from(zs.keys()).sort((a, b) => zs[a] - zs[b]);
  for (const i of order) {{ g.fillStyle = D.colors[D.c[i]]; g.fillRect(px[i] - 1.5, py[i] - 1.5, 3, 3); }}
  document.body.dataset.drawn = String(n);
}}
let drag = null;
cv.onmousedown = e => drag = [e.clientX, e.clientY];
window.onmouseup = () => drag = null;
window.onmousemove = e => {{ if (!drag) return; yaw += (e.clientX - drag[0]) / 200; pitch += (e.clientY - drag[1]) / 200;
  drag = [e.clientX, e.clientY]; draw(); }};
cv.onwheel = e => {{ e.preventDefault(); zoom *= e.deltaY < 0 ? 1.1 : 0.9; draw(); }};
draw();
</script></body></html>
"""


def scatter3d_html(coords, out, *, labels=None, title: str = "embedding (3-D)", max_points: int = 100_000,
                   width: int = 900, height: int = 750) -> Path:
    """Write a self-contained interactive 3-D scatter page (drag: rotate, wheel: zoom).

    Raises ``ValueError`` above ``max_points`` points: render a subsample or a 2-D datashader PNG.
    """
    c = np.asarray(_raw(_check_coords(coords, 3)), dtype=np.float64)[:, :3]
    n = c.shape[0]
    if n > max_points:
        raise ValueError(f"{n:,} points are too many for the 3-D page (max_points={max_points:,}): subsample the "
                         f"items or draw a 2-D datashader PNG instead")
    centre = (c.max(0) + c.min(0)) / 2
    scale = float(np.max(c.max(0) - c.min(0))) / 2 or 1.0
    u = (c - centre) / scale
    lab = np.asarray(_raw(labels)).astype(str) if labels is not None else np.full(n, "items")
    cats, codes = np.unique(lab, return_inverse=True)
    key = color_key(cats)
    data = {"x": np.round(u[:, 0], 4).tolist(), "y": np.round(u[:, 1], 4).tolist(),
            "z": np.round(u[:, 2], 4).tolist(), "c": codes.tolist(), "cats": [html.escape(k) for k in cats],
            "colors": [key[k] for k in cats], "title": html.escape(title)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_HTML3D.format(title=html.escape(title), w=int(width), h=int(height),
                                  data=json.dumps(data, separators=(",", ":"))))
    return out


def _thumb(img: np.ndarray, size: int) -> np.ndarray:
    """Return an (size, size, 3) uint8 thumbnail of one image (H, W[, C]) via PIL."""
    from PIL import Image

    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) / (hi - lo) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))


def _take(imgs, idx: np.ndarray) -> np.ndarray:
    """Return ``imgs[idx]`` as numpy, reading only those rows (numpy/memmap, zarr, dask)."""
    if hasattr(imgs, "oindex"):
        return np.asarray(imgs.oindex[idx])
    if hasattr(imgs, "compute"):
        return np.asarray(imgs[idx].compute())
    return np.asarray(imgs[idx])


def patch_canvas(coords, images, out, *, canvas: int = 2000, thumb: int = 32, layout: str = "auto",
                 max_patches: int | None = None, seed: int = 0, chunk: int = 256,
                 background=(255, 255, 255)) -> Path:
    """Draw each image patch as a ``thumb``-pixel thumbnail centred at its 2-D coordinate; save a PNG.

    ``images`` (n, H, W, C) or (n, C, H, W) (``layout`` "nhwc" | "nchw" | "auto": channels first when
    axis 1 has 1, 3 or 4 entries and the last axis does not), as numpy, ``np.load(mmap_mode="r")``,
    zarr or dask. Patches are read ``chunk`` at a time, so memory is the canvas plus one chunk.
    ``max_patches`` draws a seeded subsample (later patches are drawn over earlier ones).
    """
    from PIL import Image

    c = np.asarray(_raw(_check_coords(coords)), dtype=np.float64)[:, :2]
    imgs = _raw(images)
    n = c.shape[0]
    if imgs.shape[0] != n:
        raise ValueError(f"{imgs.shape[0]} images but {n} coordinates: pass the images of the embedded items, in order")
    if len(imgs.shape) not in (3, 4):
        raise ValueError(f"images have shape {tuple(imgs.shape)}; need (n, H, W), (n, H, W, C) or (n, C, H, W)")
    if layout == "auto":
        layout = "nchw" if len(imgs.shape) == 4 and imgs.shape[1] in (1, 3, 4) and imgs.shape[3] not in (1, 3, 4) else "nhwc"
    picks = np.arange(n)
    if max_patches is not None and max_patches < n:
        picks = np.sort(np.random.default_rng(seed).choice(n, int(max_patches), replace=False))
    lo, hi = c.min(0), c.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    usable = canvas - thumb
    px = np.round((c[:, 0] - lo[0]) / span[0] * usable).astype(int)
    py = np.round((1 - (c[:, 1] - lo[1]) / span[1]) * usable).astype(int)
    board = np.empty((canvas, canvas, 3), np.uint8)
    board[:] = np.asarray(background, np.uint8)
    for s, e in _chunks(picks.size, chunk):
        idx = picks[s:e]
        block = _take(imgs, idx)
        if layout == "nchw":
            block = np.moveaxis(block, 1, -1)
        for k, i in enumerate(idx):
            board[py[i]:py[i] + thumb, px[i]:px[i] + thumb] = _thumb(block[k], thumb)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(board).save(out)
    return out

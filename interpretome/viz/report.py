"""One self-contained HTML page per store, results first: each analysis's key figures and tables,
then provenance and compute accounting.

``build_report(store, figures)`` reads the store's groups (``group_info``: task, params, provenance,
timings; the variables) and returns the page as a string. Sections come in the order of
``report_results.ORDER`` (sequence analyses, attributions, embeddings, comparisons), each with a
line on what the analysis measures, its key figures with captions that say what they show
(``report_results.caption``), its key tables computed from the stored values
(``report_results.key_tables``: top attributions per class, sweep / ISM at the markers, items per
label, scores with 95 % t-intervals, coefficient agreement, track maxima) and its other figures
folded away. A table of contents links every section; parameters, variables, provenance, job runs
and timings close the page, folded.

Figures are given as paths per group (made by the renderers of ``interpretome.jobs``; the viz layer
never runs a model). Raster figures are downscaled and palette-quantised before they are inlined as
``data:`` URIs (each linked to its full-size file), SVGs are inlined as they are, and interactive HTML
figures (bokeh) are linked by default: each carries BokehJS (megabytes), so inlining them
(``interactive="inline"``: an ``<iframe srcdoc>`` whose CDN scripts are replaced by the installed
copies) is for pages of one or two. The page needs no network and no other file to show every
static figure and table.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..storage.store import group_info, group_state, list_groups
from . import report_results as results

STATS_MAX_ELEMENTS = 5_000_000
"""Variables up to this many elements get min / mean / max / NaN counts in the tables."""

KEY_WIDTH = 1000
"""Largest width in pixels of an inlined key figure (larger ones are downscaled)."""

OTHER_WIDTH = 640
"""Largest width in pixels of an inlined supporting figure."""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".gif": "image/gif", ".webp": "image/webp"}
_HTML = (".html", ".htm")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1rem 2rem;color:#1d1d1f;background:#fff;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.4rem}
h2 small{color:#666;font-weight:normal;font-size:.65em}h3{margin:1.2rem 0 .4rem}
.meta,.purpose{color:#555;font-size:.9rem}.purpose{font-style:italic}
table{border-collapse:collapse;margin:.3rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
table caption{caption-side:top;text-align:left;color:#333;font-size:.85rem;padding:.2rem 0}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
pre{background:#f7f7f9;padding:.5rem;overflow-x:auto;max-height:24rem}
figure.figure{margin:.5rem 0 1.2rem;padding:0}figure.figure img{max-width:100%;height:auto;border:1px solid #eee}
figure.figure iframe{width:100%;height:520px;border:1px solid #eee}
figure.small{display:inline-block;vertical-align:top;max-width:48%;margin-right:1%}
figcaption{color:#444;font-size:.82rem;max-width:60rem}.state-ok{color:#17803d}.state-bad{color:#b3261e;font-weight:bold}
.error{background:#fdecea;border:1px solid #b3261e;padding:.5rem;color:#b3261e}
nav#contents ol{columns:2;padding-left:1.4rem}nav#contents li{margin:.1rem 0}
details{margin:.4rem 0}summary{cursor:pointer;color:#1f4e99}
a.interactive{display:inline-block;margin:.2rem 0;padding:.2rem .5rem;border:1px solid #1f4e99;border-radius:4px;
text-decoration:none}
"""


_OPEN_DETAILS = ("<script>function openTarget(id){var d=document.getElementById(id);"
                 "if(d&&d.tagName==='DETAILS')d.open=true}"
                 "document.addEventListener('click',function(e){var a=e.target.closest('a[href^=\"#\"]');"
                 "if(a)openTarget(a.getAttribute('href').slice(1))});"
                 "if(location.hash)openTarget(location.hash.slice(1))</script>")
"""Opens a folded provenance block when a link (or the address) points at it."""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.4g}"
    if isinstance(v, np.integer):
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), cls: str = "",
           caption: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{_esc(_fmt(c))}</td>' if i in numeric else f"<td>{_esc(_fmt(c))}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def anchor(group: str) -> str:
    """Return the element id of ``group``'s results section (``group-<name>``, HTML-id safe)."""
    return "group-" + re.sub(r"[^A-Za-z0-9_.-]", "-", group)


def _package(name: str) -> tuple[Path | None, str | None]:
    """Return the folder and version of an installed package, without importing it."""
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            return None, None
        return Path(spec.origin).parent, importlib.metadata.version(name)
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None, None


_MIME_BY_SUFFIX = {".css": "text/css", ".js": "text/javascript", ".png": "image/png", ".ico": "image/x-icon",
                   ".svg": "image/svg+xml", ".woff2": "font/woff2", ".woff": "font/woff", ".json": "application/json"}


def inline_resources(page: str) -> str:
    """Return ``page`` (a bokeh / holoviews / panel HTML file) with its network and relative
    resources replaced by the copies shipped with the installed packages, so it renders offline.

    BokehJS ``<script src="https://cdn.bokeh.org/...">`` and panel scripts (CDN or the relative
    ``static/extensions/panel/...`` of ``hv.save``) become inline scripts; the panel stylesheets and
    images the document refers to (``https://cdn.holoviz.org/panel/<version>/dist/...``) become
    ``data:`` URIs. Resources of another version than the installed one are left as they are.
    """
    (bokeh_dir, bokeh_version), (panel_dir, panel_version) = _package("bokeh"), _package("panel")

    def local(url: str) -> Path | None:
        url = url.split("?", 1)[0]
        m = re.match(r"https?://cdn\.bokeh\.org/bokeh/(?:release|dev)/(bokeh(?:-[a-z]+)?)-([0-9][^/]*?)(\.min)?\.js$", url)
        if m and bokeh_dir is not None and m.group(2) == bokeh_version:
            return bokeh_dir / "server" / "static" / "js" / f"{m.group(1)}{m.group(3) or ''}.js"
        m = re.match(r"https?://cdn\.holoviz\.org/panel/([^/]+)/dist/(.+)$", url)
        if m and panel_dir is not None and m.group(1) == panel_version:
            return panel_dir / "dist" / m.group(2)
        m = re.match(r"(?:\./)?static/extensions/panel/(.+)$", url)
        if m and panel_dir is not None:
            return panel_dir / "dist" / m.group(1)
        return None

    def script(m: re.Match) -> str:
        f = local(m.group(2))
        if f is None or not f.is_file():
            return m.group(0)
        attrs = (m.group(1) + m.group(3)).strip()
        code = f.read_text(encoding="utf-8").replace("</script", "<\\/script")
        return f"<script {attrs}>{code}</script>" if attrs else f"<script>{code}</script>"

    page = re.sub(r'<script([^>]*?)\ssrc="([^"]+)"([^>]*)>\s*</script>', script, page)

    def data_uri(m: re.Match) -> str:
        f = local(m.group(0))
        if f is None or not f.is_file():
            return m.group(0)
        mime = _MIME_BY_SUFFIX.get(f.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64,{base64.b64encode(f.read_bytes()).decode('ascii')}"

    return re.sub(r'https?://cdn\.holoviz\.org/panel/[^/"\s]+/dist/[^"\s\\]+', data_uri, page)


def downscaled_image(path: str | Path, max_width: int) -> tuple[str, bytes]:
    """Return (MIME type, bytes) of the raster image ``path`` at most ``max_width`` pixels wide.

    PNGs are resized (Lanczos) and quantised to a 256-colour palette, which keeps plots sharp at a
    fraction of the size; the original bytes are kept when they are smaller. SVGs and images already
    small enough and smaller than their re-encoding come back as they are.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    raw = path.read_bytes()
    if suffix == ".svg":
        return _MIME[suffix], raw
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        if im.width > max_width:
            im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if suffix in (".jpg", ".jpeg"):
            im.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
            mime = "image/jpeg"
        else:
            mode = "RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"
            q = im.convert(mode).quantize(colors=256, method=Image.Quantize.FASTOCTREE if mode == "RGBA"
                                          else Image.Quantize.MEDIANCUT)
            q.save(buf, format="PNG", optimize=True)
            mime = "image/png"
    data = buf.getvalue()
    return (_MIME.get(suffix, mime), raw) if len(raw) <= len(data) and suffix in _MIME else (mime, data)


def _href(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            pass
    return path.resolve().as_uri()


def figure_html(path: str | Path, caption: str | None = None, *, max_width: int = KEY_WIDTH,
                interactive: str = "inline", base: str | Path | None = None, small: bool = False) -> str:
    """Return the ``<figure>`` element showing one figure file, with ``caption`` (default: the file name).

    Raster images are downscaled to ``max_width`` and inlined, linked to their file (relative to
    ``base``, the folder of the page); HTML figures are inlined in an ``<iframe srcdoc>`` with their
    resources made local (``interactive="inline"``) or linked (``"link"``).
    """
    path = Path(path)
    base = Path(base) if base is not None else None
    suffix = path.suffix.lower()
    cap = f"<figcaption>{_esc(caption if caption is not None else path.name)}</figcaption>"
    cls = "figure small" if small else "figure"
    if suffix in _MIME:
        mime, data = downscaled_image(path, max_width)
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        img = f'<img class="figure-img" alt="{_esc(path.stem)}" src="{uri}">'
        link = _href(path, base) if path.exists() else None
        return f'<figure class="{cls}">' + (f'<a href="{_esc(link)}">{img}</a>' if link else img) + f"{cap}</figure>"
    if suffix in _HTML:
        if interactive == "link":
            return (f'<figure class="{cls} interactive"><a class="interactive" href="{_esc(_href(path, base))}">'
                    f"open the interactive figure ({_esc(path.name)})</a>{cap}</figure>")
        page = inline_resources(path.read_text(encoding="utf-8"))
        fit = ("try{var h=this.contentDocument.documentElement.scrollHeight;"
               "if(h>60)this.style.height=Math.min(h+20,1400)+'px'}catch(e){}")
        return (f'<figure class="{cls}"><iframe class="figure-html" title="{_esc(path.stem)}" '
                f'onload="{_esc(fit)}" srcdoc="{_esc(page)}"></iframe>{cap}</figure>')
    return f'<figure class="{cls}"><p class="error">cannot embed {_esc(path.name)} ({_esc(suffix)} file)</p></figure>'


def _open(store: Path, group: str):
    import xarray as xr

    with warnings.catch_warnings():  # the chunk manifests (.interpretome/) are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        return xr.open_zarr(str(store), group=group, consolidated=False)


def _variables_table(store: Path, group: str, ds) -> tuple[str, int]:
    """Return the variables table of a group and the group's size on disk in bytes."""
    from ..storage.schema import REGISTRY

    rows = []
    for name, var in ds.data_vars.items():
        stats = ["", "", "", ""]
        if var.dtype.kind in "fiub" and var.size and var.size <= STATS_MAX_ELEMENTS:
            values = np.asarray(var.values, dtype=np.float64)
            finite = values[np.isfinite(values)]
            nan = int(values.size - finite.size)
            if finite.size:
                stats = [float(finite.min()), float(finite.mean()), float(finite.max()), nan]
            else:
                stats = ["", "", "", nan]
        chunks = "x".join(str(c[0]) for c in var.chunks) if var.chunks else "-"
        doc = REGISTRY[name].doc if name in REGISTRY else var.attrs.get("description", "")
        rows.append([name, ", ".join(map(str, var.dims)), "x".join(map(str, var.shape)), str(var.dtype), chunks,
                     *stats, doc])
    size = sum(f.stat().st_size for f in (store / group).rglob("*") if f.is_file())
    table = _table(["variable", "dims", "shape", "dtype", "chunk", "min", "mean", "max", "NaN", "meaning"], rows,
                   numeric={5, 6, 7, 8}, cls="variables")
    coords = [[c, ", ".join(map(str, ds[c].dims)), ds[c].size, _coord_preview(ds[c].values)] for c in ds.coords]
    return table + _table(["coordinate", "dims", "size", "values"], coords, numeric={2}, cls="coords"), size


def _coord_preview(values, n: int = 6) -> str:
    values = list(np.asarray(values).ravel())
    text = ", ".join(str(v) for v in values[:n])
    return text + (f", ... ({len(values)} in all)" if len(values) > n else "")


def _params_table(params: dict) -> str:
    rows = [[k, v] for k, v in sorted(params.items()) if k != "model"]
    return _table(["parameter", "value"], rows, cls="params") if rows else "<p>(no parameters)</p>"


def _provenance_html(info: dict) -> str:
    prov = info.get("provenance") or {}
    model = prov.get("model") or (info.get("params") or {}).get("model")
    parts = []
    rows = [["created", prov.get("created", info.get("started", ""))], ["finished", info.get("finished", "")],
            ["host", prov.get("host", "")], ["fingerprint", info.get("fingerprint", "")]]
    if model:
        rows += [["model", model.get("source", "")], ["model weights sha256", model.get("weights_sha256", "-")]]
    parts.append(_table(["record", "value"], rows, cls="provenance"))
    if model:
        spec = {k: v for k, v in model.items() if v not in (None, {}, [], "") and k not in ("source",)}
        parts.append("<details><summary>model spec</summary><pre>" + _esc(json.dumps(spec, indent=1, sort_keys=True))
                     + "</pre></details>")
    inputs = prov.get("inputs") or {}
    if inputs:
        parts.append(_table(["input file", "digest"], [[k, v] for k, v in inputs.items()], cls="inputs"))
    versions = prov.get("versions") or {}
    if versions:
        parts.append(_table(["library", "version"], sorted(versions.items()), cls="versions"))
    return "".join(parts)


def _timings(info: dict) -> list[dict]:
    return list(info.get("timings") or [])


def _root_attrs(store: Path) -> dict:
    """The store's root attributes (creation record, run history), read through zarr; JSON-string values decoded."""
    import zarr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    except Exception:  # noqa: BLE001 - a page without the run history is still a page
        f = store / ".zattrs"
        attrs = json.loads(f.read_text()) if f.exists() else {}
    out = {}
    for k, v in attrs.items():
        if isinstance(v, str) and v[:1] in "[{":
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out


def _unique(paths) -> list[Path]:
    """``paths`` without repeats: the same file twice, or two files of identical content."""
    seen, out = set(), []
    for p in map(Path, paths):
        try:
            key = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else str(p.resolve())
        except OSError:
            key = str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _state_html(condition: str, damage: list) -> str:
    if condition == "complete":
        return '<span class="state-ok">complete</span>'
    if damage:
        return (f'<span class="state-bad">damaged: {len(damage)} bad chunks, e.g. {_esc(damage[0])} '
                f'(`interpretome verify` lists them; rerun the job to repair)</span>')
    return '<span class="state-bad">INCOMPLETE (rerun the job to resume)</span>'


def build_report(store: str | Path, figures: dict[str, list[Path]] | None = None, *,
                 errors: dict[str, str] | None = None, title: str | None = None,
                 groups: list[str] | None = None, markers: dict[str, float] | None = None,
                 interactive: str = "link", base: str | Path | None = None) -> str:
    """Return the HTML page of ``store``: results first, provenance and compute accounting last.

    Parameters
    ----------
    store
        The store (a folder).
    figures
        ``{group: [figure files]}``; files under ``""`` (or a group not shown) go to "Other figures".
    errors
        ``{group: message}`` shown in place of figures that could not be drawn.
    title
        The page's title (default ``interpretome report: <store name>``).
    groups
        Only these groups, everywhere on the page (sections, contents, tables, runs); default all.
    markers
        ``{label: position}`` of sequence landmarks: the sweep / ISM tables report the effect there.
    interactive
        ``"link"`` (default) links HTML figures, ``"inline"`` embeds them (BokehJS in each: megabytes).
    base
        The folder the page is written to; figure links are relative to it (default: absolute ``file:`` URIs).
    """
    store = Path(store)
    figures, errors = dict(figures or {}), errors or {}
    every = list_groups(store)
    names = [g for g in every if groups is None or g in groups]
    root_attrs = _root_attrs(store)
    root = root_attrs.get("interpretome") or {}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    title = title or f"interpretome report: {store.name}"
    infos = {g: group_info(store, g) or {} for g in names}
    names.sort(key=lambda g: results.order_key(str(infos[g].get("task", "")), g))
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1>",
           f'<p class="meta">store <code>{_esc(store.resolve())}</code> · created {_esc(root.get("created", "?"))} '
           f'by interpretome {_esc(root.get("version", "?"))} · report generated {_esc(now)}'
           + (f" · groups {_esc(', '.join(groups))} only" if groups else "") + "</p>"]
    toc, sections, compute, provenance = [], [], [], []
    for g in names:
        info = infos[g]
        task = str(info.get("task", "?"))
        condition, damage = group_state(store, g)
        runs = _timings(info)
        seconds = sum(float(t.get("seconds", 0)) for t in runs)
        chunks = sum(int(t.get("chunks_computed", 0)) for t in runs)
        figs = results.arrange(task, g, _unique(figures.pop(g, [])))
        try:
            ds = _open(store, g) if not damage else None
        except Exception as e:  # noqa: BLE001 - e.g. an interrupted group without metadata: said, not fatal
            ds = None
            errors = {**errors, g: f"{g!r} could not be opened: {type(e).__name__}: {e}"}
        sid = anchor(g)
        heading = results.title(task)
        shown = bool(figs) or task not in results.AUXILIARY or g in errors
        toc.append(f'<li><a href="#{sid}">{_esc(heading)}: {_esc(g)}</a>'
                   + ("" if condition == "complete" else f" ({_esc(condition)})") + "</li>")
        sec = [f'<section class="group" id="{sid}"><h2>{_esc(heading)} <small>{_esc(g)} · {_esc(task)}</small></h2>']
        if results.purpose(task):
            sec.append(f'<p class="purpose">{_esc(results.purpose(task))}.</p>')
        if condition != "complete":
            sec.append(f"<p>{_state_html(condition, damage)}</p>")
        if g in errors:
            sec.append(f'<p class="error">{_esc(errors[g])}</p>')
        key = [p for i, p in enumerate(figs) if results.is_key_figure(task, g, p, i)]
        rest = [p for p in figs if p not in key]
        sec += [figure_html(p, results.caption(task, g, info, p), interactive=interactive, base=base) for p in key]
        if ds is not None and condition == "complete":
            try:
                for t in results.key_tables(task, ds, info, markers=markers):
                    sec.append(_table(t.header, t.rows, t.numeric, cls="key", caption=t.caption))
            except Exception as e:  # noqa: BLE001 - a table that cannot be made is said, the page goes on
                sec.append(f'<p class="error">the key table of {_esc(g)} could not be made: '
                           f"{_esc(type(e).__name__)}: {_esc(e)}</p>")
        if rest:
            sec.append(f"<details><summary>{len(rest)} more figure{'s' if len(rest) > 1 else ''}</summary>"
                       + "".join(figure_html(p, results.caption(task, g, info, p), max_width=OTHER_WIDTH,
                                             interactive=interactive, base=base, small=True) for p in rest)
                       + "</details>")
        sec.append(f'<p class="meta"><a href="#prov-{sid}">parameters, variables and provenance of {_esc(g)}</a></p>'
                   "</section>")
        if shown:
            sections.append("".join(sec))
        else:
            toc.pop()
        table, size = (_variables_table(store, g, ds) if ds is not None else
                       ("<p>not read: the group is damaged or could not be opened</p>", 0))
        provenance.append(
            f'<details class="provenance" id="prov-{sid}"><summary>{_esc(g)} ({_esc(task)}): parameters, variables, '
            f"provenance, timings</summary><p>{_state_html(condition, damage)}</p>"
            + "<h4>Parameters</h4>" + _params_table(info.get("params") or {})
            + "<h4>Variables</h4>" + table + "<h4>Provenance</h4>" + _provenance_html(info)
            + "<h4>Time</h4>" + _table(
                ["run", "seconds", "chunks computed"],
                [[i + 1, float(t.get("seconds", 0)), int(t.get("chunks_computed", 0))] for i, t in enumerate(runs)]
                + [["total", seconds, chunks]], numeric={1, 2}, cls="timings") + "</details>")
        compute.append([g, task, {"incomplete": "INCOMPLETE"}.get(condition, condition),
                        len(info.get("variables") or {}), chunks, seconds, size, len(figs)])
    other = [] if groups else _unique(p for paths in figures.values() for p in paths)
    if other:
        toc.append('<li><a href="#other-figures">Other figures</a></li>')
        sections.append('<section class="group" id="other-figures"><h2>Other figures</h2>'
                        + "".join(figure_html(p, p.stem.replace("_", " "), max_width=OTHER_WIDTH,
                                              interactive=interactive, base=base, small=True) for p in other)
                        + "</section>")
    toc.append('<li><a href="#provenance">Provenance and compute</a></li>')
    out.append('<nav id="contents"><h2>Contents</h2><ol>' + "".join(toc) + "</ol></nav>")
    if not names:
        out.append("<p>(the store has no groups)</p>")
    out += sections
    tail = ['<section id="provenance"><h2>Provenance and compute</h2>',
            "<h3>Compute</h3>" + _table(
                ["group", "task", "state", "variables", "chunks computed", "seconds", "bytes on disk", "figures"],
                compute, numeric={3, 4, 5, 6, 7}, cls="steps",
                caption=f"{sum(r[5] for r in compute):.4g} s and {sum(r[4] for r in compute)} chunks in all, "
                        f"{sum(r[6] for r in compute) / 1e6:.3g} MB on disk.")]
    rows = []
    for n, run in enumerate(root_attrs.get("interpretome_runs") or [], 1):
        for st in run.get("steps", []):
            if groups is None or st.get("name") in groups:
                rows.append([n, Path(run.get("job", "?")).name, run.get("started", ""), st.get("name"), st.get("kind"),
                             float(st.get("seconds", 0)), int(st.get("computed_chunks", 0)),
                             int(st.get("skipped_chunks", 0))])
    if rows:
        tail.append("<h3>Job runs</h3>" + _table(
            ["run", "job file", "started", "step", "kind", "seconds", "chunks computed", "chunks already done"],
            rows, numeric={0, 5, 6, 7}, cls="runs"))
    tail.append("<h3>Each group</h3>" + "".join(provenance) + "</section>")
    out += tail
    out.append(_OPEN_DETAILS)
    out.append("</body></html>")
    return "\n".join(out)


def assign_figures(store: str | Path, paths) -> dict[str, list[Path]]:
    """Return ``{group: [paths]}`` for figure files named after their group (``<group>_....png``);
    files that name no group of ``store`` go under ``""`` (the page's "Other figures")."""
    groups = sorted(list_groups(store), key=len, reverse=True)
    out: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        g = next((g for g in groups if p.stem == g or p.stem.startswith(g + "_")), "")
        out.setdefault(g, []).append(p)
    return out


def write_report(store: str | Path, out: str | Path, figures: dict[str, list[Path]] | None = None, **kw) -> Path:
    """Write ``build_report(store, figures, **kw)`` to ``out`` and return its path (figure links relative to it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kw.setdefault("base", out.parent)
    out.write_text(build_report(store, figures, **kw), encoding="utf-8")
    return out

"""One self-contained HTML page per store: figures, summary tables, provenance and timings.

``build_report(store, figures)`` reads the store's groups (attrs ``interpretome``: task,
params, provenance, timings; the variables) and returns the page as a string; figures are
given as paths per group (made by the renderers of ``interpretome.jobs``; the viz layer never
runs a model). PNG/JPEG/SVG figures are inlined as base64 ``data:`` URIs; HTML figures (bokeh)
are embedded in an ``<iframe srcdoc>`` with the BokehJS / panel scripts and stylesheets they load
from a CDN (or from ``static/``) replaced by the copies shipped with the installed bokeh and panel,
so the page needs no network and no other file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import re
import warnings
from pathlib import Path

import numpy as np

from ..storage.store import group_info, group_state, list_groups

STATS_MAX_ELEMENTS = 5_000_000
"""Variables up to this many elements get min / mean / max / NaN counts in the tables."""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".gif": "image/gif", ".webp": "image/webp"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1rem 2rem;color:#1d1d1f;background:#fff}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
h2 small{color:#666;font-weight:normal;font-size:.7em}h3{margin:1.2rem 0 .4rem}
.meta{color:#555;font-size:.9rem}table{border-collapse:collapse;margin:.3rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
pre{background:#f7f7f9;padding:.5rem;overflow-x:auto;max-height:24rem}
figure.figure{margin:.5rem 0 1.2rem;padding:0}figure.figure img{max-width:100%;height:auto;border:1px solid #eee}
figure.figure iframe{width:100%;height:520px;border:1px solid #eee}
figcaption{color:#555;font-size:.8rem}.state-ok{color:#17803d}.state-bad{color:#b3261e;font-weight:bold}
.error{background:#fdecea;border:1px solid #b3261e;padding:.5rem;color:#b3261e}
nav ul{columns:3;list-style:none;padding:0}
"""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{_esc(_fmt(c))}</td>' if i in numeric else f"<td>{_esc(_fmt(c))}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


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


def figure_html(path: str | Path) -> str:
    """Return the ``<figure>`` element embedding one figure file (image or HTML) self-contained."""
    path = Path(path)
    suffix = path.suffix.lower()
    cap = f"<figcaption>{_esc(path.name)}</figcaption>"
    if suffix in _MIME:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<figure class="figure"><img class="figure-img" alt="{_esc(path.stem)}" '
                f'src="data:{_MIME[suffix]};base64,{data}">{cap}</figure>')
    if suffix in (".html", ".htm"):
        page = inline_resources(path.read_text(encoding="utf-8"))
        fit = ("try{var h=this.contentDocument.documentElement.scrollHeight;"
               "if(h>60)this.style.height=Math.min(h+20,1400)+'px'}catch(e){}")
        return (f'<figure class="figure"><iframe class="figure-html" title="{_esc(path.stem)}" '
                f'onload="{_esc(fit)}" srcdoc="{_esc(page)}"></iframe>{cap}</figure>')
    return f'<figure class="figure"><p class="error">cannot embed {_esc(path.name)} ({_esc(suffix)} file)</p></figure>'


def _variables_table(store: Path, group: str) -> tuple[str, int]:
    """Return the variables table of a group and the group's size on disk in bytes."""
    import xarray as xr

    from ..storage.schema import REGISTRY

    with warnings.catch_warnings():  # the chunk manifests (.interpretome/) are not zarr nodes, by design
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        ds = xr.open_zarr(str(store), group=group, consolidated=False)
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
        doc = REGISTRY[name].doc if name in REGISTRY else ""
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


def build_report(store: str | Path, figures: dict[str, list[Path]] | None = None, *,
                 errors: dict[str, str] | None = None, title: str | None = None) -> str:
    """Return the HTML page of ``store``.

    ``figures`` maps a group name to its figure files; ``errors`` maps a group name to a message
    shown in place of figures that could not be drawn.
    """
    store = Path(store)
    figures, errors = figures or {}, errors or {}
    groups = list_groups(store)
    root, root_attrs = {}, {}
    f = store / ".zattrs"
    if f.exists():
        root_attrs = json.loads(f.read_text())
        root = root_attrs.get("interpretome", {})
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    title = title or f"interpretome report: {store.name}"
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1>",
           f'<p class="meta">store <code>{_esc(store.resolve())}</code> · created {_esc(root.get("created", "?"))} '
           f'by interpretome {_esc(root.get("version", "?"))} · report generated {_esc(now)}</p>']
    summary, sections = [], []
    for g in groups:
        info = group_info(store, g) or {}
        condition, damage = group_state(store, g)
        complete = condition == "complete"
        runs = _timings(info)
        seconds = sum(float(t.get("seconds", 0)) for t in runs)
        chunks = sum(int(t.get("chunks_computed", 0)) for t in runs)
        figs = figures.get(g, [])
        state = ('<span class="state-ok">complete</span>' if complete else
                 f'<span class="state-bad">damaged: {len(damage)} bad chunks, e.g. {_esc(damage[0])} '
                 f'(`interpretome verify` lists them; rerun the job to repair)</span>' if damage else
                 '<span class="state-bad">INCOMPLETE (rerun the job to resume)</span>')
        sec = [f'<section class="group" id="group-{_esc(g)}"><h2>{_esc(g)} <small>{_esc(info.get("task", "?"))}'
               f"</small></h2><p>{state}</p>"]
        sec.append("<h3>Time</h3>" + _table(
            ["run", "seconds", "chunks computed"],
            [[i + 1, float(t.get("seconds", 0)), int(t.get("chunks_computed", 0))] for i, t in enumerate(runs)]
            + [["total", seconds, chunks]], numeric={1, 2}, cls="timings"))
        if g in errors:
            sec.append(f'<h3>Figures</h3><p class="error">{_esc(errors[g])}</p>')
        elif figs:
            sec.append("<h3>Figures</h3>" + "".join(figure_html(p) for p in figs))
        table, size = _variables_table(store, g) if not damage else ("<p>not read: the group is damaged</p>", 0)
        sec.append("<h3>Summary</h3>" + table)
        sec.append("<h3>Parameters</h3>" + _params_table(info.get("params") or {}))
        sec.append("<h3>Provenance</h3>" + _provenance_html(info))
        sec.append("</section>")
        sections.append("".join(sec))
        summary.append([g, info.get("task", "?"), {"incomplete": "INCOMPLETE"}.get(condition, condition),
                        len(info.get("variables") or {}), chunks, seconds, size, len(figs)])
    runs = root_attrs.get("interpretome_runs") or []
    if runs:
        rows = []
        for n, run in enumerate(runs, 1):
            for st in run.get("steps", []):
                rows.append([n, Path(run.get("job", "?")).name, run.get("started", ""), st.get("name"), st.get("kind"),
                             float(st.get("seconds", 0)), int(st.get("computed_chunks", 0)),
                             int(st.get("skipped_chunks", 0))])
        out.append("<h2>Job runs</h2>" + _table(
            ["run", "job file", "started", "step", "kind", "seconds", "chunks computed", "chunks already done"],
            rows, numeric={0, 5, 6, 7}, cls="runs"))
    out.append("<h2>Steps</h2>" + _table(
        ["group", "task", "state", "variables", "chunks computed", "seconds", "bytes on disk", "figures"],
        summary, numeric={3, 4, 5, 6, 7}, cls="steps"))
    if not groups:
        out.append("<p>(the store has no groups)</p>")
    out += sections
    other = [p for g, paths in figures.items() if g not in groups for p in paths]
    if other:
        out.append('<section class="group" id="other-figures"><h2>Other figures</h2>'
                   + "".join(figure_html(p) for p in other) + "</section>")
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
    """Write ``build_report(store, figures, **kw)`` to ``out`` and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(store, figures, **kw), encoding="utf-8")
    return out

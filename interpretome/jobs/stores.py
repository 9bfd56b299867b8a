"""Store commands: ``interpretome info STORE``, ``verify STORE`` and ``render STORE``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import InputError
from ..storage.store import StoreError, group_info, list_groups, open_group, store_summary, verify_store
from . import announce
from .registry import renderers

_ROW_NAMES = ("sequence", "contig", "contig_name")
"""Coordinates whose values ``--sequence`` names (DNA records, genome contigs / regions)."""


def check_figure_folder(path, flag: str = "--figures") -> Path:
    """Create the folder ``path`` and check that files can be written into it; return it as a Path.

    Raises ``InputError`` naming the folder and the fix (``flag``) when it cannot be created or
    written (read-only file system, no permission, a file in the way).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"cannot write figures into {str(path)!r} ({e.strerror or e}): choose a writable folder "
                         f"with {flag} DIR") from None
    return path


def _row_names(store, group) -> list[str] | None:
    """Return the names ``--sequence`` can pick in ``group`` (None when its rows have no names)."""
    ds = open_group(store, group)
    for c in _ROW_NAMES:
        if c in ds.coords or c in ds.variables:
            return [str(v) for v in ds[c].values]
    return None


def render_store(store, out_dir, *, groups=None, sequences=None, **options) -> list[Path]:
    """Render every complete group of ``store`` that has a renderer; return the PNG/HTML paths.

    ``sequences``: the row names to draw (DNA records, contigs or regions); each group draws the
    ones it holds, a group holding none of them is skipped, and a name no group holds is an
    ``InputError`` listing the names there are.
    """
    paths: list[Path] = []
    names = groups or list_groups(store)
    if not names:
        raise StoreError(f"store {str(store)!r} has no groups to render: check the path")
    todo = []
    for g in names:
        info = group_info(store, g)
        if info is None:
            raise StoreError(f"store {str(store)!r} has no group {g!r}; it has {list_groups(store)}")
        fn = renderers().get(info.get("task"))
        if fn is not None and info.get("complete"):
            todo.append((g, fn, _row_names(store, g) if sequences else None))
    if sequences:
        known = [n for _, _, rows in todo for n in rows or []]
        missing = [s for s in sequences if s not in known]
        if missing:
            shown = ", ".join(list(dict.fromkeys(known))[:8]) or "none"
            raise InputError(f"--sequence {missing[0]!r} is in no rendered group of {str(store)!r}; the names there "
                             f"are {shown}{' ...' if len(set(known)) > 8 else ''}: pass one of them")
    for g, fn, rows in todo:
        picks = None if rows is None else [s for s in sequences if s in rows] if sequences else None
        if rows is not None and sequences and not picks:
            continue
        paths += fn(store, g, out_dir, sequences=picks, **options)
    return paths


def parse_markers(items) -> dict[str, float]:
    """Return ``{label: position}`` of ``--marker LABEL=POSITION`` values (the label may start with a
    dash: ``--marker -10=40``); raises ``InputError`` with the expected form."""
    out = {}
    for item in items or []:
        label, sep, pos = item.rpartition("=")
        try:
            if not sep or not label:
                raise ValueError
            out[label] = float(pos)
        except ValueError:
            raise InputError(f"--marker {item!r} must look like LABEL=POSITION, e.g. --marker TSS=150 or "
                             f"--marker -10=40") from None
    return out


def add_selection_arguments(p) -> None:
    """Add ``--group``, ``--sequence`` and ``--marker`` (what ``render`` and ``report`` draw)."""
    p.add_argument("--group", action="append", default=None, help="only these groups (repeatable)")
    p.add_argument("--sequence", action="append", default=None, help="sequence names to draw (repeatable)")
    p.add_argument("--marker", action="append", default=None,
                   help="LABEL=POSITION vertical marker, e.g. TSS=150 or -10=40 (repeatable)")


def _info_cmd(args) -> int:
    print(store_summary(args.store))
    return 0


def _verify_cmd(args) -> int:
    """Check every chunk of the store (or ``--group``) against its recorded size and sha256.

    Prints one line per group and one per bad chunk; exit 0 when every checked group is
    complete and intact, 1 otherwise (damaged or incomplete).
    """
    states = verify_store(args.store, args.group)
    bad = 0
    for g, (state, damage) in states.items():
        extra = {"complete": "every chunk matches its checksum",
                 "incomplete": "not finished (an interrupted run): rerun the same job to resume",
                 "damaged": f"{len(damage)} bad chunks: rerun the job that made it to recompute them"}[state]
        print(f"[{g}] {state}: {extra}")
        for d in damage:
            print(f"  {d.variable} chunk {d.chunk}: {d.problem}")
        bad += state != "complete"
    return 1 if bad else 0


def _render_cmd(args) -> int:
    out = check_figure_folder(args.figures or str(Path(args.store).with_suffix("")) + "_figures")
    start, end = args.start, args.end
    if args.region:
        from ..storage.genome import parse_region

        if start is not None or end is not None:
            raise ValueError("give either --region or --start/--end, not both")
        r = parse_region(args.region)
        if r.end is None:
            raise ValueError(f"--region {args.region!r} needs start-end (1-based, inclusive), e.g. chrI:1001-2000")
        start, end = r.start, r.end
    paths = render_store(args.store, out, groups=args.group, sequences=args.sequence,
                         markers=parse_markers(args.marker), start=start, end=end)
    for p in paths:
        print(p)
    announce(f"results: {len(paths)} figures in {str(out)!r} (PNG; HTML pages open in a browser)")
    return 0


def register(sub) -> None:
    """Add the ``info``, ``verify`` and ``render`` subcommands."""
    text = "summarise a result store: groups, variables, parameters, digests, complete/damaged"
    p = sub.add_parser("info", help=text, description=text[:1].upper() + text[1:] + ".")
    p.add_argument("store", help="a zarr store written by interpretome")
    p.set_defaults(func=_info_cmd)
    text = "check every stored chunk against its checksum (exit 1 naming any bad chunk)"
    p = sub.add_parser("verify", help=text, description=text[:1].upper() + text[1:] + ".")
    p.add_argument("store", help="a zarr store written by interpretome")
    p.add_argument("--group", action="append", default=None, help="only these groups (repeatable)")
    p.set_defaults(func=_verify_cmd)
    text = "draw the figures of a result store (PNG, and HTML for tracks and embeddings)"
    p = sub.add_parser("render", help=text, description=text[:1].upper() + text[1:] + ".")
    p.add_argument("store", help="a zarr store written by interpretome")
    p.add_argument("--figures", default=None, metavar="DIR", help="output folder (default STORE_figures)")
    p.add_argument("-o", "--out", dest="figures", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_selection_arguments(p)
    p.add_argument("--start", type=int, default=None,
                   help="first position of a zoomed view, as the stored position coordinate (0-based; genome "
                        "results: the 0-based genome position, i.e. 1-based start - 1)")
    p.add_argument("--end", type=int, default=None,
                   help="end of a zoomed view, exclusive (0-based; equals the 1-based inclusive end)")
    p.add_argument("--region", default=None,
                   help="genome results: zoom to contig:start-end (1-based, inclusive, as everywhere on the command "
                        "line); the view's bounds only, the rows drawn are chosen by --sequence")
    p.set_defaults(func=_render_cmd)

"""Store commands: ``interpretome info STORE``, ``verify STORE`` and ``render STORE``."""

from __future__ import annotations

from pathlib import Path

from ..storage.store import StoreError, group_info, list_groups, store_summary, verify_store
from .registry import renderers


def render_store(store, out_dir, *, groups=None, **options) -> list[Path]:
    """Render every complete group of ``store`` that has a renderer; return the PNG/HTML paths."""
    paths: list[Path] = []
    names = groups or list_groups(store)
    if not names:
        raise StoreError(f"store {str(store)!r} has no groups to render: check the path")
    for g in names:
        info = group_info(store, g)
        if info is None:
            raise StoreError(f"store {str(store)!r} has no group {g!r}; it has {list_groups(store)}")
        fn = renderers().get(info.get("task"))
        if fn is None or not info.get("complete"):
            continue
        paths += fn(store, g, out_dir, **options)
    return paths


def parse_markers(items) -> dict[str, float]:
    out = {}
    for item in items or []:
        label, sep, pos = item.partition("=")
        if not sep:
            raise ValueError(f"--marker {item!r} must look like LABEL=POSITION, e.g. --marker TSS=150")
        out[label] = float(pos)
    return out


def add_selection_arguments(p) -> None:
    """Add ``--group``, ``--sequence`` and ``--marker`` (what ``render`` and ``report`` draw)."""
    p.add_argument("--group", action="append", default=None, help="only these groups (repeatable)")
    p.add_argument("--sequence", action="append", default=None, help="sequence names to draw (repeatable)")
    p.add_argument("--marker", action="append", default=None, help="LABEL=POSITION vertical marker, e.g. TSS=150")


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
    out = args.out or str(Path(args.store).with_suffix("")) + "_figures"
    paths = render_store(args.store, out, groups=args.group, sequences=args.sequence,
                         markers=parse_markers(args.marker), start=args.start, end=args.end)
    for p in paths:
        print(p)
    return 0


def register(sub) -> None:
    """Add the ``info``, ``verify`` and ``render`` subcommands."""
    p = sub.add_parser("info", help="summarise a result store")
    p.add_argument("store")
    p.set_defaults(func=_info_cmd)
    p = sub.add_parser("verify", help="check every stored chunk against its checksum (exit 1 if any is bad)")
    p.add_argument("store")
    p.add_argument("--group", action="append", default=None, help="only these groups (repeatable)")
    p.set_defaults(func=_verify_cmd)
    p = sub.add_parser("render", help="draw the figures of a result store (PNG)")
    p.add_argument("store")
    p.add_argument("-o", "--out", default=None, help="output folder (default STORE_figures)")
    add_selection_arguments(p)
    p.add_argument("--start", type=int, default=None, help="first position of a zoomed region")
    p.add_argument("--end", type=int, default=None, help="end of a zoomed region")
    p.set_defaults(func=_render_cmd)

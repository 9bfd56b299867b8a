"""The declared tables: every job kind and every renderer, from the family modules' declarations.

``FAMILIES`` lists the modules of the analysis families; each declares ``KINDS`` (its
``JobKind``s: subcommands and job-file step kinds) and ``RENDERERS`` (task name, as stored in a
group's attrs -> ``fn(store, group, out_dir, **options) -> [paths]``). Nothing is registered by
importing a module: ``job_kinds()`` and ``renderers()`` read the declarations, and a name
declared twice is an error.
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable

from .declare import JobKind

FAMILIES = (
    "interpretome.jobs.dna",
    "interpretome.jobs.genome",
    "interpretome.jobs.attribution",
    "interpretome.jobs.embedding",
    "interpretome.jobs.coefficients",
    "interpretome.jobs.genomaps",
)


def _collect(attr: str, key: Callable) -> dict:
    out: dict = {}
    for module in FAMILIES:
        mod = importlib.import_module(module)
        items = getattr(mod, attr)
        for name, value in (items.items() if isinstance(items, dict) else ((key(v), v) for v in items)):
            if name in out:
                raise RuntimeError(f"{attr} {name!r} is declared twice ({module} and an earlier family): "
                                   f"rename one of them")
            out[name] = value
    return out


@functools.lru_cache(maxsize=None)
def job_kinds() -> dict[str, JobKind]:
    """Return kind name -> JobKind of every family, in ``FAMILIES`` order."""
    kinds = _collect("KINDS", lambda k: k.name)
    commands = [k.subcommand for k in kinds.values()]
    dup = next((c for c in commands if commands.count(c) > 1), None)
    if dup:
        raise RuntimeError(f"two kinds declare the subcommand {dup!r}: give one of them another command")
    return kinds


@functools.lru_cache(maxsize=None)
def renderers() -> dict[str, Callable]:
    """Return task name -> renderer of every family."""
    return _collect("RENDERERS", lambda r: r)

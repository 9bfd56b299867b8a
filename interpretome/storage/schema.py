"""The variable registry: every variable interpretome writes, with its dims, dtype kind and doc.

Task modules register their outputs here once (``register``) and validate what they build
(``validate``) — metadata only (dims, dtype kind, ndim), never values, so validating never
computes a dask graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from .alphabet import BASES, CODE_N  # noqa: F401 (the base coordinate and N code; defined in alphabet)

# Dimension names used across the package (constants, never spelled twice).
SEQUENCE = "sequence"
POSITION = "position"
BASE = "base"
WINDOW = "window"
REPLICATE = "replicate"
TARGET = "target"
CONTIG = "contig"
BIN = "bin"
SAMPLE = "sample"
FEATURE = "feature"
GROUP = "group"
ITEM = "item"
COMPONENT = "component"
FOLD = "fold"
METRIC = "metric"
MODEL = "model"
CLASS = "class"
STRAND = "strand"


def level_dim(level: int) -> str:
    """Return the bin dim of min/max pyramid level ``level`` (``bin_l3``; ``tasks.tiles.track_pyramid``)."""
    return f"bin_l{int(level)}"


def level_vars(level: int) -> tuple[str, str]:
    """Return the ``(min, max)`` variable names of pyramid level ``level`` (``track_min_l3``, ``track_max_l3``)."""
    return f"track_min_l{int(level)}", f"track_max_l{int(level)}"



@dataclass(frozen=True)
class Variable:
    """One registered variable: its name, dims, numpy dtype kind ('f', 'i', 'u', 'b', 'U', 'O').

    ``optional`` names dims of ``dims`` that the variable may lack (e.g. ``strand``, present only
    when both strands are kept); the others keep their order.
    """

    name: str
    dims: tuple[str, ...]
    kind: str
    doc: str
    optional: tuple[str, ...] = ()

    def allowed_dims(self) -> tuple[tuple[str, ...], ...]:
        """Return the dims the variable may have: all of ``dims``, or those without ``optional``."""
        if not self.optional:
            return (self.dims,)
        return self.dims, tuple(d for d in self.dims if d not in self.optional)


REGISTRY: dict[str, Variable] = {}


def register(name: str, dims: tuple[str, ...], kind: str, doc: str, optional: tuple[str, ...] = ()) -> Variable:
    """Register a variable and return it; re-registering the same definition is a no-op.

    ``optional``: dims of ``dims`` the variable may lack (see ``Variable``). Raises ``ValueError``
    when ``name`` is already registered with other dims or kind.
    """
    var = Variable(name, tuple(dims), kind, doc, tuple(optional))
    old = REGISTRY.get(name)
    if old is not None and (old.dims, old.kind, old.optional) != (var.dims, var.kind, var.optional):
        raise ValueError(
            f"variable {name!r} is already registered with dims {old.dims} kind {old.kind!r}; "
            f"pick another name for dims {var.dims} kind {var.kind!r}"
        )
    REGISTRY[name] = var
    return var


def validate(ds: xr.Dataset, names: list[str] | tuple[str, ...] | None = None) -> xr.Dataset:
    """Check that registered variables in ``ds`` have their registered dims and dtype kind.

    Only metadata is read (no compute). ``names`` restricts the check; by default every data
    variable of ``ds`` that is registered is checked. Returns ``ds`` unchanged.
    """
    for name in names if names is not None else list(ds.data_vars):
        if name not in ds.variables:
            raise ValueError(f"dataset has no variable {name!r}; it has {sorted(ds.variables)}")
        spec = REGISTRY.get(name)
        if spec is None:
            if names is not None:
                raise ValueError(f"variable {name!r} is not registered in interpretome.storage.schema")
            continue
        da = ds[name]
        if tuple(da.dims) not in spec.allowed_dims():
            extra = f" (optional: {spec.optional})" if spec.optional else ""
            raise ValueError(f"variable {name!r} has dims {tuple(da.dims)}; the registry says {spec.dims}{extra}")
        if np.dtype(da.dtype).kind not in spec.kind:
            raise ValueError(
                f"variable {name!r} has dtype {da.dtype} (kind {np.dtype(da.dtype).kind!r}); "
                f"the registry says kind {spec.kind!r}"
            )
    return ds


def describe(name: str) -> str:
    """Return a one-line description ``name (dims) kind: doc`` of a registered variable."""
    v = REGISTRY[name]
    dims = ", ".join(f"{d}?" if d in v.optional else d for d in v.dims)
    return f"{v.name} ({dims}) {v.kind}: {v.doc}"


# Inputs ---------------------------------------------------------------------------------------
register("sequence_code", (SEQUENCE, POSITION), "u",
         "DNA as uint8 codes A,C,G,T,N = 0..4; positions past sequence_length are padding (4)")
register("sequence_length", (SEQUENCE,), "i", "number of real bases in each sequence")

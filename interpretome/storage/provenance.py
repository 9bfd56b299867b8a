"""Provenance records: library versions, host, time, model spec and input digests.

A neutral module: every layer may import it (it imports only the standard library and
``storage.digests``). ``provenance()`` is what a group's attrs hold under ``provenance``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .digests import file_digest

LIBRARIES = ("interpretome", "numpy", "dask", "distributed", "xarray", "zarr", "torch", "captum",
             "shap", "pandas", "scikit-learn", "umap-learn", "openTSNE", "ccc-coef", "datashader")
"""The libraries whose installed versions a provenance record names."""


def now() -> str:
    """Return the current UTC time as ISO 8601 text, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Return the installed versions of the libraries a result depends on."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def provenance(*, model=None, inputs: list[str | os.PathLike] | tuple = ()) -> dict:
    """Return the provenance record for a task: versions, host, time, model spec and input digests."""
    rec: dict[str, Any] = {"versions": library_versions(), "created": now(), "host": platform.node()}
    if model is not None:
        rec["model"] = model.describe()
    rec["inputs"] = {str(p): file_digest(p) for p in inputs if p and os.path.isfile(p)}
    return rec

"""Per-sample model inputs from ``obs``: the covariates a spec declares and the feature names it was trained on.

``covariate_matrix(spec, ds)`` returns ``(N, C)`` float32 — the columns ``spec.covariates`` of the
input's obs coordinates, categorical ones as codes of ``spec.covariate_categories`` — passed to
the model after the input (``engine.attribution``'s ``extra``). ``check_feature_names(spec, ds)``
refuses an input whose features differ from ``spec.feature_names`` (e.g. a scvi-tools model's
saved ``var_names``). Both read metadata and obs only, never the expression matrix.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..engine.spec import ModelSpec
from ..errors import InputError
from ..storage.schema import FEATURE, SAMPLE


def covariate_matrix(spec: ModelSpec, ds: xr.Dataset, sample_dim: str = SAMPLE) -> np.ndarray | None:
    """Return the spec's per-sample covariates ``(N, C)`` float32 from ``ds``'s obs coordinates, or None.

    Columns are taken by name (``spec.covariates``); a column with ``spec.covariate_categories``
    becomes the code of each value in that list, any other must be numeric.
    """
    if not spec.covariates:
        return None
    cols = []
    have = [c for c in ds.coords if ds[c].dims == (sample_dim,) and c != sample_dim]
    for name in spec.covariates:
        if name not in have:
            raise InputError(f"the model takes covariate {name!r} per sample but the input has no such obs column "
                             f"(it has {have}): add it to the AnnData's obs")
        values = np.asarray(ds[name].values)
        cats = spec.covariate_categories.get(name)
        if cats is not None:
            lut = {str(c): i for i, c in enumerate(cats)}
            bad = sorted({str(v) for v in values} - set(lut))
            if bad:
                raise InputError(f"covariate {name!r} has values {bad[:5]} the model was not trained with (it knows "
                                 f"{list(cats)[:10]}): map them to known categories or drop those samples")
            cols.append(np.array([lut[str(v)] for v in values], np.float32))
        elif values.dtype.kind in "fiub":
            cols.append(values.astype(np.float32))
        else:
            raise InputError(f"covariate {name!r} is not numeric ({values.dtype}): declare its categories in the "
                             f"spec (covariate_categories={{{name!r}: [...]}})")
    return np.stack(cols, axis=1)


def check_feature_names(spec: ModelSpec, ds: xr.Dataset) -> None:
    """Raise ``InputError`` when the spec declares ``feature_names`` and the input's features differ."""
    if spec.feature_names is None or FEATURE not in ds.coords:
        return
    got = [str(v) for v in ds[FEATURE].values]
    want = list(spec.feature_names)
    if got != want:
        missing = [g for g in want if g not in set(got)][:5]
        extra = [g for g in got if g not in set(want)][:5]
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise InputError(f"the input's {len(got)} features differ from the model's {len(want)} saved var_names "
                         f"(first difference at column {first}; missing {missing}, unknown {extra}): subset and "
                         f"order the AnnData as the model's genes (adata[:, var_names])")

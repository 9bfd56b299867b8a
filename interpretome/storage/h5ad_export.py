"""AnnData exports: embeddings into ``.obsm``, attribution summaries into ``.varm`` / ``.uns`` (``--write-h5ad``).

``embedding_to_h5ad(group, path)`` writes one AnnData per embedding group: ``obs_names`` the
items, ``obsm["X_<method>"]`` the coordinates (items x components), ``obs`` the item labels and
batches, ``obs["embedding_fitted"]``. ``attribution_to_h5ad(summary, path, attributions=)``
writes the genes as ``var``; ``varm["attribution_mean_<group>"]``, ``..._std_<group>``,
``..._n_<group>`` (genes x targets DataFrames, columns the target names) per group of
``tasks.summarize.summarize_attributions``; ``uns["attribution_table"]`` the tidy scvi-tools
table (``storage.attribution_export``) and ``uns["attribution_groups"]`` / ``["attribution_targets"]``;
with ``attributions`` (the attribution group), one obs row per sample with the predicted class.
No expression matrix is copied (``X`` is absent).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import xarray as xr


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(text)).strip("_") or "group"


def _write(adata, path) -> Path:
    path = Path(path)
    if path.suffix != ".h5ad":
        raise ValueError(f"--write-h5ad needs a .h5ad path, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


def embedding_to_h5ad(group: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write an embedding group's coordinates to ``path`` as ``.obsm["X_<method>"]`` (see the module doc)."""
    import anndata
    import pandas as pd

    names = [v for v in group.data_vars if v.startswith("embedding_") and v != "embedding_fitted"]
    if not names:
        raise ValueError(f"no embedding_* variable in the group; it has {sorted(group.data_vars)}")
    items = np.asarray(group["item"].values).astype(str) if "item" in group.coords else \
        np.arange(group.sizes["item"]).astype(str)
    obs = pd.DataFrame(index=pd.Index(items, name="item"))
    for v in ("item_label", "item_batch", "item_argmax", "embedding_fitted"):
        if v in group.variables:
            obs[v.replace("item_", "")] = np.asarray(group[v].values)
    obsm = {f"X_{n.split('_', 1)[1]}": np.asarray(group[n].values, np.float32) for n in names}
    return _write(anndata.AnnData(obs=obs, obsm=obsm), path)


def attribution_to_h5ad(summary: xr.Dataset, path: str | os.PathLike, *, attributions: xr.Dataset | None = None) -> Path:
    """Write an attribution summary to ``path``: ``.varm`` per group, ``.uns`` table (see the module doc)."""
    import anndata
    import pandas as pd

    from .attribution_export import attribution_frame

    s = summary.compute()
    genes = pd.Index(np.asarray(s["feature"].values).astype(str), name="feature")
    targets = [str(t) for t in s["target"].values]
    groups = [str(g) for g in s["group"].values]
    varm = {}
    for gi, g in enumerate(groups):
        for stat in ("mean", "std", "n"):
            vals = np.asarray(s[f"feature_attribution_{stat}"].values[gi])
            varm[f"attribution_{stat}_{_key(g)}"] = pd.DataFrame(vals, index=genes, columns=targets)
    table = attribution_frame(s)
    uns = {"attribution_table": table.astype({c: str for c in ("group", "target", "feature")}),
           "attribution_groups": np.asarray(groups, dtype=object), "attribution_targets": np.asarray(targets, dtype=object)}
    obs = None
    if attributions is not None:
        cells = np.asarray(attributions["sample"].values).astype(str)
        obs = pd.DataFrame(index=pd.Index(cells, name="sample"))
        for v in ("attribution_predicted",):
            if v in attributions.variables:
                obs["predicted"] = np.asarray(attributions[v].values).astype(str)
    adata = anndata.AnnData(obs=obs, var=pd.DataFrame(index=genes), varm=varm, uns=uns) if obs is not None else \
        anndata.AnnData(var=pd.DataFrame(index=genes), varm=varm, uns=uns)
    return _write(adata, path)

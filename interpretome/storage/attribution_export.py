"""Tidy TSV / Parquet / CSV exports of attribution summaries (the scvi-tools table columns).

One row per (group, target, feature) with the columns ``feature, feature_idx, attribution_mean,
attribution_std, cells`` of scvi-tools' ranked-feature table, plus ``ci95`` (half-width of the 95%
interval), ``group`` and ``target``. ``feature_idx`` is the feature's column in the input matrix
(the AnnData var index), not its rank. Within a (group, target) rows are sorted by
``attribution_mean`` descending, as scvi-tools does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .summary_tables import feature_table

COLUMNS = ("feature", "feature_idx", "attribution_mean", "attribution_std", "cells")


def attribution_frame(summary: xr.Dataset, *, groups=None, targets=None) -> pd.DataFrame:
    """Return the tidy table of a (computed or lazy) summary from ``tasks.summarize.summarize_attributions``."""
    all_groups = [str(g) for g in summary["group"].values]
    all_targets = [str(t) for t in summary["target"].values]
    groups = all_groups if groups is None else [str(g) for g in np.atleast_1d(groups)]
    targets = all_targets if targets is None else [str(t) for t in np.atleast_1d(targets)]
    bad = [t for t in targets if t not in all_targets]
    if bad:
        raise ValueError(f"targets {bad} are not in the summary (targets: {all_targets})")
    summary = summary.compute()
    frames = []
    for g in groups:
        for t in targets:
            df = feature_table(summary, group=g, target=t)
            df.insert(0, "target", t)
            df.insert(0, "group", g)
            frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    return out[["group", "target", *COLUMNS, "ci95"]]


def export_attributions(summary: xr.Dataset, path: str | os.PathLike, *, groups=None, targets=None) -> Path:
    """Write the tidy table to ``path`` (``.tsv``/``.txt`` tab-separated, ``.csv``, ``.parquet``); return it."""
    path = Path(path)
    df = attribution_frame(summary, groups=groups, targets=targets)
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    else:
        raise ValueError(f"cannot tell the format of {str(path)!r}: use a .tsv, .csv or .parquet suffix")
    return path

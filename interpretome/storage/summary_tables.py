"""Tables of a computed attribution summary (``tasks.summarize.summarize_attributions``).

The summary's variables (``feature_attribution_mean`` / ``_std`` / ``_n`` / ``_ci95``, dims
(group, feature, target)) become small pandas tables here — the scvi-tools ranked-feature table
(``feature_table``), the top-N positive and negative features (``top_features``), per class
(``class_tables``) and the stacked positive contributions (``stacked_positive``) — so that
storage exports (``storage.attribution_export``) and figures (``viz.attributions``) read them
without importing the task that computes the summary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .schema import FEATURE, GROUP, TARGET

ALL = "all"
"""The name of the group of all samples (first in a summary made with ``include_all``)."""


def pick_target(summary: xr.Dataset, cls: str | None) -> str:
    """Return the summary target to read for class ``cls``: itself, else ``predicted``, else the only one."""
    targets = [str(t) for t in summary[TARGET].values]
    if cls is not None and cls in targets:
        return cls
    if "predicted" in targets:
        return "predicted"
    if len(targets) == 1:
        return targets[0]
    raise ValueError(f"class {cls!r} is not among the summary's targets {targets}: attribute with target='all' "
                     f"or target='predicted'")


def feature_table(summary: xr.Dataset, *, group: str = ALL, target: str | None = None) -> pd.DataFrame:
    """Return the scvi-tools style table of one group and target, sorted by ``attribution_mean`` descending.

    Columns: feature, feature_idx, attribution_mean, attribution_std, cells, ci95.
    """
    groups = [str(g) for g in summary[GROUP].values]
    if str(group) not in groups:
        raise ValueError(f"group {group!r} is not in the summary; its groups are {groups}")
    target = pick_target(summary, target)
    s = summary.sel({GROUP: str(group), TARGET: target})
    idx = (np.asarray(summary["feature_idx"].values) if "feature_idx" in summary.coords
           else np.arange(summary.sizes[FEATURE]))
    df = pd.DataFrame({
        "feature": np.asarray(summary[FEATURE].values).astype(str),
        "feature_idx": idx.astype(np.int64),
        "attribution_mean": np.asarray(s["feature_attribution_mean"].values, np.float64),
        "attribution_std": np.asarray(s["feature_attribution_std"].values, np.float64),
        "cells": np.asarray(s["feature_attribution_n"].values, np.int64),
        "ci95": np.asarray(s["feature_attribution_ci95"].values, np.float64),
    })
    return df.sort_values("attribution_mean", ascending=False, kind="stable").reset_index(drop=True)


def top_features(summary: xr.Dataset, *, n: int = 5, group: str = ALL, target: str | None = None) -> dict:
    """Return ``{"positive": df, "negative": df}``: the ``n`` largest and smallest mean attributions."""
    df = feature_table(summary, group=group, target=target)
    df = df[np.isfinite(df["attribution_mean"])]
    return {"positive": df.head(n).reset_index(drop=True),
            "negative": df.sort_values("attribution_mean", kind="stable").head(n).reset_index(drop=True)}


def class_tables(summary: xr.Dataset, *, n: int = 5, classes=None) -> dict[str, dict]:
    """Return ``{class: top_features(...)}`` for each class: its own group, attributed to itself.

    For a class ``c`` the group ``c`` (samples of that label) is read at target ``c`` when the
    attribution has per-class targets, else at ``"predicted"``.
    """
    groups = [str(g) for g in summary[GROUP].values if str(g) != ALL]
    classes = groups if classes is None else [str(c) for c in classes]
    missing = [c for c in classes if c not in groups]
    if missing:
        raise ValueError(f"classes {missing} are not groups of the summary ({groups}): summarise by the label column")
    return {c: top_features(summary, n=n, group=c, target=c) for c in classes}


def stacked_positive(summary: xr.Dataset, *, n: int = 5, classes=None) -> pd.DataFrame:
    """Return a (feature x class) frame of positive mean attributions (negatives as 0).

    Rows: the union of every class's top-``n`` positive features, ordered by total; columns: classes.
    """
    tables = class_tables(summary, n=n, classes=classes)
    feats: list[str] = []
    for t in tables.values():
        feats += [f for f in t["positive"]["feature"] if f not in feats]
    cols = {}
    for c in tables:
        df = feature_table(summary, group=c, target=c).set_index("feature")
        cols[c] = df.loc[feats, "attribution_mean"].clip(lower=0).fillna(0).to_numpy()
    out = pd.DataFrame(cols, index=pd.Index(feats, name="feature"))
    return out.loc[out.sum(1).sort_values(ascending=False).index]

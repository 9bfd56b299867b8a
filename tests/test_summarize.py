"""Per-group attribution summaries against pandas groupby; exports; figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from interpretome.storage.attribution_export import attribution_frame, export_attributions
from interpretome.tasks.summarize import class_tables, feature_table, stacked_positive, summarize_attributions

CLASSES = ["B", "NK", "T"]


def make_attr(n=53, f=7, seed=0, chunk=10, nan=True):
    rs = np.random.default_rng(seed)
    a = rs.normal(size=(n, f, len(CLASSES))).astype(np.float32) + np.arange(f)[None, :, None] * 0.1
    if nan:
        a[4, 2, 1] = np.nan
        a[17, 0, :] = np.nan
    labels = rs.choice(CLASSES + ["other"], size=n)
    ds = xr.Dataset({"attribution": (("sample", "feature", "target"),
                                     xr.DataArray(a).chunk({"dim_0": chunk}).data)},
                    coords={"sample": np.arange(n), "feature": [f"g{j}" for j in range(f)],
                            "feature_idx": ("feature", np.arange(f) + 100), "target": CLASSES,
                            "cell_type": ("sample", labels)})
    return a, labels, ds


def pandas_reference(a, labels, t):
    n, f, _ = a.shape
    df = pd.DataFrame(a[:, :, t], columns=[f"g{j}" for j in range(f)])
    df["label"] = labels
    g = df.groupby("label")
    return g.mean(), g.std(ddof=0), g.count(), df.drop(columns="label")


@pytest.mark.parametrize("chunk,split_every", [(10, None), (53, None), (3, 2), (7, 3)])
def test_summarize_attributions__equals_pandas_groupby(chunk, split_every):
    a, labels, ds = make_attr(chunk=chunk)
    s = summarize_attributions(ds, by="cell_type", split_every=split_every).compute()
    assert list(s["group"].values) == ["all", "B", "NK", "T", "other"]
    for t in range(len(CLASSES)):
        mean, std, count, whole = pandas_reference(a, labels, t)
        for g in ["B", "NK", "T", "other"]:
            np.testing.assert_allclose(s["feature_attribution_mean"].sel(group=g).values[:, t], mean.loc[g], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(s["feature_attribution_std"].sel(group=g).values[:, t], std.loc[g], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(s["feature_attribution_n"].sel(group=g).values[:, t], count.loc[g])
        np.testing.assert_allclose(s["feature_attribution_mean"].sel(group="all").values[:, t], whole.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s["feature_attribution_std"].sel(group="all").values[:, t], whole.std(ddof=0), rtol=1e-5, atol=1e-6)
    ci = 1.96 * s["feature_attribution_std"] / np.sqrt(s["feature_attribution_n"])
    np.testing.assert_allclose(s["feature_attribution_ci95"].values, ci.values, rtol=1e-5)


@pytest.mark.graph
def test_summarize_attributions__lazy_and_groups_order():
    _, _, ds = make_attr()
    s = summarize_attributions(ds, by="cell_type", groups=["T", "B"], include_all=False)
    assert all(s[v].chunks is not None for v in s.data_vars)
    assert list(s["group"].values) == ["T", "B"]


def test_summarize_attributions__lazy_label_with_categories():
    a, labels, ds = make_attr(nan=False)
    lazy = xr.DataArray(xr.DataArray(labels).chunk(10).data, dims=("sample",), attrs={"categories": ["NK", "B"]})
    ds["predicted"] = lazy
    s = summarize_attributions(ds, by="predicted").compute()
    assert list(s["group"].values) == ["all", "NK", "B"]
    np.testing.assert_allclose(s["feature_attribution_mean"].sel(group="NK").values, a[labels == "NK"].mean(0), rtol=1e-5)


@pytest.mark.graph
def test_summarize_attributions__bad_inputs():
    _, _, ds = make_attr()
    with pytest.raises(ValueError, match="label column 'louvain' is not in the dataset"):
        summarize_attributions(ds, by="louvain")
    with pytest.raises(ValueError, match="has no 'attribution'"):
        summarize_attributions(ds.drop_vars("attribution"))
    lazy = ds.assign(lab=("sample", xr.DataArray(ds["cell_type"].values).chunk(5).data))
    with pytest.raises(ValueError, match="pass groups="):
        summarize_attributions(lazy, by="lab")


def test_tables_and_export(tmp_path):
    a, labels, ds = make_attr(nan=False)
    s = summarize_attributions(ds, by="cell_type").compute()
    tab = feature_table(s, group="NK", target="NK")
    assert list(tab.columns) == ["feature", "feature_idx", "attribution_mean", "attribution_std", "cells", "ci95"]
    assert tab["attribution_mean"].is_monotonic_decreasing
    assert (tab["feature_idx"] == tab["feature"].str[1:].astype(int) + 100).all()
    assert (tab["cells"] == (labels == "NK").sum()).all()
    top = class_tables(s, n=2, classes=CLASSES)
    assert set(top) == set(CLASSES)
    assert top["T"]["positive"]["attribution_mean"].iloc[0] == tab_max(s, "T")
    with pytest.raises(ValueError, match="classes \\['Mono'\\] are not groups"):
        class_tables(s, classes=["Mono"])
    st = stacked_positive(s, n=2, classes=CLASSES)
    assert (st.values >= 0).all() and list(st.columns) == CLASSES
    for suffix in ("tsv", "parquet"):
        path = export_attributions(s, tmp_path / f"t.{suffix}", groups=["all", "B"])
        back = pd.read_csv(path, sep="\t") if suffix == "tsv" else pd.read_parquet(path)
        assert len(back) == 2 * len(CLASSES) * a.shape[1]
        row = back[(back.group == "B") & (back.target == "NK")].iloc[0]
        j = int(row.feature_idx) - 100
        np.testing.assert_allclose(row.attribution_mean, a[labels == "B", j, 1].mean(), rtol=1e-5)
        np.testing.assert_allclose(row.attribution_std, a[labels == "B", j, 1].std(), rtol=1e-5)
        assert row.cells == (labels == "B").sum()
    assert list(attribution_frame(s).columns[:7]) == ["group", "target", "feature", "feature_idx",
                                                      "attribution_mean", "attribution_std", "cells"]
    with pytest.raises(ValueError, match="use a .tsv, .csv or .parquet"):
        export_attributions(s, tmp_path / "t.xlsx")


def tab_max(s, cls):
    return float(s["feature_attribution_mean"].sel(group=cls, target=cls).max())


def test_figures(tmp_path):
    from interpretome.viz.attributions import (plot_class_grid, plot_image_overlay, plot_sequence_logo,
                                               plot_stacked, plot_top_features, save)

    _, _, ds = make_attr(nan=False)
    s = summarize_attributions(ds, by="cell_type").compute()
    paths = [save(plot_top_features(s, n=5, target="B"), tmp_path / "top.png"),
             save(plot_class_grid(s, n=3, classes=CLASSES), tmp_path / "grid.png"),
             save(plot_stacked(s, n=3, classes=CLASSES), tmp_path / "stacked.png"),
             save(plot_image_overlay(np.random.rand(3, 8, 8), np.random.randn(3, 8, 8), probability=0.93,
                                     label="tumour"), tmp_path / "overlay.png")]
    seq = xr.Dataset({"sequence_attribution": (("sequence", "position", "base", "target"),
                                               np.random.randn(1, 30, 4, 1)),
                      "sequence_length": (("sequence",), [25])},
                     coords={"sequence": ["s0"], "base": list("ACGT"), "target": ["y"], "position": np.arange(30)})
    paths.append(save(plot_sequence_logo(seq, "s0", start=5, end=20), tmp_path / "logo.png"))
    for p in paths:
        assert p.stat().st_size > 5000

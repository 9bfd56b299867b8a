"""interpretome's silhouette conventions side by side with scib-metrics' (``silhouette_label``, ``silhouette_batch``).

The mapping (also in the module doc of ``interpretome.tasks.scores``):

=================================================  ==================================================
interpretome ``clustering_scores``                  scib-metrics
=================================================  ==================================================
``asw_label``, ``convention="scib"``                ``silhouette_label(X, labels)`` (rescale: (ASW+1)/2)
``asw_label``, ``convention="sklearn"``             ``silhouette_label(X, labels, rescale=False)``
``asw_batch``, ``convention="scib"``                ``silhouette_batch(X, labels, batch)`` (1 - |s|)
1 - ``asw_batch``, ``convention="scib"``            ``silhouette_batch(X, labels, batch, rescale=False)``
``asw_batch``, ``convention="sklearn"``             none: sklearn's silhouette of all cells with the
                                                    batch as clusters (not computed per label)
=================================================  ==================================================

scib-metrics computes in float32 (jax's default), so the agreement asserted is 2e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

scib_metrics = pytest.importorskip(
    "scib_metrics", reason="scib-metrics is not installed (pip install scib-metrics; it needs jax and jaxlib)")

from interpretome.tasks.scores import clustering_scores  # noqa: E402


def _data(n=400, seed=0):
    rs = np.random.default_rng(seed)
    lab = rs.integers(0, 4, n)
    bat = rs.integers(0, 3, n)
    bat[lab == 0] = 0                       # label 0 has a single batch: both skip it in the batch ASW
    x = rs.normal(size=(n, 8)) + 1.5 * lab[:, None] + 0.4 * bat[:, None]
    ds = xr.Dataset({"item_vector": (("item", "feature"), x), "item_label": (("item",), lab),
                     "item_batch": (("item",), bat)})
    return ds, x, lab, bat


def _values(res):
    return dict(zip(res["metric"].values.tolist(), res["score_value"].values.tolist()))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_scib_convention_equals_scib_metrics(metric):
    ds, x, lab, bat = _data()
    scib = _values(clustering_scores(ds, batch="item_batch", convention="scib", metric=metric, block=128))
    plain = _values(clustering_scores(ds, batch="item_batch", convention="sklearn", metric=metric, block=128))
    x32 = x.astype(np.float32)
    ref_label = float(scib_metrics.silhouette_label(x32, lab, metric=metric))
    ref_label_raw = float(scib_metrics.silhouette_label(x32, lab, rescale=False, metric=metric))
    ref_batch = float(scib_metrics.silhouette_batch(x32, lab, bat, metric=metric))
    ref_batch_raw = float(scib_metrics.silhouette_batch(x32, lab, bat, rescale=False, metric=metric))
    assert scib["asw_label"] == pytest.approx(ref_label, rel=2e-6)
    assert plain["asw_label"] == pytest.approx(ref_label_raw, rel=2e-6)
    assert scib["asw_batch"] == pytest.approx(ref_batch, rel=2e-6)
    assert 1.0 - scib["asw_batch"] == pytest.approx(ref_batch_raw, rel=2e-5)
    # the two batch conventions measure different things: sklearn's over all cells is not scib's
    assert abs(plain["asw_batch"] - ref_batch) > 0.1

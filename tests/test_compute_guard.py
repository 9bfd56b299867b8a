"""The counting compute guard of tests/conftest.py counts, allows up to its limit and raises past it."""

from __future__ import annotations

import dask.array as da
import pytest

from .conftest import ComputeForbidden, raise_if_dask_computes


def test_raise_if_dask_computes__counts_and_raises_past_the_limit():
    x = da.ones(10, chunks=5)
    with raise_if_dask_computes(max_computes=2) as counter:
        assert int(x.sum().compute()) == 10
        assert float(x.mean()) == 1.0
        assert counter.total_computes == 2
        with pytest.raises(ComputeForbidden, match="3 computes, more than the 2 allowed"):
            x.sum().compute()
    with raise_if_dask_computes() as counter:
        y = (x + 1).sum()  # building a graph computes nothing
        assert counter.total_computes == 0
        with pytest.raises(ComputeForbidden, match="compute happened"):
            y.compute()
    assert int(y.compute()) == 20  # outside the guard the default scheduler is back


@pytest.mark.graph
def test_graph_marker__guards_the_test_body():
    with pytest.raises(ComputeForbidden):
        da.ones(4, chunks=2).sum().compute()


@pytest.mark.graph(max_computes=1)
def test_graph_marker__allows_its_max_computes():
    assert int(da.ones(4, chunks=2).sum().compute()) == 4
    with pytest.raises(ComputeForbidden):
        da.ones(4, chunks=2).sum().compute()

"""Shared fixtures: a compute-forbidding scheduler, a real 2-worker LocalCluster, small stores."""

from __future__ import annotations

import contextlib

import dask
import pytest


class ComputeForbidden(RuntimeError):
    """Raised when a test that builds graphs triggers a compute."""


def _forbid(*args, **kwargs):
    raise ComputeForbidden("a dask compute happened while the task graph was being built")


@contextlib.contextmanager
def raise_if_dask_computes():
    """Context in which any dask compute raises ``ComputeForbidden`` (as xarray's test helper)."""
    with dask.config.set(scheduler=_forbid):
        yield


@pytest.fixture
def no_compute():
    """Fixture form of ``raise_if_dask_computes``."""
    with raise_if_dask_computes():
        yield


@pytest.fixture(scope="session")
def client2():
    """A real LocalCluster of 2 single-threaded worker processes on 127.0.0.1 (shared by the session)."""
    from interpretome.engine.cluster import connect

    client = connect(2, log=None)
    yield client
    client.close()
    client.cluster.close()


@pytest.fixture
def store(tmp_path):
    """Path of a fresh zarr store in a temporary folder."""
    return tmp_path / "out.zarr"

"""Shared fixtures: a counting compute guard, a real 2-worker LocalCluster, small stores.

The compute guard is xarray's ``raise_if_dask_computes(max_computes)`` idea: a scheduler that
counts the computes that reach it and raises ``ComputeForbidden`` once there are more than
``max_computes``. A graph-building test is marked ``@pytest.mark.graph`` (no compute allowed)
or ``@pytest.mark.graph(max_computes=n)``; the guard covers the test's body, not its fixtures.
The ``no_compute`` fixture is the same guard with ``max_computes=0``. A compute that names its
scheduler explicitly (``.compute(scheduler="sync")``) is the test's own and is not counted.
"""

from __future__ import annotations

import contextlib

import dask
import pytest


class ComputeForbidden(RuntimeError):
    """Raised when a test that builds graphs triggers more computes than it allows."""


class CountingScheduler:
    """A dask scheduler that counts computes and raises past ``max_computes`` (else runs them synchronously)."""

    def __init__(self, max_computes: int = 0):
        self.total_computes = 0
        self.max_computes = int(max_computes)

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise ComputeForbidden(
                f"a dask compute happened while the task graph was being built: {self.total_computes} computes, "
                f"more than the {self.max_computes} allowed")
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Context in which more than ``max_computes`` dask computes raise ``ComputeForbidden``; yields the counter."""
    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def pytest_configure(config):
    config.addinivalue_line("markers", "graph(max_computes=0): a graph-building test; more computes than "
                            "max_computes fail it (tests/conftest.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("graph")
    if marker is None:
        yield
        return
    limit = marker.kwargs.get("max_computes", marker.args[0] if marker.args else 0)
    with raise_if_dask_computes(limit):
        yield


@pytest.fixture
def no_compute():
    """Fixture form of ``raise_if_dask_computes(0)``."""
    with raise_if_dask_computes() as counter:
        yield counter


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

"""Result integrity in the store (issue 10): chunk grids, checksums, verify, repair, locks, lost
workers, disk estimates. Each test fails on the store of interpretome 0.1 (empty manifests, no
lock, resume keyed by chunk index only)."""

from __future__ import annotations

import json
import re
import os
import signal
import threading
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from interpretome.cli import main
from interpretome.storage import store as store_mod
from interpretome.storage.lock import lock_path, store_lock
from interpretome.storage.manifest import done_dir, present_records
from interpretome.storage.store import (StoreError, group_info, open_group, store_summary, verify_store,
                                        write_dataset)


def _dataset(chunk: int) -> xr.Dataset:
    """A lazy (row, col) float32 variable with a value per cell that no chunking can change."""
    values = da.arange(24 * 10, chunks=240, dtype=np.float32).reshape(24, 10).rechunk((chunk, 5))
    return xr.Dataset({"value": (("row", "col"), values * 0.5 + 1)},
                      coords={"row": [f"r{i}" for i in range(24)], "col": np.arange(10)})


def _write(store, chunk=4, **kw):
    return write_dataset(_dataset(chunk), store, "g", task="t", params={"p": 1}, log=kw.pop("log", None), **kw)


def _files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in Path(store).rglob("*")
            if p.is_file() and "/.interpretome/" not in p.as_posix() and p.name not in (".zmetadata", ".zattrs")}


def _interrupt_after(monkeypatch, n: int):
    real = store_mod._write_chunk
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(*args)

    monkeypatch.setattr(store_mod, "_write_chunk", dying)
    return real


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "ref.zarr"
    _write(path)
    return path


def test_resume_with_other_chunking_refuses_and_same_chunking_resumes(tmp_path, monkeypatch, reference):
    store = tmp_path / "s.zarr"
    real = _interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted: at least 3 of 12 chunks of group 'g' are stored .* "
                                                r"run the same command again to resume"), \
            dask.config.set(scheduler="sync"):
        _write(store)
    monkeypatch.setattr(store_mod, "_write_chunk", real)
    assert group_info(store, "g")["complete"] is False
    assert xr.open_zarr(store, group="g").attrs["interpretome_status"] == "interrupted"  # plain xarray sees it
    with pytest.raises(StoreError, match=r"started with another chunking \(value \(row, col\): \(4, 5\) -> "
                                         r"\(2, 5\)\) and is not complete.*--overwrite"):
        _write(store, chunk=2)
    rep = _write(store)
    assert (rep.computed_chunks, rep.skipped_chunks) == (9, 3)
    assert _files(store) == _files(reference)
    assert xr.open_zarr(store, group="g").attrs["interpretome_status"] == "complete"
    # a complete group read back with another chunking: nothing to compute, the stored values stand
    lines = []
    again = _write(store, chunk=2, log=lines.append)
    assert again.computed_chunks == 0 and "complete in the store" in lines[-1]
    np.testing.assert_array_equal(open_group(store, "g")["value"].values, _dataset(4)["value"].values)
    # --overwrite recomputes everything, with the new chunking
    rep = _write(store, chunk=2, overwrite=True)
    assert rep.computed_chunks == 24 and rep.skipped_chunks == 0


def test_overwrite_recomputes_everything_even_with_same_parameters(reference):
    rep = _write(reference, overwrite=True)
    assert rep.computed_chunks == 12 and rep.skipped_chunks == 0


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_damaged_chunk_is_detected_named_and_repaired(tmp_path, reference, damage, capsys):
    store = tmp_path / "s.zarr"
    _write(store)
    chunk = store / "g" / "value" / "2.1"
    data = chunk.read_bytes()
    if damage == "delete":
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte changed: only the checksum sees it
        chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    states = verify_store(store)
    state, bad = states["g"]
    assert state == "damaged" and [(d.variable, d.chunk) for d in bad] == [("value", "2.1")]
    assert {"delete": "missing", "truncate": "bytes", "flip": "sha256"}[damage] in bad[0].problem
    assert main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert "[g] damaged: 1 bad chunks" in out and "value chunk 2.1:" in out
    if damage != "flip":  # the quick check (stat) of info and open_group
        assert "[g] task=t damaged (1 bad chunks, e.g. g/value chunk 2.1" in store_summary(store)
        with pytest.raises(StoreError, match=r"group 'g' .* is damaged: g/value chunk 2\.1: chunk file"):
            open_group(store, "g")
    lines = []
    rep = _write(store, log=lines.append)
    assert (rep.computed_chunks, rep.skipped_chunks) == (1, 11)
    assert any("1 damaged chunks will be computed again (g/value chunk 2.1" in m for m in lines)
    assert _files(store) == _files(reference)
    assert main(["verify", str(store)]) == 0
    assert "[g] complete: every chunk matches its checksum" in capsys.readouterr().out


def test_damaged_coordinate_is_detected_and_group_rewritten(tmp_path, reference):
    store = tmp_path / "s.zarr"
    _write(store)
    (store / "g" / "row" / "0").unlink()
    state, bad = verify_store(store)["g"]
    assert state == "damaged" and bad[0].variable == "row"
    _write(store)
    assert verify_store(store)["g"][0] == "complete"
    assert _files(store) == _files(reference)


def test_missing_manifest_of_complete_group_is_damage(tmp_path):
    store = tmp_path / "s.zarr"
    _write(store)
    (done_dir(store, "g", "value") / "0.0").unlink()
    state, bad = verify_store(store)["g"]
    assert state == "damaged" and bad[0].chunk == "0.0" and "manifest" in bad[0].problem
    assert _write(store).computed_chunks == 1


def test_verify_errors(tmp_path):
    with pytest.raises(StoreError, match="is not an interpretome store"):
        verify_store(tmp_path)
    _write(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match=r"has no group 'nope'; it has \['g'\]"):
        verify_store(tmp_path / "s.zarr", ["nope"])


def test_failed_run_before_any_chunk_does_not_block_a_corrected_rerun(tmp_path):
    store = tmp_path / "s.zarr"

    def boom(block):
        raise ValueError("model failed")

    bad = _dataset(4).copy()
    bad["value"] = bad["value"].copy(data=bad["value"].data.map_blocks(boom, dtype=np.float32))
    with pytest.raises(ValueError, match="model failed"), dask.config.set(scheduler="sync"):
        write_dataset(bad, store, "g", task="t", params={"p": "broken"})
    assert (store / "g").exists()
    rep = write_dataset(_dataset(4), store, "g", task="t", params={"p": "fixed"})  # no overwrite needed
    assert rep.computed_chunks == 12


def test_second_writer_is_refused_and_stale_lock_is_removed(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    held, release = threading.Event(), threading.Event()

    def holder():
        with store_lock(store):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait(10)
        with pytest.raises(StoreError, match=r"being written by another run \(pid \d+ on .*delete .*"
                                             r"s\.zarr\.lock"):
            _write(store)
        with pytest.raises(StoreError, match="being written by another run"), store_mod.planning():
            _write(store)  # planning (dry runs, plan-first checks) sees the lock too
    finally:
        release.set()
        t.join()
    # a lock left by a killed process of this host is stale: removed, with a line saying so
    lock_path(store).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename,
                                            "started": "then", "command": "interpretome sweep"}))
    lines = []
    assert _write(store, log=lines.append).computed_chunks == 12
    assert any("removed a stale lock" in m and "no longer runs" in m for m in lines)
    assert not lock_path(store).exists()


def test_disk_estimate_counts_a_block_per_file(tmp_path, monkeypatch):
    ds = _dataset(1)
    need = store_mod.needed_bytes(ds, tmp_path / "s.zarr")
    data = sum(v.nbytes for v in ds.variables.values())
    assert need >= data + 2 * 24 * 2 * 4096  # 48 chunks: a data file and a manifest file each
    seen = {}
    monkeypatch.setattr(store_mod, "check_writable", lambda p, n=0: seen.setdefault("n", n) and Path(p))
    write_dataset(ds, tmp_path / "s.zarr", "g", task="t", params={})
    assert seen["n"] == need


def test_lost_worker_recomputes_no_written_chunk(tmp_path, client2):
    """Kill one of the 2 workers mid-run: every chunk written before the kill is computed once."""
    calls = tmp_path / "calls"
    calls.mkdir()

    def slow(block, block_info=None):
        loc = block_info[0]["chunk-location"]
        with open(calls / f"{loc[0]}.{loc[1]}.{os.getpid()}.{time.time_ns()}", "w"):
            pass
        time.sleep(0.3)
        return block

    ds = _dataset(1)
    ds["value"] = ds["value"].copy(data=ds["value"].data.map_blocks(slow, dtype=np.float32))
    store = tmp_path / "s.zarr"
    errors, lines = [], []

    def job():
        try:
            write_dataset(ds, store, "g", task="t", params={}, client=client2, log=lines.append)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    t = threading.Thread(target=job)
    t.start()
    ddir = done_dir(store, "g", "value")
    t0 = time.monotonic()
    while len(present_records(ddir)) < 10 and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    # preempt a worker in the middle of a chunk: the one that started a block most recently
    n_started = len(os.listdir(calls))
    while len(os.listdir(calls)) == n_started:
        time.sleep(0.005)
    newest = max(os.listdir(calls), key=lambda f: int(f.rsplit(".", 1)[1]))
    time.sleep(0.1)
    written_at_kill = present_records(ddir)
    victim = int(newest.split(".")[2])
    os.kill(victim, signal.SIGKILL)
    t.join(120)
    assert not errors, errors
    assert 10 <= len(written_at_kill) < 48
    counts: dict[str, int] = {}
    for f in os.listdir(calls):
        key = ".".join(f.split(".")[:2])
        counts[key] = counts.get(key, 0) + 1
    assert all(counts[k] == 1 for k in written_at_kill), {k: counts[k] for k in written_at_kill if counts[k] > 1}
    assert verify_store(store)["g"][0] == "complete"
    t0 = time.monotonic()
    while len(client2.scheduler_info()["workers"]) < 2 and time.monotonic() - t0 < 60:
        time.sleep(0.1)


def test_ctrl_c_stops_with_one_line_and_exit_130_then_resumes(tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) of `interpretome sweep`
    on an embedded 2-worker cluster: exit 130, one line on stderr saying what is stored and how to
    resume, no traceback from the client or the workers; the same command then resumes."""
    import subprocess
    import sys

    from interpretome.datasets import DEMO_WEIGHTS, data_path, promoter_sequences
    from interpretome.storage.readers import write_fasta

    fasta = write_fasta(tmp_path / "p.fa", dict(list(promoter_sequences(32).items())))
    store = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "interpretome", "sweep", str(fasta), "-o", str(store), "--model",
           "interpretome.datasets:promoter_cnn", "--weights", str(data_path(DEMO_WEIGHTS)), "--targets", "promoter",
           "--sequence-chunk", "2", "--workers", "2", "--windows", "1,3,5,7,9"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path)
    ddir = done_dir(store, "sweep", "sweep_delta_mean")
    t0 = time.monotonic()
    while len(present_records(ddir)) < 4 and proc.poll() is None \
            and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("sweep: ")]  # progress lines
    assert len(lines) == 1, err
    assert re.fullmatch(r"interpretome sweep: interrupted: at least (\d+) of 48 chunks of group 'sweep' are stored in "
                        r"'.*s\.zarr'; run the same command again to resume", lines[0]), lines[0]
    stored = int(re.search(r"interrupted: at least (\d+) of", lines[0]).group(1))
    assert 0 < stored < 48 and "Traceback" not in out + err
    assert not lock_path(store).exists()
    assert xr.open_zarr(store, group="sweep").attrs["interpretome_status"] == "interrupted"
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    # chunks that were being written when Ctrl-C came may still land: at least `stored` are there
    resumed = re.search(r"sweep: (\d+) of 48 chunks to compute \((\d+) already in the store\)", done.stdout)
    assert resumed and int(resumed.group(2)) >= stored and int(resumed.group(1)) + int(resumed.group(2)) == 48
    assert verify_store(store)["sweep"][0] == "complete"
    assert xr.open_zarr(store, group="sweep").attrs["interpretome_status"] == "complete"

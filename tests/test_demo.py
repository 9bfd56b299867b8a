"""The demo's DNA step: the planted boxes must stand out in the stored sweep and ISM."""

from __future__ import annotations

import numpy as np

from interpretome.datasets import MOTIF_10_START, MOTIF_35_START, promoter_sequences
from interpretome.jobs import demo
from interpretome.storage.store import open_group


def test_demo_dna_step__planted_boxes_stand_out(tmp_path, client2, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_STEPS", [demo.step_dna])
    monkeypatch.setattr(demo, "promoter_sequences", lambda n: promoter_sequences(4))  # smaller than the demo's 16
    ctx = demo.run_demo(tmp_path, client=client2, log=lambda m: None)
    assert {p.name for p in ctx.figures} >= {"sweep_promoter_00.png", "ism_promoter_00.png"}
    mask = open_group(ctx.store, "sweep_mask")["sweep_delta_mean"].isel(window=0, target=0).values  # k = 6
    boxes = [(MOTIF_35_START, MOTIF_35_START + 6), (MOTIF_10_START, MOTIF_10_START + 6)]
    for row in mask:
        worst = int(np.nanargmin(row))  # masking 6 bp starting here hurts most
        assert any(s - 5 <= worst < e for s, e in boxes)
        assert np.nanmin(row) < -0.5  # the promoter call collapses
        far = np.r_[row[:90], row[170:194]]
        assert np.nanmax(np.abs(far)) < 0.05  # background hardly matters
    ism = open_group(ctx.store, "ism")["ism_delta"].isel(target=0).values  # (sequence, position, base)
    effect = np.abs(ism).max(axis=2).mean(axis=0)
    top = set(np.argsort(effect)[-12:])
    inside = set(range(MOTIF_35_START, MOTIF_35_START + 6)) | set(range(MOTIF_10_START, MOTIF_10_START + 6))
    assert len(top & inside) >= 10


def test_demo_genome_profile_step__tata_tops_the_profile_ism(tmp_path, client2, monkeypatch):
    import time

    from interpretome.jobs.genome import DEMO_TATA

    monkeypatch.setattr(demo, "DEMO_STEPS", [demo.step_genome_profile])
    t0 = time.perf_counter()
    ctx = demo.run_demo(tmp_path, client=client2, log=lambda m: None)
    assert time.perf_counter() - t0 < 30  # a few seconds on an idle machine
    assert [p.name for p in ctx.figures] == ["yeast_tata_ism_NC_001133.9_129120-129219.png"]
    res = open_group(ctx.store, "yeast_tata_ism")
    loss = -res["genome_ism_profile_total"].isel(contig=0, target=0).min("base")
    top = np.sort(loss["position"].values[np.argsort(-loss.values)[:6]])
    np.testing.assert_array_equal(top, np.arange(DEMO_TATA, DEMO_TATA + 6))
    assert res.attrs["pad"] == "N" and list(res["position"].values[[0, -1]]) == [129119, 129218]

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

"""The PBMC demo (shipped AnnData, a small cell-type classifier, its deterministic training) and a tiny image model.

``pbmc68k_reduced.h5ad`` (700 PBMCs x 765 genes, ``obs["bulk_labels"]`` 10 cell types, ``.X``
scaled; 10x Genomics data as shipped by scanpy, BSD-3-Clause) ships in ``interpretome/data``, re-saved
with anndata 0.12 in the current on-disk format (``.uns["neighbors"]`` graphs in ``.obsp``; same values),
so reading it warns of nothing.
``train_cell_classifier`` fits ``cell_classifier`` on it with full-batch Adam from a fixed seed
and deterministic torch algorithms (a second or two on one core), and returns a ``ModelSpec``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PBMC = "pbmc68k_reduced.h5ad"

MARKERS = {
    "CD19+ B": ["CD79A", "MS4A1", "CD79B"],
    "CD56+ NK": ["NKG7", "GNLY"],
    "CD14+ Monocyte": ["LYZ", "CST3", "FCN1"],
    "Dendritic": ["CST3", "HLA-DRA", "FCER1A"],
    "CD4+/CD25 T Reg": ["CD3E", "IL7R"],
    "CD4+/CD45RA+/CD25- Naive T": ["CD3E", "IL7R"],
    "CD4+/CD45RO+ Memory": ["CD3E", "IL7R"],
    "CD8+ Cytotoxic T": ["CD3E", "CD8A", "NKG7"],
    "CD8+/CD45RA+ Naive Cytotoxic": ["CD3E", "CD8A"],
}
"""Known marker genes per ``bulk_labels`` cell type (those present among the 765 genes)."""


def pbmc_path() -> Path:
    """Return the path of the shipped ``pbmc68k_reduced.h5ad``."""
    from .datasets import data_path

    return data_path(PBMC)


def cell_classifier(n_features: int = 765, n_classes: int = 10, hidden: int = 32, seed: int = 0):
    """Return an MLP cell-type classifier: Linear(F, hidden), ReLU, Linear(hidden, classes) (logits)."""
    import torch
    import torch.nn as nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def train_cell_classifier(out: str | Path, *, h5ad: str | Path | None = None, label: str = "bulk_labels",
                          epochs: int = 100, seed: int = 0, weight_decay: float = 1e-3, hidden: int = 32):
    """Train ``cell_classifier`` on an AnnData's ``X`` and ``obs[label]``; return ``(spec, report)``.

    Deterministic (fixed seed, deterministic algorithms, full-batch Adam). The state_dict is saved
    to ``out``; ``spec`` is a dense-input ``ModelSpec`` whose targets are the sorted class names;
    ``report`` holds the training accuracy, the class names and the label counts.
    """
    import anndata
    import torch
    import torch.nn.functional as F

    from .engine.models import ModelSpec

    h5ad = Path(h5ad) if h5ad is not None else pbmc_path()
    adata = anndata.read_h5ad(h5ad)
    if label not in adata.obs.columns:
        raise ValueError(f"label column {label!r} is not in {str(h5ad)!r} obs; it has {list(adata.obs.columns)}")
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, np.float32)
    labels = adata.obs[label].astype(str).to_numpy()
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels], np.int64)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        model = cell_classifier(x.shape[1], len(classes), hidden, seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(int(epochs)):
            opt.zero_grad()
            F.cross_entropy(model(xt), yt).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xt).argmax(1) == yt).float().mean())
    finally:
        torch.use_deterministic_algorithms(prev)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    spec = ModelSpec(factory="interpretome.pbmc:cell_classifier", weights=str(out), input_kind="dense",
                     kwargs={"n_features": int(x.shape[1]), "n_classes": len(classes), "hidden": hidden,
                             "seed": seed},
                     targets=tuple(classes))
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    return spec, {"train_accuracy": acc, "classes": classes, "counts": counts}


def image_classifier(channels: int = 3, n_classes: int = 2, width: int = 8, seed: int = 0):
    """Return a tiny seeded image classifier (tests and examples): Conv2d, ReLU, global average, Linear.

    Input ``(N, channels, H, W)``; output ``(N, n_classes)`` logits.
    """
    import torch
    import torch.nn as nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(width, n_classes))

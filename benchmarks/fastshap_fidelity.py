"""FastSHAP fidelity of one model and seed at the defaults (issue 14; the rows of RESULTS.md ``bench:fastshap``).

``python -m benchmarks.fastshap_fidelity pbmc|scanvi SEED [key=value ...]``: ``validate_fastshap(spec, x,
n_validate=8, seed=SEED, **options)`` in one torch thread; ``pbmc``: the shipped classifier on the 765
log-normalised genes (as ``tests/test_fastshap.py``); ``scanvi``: a SCANVI trained on PBMC pseudo-counts
(``bench_fastshap.train_scanvi``), ``transform="log1p"``. Prints one JSON line of the validation figures.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np


def main() -> None:
    import anndata
    import torch

    from interpretome.pbmc import pbmc_path, train_cell_classifier
    from interpretome.tasks.fastshap import validate_fastshap

    from .bench_fastshap import pbmc_counts, train_scanvi

    which, seed = sys.argv[1], int(sys.argv[2])
    opts = {}
    for a in sys.argv[3:]:
        k, v = a.split("=")
        opts[k] = v if k == "transform" else (float(v) if "." in v else int(v))
    tmp = tempfile.mkdtemp()
    if which == "pbmc":
        spec, _ = train_cell_classifier(f"{tmp}/clf.pt")
        x = np.asarray(anndata.read_h5ad(pbmc_path()).X, np.float32)
    else:
        x, labels = pbmc_counts()
        spec, _ = train_scanvi(f"{tmp}/scanvi", x, labels)
        opts.setdefault("transform", "log1p")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    v = validate_fastshap(spec, x, n_validate=8, seed=seed, **opts)["validation"]
    print(json.dumps({"model": which, "seed": seed, **opts, **{k: round(float(y), 4) for k, y in v.items()},
                      "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()

"""Genomap jobs: top variable genes across batches, the genomap transform, store group and scMEDAL's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import store_result


def run_genomap(h5ad, store, out_dir, *, group="genomap", name="genomap", rows=16, cols=16, batch=None, layer=None,
                cells=None, fit_cells=None, num_iter=1000, client=None, overwrite=False, log=print) -> list[Path]:
    """Place the ``rows * cols`` top variable genes (per-batch variances over obs ``batch``) on a genomap.

    The genes are selected on ``fit_cells`` (default all cells, read once); the genomap of every
    cell goes to ``store/group``; ``write_genomap_files`` writes scMEDAL's files for ``cells``
    into ``out_dir``. Returns the written file paths.
    """
    from ..storage.anndata_io import read_h5ad
    from ..storage.store import open_group
    from ..tasks.genomap import genomap, top_variable_genes, write_genomap_files

    ds = read_h5ad(h5ad, layer=layer)
    fit = np.arange(ds.sizes["sample"]) if fit_cells is None else np.sort(np.asarray(fit_cells, np.int64))
    if batch is not None and batch not in ds.coords:
        raise ValueError(f"batch column {batch!r} is not in {str(h5ad)!r} obs")
    xfit = ds["features"].isel(sample=fit).values
    labels = None if batch is None else np.asarray(ds[batch].values)[fit]
    genes = top_variable_genes(xfit, min(rows * cols, xfit.shape[1]), labels)
    res = genomap(ds, rows=rows, cols=cols, genes=genes, fit_cells=fit, num_iter=num_iter, merge=False)
    store_result(res, store, group, task="genomap",
                 params={"rows": rows, "cols": cols, "batch": batch, "layer": layer, "num_iter": num_iter,
                         "n_genes": int(len(genes))}, inputs=[h5ad], client=client, overwrite=overwrite, log=log)
    stored = open_group(store, group)
    files = write_genomap_files(stored, out_dir, name, cells=cells)
    log(f"[genomap] {len(genes)} genes on a {rows} x {cols} grid; files: {', '.join(p.name for p in files[:2])} ...")
    return files


def step_genomap(ctx) -> list[Path]:
    """Demo: genomaps of the shipped PBMC cells (256 top variable genes across cell-cycle phases, 16 x 16)."""
    from ..pbmc import pbmc_path

    try:
        import genomap  # noqa: F401
    except ImportError:
        ctx.log("[genomap] skipped: the genomap package is not installed (pip install 'interpretome[genomap]')")
        return []
    files = run_genomap(pbmc_path(), ctx.store, ctx.out / "genomap", rows=16, cols=16, batch="phase",
                        cells=np.arange(8), client=ctx.client, overwrite=ctx.overwrite, log=ctx.log)
    return [p for p in files if p.suffix == ".png"]

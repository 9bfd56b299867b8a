"""Genomap jobs: top variable genes across batches, the genomap transform, store group and scMEDAL's files.

The ``genomap`` kind (``interpretome genomap CELLS.h5ad -o STORE``): reads ``X`` (or ``--layer``)
of an AnnData file lazily, selects the ``rows * cols`` genes of largest variance averaged over
the ``--batch`` column's batches (on ``--fit-cells`` seeded cells, default all), fits the
genomap transform on them, stores every cell's genomap in the store group (``genomap`` by
default) and writes scMEDAL's files for the ``--cells`` set into ``--out``
(``gene_coordinates_<name>.csv``, ``genomap_<name>.npy``, PNGs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import store_result
from .declare import JobKind, Param


def run_genomap(h5ad, store, out_dir, *, group="genomap", name="genomap", rows=16, cols=16, batch=None, layer=None,
                cells=None, fit_cells=None, num_iter=1000, png=4, client=None, overwrite=False, log=print):
    """Place the ``rows * cols`` top variable genes (per-batch variances over obs ``batch``) on a genomap.

    ``layer``: the AnnData layer to read (None: ``X``; ``read_h5ad`` names it ``features`` either
    way). The genes are selected on ``fit_cells`` (sample indices; default all cells, read once);
    the genomap of every cell goes to ``store/group``; ``write_genomap_files`` writes scMEDAL's
    files for ``cells`` (default the first 8) into ``out_dir``, with ``png`` PNGs. Returns
    ``(write report, written file paths)``.
    """
    from ..storage.anndata_io import read_h5ad
    from ..storage.store import open_group
    from ..tasks.genomap import genomap, top_variable_genes, write_genomap_files

    ds = read_h5ad(h5ad, layer=layer)
    n = ds.sizes["sample"]
    fit = np.arange(n) if fit_cells is None else np.sort(np.asarray(fit_cells, np.int64))
    if batch is not None and batch not in ds.coords:
        cols_have = [c for c in ds.coords if ds[c].dims == ("sample",) and c != "sample"]
        raise ValueError(f"batch column {batch!r} is not in {str(h5ad)!r} obs; it has {cols_have}: pass --batch "
                         f"with one of them")
    if rows < 1 or cols < 1:
        raise ValueError(f"a genomap needs rows >= 1 and cols >= 1, got --rows {rows} --cols {cols}")
    cells = np.arange(min(8, n)) if cells is None else np.asarray(cells, np.int64)
    if cells.size and (cells.min() < 0 or cells.max() >= n):
        raise ValueError(f"--cells {cells.tolist()} are not all in 0..{n - 1} (the file has {n} cells)")
    xfit = ds["features"].isel(sample=fit).values
    labels = None if batch is None else np.asarray(ds[batch].values)[fit]
    genes = top_variable_genes(xfit, min(rows * cols, xfit.shape[1]), labels)
    res = genomap(ds, rows=rows, cols=cols, genes=genes, fit_cells=fit, num_iter=num_iter, merge=False)
    report = store_result(res, store, group, task="genomap",
                          params={"rows": rows, "cols": cols, "batch": batch, "layer": layer, "num_iter": num_iter,
                                  "n_genes": int(len(genes)), "fit_cells": None if fit_cells is None else fit.tolist()},
                          inputs=[h5ad], client=client, overwrite=overwrite, log=log)
    stored = open_group(store, group)
    files = write_genomap_files(stored, out_dir, name, cells=cells, png=png)
    log(f"[genomap] {len(genes)} genes on a {rows} x {cols} grid; files in {out_dir}: "
        f"{', '.join(p.name for p in files[:2])} and {len(files) - 2} PNGs")
    return report, files


def genomap_job(*, store, group, input, layer=None, rows=16, cols=16, batch=None, cells=None, fit_size=None,
                seed=0, num_iter=1000, out=None, name=None, png=4, client=None, overwrite=False, log=print):
    """The ``genomap`` kind: ``run_genomap`` on one AnnData file; files into ``out`` (default STORE_genomap)."""
    fit_cells = None
    if fit_size is not None:
        from ..storage.anndata_io import read_h5ad

        n = read_h5ad(input, layer=layer).sizes["sample"]
        if fit_size < n:
            fit_cells = np.sort(np.random.default_rng(seed).choice(n, size=int(fit_size), replace=False))
    out = out or str(Path(store).with_suffix("")) + "_genomap"
    report, files = run_genomap(input, store, out, group=group, name=name or group, rows=rows, cols=cols, batch=batch,
                                layer=layer, cells=cells, fit_cells=fit_cells, num_iter=num_iter, png=png,
                                client=client, overwrite=overwrite, log=log)
    for p in files:
        log(str(p))
    return report


GENOMAP = JobKind(
    "genomap", genomap_job, group="genomap", model=False, lazy=False,
    doc="genomaps (Islam & Xing): top variable genes across batches placed on an image grid by Gromov-Wasserstein "
        "transport; every cell's genomap in the store, scMEDAL's files for a cell set",
    params=(
        Param("input", "str", required=True, file=True, cli="input", doc="AnnData .h5ad file of the cells"),
        Param("layer", "str", None, doc="AnnData layer to read instead of X (e.g. counts)"),
        Param("rows", "int", 16, doc="genomap rows (rows x cols genes are placed)"),
        Param("cols", "int", 16, doc="genomap columns"),
        Param("batch", "str", None, doc="obs column of batches: gene variances are averaged over its batches"),
        Param("cells", "list[int]", None, doc="cell indices whose genomaps go to the .npy file and PNGs "
                                              "(default the first 8)"),
        Param("fit_size", "int", None, doc="select genes and fit the transform on this many seeded cells "
                                           "(default all)"),
        Param("seed", "int", 0, doc="seed of the --fit-size cells"),
        Param("num_iter", "int", 1000, doc="Gromov-Wasserstein iterations"),
        Param("out", "str", None, output=True, doc="folder for the scMEDAL files (default STORE_genomap)"),
        Param("name", "str", None, doc="name in the file names gene_coordinates_NAME.csv, genomap_NAME.npy "
                                       "(default the group)"),
        Param("png", "int", 4, doc="PNG images of the first N of --cells"),
    ))



def render_genomap(store, group, out_dir, *, cells=None, png: int = 4, **_) -> list[Path]:
    """Renderer of a stored ``genomap`` group: scMEDAL's files (coordinates, .npy, PNGs of the first cells)."""
    from ..storage.store import open_group
    from ..tasks.genomap import write_genomap_files

    stored = open_group(store, group)
    cells = np.arange(min(int(png), stored.sizes["sample"])) if cells is None else cells
    return write_genomap_files(stored, out_dir, group, cells=cells, png=png)


KINDS = (GENOMAP,)
RENDERERS = {"genomap": render_genomap}


def step_genomap(ctx) -> list[Path]:
    """Demo: genomaps of the shipped PBMC cells (256 top variable genes across cell-cycle phases, 16 x 16)."""
    from ..pbmc import pbmc_path

    try:
        import genomap  # noqa: F401
    except ImportError:
        ctx.log("[genomap] skipped: the genomap package is not installed (pip install 'interpretome[genomap]')")
        return []
    _, files = run_genomap(pbmc_path(), ctx.store, ctx.out / "genomap", rows=16, cols=16, batch="phase",
                           cells=np.arange(8), client=ctx.client, overwrite=ctx.overwrite, log=ctx.log)
    return [p for p in files if p.suffix == ".png"]

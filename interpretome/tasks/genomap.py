"""Genomaps (Islam & Xing, 2023): gene-expression vectors arranged as images by optimal transport, via ``genomap``.

Genes are placed on a ``rows`` x ``cols`` grid so that genes that correlate across cells sit
close together: the ``genomap`` package's entropic Gromov-Wasserstein coupling ``T`` (genes x
grid points) between the genes' correlation distances and the grid's Euclidean distances is
fitted once on the cells of ``fit_cells``; every cell's image is then its expression times
``T * n_grid``, laid out column-major on the grid — exactly ``genomap.construct_genomap`` (which
leaves the last cell's image at zero; here every cell has its image). The fit needs at most
``rows * cols`` genes: ``top_variable_genes`` picks them.

``genomap(ds, rows=, cols=)`` returns lazy, registered variables (``genomap_image`` is mapped over
the sample chunks with ``T`` as one graph key, so it does not depend on the chunking):

* ``genomap_image`` (sample, genomap_row, genomap_col) float32;
* ``genomap_gene_row``, ``genomap_gene_col`` (feature): each gene's grid cell (its largest
  coupling), ``genomap_coupling`` (feature, grid) the coupling itself;

``write_genomap_files`` writes scMEDAL's files: ``gene_coordinates_<name>.csv`` (gene, row,
col), ``genomap_<name>.npy`` (cells, rows, cols, 1) float32 for a chosen cell set, and one PNG per
chosen cell. Needs ``pip install 'interpretome[genomap]'`` (``genomap`` and ``POT``).
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from ..engine.blocks import merge_result, sample_feature_data
from ..storage.schema import FEATURE, GENOMAP_COL, GENOMAP_ROW, GRID, SAMPLE, validate


def _package():
    try:
        import genomap
        from genomap.genomapOPT import create_space_distributions, gromov_wasserstein_adjusted_norm
    except ImportError as e:
        raise ImportError(f"genomaps need the genomap package: pip install 'interpretome[genomap]' ({e})") from e
    return genomap, create_space_distributions, gromov_wasserstein_adjusted_norm


def top_variable_genes(x: np.ndarray, n: int, batches=None) -> np.ndarray:
    """Return the sorted column indices of the ``n`` genes of largest variance, averaged over ``batches``.

    ``x`` ``(cells, genes)``; ``batches`` (cells,) labels or None (one batch). Each gene's variance
    (ddof 0) is computed within every batch and averaged with equal weight per batch, so a gene
    that differs only between batches does not rank high; ties go to the lower index.

    Parameters
    ----------
    x : ndarray (cells, genes)
        The expression matrix.
    n : int
        How many genes.
    batches : sequence, optional
        One batch label per cell.

    Returns
    -------
    ndarray (n,)
        The selected column indices, ascending.

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> x = np.array([[0.0, 1.0, 5.0, 2.0], [0.0, 3.0, -5.0, 2.0], [0.0, 2.0, 0.0, 2.1]])
    >>> it.top_variable_genes(x, 2).tolist()
    [1, 2]
    >>> it.top_variable_genes(x, 2, batches=["a", "a", "b"]).tolist()
    [1, 2]
    """
    x = np.asarray(x, np.float64)
    labels = np.zeros(len(x), int) if batches is None else np.asarray(batches)
    var = np.mean([x[labels == b].var(axis=0) for b in np.unique(labels)], axis=0)
    order = np.lexsort((np.arange(x.shape[1]), -var))
    return np.sort(order[:int(n)])


def genomap_coupling(x: np.ndarray, rows: int, cols: int, *, epsilon: float = 0.0, num_iter: int = 1000) -> np.ndarray:
    """Return the coupling ``T`` ``(genes, genes)`` of ``genomap`` fitted on ``x`` ``(cells, genes)``, genes <= rows*cols.

    The same computation as ``genomap.construct_genomap_returnT`` (its mesh distances, correlation
    interactions, space distributions and ``gromov_wasserstein_adjusted_norm``), without the images.
    """
    genomap, spaces, gw = _package()
    x = np.asarray(x, np.float64)
    n_genes = x.shape[1]
    if n_genes > rows * cols:
        raise ValueError(f"{n_genes} genes do not fit a {rows} x {cols} genomap: select at most {rows * cols} "
                         f"(top_variable_genes) or enlarge the grid")
    dist = genomap.createMeshDistance(rows, cols)
    inter = genomap.createInteractionMatrix(x, metric="correlation")
    p, q = spaces(n_genes, n_genes)
    return gw(np.zeros((n_genes, n_genes)), inter, dist[:n_genes, :n_genes], p, q, loss_fun="kl_loss",
              epsilon=epsilon, max_iter=num_iter)


def _images(x, coupling, *, rows: int, cols: int):
    proj = np.asarray(x, np.float64) @ (coupling[0] * rows * cols)
    full = np.zeros((x.shape[0], rows * cols))
    full[:, :proj.shape[1]] = proj
    return full.reshape(x.shape[0], cols, rows).transpose(0, 2, 1).astype(np.float32)  # column-major grid


def _fit_node(xfit, *, rows, cols, epsilon, num_iter):
    return genomap_coupling(xfit, rows, cols, epsilon=epsilon, num_iter=num_iter)[None]


def genomap(ds: xr.Dataset, *, rows: int, cols: int, genes, fit_cells=None, epsilon: float = 0.0,
            num_iter: int = 1000, var: str = "features", merge: bool = True) -> xr.Dataset:
    """Return lazy genomaps of every cell of ``ds`` (see the module doc).

    ``ds`` holds ``var`` (sample, feature): ``features`` as ``read_h5ad`` names the matrix it
    reads (``X`` or the layer it was given), or any other (sample, feature) variable. ``genes``: the column indices or names to place,
    at most ``rows * cols`` (e.g. ``top_variable_genes`` of the fit cells). ``fit_cells``: sample
    indices the coupling is fitted on (default all), in one graph node; images are mapped over the
    sample chunks. Output ``feature`` is the selected genes, in the order given.

    Parameters
    ----------
    ds : Dataset
        Holds ``var`` (sample, feature).
    rows, cols : int
        The image size.
    genes : sequence of int or str
        The genes to place (at most ``rows * cols``).
    fit_cells : sequence of int, optional
        The samples the coupling is fitted on.
    epsilon : float
        ``epsilon`` of genomap's ``gromov_wasserstein_adjusted_norm``.
    num_iter : int
        Its ``max_iter``.
    var : str
        The (sample, feature) variable.
    merge : bool
        Return the input's variables too.

    Returns
    -------
    Dataset
        ``genomap_image`` (sample, genomap_row, genomap_col), ``genomap_gene_row`` /
        ``genomap_gene_col`` (feature,) and ``genomap_coupling`` (feature, grid). Lazy.

    Examples
    --------
    >>> import interpretome as it
    >>> from interpretome.datasets import data_path
    >>> cells = it.read_h5ad(data_path("pbmc68k_reduced.h5ad")).isel(sample=slice(0, 32))
    >>> genes = it.top_variable_genes(cells["features"].values, 9)
    >>> maps = it.genomap(cells, rows=3, cols=3, genes=genes, num_iter=20)
    >>> maps["genomap_image"].dims, maps["genomap_image"].shape
    (('sample', 'genomap_row', 'genomap_col'), (32, 3, 3))
    >>> maps["feature"].size
    9
    """
    _package()
    x = sample_feature_data(ds, var, "genomaps need (sample, feature)")
    n, f = x.shape
    names = [str(v) for v in ds[FEATURE].values] if FEATURE in ds.coords else [str(i) for i in range(f)]
    sel = []
    for g in genes:
        if isinstance(g, (int, np.integer)):
            sel.append(int(g))
        elif str(g) in names:
            sel.append(names.index(str(g)))
        else:
            raise ValueError(f"gene {g!r} is not among the input's features")
    sel = np.asarray(sel, np.int64)
    k = len(sel)
    if not 1 <= k <= rows * cols:
        raise ValueError(f"{k} genes for a {rows} x {cols} genomap: pass 1..{rows * cols} genes")
    fit = np.arange(n) if fit_cells is None else np.sort(np.asarray(fit_cells, np.int64))
    xs = x[:, sel].rechunk((x.chunks[0], k))
    xfit = xs[fit].rechunk((len(fit), k))
    coupling = da.blockwise(_fit_node, "zij", xfit, "ci", new_axes={"z": 1, "j": k}, concatenate=True,
                            dtype=np.float64, meta=np.empty((0, 0, 0)), rows=int(rows), cols=int(cols),
                            epsilon=float(epsilon), num_iter=int(num_iter))
    images = da.blockwise(_images, "srq", xs, "si", coupling, "zij", new_axes={"r": rows, "q": cols},
                          concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
                          rows=int(rows), cols=int(cols))
    cell = da.argmax(coupling[0], axis=1)
    new = xr.Dataset({"genomap_image": ((SAMPLE, GENOMAP_ROW, GENOMAP_COL), images),
                      "genomap_gene_row": ((FEATURE,), (cell % rows).astype(np.int64)),
                      "genomap_gene_col": ((FEATURE,), (cell // rows).astype(np.int64)),
                      "genomap_coupling": ((FEATURE, GRID), coupling[0].astype(np.float32))},
                     coords={FEATURE: np.asarray(names)[sel], "feature_idx": (FEATURE, sel)})
    if SAMPLE in ds.coords:
        new = new.assign_coords({SAMPLE: ds[SAMPLE].values})
    new.attrs.update(genomap_rows=int(rows), genomap_cols=int(cols))
    validate(new)
    if merge:
        return merge_result(ds.drop_vars([c for c in (FEATURE, "feature_idx") if c in ds.coords]).drop_dims(FEATURE),
                            new, True)
    return new


def write_genomap_files(result: xr.Dataset, out: str | Path, name: str, *, cells=None, png: int = 4) -> list[Path]:
    """Write scMEDAL's genomap files for ``result`` (from ``genomap``); return their paths.

    ``gene_coordinates_<name>.csv`` (gene, row, col), ``genomap_<name>.npy`` ``(cells, rows, cols,
    1)`` float32 of the cell set ``cells`` (sample indices; default all), and PNGs
    ``genomap_<name>_<sample>.png`` of its first ``png`` cells.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    coords = pd.DataFrame({"gene": result[FEATURE].values, "row": np.asarray(result["genomap_gene_row"].values),
                           "col": np.asarray(result["genomap_gene_col"].values)})
    paths = [out / f"gene_coordinates_{name}.csv"]
    coords.to_csv(paths[0], index=False)
    idx = np.arange(result.sizes[SAMPLE]) if cells is None else np.asarray(cells, np.int64)
    imgs = np.asarray(result["genomap_image"].isel({SAMPLE: idx}).values, np.float32)
    paths.append(out / f"genomap_{name}.npy")
    np.save(paths[-1], imgs[..., None])
    samples = result[SAMPLE].values[idx] if SAMPLE in result.coords else idx
    for j in range(min(int(png), len(idx))):
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(imgs[j], cmap="viridis")
        ax.set_title(f"{samples[j]}", fontsize=8)
        ax.axis("off")
        paths.append(out / f"genomap_{name}_{samples[j]}.png")
        fig.savefig(paths[-1], dpi=80, bbox_inches="tight")
        plt.close(fig)
    return paths

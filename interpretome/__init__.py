"""interpretome: cluster-scale interpretation of biological ML models on Dask, xarray and zarr.

The Python API is the command line's twin: each subcommand's analysis is a function here that
takes and returns lazy ``xarray.Dataset`` objects (nothing is computed until ``.compute()`` or
``write_dataset``), and each input the command line reads has its reader:

========================  ===================================================================
command                   Python
========================  ===================================================================
``sweep``, ``ism``        ``read_fasta`` -> ``perturbation_sweep``, ``saturation_mutagenesis``
``tiles``                 ``read_genome`` -> ``predict_tiles`` (``track_pyramid``)
``genome-sweep/-ism``     ``read_genome`` -> ``genome_sweep``, ``genome_ism`` (``genome_view``)
``attribute``             ``read_h5ad`` / ``read_images`` / ``read_fasta`` -> ``attribute``,
                          ``fastshap``, then ``summarize_attributions``
``embed``, ``scores``     ``read_embedding_input`` / ``from_embedding_layer`` -> ``embed``,
                          ``clustering_scores``
``coefficients``, ``ccc`` ``read_coefficients`` -> ``compare_coefficients``; ``all_pairs_ccc``
(storage)                 ``write_dataset``, ``open_group``; ``connect`` for the cluster
========================  ===================================================================
"""

from .version import __version__  # noqa: E402

from .engine.cluster import connect as _connect  # noqa: E402
from .engine.models import KmerTokenizer, ModelSpec, load_spec  # noqa: E402
from .storage.readers import read_fasta, sequences_to_dataset  # noqa: E402
from .storage.store import open_group, write_dataset  # noqa: E402
from .storage.anndata_io import features_to_dataset, read_h5ad, read_images  # noqa: E402
from .storage.embedding_io import read_embedding_input  # noqa: E402
from .tasks.ism import saturation_mutagenesis  # noqa: E402
from .tasks.perturb import perturbation_sweep  # noqa: E402
from .tasks.attribute import attribute  # noqa: E402
from .tasks.fastshap import fastshap  # noqa: E402
from .tasks.summarize import summarize_attributions  # noqa: E402
from .tasks.embed import embed  # noqa: E402
from .tasks.embedding_layer import from_embedding_layer  # noqa: E402
from .tasks.scores import clustering_scores, summarize_folds  # noqa: E402
from .storage.coef_io import combine_coefficients, read_coefficients  # noqa: E402
from .tasks.ccc import all_pairs_ccc  # noqa: E402
from .tasks.coefficients import compare_coefficients, correlation_table  # noqa: E402
from .storage.genome import Region, read_genome  # noqa: E402
from .storage.annotation import read_annotation  # noqa: E402
from .tasks.tiles import predict_tiles, track_pyramid  # noqa: E402
from .tasks.genome_perturb import genome_ism, genome_sweep  # noqa: E402
from .tasks.genome_view import genome_view  # noqa: E402  (registers the ds.genome accessor)
from .tasks.genomap import genomap, top_variable_genes  # noqa: E402


def connect(workers=None, *, reuse: bool = True, **kwargs):
    """Return a Dask ``distributed.Client``: the running one when there is one, else a new cluster.

    Parameters
    ----------
    workers : int, optional
        Local worker processes of a new embedded ``LocalCluster`` (default: one per core).
    reuse : bool, default True
        Return the client already running in this process (``distributed.default_client()``,
        e.g. one a notebook made) when no cluster is chosen (``workers`` and ``kwargs`` unset).
    **kwargs
        ``scheduler``, ``scheduler_file``, ``gpus``, ``jobqueue``, ``threads_per_worker``,
        ``memory_limit``, ``log``: see ``interpretome.engine.cluster.connect``.

    Returns
    -------
    distributed.Client
        Connected client. Close it (or use it as a context manager) when done, unless it was
        reused: that one belongs to whoever started it.

    Examples
    --------
    >>> import distributed
    >>> import interpretome as it
    >>> with distributed.Client(processes=False, dashboard_address=None) as running:
    ...     it.connect() is running
    True
    """
    if reuse and workers is None and not kwargs:
        try:
            from distributed import default_client

            return default_client()
        except ValueError:  # no client running
            pass
    return _connect(workers, **kwargs)


__all__ = [
    "__version__", "connect", "ModelSpec", "KmerTokenizer", "load_spec", "read_fasta",
    "sequences_to_dataset", "write_dataset", "open_group", "perturbation_sweep", "saturation_mutagenesis",
    "read_h5ad", "read_images", "features_to_dataset", "read_embedding_input", "from_embedding_layer",
    "attribute", "fastshap", "summarize_attributions", "embed", "clustering_scores", "summarize_folds",
    "read_coefficients", "combine_coefficients", "compare_coefficients", "correlation_table", "all_pairs_ccc",
    "read_genome", "Region", "read_annotation", "predict_tiles", "track_pyramid", "genome_sweep", "genome_ism",
    "genome_view", "genomap", "top_variable_genes",
]

"""interpretome: cluster-scale interpretation of biological ML models on Dask, xarray and zarr."""

__version__ = "0.1.0"

from .engine.cluster import connect  # noqa: E402
from .engine.models import KmerTokenizer, ModelSpec, load_spec  # noqa: E402
from .storage.readers import read_fasta, sequences_to_dataset  # noqa: E402
from .storage.store import open_group, write_dataset  # noqa: E402
from .tasks.ism import saturation_mutagenesis  # noqa: E402
from .tasks.perturb import perturbation_sweep  # noqa: E402
from .storage.coef_io import combine_coefficients, read_coefficients  # noqa: E402
from .tasks.ccc import all_pairs_ccc  # noqa: E402
from .tasks.coefficients import compare_coefficients, correlation_table  # noqa: E402

__all__ = [
    "__version__", "connect", "ModelSpec", "KmerTokenizer", "load_spec", "read_fasta",
    "sequences_to_dataset", "write_dataset", "open_group", "perturbation_sweep", "saturation_mutagenesis",
    "read_coefficients", "combine_coefficients", "compare_coefficients", "correlation_table", "all_pairs_ccc",
]

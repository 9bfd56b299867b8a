"""interpretome: cluster-scale interpretation of biological ML models on Dask, xarray and zarr."""

from .version import __version__  # noqa: E402

from .engine.cluster import connect  # noqa: E402
from .engine.models import KmerTokenizer, ModelSpec, load_spec  # noqa: E402
from .storage.readers import read_fasta, sequences_to_dataset  # noqa: E402
from .storage.store import open_group, write_dataset  # noqa: E402
from .tasks.ism import saturation_mutagenesis  # noqa: E402
from .tasks.perturb import perturbation_sweep  # noqa: E402
from .storage.coef_io import combine_coefficients, read_coefficients  # noqa: E402
from .tasks.ccc import all_pairs_ccc  # noqa: E402
from .tasks.coefficients import compare_coefficients, correlation_table  # noqa: E402
from .storage.genome import Region, read_genome  # noqa: E402
from .storage.annotation import read_annotation  # noqa: E402
from .tasks.tiles import predict_tiles, track_pyramid  # noqa: E402
from .tasks.genome_perturb import genome_ism, genome_sweep  # noqa: E402

__all__ = [
    "__version__", "connect", "ModelSpec", "KmerTokenizer", "load_spec", "read_fasta",
    "sequences_to_dataset", "write_dataset", "open_group", "perturbation_sweep", "saturation_mutagenesis",
    "read_coefficients", "combine_coefficients", "compare_coefficients", "correlation_table", "all_pairs_ccc",
    "read_genome", "Region", "read_annotation", "predict_tiles", "track_pyramid", "genome_sweep", "genome_ism",
]

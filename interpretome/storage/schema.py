"""The variable registry, declared: every dimension name and every variable interpretome reads or
writes, with its dims, dtype kind and doc — all of them in this file.

``DIMENSIONS`` lists the dimension names (constants, never spelled twice in the package); the
``register`` calls at the bottom declare every variable once, so ``import interpretome`` (or any
single module) knows all of them: no module adds variables by being imported. Registering a
name twice, or a variable over an undeclared dimension, raises ``ValueError``.

Tasks validate their inputs (``require``: present, registered dims and dtype kind) and what they
build (``validate``) — metadata only (dims, dtype kind), never values, so validating never
computes a dask graph. A task that reads a variable takes its name as a parameter
(``sequence_var=``, ``var=`` ...) and checks it against the spec of the variable it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from .alphabet import BASES, CODE_N  # noqa: F401 (the base coordinate and N code; defined in alphabet)

ZERO_BASED = "0-based"
HALF_OPEN = "0-based, half-open interval [start, end)"
STRAND_CODES = "'+' forward strand, '-' reverse strand, '.' unstranded"
ATTRS = ("description", "long_name", "units", "convention")
"""The attrs every stored variable carries from its declaration (``annotate``): what it is, a short
human name, its units where meaningful (``bp`` for genome positions and lengths) and its coordinate
convention (0-based positions, half-open intervals, strand codes)."""


@dataclass(frozen=True)
class Dimension:
    """One declared dimension: its name, a short human name, what an index along it is, units, convention."""

    name: str
    long_name: str
    doc: str
    units: str | None = None
    convention: str | None = None


DIMENSION_SPECS: dict[str, Dimension] = {}
"""Every dimension name with its description (the attrs of its dimension coordinate when stored)."""


def dimension(name: str, long_name: str, doc: str, *, units: str | None = None,
              convention: str | None = None) -> str:
    """Declare a dimension and return its name (called in this module only); twice raises ``ValueError``."""
    if name in DIMENSION_SPECS:
        raise ValueError(f"dimension {name!r} is already declared in interpretome.storage.schema")
    DIMENSION_SPECS[name] = Dimension(name, long_name, doc, units, convention)
    return name


# Dimension names used across the package (constants, never spelled twice).
SEQUENCE = dimension("sequence", "sequence", "input sequence, named by its FASTA record")
POSITION = dimension("position", "position", "0-based position along the sequence (ISM: the edited base; sweeps: "
                     "the window start)", units="bp", convention=ZERO_BASED)
BASE = dimension("base", "base", "substituted or one-hot base: A, C, G, T (the one-hot channel order)")
WINDOW = dimension("window", "perturbation window", "perturbation window (its size k in bases, or an insert); "
                   "window_length gives the bases it covers")
REPLICATE = dimension("replicate", "replicate", "replicate draw of a random perturbation, 0-based", convention=ZERO_BASED)
TARGET = dimension("target", "model target", "model output (target) predicted or explained, by name")
CONTIG = dimension("contig", "region", "genome region (a contig's name for a whole contig, else the region label)")
BIN = dimension("bin", "track bin", "output bin of a tiled track (see the bin coordinate's description)",
                convention=ZERO_BASED)
SAMPLE = dimension("sample", "sample", "input sample (cell, image), named by the AnnData obs names or 0-based index")
FEATURE = dimension("feature", "feature", "input feature (gene, annotation entry, coefficient ...), by name")
GROUP = dimension("group", "sample group", "group of samples a summary is over ('all': every sample)")
ITEM = dimension("item", "item", "embedded item (cell, k-mer, patch ...), by name")
COMPONENT = dimension("component", "component", "embedding component")
FOLD = dimension("fold", "fold", "fold, split or model the scores were computed on")
METRIC = dimension("metric", "metric", "metric, by name")
MODEL = dimension("model", "model", "one stored linear model (coefficient set)")
CLASS = dimension("class", "class", "class (cell type, label), by name")
CHANNEL = dimension("channel", "image channel", "image channel, 0-based", convention=ZERO_BASED)
HEIGHT = dimension("height", "image row", "image row (pixel), 0-based from the top", convention=ZERO_BASED)
WIDTH = dimension("width", "image column", "image column (pixel), 0-based from the left", convention=ZERO_BASED)
BACKGROUND = dimension("background", "background sample", "background sample drawn for SHAP")
FEATURE_I = dimension("feature_i", "first feature", "first feature of a pair (rows of a pair matrix)")
FEATURE_J = dimension("feature_j", "second feature", "second feature of a pair (columns of a pair matrix)")
PAIR = dimension("pair", "feature pair", "feature pair (i, j), i < j, row by row (condensed order)")
COMPARISON = dimension("comparison", "model comparison",
                       "comparison of a multi-class model with its one-vs-rest binary models")
STRAND = dimension("strand", "strand", "strand the model ran on", convention=STRAND_CODES)
SITE = dimension("site", "genome site", "genome site (contig name, 0-based genome position) of a genome view",
                 convention=ZERO_BASED)
GENOMAP_ROW = dimension("genomap_row", "genomap row", "row of the genomap image grid, 0-based", convention=ZERO_BASED)
GENOMAP_COL = dimension("genomap_col", "genomap column", "column of the genomap image grid, 0-based",
                        convention=ZERO_BASED)
GRID = dimension("grid", "genomap grid point", "grid point of the genomap (column-major), 0-based",
                 convention=ZERO_BASED)
MAX_LEVEL = 48
"""Pyramid levels 1..MAX_LEVEL have their own bin dim and variables (``level_dim``, ``level_vars``)."""


def level_dim(level: int) -> str:
    """Return the bin dim of min/max pyramid level ``level`` (``bin_l3``; ``tasks.tiles.track_pyramid``)."""
    return f"bin_l{int(level)}"


def level_vars(level: int) -> tuple[str, str]:
    """Return the ``(min, max)`` variable names of pyramid level ``level`` (``track_min_l3``, ``track_max_l3``)."""
    return f"track_min_l{int(level)}", f"track_max_l{int(level)}"


for _lv in range(1, MAX_LEVEL + 1):
    dimension(level_dim(_lv), f"pyramid level {_lv} bin",
              f"bin of pyramid level {_lv}: factor**{_lv} consecutive track bins (see the coordinate's description)",
              convention=ZERO_BASED)

DIMENSIONS = frozenset(DIMENSION_SPECS)
"""Every dimension name a registered variable may have."""


@dataclass(frozen=True)
class Variable:
    """One registered variable: its name, dims, numpy dtype kind ('f', 'i', 'u', 'b', 'U', 'O').

    ``optional`` names dims of ``dims`` that the variable may lack (e.g. ``strand``, present only
    when both strands are kept); the others keep their order. ``long_name`` (default: the name in
    words), ``units`` and ``convention`` are stored with ``doc`` as the variable's attrs (``annotate``).
    """

    name: str
    dims: tuple[str, ...]
    kind: str
    doc: str
    optional: tuple[str, ...] = ()
    long_name: str = ""
    units: str | None = None
    convention: str | None = None

    def allowed_dims(self) -> tuple[tuple[str, ...], ...]:
        """Return the dims the variable may have: all of ``dims``, or those without ``optional``."""
        if not self.optional:
            return (self.dims,)
        return self.dims, tuple(d for d in self.dims if d not in self.optional)


REGISTRY: dict[str, Variable] = {}


def register(name: str, dims: tuple[str, ...], kind: str, doc: str, optional: tuple[str, ...] = (), *,
             long_name: str | None = None, units: str | None = None, convention: str | None = None) -> Variable:
    """Declare a variable and return it (called in this module only).

    ``optional``: dims of ``dims`` the variable may lack (see ``Variable``); ``long_name`` (default:
    the name with spaces), ``units``, ``convention``: stored as attrs. Raises ``ValueError`` when
    ``name`` is already registered (any definition: one declaration per variable) or a dimension is
    not in ``DIMENSIONS``.
    """
    var = Variable(name, tuple(dims), kind, doc, tuple(optional), long_name or name.replace("_", " "), units,
                   convention)
    old = REGISTRY.get(name)
    if old is not None:
        raise ValueError(
            f"variable {name!r} is already registered (dims {old.dims} kind {old.kind!r}): each variable is "
            f"declared once, in interpretome.storage.schema; pick another name for dims {var.dims} kind {var.kind!r}"
        )
    unknown = [d for d in var.dims if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"variable {name!r} has undeclared dimensions {unknown}: add them to "
                         f"interpretome.storage.schema.DIMENSIONS")
    REGISTRY[name] = var
    return var


def require(ds: xr.Dataset, var: str, spec: str, producer: str) -> xr.DataArray:
    """Return ``ds[var]`` after checking it fits the registered variable ``spec`` (dims, dtype kind).

    ``var`` is the name the caller passed (``sequence_var=`` ...), ``spec`` the registered variable
    it stands for (e.g. ``"sequence_code"``). Raises ``ValueError`` naming the variable, what the
    dataset has and ``producer`` (where such a variable comes from). Metadata only.
    """
    if var not in ds.variables:
        raise ValueError(f"the input dataset has no [{var!r}]: build it with {producer}")
    want = REGISTRY[spec]
    da_ = ds[var]
    what = repr(var) if var == spec else f"{var!r} (standing for {spec!r})"
    if tuple(da_.dims) not in want.allowed_dims():
        extra = f" (optional: {want.optional})" if want.optional else ""
        raise ValueError(f"variable {what} has dims {tuple(da_.dims)}; the registry says {want.dims}{extra}")
    if np.dtype(da_.dtype).kind not in want.kind:
        raise ValueError(f"variable {what} has dtype {da_.dtype} (kind {np.dtype(da_.dtype).kind!r}); "
                         f"the registry says kind {want.kind!r}")
    return da_


def validate(ds: xr.Dataset, names: list[str] | tuple[str, ...] | None = None) -> xr.Dataset:
    """Check that registered variables in ``ds`` have their registered dims and dtype kind.

    Only metadata is read (no compute). ``names`` restricts the check; by default every data
    variable of ``ds`` that is registered is checked. Returns ``ds`` unchanged.
    """
    for name in names if names is not None else list(ds.data_vars):
        if name not in ds.variables:
            raise ValueError(f"dataset has no variable {name!r}; it has {sorted(ds.variables)}")
        spec = REGISTRY.get(name)
        if spec is None:
            if names is not None:
                raise ValueError(f"variable {name!r} is not registered in interpretome.storage.schema")
            continue
        da = ds[name]
        if tuple(da.dims) not in spec.allowed_dims():
            extra = f" (optional: {spec.optional})" if spec.optional else ""
            raise ValueError(f"variable {name!r} has dims {tuple(da.dims)}; the registry says {spec.dims}{extra}")
        if np.dtype(da.dtype).kind not in spec.kind:
            raise ValueError(
                f"variable {name!r} has dtype {da.dtype} (kind {np.dtype(da.dtype).kind!r}); "
                f"the registry says kind {spec.kind!r}"
            )
    return ds


def describe(name: str) -> str:
    """Return a one-line description ``name (dims) kind: doc`` of a registered variable."""
    v = REGISTRY[name]
    dims = ", ".join(f"{d}?" if d in v.optional else d for d in v.dims)
    return f"{v.name} ({dims}) {v.kind}: {v.doc}"

# Inputs: DNA (storage.readers, storage.genome) -----------------------------------------------
register("sequence_code", (SEQUENCE, POSITION), "u",
         "DNA as uint8 codes A,C,G,T,N = 0..4; positions past sequence_length are padding (4)", long_name="DNA codes")
register("sequence_length", (SEQUENCE,), "i", "number of real bases in each sequence", units="bp")

# Inputs: features and images (storage.anndata_io) --------------------------------------------
register("features", (SAMPLE, FEATURE), "f", "model input features per sample (AnnData X or a layer), float32")
register("image", (SAMPLE, CHANNEL, HEIGHT, WIDTH), "f", "model input images (N, C, H, W), float32")

# Inputs: gene annotation (storage.annotation) ------------------------------------------------
register("gene_contig", (FEATURE,), "UO", "contig (FASTA record) of each annotated gene")
register("gene_start", (FEATURE,), "i", "first base of the gene, 0-based", units="bp", convention=HALF_OPEN)
register("gene_end", (FEATURE,), "i", "end of the gene, 0-based exclusive", units="bp", convention=HALF_OPEN)
register("gene_strand", (FEATURE,), "UO", "strand: '+', '-' or '.'", convention=STRAND_CODES)
register("gene_tss", (FEATURE,), "i", "gene start, strand-aware: start on '+', end - 1 on '-' (0-based)",
         long_name="transcription start site", units="bp", convention=ZERO_BASED)
register("gene_name", (FEATURE,), "UO", "gene symbol (or id when it has none)")

# Inputs: linear-model coefficients (storage.coef_io) -----------------------------------------
register("coefficient", (MODEL, CLASS, FEATURE), "f",
         "linear-model coefficient of a feature for a class (NaN where that model lacks the class or feature); "
         "model entries are named by model_name, feature_set and model_kind coordinates")

# Perturbation sweeps (tasks.perturb) ---------------------------------------------------------
register("sweep_reference", (SEQUENCE, TARGET), "f", "prediction for the unperturbed sequence")
register("sweep_delta_mean", (SEQUENCE, WINDOW, POSITION, TARGET), "f",
         "mean over replicates of (perturbed - reference) prediction, window starting at position; NaN where it does not fit")
register("sweep_delta_std", (SEQUENCE, WINDOW, POSITION, TARGET), "f",
         "standard deviation (ddof 0) over replicates of the perturbed - reference prediction")
register("sweep_prediction", (SEQUENCE, WINDOW, POSITION, REPLICATE, TARGET), "f",
         "raw prediction of each perturbed replicate")

# Saturation mutagenesis (tasks.ism) ----------------------------------------------------------
register("ism_delta", (SEQUENCE, POSITION, BASE, TARGET), "f",
         "prediction with base at position minus the reference prediction; 0 at the reference base")
register("ism_reference", (SEQUENCE, TARGET), "f", "prediction for the unmutated sequence")

# The strand each region ran on (strand='auto': tasks.tiles, tasks.genome_perturb) -------------
register("region_strand", (CONTIG,), "UO",
         "strand ('+' or '-') each region ran on under strand='auto': its BED strand, else that of the genes it "
         "overlaps (storage.annotation.region_strands)", convention=STRAND_CODES)

# Tiled tracks and pyramids (tasks.tiles) -----------------------------------------------------
register("track_prediction", (CONTIG, BIN, TARGET, STRAND), "f",
         "tiled model prediction along a contig or region; bins placed by the track geometry attrs; NaN = not "
         "predicted; strand only with strand='both'", optional=(STRAND,))
register("track_coverage", (CONTIG, BIN), "i", "number of windows averaged into each bin (0 = not predicted)")
for _lv in range(1, MAX_LEVEL + 1):  # factor >= 2: level 48 groups 2**48 bins, more than any genome has
    for _name, _what in zip(level_vars(_lv), ("minimum", "maximum")):
        register(_name, (CONTIG, level_dim(_lv), TARGET, STRAND), "f",
                 f"pyramid level {_lv}: NaN-ignoring {_what} of track_prediction over factor**{_lv} consecutive "
                 f"bins; genome positions of the bin centres in genome_position_l{_lv} (and {level_dim(_lv)} when "
                 f"shared by every row)", optional=(STRAND,))

# Sweeps and ISM along genomes (tasks.genome_perturb) -----------------------------------------
GENOME_REDUCTION_VALUES = {"at_edit": ("profile_at_edit",), "total": ("profile_total",),
                           "delta_score": ("delta_gain", "delta_loss")}
"""The stored values of each profile-model reduction of a genome perturbation (``tasks.genome_perturb``)."""
_VALUE_DOCS = {
    "profile_at_edit": "change of the profile at the output bin covering the edited base (NaN: no bin covers it)",
    "profile_total": "change of the profile summed over the model's whole output window",
    "delta_gain": "max over output bins within +/- delta_distance bases of the edit of (edited - reference) "
                  "(SpliceAI delta score, gain)",
    "delta_loss": "max over output bins within +/- delta_distance bases of the edit of (reference - edited) "
                  "(SpliceAI delta score, loss)",
}
_G_ISM = (CONTIG, POSITION, BASE, TARGET, STRAND)
_G_SWEEP = (CONTIG, WINDOW, POSITION, TARGET, STRAND)
_G_REF = (CONTIG, POSITION, TARGET, STRAND)
register("genome_sweep_delta_mean", _G_SWEEP, "f",
         "mean over replicates of (perturbed - reference) prediction of the genomic context window; span starts at position",
         optional=(STRAND,))
register("genome_sweep_delta_std", _G_SWEEP, "f",
         "standard deviation (ddof 0) over replicates of the perturbed - reference prediction", optional=(STRAND,))
register("genome_sweep_reference", _G_REF, "f",
         "prediction of the unperturbed genomic context window used at each position (profile models: the "
         "reference profile at the bin covering the position)", optional=(STRAND,))
register("genome_ism_delta", _G_ISM, "f",
         "prediction of the context window with base at position minus its reference prediction; 0 at the reference base",
         optional=(STRAND,))
register("genome_ism_reference", _G_REF, "f",
         "prediction of the unmutated genomic context window used at each position (profile models: the reference "
         "profile at the bin covering the position)", optional=(STRAND,))
for _values in GENOME_REDUCTION_VALUES.values():
    for _v in _values:
        register(f"genome_ism_{_v}", _G_ISM, "f", f"profile models, base at position substituted: {_VALUE_DOCS[_v]}; "
                 "0 at the reference base", optional=(STRAND,))
        register(f"genome_sweep_{_v}_mean", _G_SWEEP, "f",
                 f"profile models, mean over replicates: {_VALUE_DOCS[_v]}; span starts at position", optional=(STRAND,))
        register(f"genome_sweep_{_v}_std", _G_SWEEP, "f",
                 f"profile models, standard deviation (ddof 0) over replicates of: {_VALUE_DOCS[_v]}", optional=(STRAND,))

# Attributions (tasks.attribute) --------------------------------------------------------------
register("attribution", (SAMPLE, FEATURE, TARGET), "f", "attribution of each input feature to each target output")
register("image_attribution", (SAMPLE, CHANNEL, HEIGHT, WIDTH, TARGET), "f",
         "attribution of each image pixel and channel to each target output")
register("sequence_attribution", (SEQUENCE, POSITION, BASE, TARGET), "f",
         "attribution of each base (at its observed one-hot channel) to each target; NaN past the sequence length")
register("attribution_background_index", (BACKGROUND,), "i", "indices of the samples drawn as SHAP background")
for _p, _d in (("attribution", SAMPLE), ("sequence_attribution", SEQUENCE)):
    register(f"{_p}_delta", (_d, TARGET), "f", "sum of attributions minus (f(x) - f(reference)): completeness gap")
    register(f"{_p}_output", (_d, TARGET), "f", "f(x): the explained model output (after the activation)")
    register(f"{_p}_reference", (_d, TARGET), "f", "f(baseline) for IG, mean f over the background for SHAP")
    register(f"{_p}_target_index", (_d, TARGET), "i", "index of the model output explained")
    register(f"{_p}_predicted", (_d,), "U", "predicted class: name of the largest selected output")
del _p, _d

# Attribution summaries (tasks.summarize) -----------------------------------------------------
register("feature_attribution_mean", (GROUP, FEATURE, TARGET), "f", "mean attribution of a feature over the group's samples")
register("feature_attribution_std", (GROUP, FEATURE, TARGET), "f", "standard deviation (ddof 0) of the attribution over the group")
register("feature_attribution_n", (GROUP, FEATURE, TARGET), "i", "number of samples (cells) with a finite attribution in the group")
register("feature_attribution_ci95", (GROUP, FEATURE, TARGET), "f", "half-width of the 95% interval of the mean: 1.96 std / sqrt(n)")

# FastSHAP (tasks.fastshap) -------------------------------------------------------------------
register("fastshap_attribution", (SAMPLE, FEATURE, TARGET), "f", "FastSHAP Shapley-value estimate of each feature per target")
register("fastshap_fidelity", (), "f", "mean per-sample Pearson correlation of FastSHAP with reference Shapley values "
                                       "of the surrogate game on held-out samples")
register("fastshap_validation", (METRIC,), "f", "FastSHAP validation figures against the reference (see tasks.fastshap)")

# Genomaps (tasks.genomap) --------------------------------------------------------------------
register("genomap_image", (SAMPLE, GENOMAP_ROW, GENOMAP_COL), "f", "genomap image of each cell (genes placed by GW transport)")
register("genomap_gene_row", (FEATURE,), "i", "grid row of each gene in the genomap")
register("genomap_gene_col", (FEATURE,), "i", "grid column of each gene in the genomap")
register("genomap_coupling", (FEATURE, GRID), "f", "Gromov-Wasserstein coupling of genes to grid points (column-major grid)")

# CCC (tasks.ccc) -----------------------------------------------------------------------------
register("feature_value", (FEATURE, SAMPLE), "fiu",
         "a (feature, sample) matrix of numeric values (genes x cells, coefficients x models ...)")
register("ccc_matrix", (FEATURE_I, FEATURE_J), "f",
         "Clustermatch correlation coefficient of every feature pair (square, symmetric; 1 on the "
         "diagonal; NaN for constant features)")
register("ccc_matrix_pvalue", (FEATURE_I, FEATURE_J), "f",
         "permutation p-value of ccc_matrix ((#perm >= observed + 1) / (n_perms + 1)); NaN on the diagonal")
register("ccc_pair", (PAIR,), "f",
         "Clustermatch correlation coefficient in condensed form: pairs (i, j), i < j, row by row "
         "(the order of ccc-coef's and scipy's condensed arrays); feature_i/feature_j name them")
register("ccc_pair_pvalue", (PAIR,), "f", "permutation p-value of ccc_pair")

# Coefficient comparisons (tasks.coefficients) ------------------------------------------------
register("coefficient_correlation", (COMPARISON, CLASS, METRIC), "f",
         "per class, the correlation over features between the multi-class and the one-vs-rest binary model's "
         "coefficients: pearson, spearman, ccc")
register("coefficient_correlation_pvalue", (COMPARISON, CLASS, METRIC), "f",
         "p-value of coefficient_correlation: pearson and spearman two-sided (scipy), ccc by seeded permutations "
         "(NaN when n_perms is 0)")

# Embeddings (tasks.embed) --------------------------------------------------------------------
register("item_vector", (ITEM, FEATURE), "f", "the vector of each item that is embedded (k-mer, cell, patch ...)")
register("item_label", (ITEM,), "UOiub", "categorical label of each item (cell type, annotation ...)")
register("item_batch", (ITEM,), "UOiub", "batch (or donor, slide ...) of each item")
register("item_annotation", (ITEM, CLASS), "f", "annotation scores per item and class (e.g. area fractions)")
register("item_keep", (ITEM,), "b", "True for items kept by a filter (e.g. the background-annotation filter)")
register("item_argmax", (ITEM,), "UO", "name of the annotation class with the largest score of each item")
for _m in ("umap", "tsne", "pca"):  # tasks.embed.METHODS
    register(f"embedding_{_m}", (ITEM, COMPONENT), "f", f"{_m.upper()} coordinates of each item")
del _m
register("embedding_fitted", (ITEM,), "b", "True for the items the reducer was fitted on (seeded subsample); "
         "the others were placed with the fitted reducer's transform")

# Clustering scores (tasks.scores) ------------------------------------------------------------
register("score_value", (METRIC,), "f", "clustering score of the embedding per metric (asw_label, asw_batch, "
         "davies_bouldin_*, calinski_harabasz_*)")
register("score_silhouette_label", (ITEM,), "f", "silhouette of each item with the label as clusters (NaN if not sampled)")
register("score_silhouette_batch", (ITEM,), "f", "silhouette of each item with the batch as clusters (NaN if not sampled)")
register("score_silhouette_class", (CLASS,), "f", "mean silhouette (label as clusters) of the items of each label")
register("score_sampled", (ITEM,), "b", "True for the items the scores were computed on (seeded subsample)")
register("score_fold", (FOLD, METRIC), "f", "clustering score per fold (or split, or model) and metric")


# Coordinates (not dimensions) that results carry: their description, stored as attrs -----------
class Coordinate(Dimension):
    """A declared non-dimension coordinate: the same description fields as a ``Dimension`` (what it
    holds, units, convention); its dims vary with the result it is on."""


COORDINATES: dict[str, Coordinate] = {}
"""Non-dimension coordinates results carry (region bounds, genome positions, model metadata ...)."""


def coordinate(name: str, long_name: str, doc: str, *, units: str | None = None,
               convention: str | None = None) -> Coordinate:
    """Declare a coordinate (called in this module only); a name declared twice, or also a variable, raises."""
    if name in COORDINATES or name in REGISTRY or name in DIMENSION_SPECS:
        raise ValueError(f"{name!r} is already declared in interpretome.storage.schema")
    COORDINATES[name] = c = Coordinate(name, long_name, doc, units, convention)
    return c


coordinate("feature_idx", "feature column", "0-based column index of the feature in the input file",
           convention=ZERO_BASED)
coordinate("window_length", "window length", "bases covered by the perturbation window", units="bp")
coordinate("region_start", "region start", "0-based first base of the region on its contig", units="bp",
           convention=HALF_OPEN)
coordinate("region_end", "region end", "0-based end (exclusive) of the region on its contig", units="bp",
           convention=HALF_OPEN)
coordinate("region_pad_left", "left padding", "N bases added before the region where its context runs past the "
           "contig start", units="bp")
coordinate("region_pad_right", "right padding", "N bases added after the region where its context runs past the "
           "contig end", units="bp")
coordinate("contig_name", "contig", "contig (FASTA record) of each region")
coordinate("contig_index", "contig index", "0-based index of the region's contig in the FASTA file",
           convention=ZERO_BASED)
coordinate("genome_position", "genome position", "0-based genome position of each row's entries "
           "(region_start + offset; -1 past the row)", units="bp", convention=ZERO_BASED)
for _lv in range(1, MAX_LEVEL + 1):
    coordinate(f"genome_position_l{_lv}", f"level {_lv} genome position",
               f"0-based genome position of the centre of each pyramid level {_lv} bin in its row (-1 past the row)",
               units="bp", convention=ZERO_BASED)
del _lv
coordinate("model_name", "model name", "name of the linear model a coefficient set belongs to")
coordinate("feature_set", "feature set", "feature set the model was fitted on")
coordinate("model_kind", "model kind", "kind of model: multi-class or one-vs-rest binary")
coordinate("feature_present", "feature present", "True where the model has a coefficient for the feature")
coordinate("class_present", "class present", "True where the model has the class")
coordinate("comparison_model_name", "compared model", "model name of the comparison")
coordinate("comparison_feature_set", "compared feature set", "feature set of the comparison")
coordinate("comparison_class_present", "class compared", "True where both compared models have the class")
coordinate("label", "label", "label of each input sample (image)")


def spec_of(name: str, dims: tuple[str, ...] = ()) -> Variable | Dimension | Coordinate | None:
    """Return the declaration of a stored variable's name: registered variable, coordinate or dimension."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in COORDINATES:
        return COORDINATES[name]
    if name in DIMENSION_SPECS and tuple(dims) in ((name,), ()):
        return DIMENSION_SPECS[name]
    return None


def declared_attrs(name: str, dims: tuple[str, ...] = ()) -> dict[str, str]:
    """Return the attrs (``ATTRS``) the declaration of ``name`` gives it; {} for an undeclared name."""
    spec = spec_of(name, dims)
    if spec is None:
        return {}
    out = {"description": spec.doc, "long_name": spec.long_name or name.replace("_", " ")}
    if spec.units:
        out["units"] = spec.units
    if spec.convention:
        out["convention"] = spec.convention
    return out


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """Return ``ds`` with every variable's attrs carrying its declaration (``ATTRS``); metadata only.

    Attrs a task already set are kept (a task may state a more specific description, e.g. whether
    ``position`` holds genome positions or region offsets). A variable that is not declared — an
    input's own column carried along (AnnData obs columns ...) — is described as such, naming the dim
    it is carried along.
    """
    ds = ds.copy()
    for name, var in ds.variables.items():
        attrs = declared_attrs(str(name), tuple(map(str, var.dims)))
        if not attrs:
            along = ", ".join(map(str, var.dims)) or "no dimension"
            attrs = {"description": f"{name}: carried from the input (its own column, along {along})",
                     "long_name": str(name).replace("_", " ")}
        var.attrs = {**attrs, **{k: v for k, v in var.attrs.items() if not (k in ATTRS and v in ("", None))}}
    return ds

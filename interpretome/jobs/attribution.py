"""Attribution jobs: ``interpretome attribute`` (IG / SHAP / FastSHAP), per-group summaries, figures, exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..storage.store import group_info, open_group
from ..tasks.attribute import IG_METHODS, METHOD_NAMES, canonical_method
from ..tasks.fastshap import TRAINING, VALIDATION
from ..errors import InputError
from . import check_model_on, input_sample, store_result
from .declare import JobKind, Param


def read_input(path, kind: str, *, layer=None, sample_chunk: int = 256, labels=None):
    """Return the lazy input Dataset for a model of ``kind``: h5ad (dense), npy/zarr (image), FASTA (DNA)."""
    from ..storage.anndata_io import read_h5ad, read_images
    from ..storage.readers import read_fasta

    path = str(path)
    if kind == "dense":
        if not path.endswith(".h5ad"):
            raise ValueError(f"dense-feature models read AnnData .h5ad files; got {path!r}")
        return read_h5ad(path, layer=layer, sample_chunk=sample_chunk)
    if kind == "image":
        return read_images(path, sample_chunk=sample_chunk, labels=labels)
    return read_fasta(path, sequence_chunk=sample_chunk)


def fastshap_settings(method: str, train: int, epochs: int, validate: int | None = None,
                      min_fidelity: float | None = None, transform: str = "auto") -> dict | None:
    """Return FastSHAP's training and validation options for ``method`` (None for the other methods).

    ``validate``, ``min_fidelity``: held-out samples of the validation against the Shapley
    reference and the fidelity below which FastSHAP refuses (the task's defaults when None);
    ``transform``: ``auto``, ``none`` or ``log1p`` (``tasks.fastshap.resolve_transform``).
    """
    if method != "fastshap":
        return None
    opts = dict(n_train=train, epochs=epochs, transform=None if transform == "none" else transform)
    if validate is not None:
        opts["n_validate"] = validate
    if min_fidelity is not None:
        opts["min_fidelity"] = min_fidelity
    return opts


def run_attribute(input, model, store, *, group="attributions", method="integrated_gradients", target="predicted",
                  baseline="zero", n_steps=50, ig_method="gausslegendre", internal_batch_size=None, background=100,
                  seed=0, nsamples=200, local_smoothing=0.0, layer=None, layer_in_file=None, sample_chunk=256,
                  by=None, fastshap_train=TRAINING["n_train"], fastshap_epochs=TRAINING["epochs"],
                  fastshap_validate=VALIDATION["n_validate"], fastshap_min_fidelity=VALIDATION["min_fidelity"],
                  fastshap_transform="auto",
                  client=None, overwrite=False, log=print):
    """Read the input, attribute, write ``store/group`` (and ``store/<group>_summary`` when ``by`` or dense).

    ``baseline``: ``zero``, ``mean``, an array, or a ``.npy`` file of one sample's input (its
    digest is then part of the fingerprint, as the input file's is). ``layer_in_file``: the
    AnnData layer read instead of X (default: the model's registered layer, ``ModelSpec.layer``,
    else X). ``fastshap_train`` / ``fastshap_epochs``: FastSHAP's training samples and most epochs
    per network (early-stopped); ``fastshap_validate`` / ``fastshap_min_fidelity``: its held-out
    validation samples and the fidelity below which it refuses; ``fastshap_transform``: ``auto``,
    ``none`` or ``log1p``, what its networks see of the input (``method="fastshap"``).
    """
    from ..tasks.attribute import attribute
    from ..tasks.fastshap import fastshap
    from ..tasks.summarize import summarize_attributions

    obs_layer = layer_in_file if layer_in_file is not None else model.layer  # a scvi-tools model's registered layer
    method = method if method == "fastshap" else canonical_method(method)  # "ig" fingerprints as its canonical name
    fastshap_options = fastshap_settings(method, fastshap_train, fastshap_epochs, fastshap_validate,
                                         fastshap_min_fidelity, fastshap_transform)

    ds = read_input(input, model.input_kind, layer=obs_layer, sample_chunk=sample_chunk)
    if by is not None and by not in ds.variables:
        cols = [c for c in ds.coords if ds[c].dims == ("sample",) and c != "sample"]
        raise ValueError(f"label column {by!r} is not in {str(input)!r}; its obs columns are {cols}: "
                         f"pass one of them as --by")
    inputs = [input]
    if isinstance(baseline, (str, Path)) and str(baseline) not in ("zero", "mean"):
        inputs.append(baseline)
        baseline = np.load(baseline, allow_pickle=False)
    digest = check_model_on(model, lambda: input_sample(ds, model.input_kind))
    if method == "fastshap":
        opts = dict(fastshap_options or {})
        params = dict(method="fastshap", target=target, seed=seed, **opts)
        res = fastshap(ds, model, target=target, seed=seed, merge=False, **opts)
        task = "fastshap"
    else:
        params = dict(method=method, target=target, baseline=baseline if isinstance(baseline, str) else "custom",
                      n_steps=n_steps, ig_method=ig_method, background=background, seed=seed, nsamples=nsamples,
                      local_smoothing=local_smoothing, layer=layer)
        res = attribute(ds, model, method=method, target=target, baseline=baseline, n_steps=n_steps,
                        ig_method=ig_method, internal_batch_size=internal_batch_size, background=background,
                        seed=seed, nsamples=nsamples, local_smoothing=local_smoothing, layer=layer, merge=False)
        task = "attribute"
        if "sequence_length" in ds:
            res["sequence_length"] = ds["sequence_length"]
        if "image" in ds:
            res["image"] = ds["image"]
    params["layer_in_file"] = obs_layer
    reports = [store_result(res, store, group, task=task, params=params, model=model, model_digest=digest,
                            inputs=inputs, client=client, overwrite=overwrite, log=log)]
    if model.input_kind == "dense" and task == "attribute":
        stored = open_group(store, group)
        if by is not None:  # the labels from the input file (numpy), the attributions from the store
            stored = stored.assign_coords({by: ds[by].variable})
        summ = summarize_attributions(stored, by=by)
        reports.append(store_result(summ, store, f"{group}_summary", task="summarize_attributions",
                                    params={"by": by, "source_group": group, **params}, model=model,
                                    model_digest=digest, inputs=inputs, client=client, overwrite=overwrite,
                                    log=log))
    return reports


def render_attributions(store, group, out_dir, *, n=None, sequences=None, start=None, end=None, **_):
    """Draw figures of a stored ``attribute`` group: logos (DNA), overlays (images), top features (dense)."""
    from ..tasks.summarize import summarize_attributions
    from ..viz.attributions import plot_image_overlay, plot_sequence_logo, plot_top_features, save

    ds = open_group(store, group)
    out_dir = Path(out_dir)
    figs = []
    if "sequence_attribution" in ds:
        picks = sequences or [str(s) for s in ds["sequence"].values[:2]]
        for s in picks:
            figs.append(save(plot_sequence_logo(ds, s, start=start, end=end if end is not None else
                                                min(120, ds.sizes["position"])), out_dir / f"{group}_{s}_logo.png"))
    elif "image_attribution" in ds:
        k = min(n or 4, ds.sizes["sample"])
        for i in range(k):
            att = ds["image_attribution"].isel(sample=i, target=0).values
            prob = float(ds["attribution_output"].isel(sample=i, target=0).values)
            label = str(ds["attribution_predicted"].values[i])
            figs.append(save(plot_image_overlay(ds["image"].isel(sample=i).values, att, probability=prob, label=label),
                             out_dir / f"{group}_image{i}.png"))
    else:
        var = "attribution" if "attribution" in ds else "fastshap_attribution"
        if var in ds:
            summ = summarize_attributions(ds, var=var).compute()
            figs.append(save(plot_top_features(summ, n=n or 15, target=str(summ["target"].values[0])),
                             out_dir / f"{group}_top.png"))
    return figs


def render_summary(store, group, out_dir, *, n=None, **_):
    """Draw the per-class grid, the stacked bars and the overall top features of a stored summary."""
    from ..viz.attributions import plot_class_grid, plot_stacked, plot_top_features, save

    s = open_group(store, group).compute()
    out_dir = Path(out_dir)
    figs = [save(plot_top_features(s, n=n or 15, target=str(s["target"].values[0])), out_dir / f"{group}_top.png")]
    if s.sizes["group"] > 1:
        figs.append(save(plot_class_grid(s, n=n or 5), out_dir / f"{group}_classes.png"))
        figs.append(save(plot_stacked(s, n=n or 5), out_dir / f"{group}_stacked.png"))
    return figs


def parse_target(text: str):
    """Return the ``--target`` value: 'predicted', 'all', a class name / index, or a list of them."""
    if text in ("predicted", "all"):
        return text
    items = [t.strip() for t in text.split(",")]
    items = [int(t) if t.isdigit() else t for t in items]
    return items[0] if len(items) == 1 else items


def _export(params, *, store, group, log=print) -> None:
    """``export``: write the stored summary table (scvi-tools columns); ``write_h5ad``: the summaries as
    AnnData (``storage.h5ad_export``); both after the run."""
    if params.get("export"):
        from ..storage.attribution_export import export_attributions

        log(f"wrote {export_attributions(open_group(store, f'{group}_summary'), params['export'])}")
    if params.get("write_h5ad"):
        from ..storage.h5ad_export import attribution_to_h5ad

        if params.get("method") == "fastshap" or group_info(store, f"{group}_summary") is None:
            raise InputError("--write-h5ad writes per-gene summaries of dense-input IG / SHAP attributions")
        path = attribution_to_h5ad(open_group(store, f"{group}_summary"), params["write_h5ad"],
                                   attributions=open_group(store, group))
        log(f"wrote {path}")


ATTRIBUTE = JobKind(
    "attribute", run_attribute, group="attributions", input_kind="dense", finish=_export,
    doc="Integrated Gradients / SHAP / FastSHAP attributions over many samples (+ per-group summary)",
    lazy=lambda p: p.get("method") != "fastshap", params=(
        Param("input", "str", required=True, file=True, cli="input",
              doc="AnnData .h5ad (dense model), .npy/zarr (N, C, H, W) images, or FASTA (DNA); the model's "
                  "input kind says which"),
        Param("method", "str", "integrated_gradients", choices=(*METHOD_NAMES, "fastshap"),
              doc="attribution method (aliases such as 'ig' are stored under their canonical name)"),
        Param("target", "str|int|list[str]|list[int]", "predicted", parse=parse_target,
              doc="'predicted', 'all', a class name/index or a (comma) list"),
        Param("baseline", "str", "zero", cli="--baselines", aliases=("--baseline",), doc="IG baseline: zero, mean, or a .npy file of one sample's input"),
        Param("n_steps", "int", 50, doc="IG integration steps"),
        Param("ig_method", "str", "gausslegendre", choices=tuple(IG_METHODS), doc="IG integration rule (captum's method)"),
        Param("internal_batch_size", "int", None, doc="(sample, step) rows per model call"),
        Param("background", "int", 100, doc="SHAP background samples (drawn with seed)"),
        Param("seed", "int", 0, doc="seed of the background draw and of FastSHAP"),
        Param("nsamples", "int", 200, doc="GradientExplainer samples per explanation"),
        Param("local_smoothing", "float", 0.0, doc="GradientExplainer input noise"),
        Param("layer", "str", None, doc="k-mer models: attribute path of the embedding layer"),
        Param("layer_in_file", "str", None,
              doc="AnnData layer to read instead of X (default: the model's registered layer, else X)"),
        Param("by", "str", None, doc="obs column to summarise by (e.g. bulk_labels)"),
        Param("sample_chunk", "int", 256, doc="samples per task"),
        Param("fastshap_train", "int", TRAINING["n_train"], doc="FastSHAP training samples"),
        Param("fastshap_epochs", "int", TRAINING["epochs"], doc="most FastSHAP epochs per network (early-stopped)"),
        Param("fastshap_validate", "int", VALIDATION["n_validate"],
              doc="held-out samples FastSHAP is validated on against its Shapley reference"),
        Param("fastshap_min_fidelity", "float", VALIDATION["min_fidelity"],
              doc="refuse FastSHAP below this mean per-sample correlation with the reference"),
        Param("fastshap_transform", "str", "auto", choices=("auto", "none", "log1p"),
              doc="what FastSHAP's surrogate and explainer see: log1p of counts, the input as it is (none), or "
                  "auto (log1p for a --scvi-model, whose input is counts; none otherwise)"),
        Param("export", "str", None, output=True, to="finish", doc="write the summary table (.tsv/.csv/.parquet)"),
        Param("write_h5ad", "str", None, output=True, to="finish",
              doc="also write the per-group summaries as AnnData OUT.h5ad (.varm per group, .uns table)"),
    ))

KINDS = (ATTRIBUTE,)
RENDERERS = {"attribute": render_attributions, "fastshap": render_attributions,
             "summarize_attributions": render_summary}


def step_attribution(ctx) -> list[Path]:
    """Demo: train a cell-type classifier on the shipped PBMC data, explain it with IG, summarise per type.

    Logs which known markers rank in the top 10 positive genes of their own cell type; also draws
    an IG logo of a demo promoter (both boxes planted). The classifier's spec is written beside
    its weights (``cell_classifier.json``), for ``interpretome attribute --model``.
    """
    from ..datasets import demo_model_spec, promoter_sequences
    from ..pbmc import MARKERS, pbmc_path, train_cell_classifier
    from ..storage.attribution_export import export_attributions
    from ..storage.readers import write_fasta
    from ..storage.summary_tables import class_tables

    spec, rep = train_cell_classifier(ctx.out / "cell_classifier.pt")
    import json

    fields = {**spec.to_dict(), "weights": "cell_classifier.pt", "weights_sha256": None}  # beside its spec
    (ctx.out / "cell_classifier.json").write_text(json.dumps({k: v for k, v in fields.items() if v is not None},
                                                             indent=1))
    ctx.log(f"[attribution] cell-type classifier: training accuracy {rep['train_accuracy']:.3f} on "
            f"{sum(rep['counts'].values())} cells, {len(rep['classes'])} types")
    run_attribute(pbmc_path(), spec, ctx.store, group="attributions", target="all", n_steps=50, sample_chunk=175,
                  by="bulk_labels", client=ctx.client, overwrite=ctx.overwrite, log=ctx.log)
    figs = render_summary(ctx.store, "attributions_summary", ctx.out / "figures", n=5)
    summary = open_group(ctx.store, "attributions_summary").compute()
    export_attributions(summary, ctx.out / "attributions_summary.tsv")
    tables = class_tables(summary, n=10)
    found = total = 0
    for cls, markers in MARKERS.items():
        top = list(tables[cls]["positive"]["feature"])
        hits = [f"{m}#{top.index(m) + 1}" for m in markers if m in top]
        found += bool(hits)
        total += 1
        ctx.log(f"[attribution] {cls}: markers in top 10 -> {', '.join(hits) or 'none'} (top 3: {', '.join(top[:3])})")
    ctx.log(f"[attribution] {found} of {total} cell types have a known marker among their top-10 IG genes")
    fasta = write_fasta(ctx.out / "promoters_ig.fa", dict(list(promoter_sequences(4).items())[:2]))
    run_attribute(fasta, demo_model_spec(), ctx.store, group="promoter_ig", target="all", n_steps=32,
                  sample_chunk=2, client=ctx.client, overwrite=ctx.overwrite, log=ctx.log)
    figs += render_attributions(ctx.store, "promoter_ig", ctx.out / "figures", sequences=["promoter_00"],
                                start=100, end=160)
    return figs

"""Attribution jobs: ``interpretome attribute`` (IG / SHAP / FastSHAP), per-group summaries, figures, exports."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..engine.cluster import add_cluster_arguments, connect_from_args
from ..storage.store import open_group
from . import RENDERERS, add_model_arguments, model_from_args, store_result


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


def run_attribute(input_path, model, store, *, group="attributions", method="integrated_gradients", target="predicted",
                  baseline="zero", n_steps=50, ig_method="gausslegendre", internal_batch_size=None, background=100,
                  seed=0, nsamples=200, local_smoothing=0.0, layer=None, obs_layer=None, sample_chunk=256,
                  by=None, fastshap_options=None, client=None, overwrite=False, log=print):
    """Read the input, attribute, write ``store/group`` (and ``store/<group>_summary`` when ``by`` or dense)."""
    from ..tasks.attribute import attribute
    from ..tasks.fastshap import fastshap
    from ..tasks.summarize import summarize_attributions

    obs_layer = obs_layer if obs_layer is not None else model.layer
    ds = read_input(input_path, model.input_kind, layer=obs_layer, sample_chunk=sample_chunk)
    if by is not None and by not in ds.variables:
        cols = [c for c in ds.coords if ds[c].dims == ("sample",) and c != "sample"]
        raise ValueError(f"label column {by!r} is not in {str(input_path)!r}; its obs columns are {cols}: "
                         f"pass one of them as --by")
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
    reports = [store_result(res, store, group, task=task, params=params, model=model, inputs=[input_path],
                            client=client, overwrite=overwrite, log=log)]
    if model.input_kind == "dense" and task == "attribute":
        stored = open_group(store, group)
        if by is not None:  # the labels from the input file (numpy), the attributions from the store
            stored = stored.assign_coords({by: ds[by].variable})
        summ = summarize_attributions(stored, by=by)
        reports.append(store_result(summ, store, f"{group}_summary", task="summarize_attributions",
                                    params={"by": by, "source_group": group, **params}, model=model,
                                    inputs=[input_path], client=client, overwrite=overwrite, log=log))
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


RENDERERS["attribute"] = render_attributions
RENDERERS["fastshap"] = render_attributions
RENDERERS["summarize_attributions"] = render_summary


def _parse_target(text: str):
    if text in ("predicted", "all"):
        return text
    items = [t.strip() for t in text.split(",")]
    items = [int(t) if t.isdigit() else t for t in items]
    return items[0] if len(items) == 1 else items


def _attribute_cmd(args) -> int:
    from ..storage.attribution_export import export_attributions

    model = model_from_args(args)
    baseline = args.baseline
    if baseline not in ("zero", "mean"):
        baseline = np.load(baseline)
    fs = dict(n_train=args.fastshap_train, epochs=args.fastshap_epochs, n_validate=args.fastshap_validate,
              min_fidelity=args.fastshap_min_fidelity) if args.method == "fastshap" else None
    with connect_from_args(args) as client:
        run_attribute(args.input, model, args.store, group=args.group, method=args.method,
                      target=_parse_target(args.target), baseline=baseline, n_steps=args.n_steps,
                      ig_method=args.ig_method, internal_batch_size=args.internal_batch_size,
                      background=args.background, seed=args.seed, nsamples=args.nsamples,
                      local_smoothing=args.local_smoothing, layer=args.layer, obs_layer=args.layer_in_file,
                      sample_chunk=args.sample_chunk, by=args.by, fastshap_options=fs, client=client,
                      overwrite=args.overwrite)
    if args.export:
        s = open_group(args.store, f"{args.group}_summary")
        print(f"wrote {export_attributions(s, args.export)}")
    if args.write_h5ad:
        from ..storage.h5ad_export import attribution_to_h5ad

        if model.input_kind != "dense" or args.method == "fastshap":
            raise ValueError("--write-h5ad writes per-gene summaries of dense-input IG / SHAP attributions")
        path = attribution_to_h5ad(open_group(args.store, f"{args.group}_summary"), args.write_h5ad,
                                   attributions=open_group(args.store, args.group))
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    """Add the ``attribute`` subcommand."""
    p: argparse.ArgumentParser = sub.add_parser(
        "attribute", help="Integrated Gradients / SHAP / FastSHAP attributions of a model over many samples")
    p.add_argument("input", help="AnnData .h5ad (dense), .npy/zarr (N, C, H, W) images, or FASTA (DNA)")
    p.add_argument("-o", "--store", required=True, help="output zarr store (created or resumed)")
    p.add_argument("--group", default="attributions", help="group name in the store")
    p.add_argument("--method", default="integrated_gradients",
                   choices=["integrated_gradients", "ig", "gradient_shap", "deep_shap", "fastshap"])
    p.add_argument("--target", default="predicted", help="'predicted', 'all', a class name/index or a comma list")
    p.add_argument("--baseline", default="zero", help="IG baseline: zero, mean, or a .npy file of one sample's input")
    p.add_argument("--n-steps", type=int, default=50)
    p.add_argument("--ig-method", default="gausslegendre")
    p.add_argument("--internal-batch-size", type=int, default=None, help="(sample, step) rows per model call")
    p.add_argument("--background", type=int, default=100, help="SHAP background samples (drawn with --seed)")
    p.add_argument("--nsamples", type=int, default=200, help="GradientExplainer samples per explanation")
    p.add_argument("--local-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer", default=None, help="k-mer models: attribute path of the embedding layer")
    p.add_argument("--layer-in-file", default=None,
                   help="AnnData layer to read instead of X (default: the model's registered layer, else X)")
    p.add_argument("--by", default=None, help="obs column to summarise by (e.g. bulk_labels)")
    p.add_argument("--sample-chunk", type=int, default=256, help="samples per task")
    p.add_argument("--export", default=None, help="write the summary table (.tsv/.csv/.parquet)")
    p.add_argument("--write-h5ad", default=None, metavar="OUT.h5ad",
                   help="also write the per-group summaries as AnnData (.varm per group, .uns table)")
    p.add_argument("--fastshap-train", type=int, default=2000)
    p.add_argument("--fastshap-validate", type=int, default=32,
                   help="held-out samples FastSHAP is validated on against its Shapley reference")
    p.add_argument("--fastshap-min-fidelity", type=float, default=0.9,
                   help="refuse FastSHAP below this mean per-sample correlation with the reference")
    p.add_argument("--fastshap-epochs", type=int, default=200, help="most epochs per network (early-stopped)")
    p.add_argument("--overwrite", action="store_true")
    add_model_arguments(p, input_kind="dense")
    add_cluster_arguments(p)
    p.set_defaults(func=_attribute_cmd)


def step_attribution(ctx) -> list[Path]:
    """Demo: train a cell-type classifier on the shipped PBMC data, explain it with IG, summarise per type.

    Logs which known markers rank in the top 10 positive genes of their own cell type; also draws
    an IG logo of a demo promoter (both boxes planted).
    """
    from ..datasets import demo_model_spec, promoter_sequences
    from ..pbmc import MARKERS, pbmc_path, train_cell_classifier
    from ..storage.attribution_export import export_attributions
    from ..storage.readers import write_fasta
    from ..tasks.summarize import class_tables

    spec, rep = train_cell_classifier(ctx.out / "cell_classifier.pt")
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

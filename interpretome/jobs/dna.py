"""DNA jobs: ``interpretome sweep`` and ``interpretome ism`` over FASTA records, and their figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..storage.readers import read_fasta
from ..storage.store import open_group
from ..tasks.ism import saturation_mutagenesis
from ..tasks.perturb import MODES, perturbation_sweep
from ..viz.tracks import plot_ism, plot_sweep, save
from . import (RENDERERS, add_model_arguments, add_run_arguments, check_model_on, cli_command, input_sample,
               model_from_args, run_command, store_result)


def run_sweep(fasta, model, store, *, group="sweep", windows=None, stride=1, replicates=1, mode="random",
              seed=0, inserts=None, keep_replicates=False, sequence_chunk=16, position_chunk=None,
              client=None, overwrite=False, log=print):
    """Read ``fasta``, sweep ``model`` over it and write ``store/group``; return the WriteReport."""
    ds = read_fasta(fasta, sequence_chunk=sequence_chunk)
    params = dict(windows=windows, stride=stride, replicates=replicates, mode=mode, seed=seed,
                  inserts=inserts, keep_replicates=keep_replicates)
    res = perturbation_sweep(ds, model, position_chunk=position_chunk, merge=False, **params)
    res["sequence_length"] = ds["sequence_length"]
    digest = check_model_on(model, lambda: input_sample(ds, model.input_kind))
    return store_result(res, store, group, task="perturbation_sweep", params=params, model=model,
                        model_digest=digest, inputs=[fasta], client=client, overwrite=overwrite, log=log)


def run_ism(fasta, model, store, *, group="ism", start=None, end=None, sequence_chunk=16, position_chunk=None,
            client=None, overwrite=False, log=print):
    """Read ``fasta``, run saturation mutagenesis and write ``store/group``; return the WriteReport."""
    ds = read_fasta(fasta, sequence_chunk=sequence_chunk)
    params = dict(start=start, end=end)
    res = saturation_mutagenesis(ds, model, position_chunk=position_chunk, merge=False, **params)
    res["sequence_length"] = ds["sequence_length"]
    digest = check_model_on(model, lambda: input_sample(ds, model.input_kind))
    return store_result(res, store, group, task="saturation_mutagenesis", params=params, model=model,
                        model_digest=digest, inputs=[fasta], client=client, overwrite=overwrite, log=log)


def render_sweep(store, group, out_dir, *, sequences=None, markers=None, **_):
    """Draw one sweep figure per sequence (default: the first 4) and return the PNG paths."""
    ds = open_group(store, group)
    names = list(ds["sequence"].values)
    picks = sequences or names[:4]
    return [save(plot_sweep(ds, s, markers=markers), Path(out_dir) / f"{group}_{s}.png") for s in picks]


def render_ism(store, group, out_dir, *, sequences=None, markers=None, start=None, end=None, **_):
    """Draw one ISM heatmap per sequence (default: the first 4) and return the PNG paths."""
    ds = open_group(store, group)
    picks = sequences or list(ds["sequence"].values)[:4]
    return [save(plot_ism(ds, s, start=start, end=end), Path(out_dir) / f"{group}_{s}.png") for s in picks]


RENDERERS["perturbation_sweep"] = render_sweep
RENDERERS["saturation_mutagenesis"] = render_ism


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("fasta", help="FASTA file (plain or .gz), one or many records")
    p.add_argument("-o", "--store", required=True, help="output zarr store (created or resumed)")
    p.add_argument("--group", default=None, help="group name in the store")
    p.add_argument("--sequence-chunk", type=int, default=16, help="sequences per task")
    p.add_argument("--position-chunk", type=int, default=None, help="positions per task")
    p.add_argument("--overwrite", action="store_true", help="replace a group computed with other parameters")
    add_model_arguments(p)
    add_run_arguments(p)


@cli_command
def _sweep_cmd(args) -> int:
    model = model_from_args(args)
    windows = [int(k) for k in args.windows.split(",")] if args.windows else None
    inserts = args.inserts.split(",") if args.inserts else None

    def job(client=None, log=print):
        return run_sweep(args.fasta, model, args.store, group=args.group or "sweep", windows=windows,
                         stride=args.stride, replicates=args.replicates, mode=args.mode, seed=args.seed,
                         inserts=inserts, keep_replicates=args.keep_replicates, sequence_chunk=args.sequence_chunk,
                         position_chunk=args.position_chunk, client=client, overwrite=args.overwrite, log=log)

    run_command(args, job)
    return 0


@cli_command
def _ism_cmd(args) -> int:
    model = model_from_args(args)

    def job(client=None, log=print):
        return run_ism(args.fasta, model, args.store, group=args.group or "ism", start=args.start, end=args.end,
                       sequence_chunk=args.sequence_chunk, position_chunk=args.position_chunk, client=client,
                       overwrite=args.overwrite, log=log)

    run_command(args, job)
    return 0


def register(sub) -> None:
    """Add the ``sweep`` and ``ism`` subcommands."""
    p = sub.add_parser("sweep", help="perturbation sweep of a sliding k-mer window")
    _common(p)
    p.add_argument("--windows", default=None, help="comma-separated window sizes (default 1,3,...,15)")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--replicates", type=int, default=1)
    p.add_argument("--mode", default="random", choices=MODES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inserts", default=None, help="comma-separated k-mers for --mode insert")
    p.add_argument("--keep-replicates", action="store_true", help="also store each replicate's prediction")
    p.set_defaults(func=_sweep_cmd)
    p = sub.add_parser("ism", help="in-silico saturation mutagenesis")
    _common(p)
    p.add_argument("--start", type=int, default=None)
    p.add_argument("--end", type=int, default=None)
    p.set_defaults(func=_ism_cmd)

"""DNA jobs: ``interpretome sweep`` and ``interpretome ism`` over FASTA records, and their figures."""

from __future__ import annotations

from pathlib import Path

from ..storage.readers import read_fasta
from ..storage.store import open_group
from ..tasks.ism import saturation_mutagenesis
from ..tasks.perturb import MODES, perturbation_sweep
from ..viz.tracks import plot_ism, plot_sweep, save
from . import check_model_on, input_sample, store_result
from .declare import DNA_INPUT_KINDS, JobKind, Param, chunk_params


def _run_fasta_task(task_fn, task, kind, fasta, model, store, *, group, sequence_chunk, position_chunk, client,
                    overwrite, log, params):
    """Read ``fasta``, run ``task_fn`` (stored as ``task``) with the task ``params`` of ``kind``; write
    ``store/group``."""
    params = kind.task_params(params)
    ds = read_fasta(fasta, sequence_chunk=sequence_chunk)
    res = task_fn(ds, model, position_chunk=position_chunk, merge=False, **params)
    res["sequence_length"] = ds["sequence_length"]
    digest = check_model_on(model, lambda: input_sample(ds, model.input_kind))
    return store_result(res, store, group, task=task, params=params, model=model,
                        model_digest=digest, inputs=[fasta], client=client, overwrite=overwrite, log=log)


def run_sweep(fasta, model, store, *, group="sweep", sequence_chunk=16, position_chunk=None, client=None,
              overwrite=False, log=print, **params):
    """Read ``fasta``, sweep ``model`` over it and write ``store/group``; return the WriteReport.

    ``params``: the sweep's task parameters (``SWEEP``'s ``task`` Params: windows, stride, ...).
    """
    return _run_fasta_task(perturbation_sweep, "perturbation_sweep", SWEEP, fasta, model, store, group=group,
                           sequence_chunk=sequence_chunk, position_chunk=position_chunk, client=client,
                           overwrite=overwrite, log=log, params=params)


def run_ism(fasta, model, store, *, group="ism", sequence_chunk=16, position_chunk=None, client=None,
            overwrite=False, log=print, **params):
    """Read ``fasta``, run saturation mutagenesis and write ``store/group``; return the WriteReport.

    ``params``: ISM's task parameters (``start``, ``end``).
    """
    return _run_fasta_task(saturation_mutagenesis, "saturation_mutagenesis", ISM, fasta, model, store,
                           group=group, sequence_chunk=sequence_chunk, position_chunk=position_chunk, client=client,
                           overwrite=overwrite, log=log, params=params)


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


FASTA = Param("fasta", "str", required=True, file=True, cli="fasta",
              doc="FASTA file (plain or .gz), one or many records")

SWEEP_PARAMS = (
    Param("windows", "list[int]", None, task=True, doc="window sizes k (default 1,3,...,15)"),
    Param("stride", "int", 1, task=True, doc="positions between window starts"),
    Param("replicates", "int", 1, task=True, doc="random draws per window"),
    Param("mode", "str", "random", choices=tuple(MODES), task=True, doc="how a window is perturbed"),
    Param("seed", "int", 0, task=True, doc="seed of the counter-based draws"),
    Param("inserts", "list[str]", None, task=True, doc="k-mers to insert (--mode insert)"),
)
"""The perturbation parameters shared by ``sweep`` and ``genome_sweep``."""

SWEEP = JobKind(
    "sweep", run_sweep, input_kinds=DNA_INPUT_KINDS, group="sweep",
    doc="perturbation sweep of sliding k-mer windows over FASTA records",
    params=(
        FASTA,
        *SWEEP_PARAMS,
        Param("keep_replicates", "bool", False, task=True, doc="also store each replicate's prediction"),
        *chunk_params(),
    ))

ISM = JobKind(
    "ism", run_ism, input_kinds=DNA_INPUT_KINDS, group="ism", doc="in-silico saturation mutagenesis of FASTA records",
    params=(
        FASTA,
        Param("start", "int", None, task=True, doc="first position mutated (default 0)"),
        Param("end", "int", None, task=True, doc="end of the mutated region (default: sequence end)"),
        *chunk_params(),
    ))

KINDS = (SWEEP, ISM)
RENDERERS = {"perturbation_sweep": render_sweep, "saturation_mutagenesis": render_ism}

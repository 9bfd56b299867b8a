"""The job file's schema: its tables' keys (``Param``s, as the kinds declare theirs), the
validated ``Job`` and ``Step``, and the TOML value types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...engine.models import ModelSpec
from ..declare import JobKind, Param

@dataclass
class Step:
    """One validated step: its kind, group name, parameters (defaults filled, paths resolved), model."""

    kind: JobKind
    name: str
    params: dict
    model: ModelSpec | None
    index: int
    line: int
    after: list[str] = field(default_factory=list)

    def label(self) -> str:
        """Return ``name (kind)``."""
        return self.name if self.name == self.kind.name else f"{self.name} ({self.kind.name})"


@dataclass
class Job:
    """A validated job file: store, model, cluster table and steps in dependency order."""

    path: Path
    store: Path
    overwrite: bool
    model: ModelSpec | None
    cluster: dict
    steps: list[Step]
    description: str = ""


TOP_KEYS = {
    "store": Param("store", "str", required=True, doc="output zarr store"),
    "overwrite": Param("overwrite", "bool", False, doc="replace groups computed with other parameters"),
    "description": Param("description", "str", "", doc="free text, kept for the record"),
    "model": Param("model", "table|str", None, doc="the model spec (table of ModelSpec fields, or a string)"),
    "cluster": Param("cluster", "table", None, doc="where the job runs"),
    "step": Param("step", "list[table]", required=True, doc="the analyses, [[step]] tables"),
}

MODEL_KEYS = {
    "factory": Param("factory", "str", doc="'package.module:function' building the nn.Module"),
    "kwargs": Param("kwargs", "table", doc="keyword arguments of the factory"),
    "weights": Param("weights", "str", file=True, doc="state_dict file for the factory"),
    "torchscript": Param("torchscript", "str", file=True, doc="TorchScript file (instead of factory)"),
    "spec": Param("spec", "str", file=True, doc="a .json ModelSpec file (other keys override it)"),
    "input_kind": Param("input_kind", "str", choices=("onehot", "kmer", "dense", "image")),
    "kmer": Param("kmer", "table", doc="KmerTokenizer fields (k, stride ...)"),
    "targets": Param("targets", "list[str]"),
    "select": Param("select", "list[str]|list[int]"),
    "activation": Param("activation", "str", choices=("none", "sigmoid", "softmax")),
    "batch_size": Param("batch_size", "int"),
    "device": Param("device", "str", choices=("auto", "cpu", "cuda")),
    "trust_pickle": Param("trust_pickle", "bool"),
    "weights_sha256": Param("weights_sha256", "str"),
    "allow_nonfinite": Param("allow_nonfinite", "bool", doc="accept NaN/inf model outputs"),
}

CLUSTER_KEYS = {
    "workers": Param("workers", "int", doc="local worker processes"),
    "scheduler": Param("scheduler", "str", doc="address of a running scheduler"),
    "scheduler_file": Param("scheduler_file", "str", doc="scheduler file (dask scheduler --scheduler-file)"),
    "gpus": Param("gpus", "bool", False, doc="one dask-cuda worker per GPU"),
    "threads_per_worker": Param("threads_per_worker", "int", 1),
    "memory_limit": Param("memory_limit", "str", doc="per local worker, e.g. '4GB'"),
    "jobqueue": Param("jobqueue", "table", doc="a dask-jobqueue cluster: system, jobs, and the class's keywords"),
}

STEP_KEYS = {
    "kind": Param("kind", "str", required=True),
    "name": Param("name", "str", doc="store group (default: the kind's group)"),
    "after": Param("after", "list[str]", doc="steps that must run first"),
    "model": Param("model", "table|str", doc="this step's model (default: the job's)"),
}


_TOML_TYPES = (("bool", bool), ("int", int), ("float", float), ("str", str), ("table", dict), ("list", list))
"""TOML value types in the order they are told apart (a bool is an int to Python)."""


def toml_type(value: Any) -> str:
    """Return the job-file type name of a TOML value (``bool``, ``int``, ... ``list``)."""
    return next((name for name, cls in _TOML_TYPES if isinstance(value, cls)), type(value).__name__)


def type_ok(value: Any, tp: str) -> bool:
    """Return whether ``value`` has the declared type ``tp`` (``int``, ``list[str]``, ``str|int`` ...)."""
    for alt in (a.strip() for a in tp.split("|")):
        if alt == "any":
            return True
        if alt.startswith("list[") and alt.endswith("]"):
            if isinstance(value, list) and all(type_ok(v, alt[5:-1]) for v in value):
                return True
        elif alt == "float":
            if toml_type(value) in ("int", "float"):
                return True
        elif toml_type(value) == alt:
            return True
    return False

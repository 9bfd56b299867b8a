"""How a job kind is declared: its parameters, once, and what runs it.

A ``JobKind`` lists its ``Param``s (name, type, default, help text, CLI flag, file/path role,
choices). Everything else is generated from that declaration: the argparse subcommand
(``jobs.commands``), the job-file schema and its validation (``jobs.jobfile.validate``),
``interpretome run --kinds``, ``--dry-run`` and the plan-before-cluster check. Each family
module (``dna``, ``genome``, ``attribution``, ``embedding``, ``coefficients``) declares its
``KINDS`` and its ``RENDERERS`` next to the functions they name; ``jobs.registry`` collects them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    """One parameter of a job kind.

    ``type``: ``int``, ``float``, ``str``, ``bool``, ``table``, ``list[T]``, or alternatives joined
    by ``|``. ``file``: an input file (a path, or a list of paths for ``list[str]``) resolved
    against the job file's folder and checked to exist; a string instead of True is a separator:
    the path is what follows its last occurrence (``"="`` for ``KIND:MODEL:SET=PATH``).
    ``output``: a path written by the step, resolved against the job file's folder. ``step``:
    names another step's group (the step then runs after that one). ``choices``: allowed values
(of each item, for a list).

    Command line: ``cli`` is the flag (``""``: ``--name-with-dashes``; a name without a leading
    dash: a positional argument; None: job files only). A list is comma-separated on the command
    line (``--windows 1,3,5``) unless ``repeat`` (the flag is repeated: ``--region a --region b``);
    a table is JSON text; a bool defaulting to True is switched off by ``--no-<name>``. ``parse``
    turns the flag's text into the value when the type alone cannot (``--target``).
    ``in_file``: False for a command-line convenience that a job file spells otherwise.
    ``to``: ``"run"`` (the kind's function takes it), ``"finish"`` (only the kind's ``finish``
    hook reads it: figures, exports) or None (only the kind's ``from_cli`` hook reads it).
    ``task``: the kind's function forwards it, unnamed, to the task and to the fingerprint
    (``JobKind.task_params``), so adding such a parameter is one edit: its ``Param``.
    ``aliases``: older command-line spellings of the flag, still accepted but hidden from
    ``--help`` (``--obsm`` for ``--use-rep``). ``doc`` is the flag's ``--help`` text (the default
    is added to it); every parameter has one.
    """

    name: str
    type: str
    default: Any = None
    required: bool = False
    file: bool | str = False
    output: bool = False
    step: bool = False
    choices: tuple = ()
    doc: str = ""
    cli: str | None = ""
    repeat: bool = False
    parse: Callable[[str], Any] | None = None
    in_file: bool = True
    to: str | None = "run"
    task: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str | None:
        """Return the command-line spelling (``--x-y``, a positional name, or None)."""
        if self.cli is None:
            return None
        if self.cli == "":
            name = self.name.replace("_", "-")
            return f"--no-{name}" if self.type == "bool" and self.default is True else f"--{name}"
        return self.cli


def chunk_params(sequence_chunk: int = 16) -> tuple[Param, ...]:
    """The chunking parameters of the kinds that read FASTA records."""
    return (
        Param("sequence_chunk", "int", sequence_chunk, doc="sequences per task"),
        Param("position_chunk", "int", None, doc="positions per task (default: whole sequences)"),
    )


DNA_INPUT_KINDS = ("onehot", "kmer")
"""The model input kinds of the kinds that read DNA (sweeps, ISM, tiles)."""


@dataclass(frozen=True)
class JobKind:
    """A kind of step (and the subcommand of the same analysis): its function, parameters, dependencies.

    ``run``: the function (or ``"module:function"``), called with keywords only: the parameters
    whose ``to`` is ``"run"`` (defaults filled in), ``store``, ``group``, ``client``, ``overwrite``,
    ``log`` and, when ``model``, ``model`` (a ModelSpec, or None for ``model="optional"``). It reads
    the inputs, builds the graphs and writes with ``jobs.store_result``; it returns a
    ``WriteReport`` (or a list / dict of them). ``finish(params, store=, group=, log=)``
    runs after a real run only (never while planning): figures, exports. ``from_cli(params,
    model)`` turns command-line conveniences into parameters. ``command``: the subcommand name
    (default the kind's name with dashes). ``input_kind``: the model input the model flags
    default to. ``depends``: kinds whose steps in the same job must run first. ``lazy`` (a bool,
    or a function of the parameters): the function only builds graphs before writing, so its
    plan can be taken without computing. ``fixed_group``: the function names its own groups.
    ``input_kinds``: the model input kinds the kind can run (``--input-kind`` offers only these).
    """

    name: str
    run: Callable | str
    params: tuple[Param, ...]
    doc: str
    group: str
    model: bool | str = True
    input_kind: str = "onehot"
    command: str | None = None
    depends: tuple[str, ...] = ()
    lazy: bool | Callable[[dict], bool] = True
    fixed_group: bool = False
    finish: Callable | None = None
    from_cli: Callable[[dict, Any], None] | None = None
    input_kinds: tuple[str, ...] = ("onehot", "kmer", "dense", "image")

    @property
    def subcommand(self) -> str:
        """Return the command-line subcommand of this kind."""
        return self.command or self.name.replace("_", "-")

    @property
    def runner(self) -> str:
        """Return ``module:function`` of the kind's function."""
        fn = self.run
        return fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__name__}"

    def is_lazy(self, params: dict) -> bool:
        """Return whether a step with ``params`` can be planned without computing."""
        return bool(self.lazy(params) if callable(self.lazy) else self.lazy)

    def function(self) -> Callable:
        """Return the kind's function, looked up by name (so a test's patch of it is seen)."""
        mod, _, attr = self.runner.partition(":")
        return getattr(importlib.import_module(mod), attr)

    def param(self, name: str) -> Param | None:
        """Return the parameter called ``name`` (None if the kind has none)."""
        return next((p for p in self.params if p.name == name), None)

    def file_params(self) -> tuple[Param, ...]:
        """Return the parameters a job file's ``[[step]]`` of this kind may set."""
        return tuple(p for p in self.params if p.in_file)

    def defaults(self, given: dict | None = None, *, to: str = "run") -> dict:
        """Return the parameters going ``to`` the function (or the finish hook), defaults filled in.

        Raises ``TypeError`` naming a key of ``given`` the kind does not declare.
        """
        given = dict(given or {})
        unknown = [k for k in given if self.param(k) is None]
        if unknown:
            raise TypeError(f"{self.name} takes no parameter {unknown[0]!r}; it takes "
                            f"{', '.join(p.name for p in self.params)}")
        return {p.name: given.get(p.name, p.default) for p in self.params if p.to == to}

    def task_params(self, given: dict) -> dict:
        """Return the ``task`` parameters of ``given`` with their defaults filled in (declaration order).

        The kind's function calls it on its ``**params``, so a call from Python with some of them
        and one from the command line with all of them fingerprint the same. Raises ``TypeError``
        for a name that is not a task parameter of the kind.
        """
        unknown = [k for k in given if not getattr(self.param(k), "task", False)]
        if unknown:
            raise TypeError(f"{self.runner.partition(':')[2]}() got an unexpected keyword argument {unknown[0]!r}")
        return {p.name: given.get(p.name, p.default) for p in self.params if p.task}

    def invoke(self, params: dict, *, store, group: str, model=None, client=None, overwrite: bool = False,
               log: Callable[[str], None] = print):
        """Call the kind's function with ``params`` (declared names) and the job's context."""
        kwargs = self.defaults({k: v for k, v in params.items() if self.param(k) is not None})
        kwargs.update(store=str(store), group=group, client=client, overwrite=overwrite, log=log)
        if self.model:
            kwargs["model"] = model
        return self.function()(**kwargs)

    def finished(self, params: dict, *, store, group: str, log: Callable[[str], None] = print) -> None:
        """Run the ``finish`` hook (after a real run, never while planning) with every parameter."""
        if self.finish is not None:
            full = {p.name: params.get(p.name, p.default) for p in self.params}
            self.finish(full, store=str(store), group=group, log=log)


FIGURES = Param("figures", "str", None, output=True, to="finish", doc="also draw the figures into this folder")
"""The ``figures`` parameter of a kind whose ``finish`` is ``draw_figures``."""


def draw_figures(render: Callable, *options: str) -> Callable:
    """Return a ``finish`` hook: draw the stored group with ``render`` into ``figures`` (when set)
    and log each path; ``options`` name parameters passed on to ``render`` (``color``)."""
    def finish(params, *, store, group, log=print) -> None:
        if params.get("figures"):
            for p in render(store, group, params["figures"], **{o: params.get(o) for o in options}):
                log(str(p))

    return finish

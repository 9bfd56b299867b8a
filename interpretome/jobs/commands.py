"""The compute subcommands, generated from the job kinds' declarations (``jobs.declare``).

``add_kind_command(sub, kind)`` adds the subcommand of a ``JobKind``: its positional arguments
and flags (with their defaults and help in ``--help``), ``-o/--store``, ``--group``,
``--overwrite``, the model flags, ``--dry-run`` and the cluster flags. Running it turns the
flags into the kind's parameters (``params_from_args``), then plans before any cluster starts
and runs (``jobs.run_command``), then calls the kind's ``finish`` hook (figures, exports) and
prints one last line saying where the results are and how to open them (``jobs.results_line``).
"""

from __future__ import annotations

import argparse
import json

from . import add_model_arguments, add_run_arguments, announce, cli_command, model_from_args, \
    optional_model_from_args, results_line, run_command
from .declare import JobKind, Param

_SCALARS = {"int": int, "float": float}


def _help(param: Param) -> str:
    """Return the flag's help: the declared text (the parser's formatter adds the default)."""
    return (param.doc or param.type).replace("%", "%%")


def add_param_argument(parser: argparse.ArgumentParser, param: Param) -> None:
    """Add the command-line argument of ``param`` (see ``Param``: flag, list, table, bool)."""
    flag, tp = param.flag, param.type
    if flag is None:
        return
    kw: dict = {"help": _help(param)}
    listy = tp.startswith("list[")
    if not flag.startswith("-"):
        kw["nargs"] = ("+" if param.required else "*") if listy else (None if param.required else "?")
        if not param.required:
            kw["default"] = param.default
        parser.add_argument(param.name, **kw)
        return
    kw["dest"] = param.name
    if tp == "bool":
        kw["action"] = "store_false" if param.default is True else "store_true"
    else:
        kw["default"] = param.default
        kw["required"] = param.required
        if tp in _SCALARS and param.parse is None:
            kw["type"] = _SCALARS[tp]
        if param.choices and (not listy or param.repeat):  # a repeated flag: each value checked
            kw["choices"] = list(param.choices)
        if listy and param.repeat:
            kw["action"] = "append"
            kw["metavar"] = flag.lstrip("-").upper()
        elif listy:
            kw["metavar"] = "A,B,..."
        elif tp == "table":
            kw["metavar"] = "JSON"
        elif "choices" not in kw:
            kw["metavar"] = flag.lstrip("-").upper().replace("-", "_")
    if param.aliases and kw.get("required"):  # an alias may give it: checked in params_from_args
        kw["required"] = False
    parser.add_argument(flag, **kw)
    for alias in param.aliases:  # older spellings: accepted, hidden from --help
        hidden = {k: v for k, v in kw.items() if k not in ("required", "default", "metavar", "help")}
        parser.add_argument(alias, **hidden, help=argparse.SUPPRESS, default=argparse.SUPPRESS)


def _value(param: Param, raw):
    """Return the parameter's value from the argument's text (lists split at commas, tables JSON)."""
    if raw is None or not isinstance(raw, str) or (param.type.startswith("list[") and param.repeat):
        return raw
    if param.parse is not None:
        return param.parse(raw)
    if param.type.startswith("list["):
        items = [t.strip() for t in raw.split(",") if t.strip()]
        item = param.type[5:-1]
        try:
            return [_SCALARS[item](t) for t in items] if item in _SCALARS else items
        except ValueError as e:
            raise ValueError(f"{param.flag} takes comma-separated {item}s, e.g. {param.flag} 1,3,5; got {raw!r}") from e
    if param.type == "table":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{param.flag} is not valid JSON ({e}): e.g. {param.flag} '{{\"key\": 1}}'") from e
    return raw


def params_from_args(kind: JobKind, args: argparse.Namespace) -> dict:
    """Return the kind's parameters (declared names) from parsed command-line arguments."""
    out = {p.name: _value(p, getattr(args, p.name, p.default)) for p in kind.params if p.flag is not None}
    for p in kind.params:
        if p.required and p.aliases and out.get(p.name) is None:
            raise ValueError(f"{kind.subcommand} needs {p.flag}: {p.doc}")
    return out


def kind_command(kind: JobKind):
    """Return the subcommand function of ``kind``: parameters, model, plan first, run, finish."""
    @cli_command
    def command(args: argparse.Namespace) -> int:
        params = params_from_args(kind, args)
        model = model_from_args(args) if kind.model is True else optional_model_from_args(args) if kind.model else None
        if kind.from_cli is not None:
            kind.from_cli(params, model)
        group = getattr(args, "group", None) or kind.group

        def job(client=None, log=print):
            return kind.invoke(params, store=args.store, group=group, model=model, client=client,
                               overwrite=args.overwrite, log=log)

        groups = run_command(args, job)
        if groups is not None:
            kind.finished(params, store=args.store, group=group)
            announce(results_line(args.store, groups or [group]))
        return 0

    command.__name__ = command.__qualname__ = f"{kind.name}_command"
    return command


def add_kind_command(sub, kind: JobKind) -> argparse.ArgumentParser:
    """Add the subcommand of ``kind`` to the ``sub`` subparsers and return its parser."""
    p = sub.add_parser(kind.subcommand, help=kind.doc, description=kind.doc[:1].upper() + kind.doc[1:] + ".")
    for param in kind.params:
        if param.flag is not None and not param.flag.startswith("-"):
            add_param_argument(p, param)
    p.add_argument("-o", "--store", required=True, help="output zarr store (created or resumed)")
    if not kind.fixed_group:
        p.add_argument("--group", default=kind.group, help="group name in the store")
    p.add_argument("--overwrite", action="store_true", help="replace a group computed with other parameters")
    for param in kind.params:
        if param.flag is not None and param.flag.startswith("-"):
            add_param_argument(p, param)
    if kind.model:
        add_model_arguments(p, input_kind=kind.input_kind, optional=kind.model == "optional",
                            input_kinds=kind.input_kinds)
    add_run_arguments(p)
    p.set_defaults(func=kind_command(kind), _flags={x.name: x.flag for x in kind.params if x.flag})
    return p

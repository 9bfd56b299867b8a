"""The ``interpretome`` command line: a thin layer over the jobs.

The compute subcommands are generated from the declared job kinds (``jobs.registry``,
``jobs.commands``); the others (demo, info/verify/render, export-track, run, report) come from
the modules in ``COMMAND_MODULES``. Every subcommand also takes the output flags
``-q/--quiet``, ``-v/--verbose`` and ``--debug`` (``configure_output``), and its ``--help``
shows each option's description and default (``HelpFormatter``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import threading
import traceback
import warnings

from . import __version__

DESCRIPTION = """\
Explain biological machine-learning models at scale: perturbation sweeps and in-silico
mutagenesis of DNA, genome-wide tiled predictions, Integrated Gradients / SHAP attributions,
embeddings and clustering scores, coefficient comparisons. Each command runs on an embedded
local Dask cluster (or yours: --scheduler, --scheduler-file), writes a resumable zarr store
(-o/--store; open it with xarray.open_zarr) and draws figures (--figures DIR, or `render`).

Start with `interpretome demo` (every analysis on built-in data), `interpretome COMMAND --help`
for one command, and `interpretome run --kinds` for job files."""

VERBOSITY = ("quiet", "normal", "verbose", "debug")
"""Output levels: quiet (errors and the results line), normal, verbose (info logs, worker
tracebacks), debug (every traceback, dask's debug logs)."""

_DASK_LOG_LEVEL = {"quiet": "error", "verbose": "info", "debug": "debug"}

COMMAND_MODULES = (
    "interpretome.jobs.demo",
    "interpretome.jobs.stores",
    "interpretome.jobs.genome",
    "interpretome.jobs.jobfile",
    "interpretome.jobs.report",
)
"""Modules whose ``register(subparsers)`` adds the subcommands that are not job kinds."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` text: descriptions kept as written, each option's default after its help.

    Like ``argparse.ArgumentDefaultsHelpFormatter``, but without defaults that say nothing
    (None, False, True of a switch, empty lists) or that the help already states.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default in (None, argparse.SUPPRESS) or isinstance(default, bool) or default == [] or "%(default)" in text
                or "default" in text.lower() or not (action.option_strings or action.nargs in ("?", "*"))):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose subcommands' ``--help`` shows defaults (``HelpFormatter``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        """Parse as argparse does, with ``--marker -10=40`` read as ``--marker=-10=40``."""
        args = _join_dash_values(list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(args, namespace)


def add_output_arguments(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Add ``-q/--quiet``, ``-v/--verbose`` and ``--debug`` (on the top parser with defaults, on a
    subcommand without, so ``interpretome -v sweep ...`` and ``interpretome sweep ... -v`` both work)."""
    kw = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final results line", **kw)
    g.add_argument("-v", "--verbose", action="store_true",
                   help="also print info logs and the tracebacks of worker errors", **kw)
    g.add_argument("--debug", action="store_true",
                   help="print full tracebacks and dask's debug logs (errors are raised, not summarised)", **kw)


_COMMON_HELP = {"store": "a zarr store written by interpretome", "group": "group name in the store"}
"""Help of arguments every command spells alike, for a subcommand that leaves it out."""


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser."""
    parser = Parser(prog="interpretome", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"interpretome {__version__}")
    add_output_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .jobs.commands import add_kind_command
    from .jobs.registry import job_kinds

    for kind in job_kinds().values():
        add_kind_command(sub, kind)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        add_output_arguments(p)
        for a in p._actions:
            if not a.help and a.dest in _COMMON_HELP:
                a.help = _COMMON_HELP[a.dest]
        if not p.description and helps.get(name):  # the one-line help, as a sentence
            p.description = helps[name][:1].upper() + helps[name][1:].rstrip(".") + "."
    return parser


def verbosity(args: argparse.Namespace) -> str:
    """Return the output level of parsed arguments: one of ``VERBOSITY`` (debug > verbose > quiet)."""
    if getattr(args, "debug", False):
        return "debug"
    if getattr(args, "verbose", False):
        return "verbose"
    return "quiet" if getattr(args, "quiet", False) else "normal"


@contextlib.contextmanager
def configure_output(level: str):
    """Context in which logs, warnings and stdout follow the output ``level`` (see ``VERBOSITY``).

    Sets ``INTERPRETOME_VERBOSITY`` and dask's ``DASK_LOGGING__DISTRIBUTED`` for the worker
    processes started inside it, the ``distributed`` / ``interpretome`` logger levels here, calls
    ``interpretome.engine.cluster.set_verbosity`` (the level's index in ``VERBOSITY``), and under
    ``quiet`` sends stdout to /dev/null (``jobs.announce`` still prints the results line) and
    ignores warnings. Everything is restored on exit.
    """
    from .engine import cluster
    from .jobs import results_stream

    saved_env = {k: os.environ.get(k) for k in ("INTERPRETOME_VERBOSITY", "DASK_LOGGING__DISTRIBUTED")}
    loggers = {name: logging.getLogger(name) for name in ("distributed", "dask", "interpretome")}
    saved_levels = {name: lg.level for name, lg in loggers.items()}
    os.environ["INTERPRETOME_VERBOSITY"] = level
    if level in _DASK_LOG_LEVEL:
        os.environ["DASK_LOGGING__DISTRIBUTED"] = _DASK_LOG_LEVEL[level]
        for lg in loggers.values():
            lg.setLevel(_DASK_LOG_LEVEL[level].upper())
    if level in ("verbose", "debug") and not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    saved_verbosity = cluster.get_verbosity()
    cluster.set_verbosity(VERBOSITY.index(level))
    real_stdout = sys.stdout
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(results_stream(real_stdout))
            if level == "quiet":
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore")
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for name, lg in loggers.items():
            lg.setLevel(saved_levels[name])
        cluster.set_verbosity(saved_verbosity)


_VALUE_FLAGS_WITH_DASH = ("--marker",)
"""Flags whose value may start with a dash (``--marker -10=40``: a label of negative position)."""


def _join_dash_values(argv: list[str]) -> list[str]:
    """Return ``argv`` with ``--marker -10=40`` spelt ``--marker=-10=40`` (argparse would take the
    value for an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_FLAGS_WITH_DASH and i + 1 < len(argv) and re.match(r"^-[^-].*=", argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _os_message(e: OSError) -> str:
    """Return a one-line message for a failed file operation, naming the path and the fix."""
    where = f" {e.filename!r}" if e.filename else ""
    return (f"cannot write or read{where}: {e.strerror or e}; choose a location you can write "
            f"(-o/--store, --figures DIR) or fix its permissions")


def _on_interrupt(signum, frame):
    """SIGINT handler: silence the cluster's shutdown warnings, then raise KeyboardInterrupt."""
    from .engine.cluster import quiet_shutdown

    quiet_shutdown()
    raise KeyboardInterrupt


def _catch_interrupts():
    """Install ``_on_interrupt`` for SIGINT in the main thread; return the previous handler (or None)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # a background job that must not be interrupted
        return None
    signal.signal(signal.SIGINT, _on_interrupt)
    return previous


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    2 with a one-line message on bad input or a failed run; 130 with one line saying what is
    stored and how to resume after Ctrl-C (KeyboardInterrupt).
    """
    args = build_parser().parse_args(argv)
    level = verbosity(args)
    previous = _catch_interrupts()
    try:
        with configure_output(level):
            return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        if level == "debug":
            raise
        text = str(e) if str(e).startswith("interrupted") else \
            "interrupted: chunks already written are kept; run the same command again to resume"
        print(f"interpretome {args.command}: {text}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, LookupError, OSError, RuntimeError) as e:
        if level == "debug":
            raise
        if level == "verbose":
            traceback.print_exc(file=sys.stderr)
        text = _os_message(e) if type(e) in (OSError, PermissionError) and e.filename else str(e).strip('"')
        print(f"interpretome {args.command}: error: {text}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())

"""The ``interpretome`` command line: a thin layer over the jobs.

The compute subcommands are generated from the declared job kinds (``jobs.registry``,
``jobs.commands``); the others (demo, info/verify/render, export-track, run, report) come from
the modules in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from . import __version__

COMMAND_MODULES = (
    "interpretome.jobs.demo",
    "interpretome.jobs.stores",
    "interpretome.jobs.genome",
    "interpretome.jobs.jobfile",
    "interpretome.jobs.report",
)
"""Modules whose ``register(subparsers)`` adds the subcommands that are not job kinds."""


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser."""
    parser = argparse.ArgumentParser(prog="interpretome", description=__doc__)
    parser.add_argument("--version", action="version", version=f"interpretome {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .jobs.commands import add_kind_command
    from .jobs.registry import job_kinds

    for kind in job_kinds().values():
        add_kind_command(sub, kind)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


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
    previous = _catch_interrupts()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        if getattr(args, "debug", False):
            raise
        text = str(e) if str(e).startswith("interrupted") else \
            "interrupted: chunks already written are kept; run the same command again to resume"
        print(f"interpretome {args.command}: {text}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"interpretome {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())

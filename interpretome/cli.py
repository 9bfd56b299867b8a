"""The ``interpretome`` command line: a thin layer over the jobs (one module per family)."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMAND_MODULES = (
    "interpretome.jobs.demo",
    "interpretome.jobs.dna",
    "interpretome.jobs.stores",
    "interpretome.jobs.genome",
    "interpretome.jobs.embedding",
    "interpretome.jobs.coefficients",
    "interpretome.jobs.attribution",
    "interpretome.jobs.runner",
    "interpretome.jobs.report",
)
"""Modules whose ``register(subparsers)`` adds subcommands; each sets ``func`` on its parser."""


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser."""
    parser = argparse.ArgumentParser(prog="interpretome", description=__doc__)
    parser.add_argument("--version", action="version", version=f"interpretome {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"interpretome {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The README's examples run as written.

The "Using it" section — its bash commands and its Python snippet — runs here on the example
inputs its first command writes (``interpretome demo-data data``): the commands in-process through
``interpretome.cli.main`` (the same parser and code as the shell, from a scratch working
directory), the snippet as a script in a fresh interpreter. Every other ``interpretome`` command
of the README is parsed by the real parser, so a renamed flag or subcommand fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Return the block's commands as argv lists (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    nxt = re.search(r"\n#{2,} ", text[start + 3:])  # up to the next heading, of any level
    return text[start:start + 3 + nxt.start() if nxt else None]


def test_readme__using_it_runs_as_written(tmp_path, monkeypatch, capsys):
    from interpretome.cli import main

    text = _section(README.read_text(), "Using it")
    (bash,) = _blocks(text, "bash")
    (python,) = _blocks(text, "python")
    monkeypatch.chdir(tmp_path)
    lines = _commands(bash)
    assert lines[0] == ["interpretome", "demo-data", "data"]
    for argv in lines:
        assert argv[0] == "interpretome", argv
        assert main(argv[1:]) in (0, None), argv
        out = capsys.readouterr()
        assert "Traceback" not in out.err, (argv, out.err)
        if argv[1] in ("sweep", "ism") and "--dry-run" not in argv:
            assert out.out.splitlines()[-1] == (f"results: results.zarr group {argv[1]!r} (open with "
                                                f"xarray.open_zarr('results.zarr', group={argv[1]!r}))")
        if "--dry-run" in argv:
            assert "complete in the store" in out.out
    sweep = xr.open_zarr("results.zarr", group="sweep")
    assert sweep.sizes["sequence"] == 16 and list(sweep["window"].values) == [1, 5, 9]
    assert sweep.attrs["sweep_replicates"] == 4
    assert sorted(p.name for p in Path("figs").glob("*.png"))[:1] == ["ism_promoter_00.png"]
    # the Python snippet, as a script (its worker processes need the __main__ guard)
    Path("snippet.py").write_text(python)
    env = {**os.environ, "PYTHONPATH": str(README.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "snippet.py"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    py = xr.open_zarr("python.zarr", group="sweep")
    assert py["sweep_delta_mean"].sizes == sweep["sweep_delta_mean"].sizes
    # same model, input, windows, replicates and seed: the same numbers as the command line's
    xr.testing.assert_allclose(py["sweep_delta_mean"].load(), sweep["sweep_delta_mean"].load(), atol=1e-6)


def test_readme__every_command_parses():
    from interpretome.cli import build_parser

    parser = build_parser()
    n = 0
    for block in _blocks(README.read_text(), "bash"):
        for argv in _commands(block):
            if argv[0] != "interpretome":
                continue
            try:
                parser.parse_args(argv[1:])
            except SystemExit as e:  # argparse's own exit: a flag or subcommand the README spells wrongly
                pytest.fail(f"README command does not parse ({e}): {' '.join(argv)}")
            n += 1
    assert n >= 25

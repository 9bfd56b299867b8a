"""``python -m benchmarks``: runs every bench module's run(quick) and rewrites RESULTS.md (fake modules here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchmarks  # noqa: E402


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package ``fakebench`` with a good, a failing, a run-less and a later-issue benchmark module."""
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bench_alpha.py").write_text(textwrap.dedent('''
        CALLS = []
        def run(quick):
            CALLS.append(quick)
            return "## Issue 5 — alpha\\n\\n| ratio | target |\\n|---|---|\\n| 2.50x | >= 1.0x |\\n"
    '''))
    (pkg / "bench_beta.py").write_text("def run(quick):\n    raise RuntimeError('beta exploded')\n")
    (pkg / "bench_gamma.py").write_text("X = 1\n")
    (pkg / "bench_delta.py").write_text(
        "def run(quick):\n    return '## Issue 3 — delta\\n\\nratio 1.10x (target >= 1.0x)\\n'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("fakebench")]:
        monkeypatch.delitem(sys.modules, name)
    return pkg


def test_benchmarks__runs_all_and_rewrites_results(fake_package, tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    out.write_text("old text that a full run replaces\n")
    assert benchmarks.main(["--package", "fakebench", "--output", str(out), "--quick"]) == 1  # beta failed
    printed = capsys.readouterr().out
    assert "alpha: ok" in printed and "beta: failed" in printed and "delta: ok" in printed
    assert "gamma: skipped: fakebench.bench_gamma has no run(quick) function" in printed
    text = out.read_text()
    assert "old text" not in text
    assert text.startswith("# Benchmark results")
    assert f"Machine: {os.cpu_count()} cores" in text and "GiB RAM" in text and "threads)" in text
    assert "Date: 20" in text and "Command: `python -m benchmarks --quick`" in text
    assert "| 2.50x | >= 1.0x |" in text and "ratio 1.10x (target >= 1.0x)" in text
    assert "## bench_beta — FAILED" in text and "RuntimeError: beta exploded" in text
    # sections ordered by issue number: delta (3) before alpha (5), failures last
    assert text.index("Issue 3 — delta") < text.index("Issue 5 — alpha") < text.index("bench_beta — FAILED")
    import fakebench.bench_alpha as alpha

    assert alpha.CALLS == [True]


def test_benchmarks__only_replaces_its_section_and_skips_missing(fake_package, tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert benchmarks.main(["--package", "fakebench", "--output", str(out), "--only", "delta"]) == 0
    first = out.read_text()
    assert "Issue 3 — delta" in first and "alpha" not in first
    assert benchmarks.main(["--package", "fakebench", "--output", str(out), "--only", "alpha",
                            "--only", "epsilon"]) == 0
    printed = capsys.readouterr().out
    assert "epsilon: skipped: no fakebench/bench_epsilon.py" in printed
    text = out.read_text()
    assert "Issue 3 — delta" in text and "Issue 5 — alpha" in text  # delta kept, alpha added
    assert text.count("<!-- bench:delta -->") == 1 and "Command: `python -m benchmarks --only alpha --only epsilon`" in text


def test_benchmarks__list_from_the_command_line():
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    names = [line.split("\t")[0] for line in res.stdout.splitlines()]
    assert names == sorted(names) and all((ROOT / "benchmarks" / f"bench_{n}.py").exists() for n in names)


def test_benchmarks__only_keeps_unmarked_sections_and_replaces_by_heading(fake_package, tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\nDate: long ago\n\n"
                   "## Issue 2 — sweeps\n\nhand-written figures 3.0x\n\n"
                   "## Issue 5 — alpha\n\nold alpha 0.10x\n\n"
                   "## Issue 7 — other\n\nkept as is\n")
    assert benchmarks.main(["--package", "fakebench", "--output", str(out), "--only", "alpha"]) == 0
    text = out.read_text()
    assert "Date: long ago" not in text and text.count("# Benchmark results") == 1
    assert "hand-written figures 3.0x" in text and "kept as is" in text and "old alpha" not in text
    assert text.index("Issue 2 — sweeps") < text.index("<!-- bench:alpha -->") < text.index("Issue 7 — other")
    assert "| 2.50x | >= 1.0x |" in text

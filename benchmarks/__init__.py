"""interpretome benchmarks: reference tools against interpretome, side by side, as ratios.

Each area has a module ``benchmarks/bench_<area>.py`` exposing ``run(quick: bool) -> str``, the
markdown of its section of ``benchmarks/RESULTS.md`` (each ratio next to its target), and is
runnable alone as ``python -m benchmarks.bench_<area> [--quick]``.

``python -m benchmarks`` (run from the repository root) runs every module and rewrites
``RESULTS.md`` with the date, the machine (cores, RAM, CPU model, torch threads, GPU) and every
section; ``--only NAME`` (repeatable) runs only those and replaces only their sections, keeping
the others; ``--quick`` runs the small sizes; ``--list`` lists the modules.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import pkgutil
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PREFIX = "bench_"
_BEGIN = "<!-- bench:{} -->"
_END = "<!-- /bench:{} -->"


def discover(package: str = "benchmarks") -> list[str]:
    """Return the area names (``perturb`` for ``bench_perturb``) of a package's benchmark modules, sorted."""
    pkg = importlib.import_module(package)
    paths = list(getattr(pkg, "__path__", []))
    return sorted(m.name[len(PREFIX):] for m in pkgutil.iter_modules(paths) if m.name.startswith(PREFIX))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """Return the machine description: cores, RAM, CPU model, torch version and threads, GPU, load."""
    info = {"cores": os.cpu_count(), "ram_gb": None, "cpu": _cpu_model(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", "torch": None, "torch_threads": None,
            "gpu": None, "load": None}
    ram = _ram_bytes()
    if ram:
        info["ram_gb"] = round(ram / 2**30, 1)
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    try:
        info["load"] = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        pass
    return info


def header(info: dict, command: str, when: _dt.datetime | None = None) -> str:
    """Return the top of RESULTS.md: date, machine, command."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    load = f"; load average at start {info['load'][0]}, {info['load'][1]}, {info['load'][2]}" if info.get("load") else ""
    return "\n".join([
        "# Benchmark results",
        "",
        f"Date: {when.strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Machine: {info['cores']} cores, {info['ram_gb']} GiB RAM, {info['cpu']}; {info['system']}, "
        f"Python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads)"
        f"{', GPU ' + info['gpu'] if info.get('gpu') else ', no GPU'}{load}  ",
        f"Command: `{command}` (each section also names the command that reproduces it alone)",
        "",
        "Each section below comes from `benchmarks/bench_<area>.py`; ratios are reference time / ours "
        "(> 1 = ours faster) unless the section says otherwise, each next to its target.",
        "",
    ])


def _issue_number(text: str) -> int:
    """Return the issue number named in a section's first heading ("## Issue 6 — ...", "... (issue 3)")."""
    heading = next((line for line in text.splitlines() if line.startswith("#")), "")
    m = re.search(r"\bissue\s+(\d+)", heading, re.I)
    return int(m.group(1)) if m else 10**6


def _wrap(name: str, text: str) -> str:
    return f"{_BEGIN.format(name)}\n{text.rstrip()}\n\n{_END.format(name)}\n"


def run_all(*, quick: bool = False, only: list[str] | None = None, output: str | Path = RESULTS,
            package: str = "benchmarks", command: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the benchmark modules and rewrite ``output``; return ``{name: "ok" | "failed" | "skipped: ..."}``.

    Without ``only`` the file is written anew from every module's section. With ``only`` just
    those modules run and their sections replace the ones marked in the file (the others stay).
    A module without ``run`` or absent is skipped; one that raises gets a FAILED section with the
    error, and the others still run.
    """
    names = discover(package)
    wanted = list(only) if only else names
    status: dict[str, str] = {}
    sections: dict[str, str] = {}
    for name in wanted:
        if name not in names:
            status[name] = f"skipped: no {package}/{PREFIX}{name}.py (have: {', '.join(names) or 'none'})"
            log(f"[benchmarks] {name}: {status[name]}")
            continue
        try:
            mod = importlib.import_module(f"{package}.{PREFIX}{name}")
        except Exception as e:  # noqa: BLE001 - one broken module must not stop the others
            status[name] = "failed"
            sections[name] = f"## {PREFIX}{name} — FAILED to import\n\n```\n{type(e).__name__}: {e}\n```\n"
            log(f"[benchmarks] {name}: import failed: {e}")
            continue
        fn = getattr(mod, "run", None)
        if not callable(fn):
            status[name] = f"skipped: {package}.{PREFIX}{name} has no run(quick) function"
            log(f"[benchmarks] {name}: {status[name]}")
            continue
        log(f"[benchmarks] {name}: running{' (quick)' if quick else ''} ...")
        t0 = time.perf_counter()
        try:
            text = fn(quick)
            if not isinstance(text, str):
                raise TypeError(f"run() returned {type(text).__name__}, not the markdown text of the section")
        except Exception as e:  # noqa: BLE001
            status[name] = "failed"
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
            sections[name] = f"## {PREFIX}{name} — FAILED\n\n```\n{tb.strip()}\n```\n"
            log(f"[benchmarks] {name}: FAILED after {time.perf_counter() - t0:.0f} s: {type(e).__name__}: {e}")
            continue
        status[name] = "ok"
        sections[name] = text
        log(f"[benchmarks] {name}: done in {time.perf_counter() - t0:.0f} s")

    output = Path(output)
    command = command or ("python -m benchmarks" + (" --quick" if quick else "")
                          + "".join(f" --only {n}" for n in (only or [])))
    if not sections and not output.exists():
        log("[benchmarks] nothing ran: RESULTS.md not written")
        return status
    head = header(machine(), command)
    if only and output.exists():
        body = merge_sections(_body(output.read_text()), sections)
    else:
        order = sorted(sections, key=lambda n: (_issue_number(sections[n]), n))
        body = "\n".join(_wrap(n, sections[n]) for n in order)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(head + "\n" + body.lstrip("\n"))
    log(f"[benchmarks] wrote {output} ({len(sections)} section(s) from this run)")
    return status


def _body(text: str) -> str:
    """Return ``text`` without its generated header (everything before the first section)."""
    starts = [m.start() for m in (re.search(r"^<!-- bench:\S+ -->", text, re.M), re.search(r"^## ", text, re.M)) if m]
    return text[min(starts):] if starts else ""


def merge_sections(body: str, sections: dict[str, str]) -> str:
    """Return ``body`` with each of ``sections`` replacing its old text, everything else kept.

    The old text of a section is its marked block (``<!-- bench:NAME -->``), else an unmarked part
    starting with the same heading line and running to the next ``## `` heading or marked block;
    a section found neither way is appended.
    """
    for name, text in sections.items():
        block = _wrap(name, text)
        marked = re.compile(rf"<!-- bench:{re.escape(name)} -->\n.*?<!-- /bench:{re.escape(name)} -->\n?", re.S)
        if marked.search(body):
            body = marked.sub(lambda m: block, body, count=1)
            continue
        first = next((line for line in text.strip().splitlines() if line.startswith("#")), None)
        lines = body.splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if first is not None and line.rstrip() == first.rstrip()), None)
        if at is None:
            body = body.rstrip("\n") + "\n\n" + block
            continue
        end = next((j for j in range(at + 1, len(lines)) if lines[j].startswith("## ") or lines[j].startswith("<!-- bench:")),
                   len(lines))
        body = "".join(lines[:at]) + block + "\n" + "".join(lines[end:])
    return body


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python -m benchmarks``; exit status 1 when a benchmark failed."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (each module's --quick)")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help="run only bench_NAME (repeatable); its section replaces the old one")
    p.add_argument("--output", default=str(RESULTS), help="results file (default benchmarks/RESULTS.md)")
    p.add_argument("--package", default="benchmarks", help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    args = p.parse_args(argv)
    if args.list:
        for name in discover(args.package):
            print(f"{name}\t{args.package}.{PREFIX}{name}")
        return 0
    status = run_all(quick=args.quick, only=args.only, output=args.output, package=args.package)
    for name, state in status.items():
        print(f"{name}: {state}")
    return 1 if any(s == "failed" for s in status.values()) else 0

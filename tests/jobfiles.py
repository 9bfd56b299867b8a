"""Helpers shared by the job-file, fault-tolerance and report tests: a FASTA file and job files."""

from __future__ import annotations

import os
from pathlib import Path

from interpretome.datasets import DEMO_WEIGHTS, data_path, promoter_sequences
from interpretome.storage.readers import write_fasta

MODEL_TABLE = f"""
[model]
factory = "interpretome.datasets:promoter_cnn"
weights = "{data_path(DEMO_WEIGHTS)}"
targets = ["promoter"]
activation = "sigmoid"
"""

STEPS = """
[[step]]
kind = "ism"
fasta = "promoters.fa"
sequence_chunk = 1
position_chunk = 50

[[step]]
kind = "sweep"
fasta = "promoters.fa"
windows = [1, 5, 9]
replicates = 2
sequence_chunk = 1
position_chunk = 50
"""
"""Two steps over 4 promoters: ism (20 chunks) then sweep (36 chunks); a few seconds on 2 workers."""

N_SEQUENCES = 4
TOTAL_CHUNKS = 56


def promoters(folder: Path, n: int = N_SEQUENCES) -> Path:
    """Write ``n`` demo promoters to ``folder/promoters.fa`` and return the path."""
    return write_fasta(Path(folder) / "promoters.fa", promoter_sequences(n))


def write_job(folder: Path, store: str = "out.zarr", *, cluster: str = "", steps: str = STEPS,
              model: str = MODEL_TABLE, name: str = "job.toml") -> Path:
    """Write a job file (and the promoters it reads) into ``folder``; return its path."""
    folder = Path(folder)
    if not (folder / "promoters.fa").exists():
        promoters(folder)
    path = folder / name
    path.write_text(f'store = "{store}"\n{model}\n{cluster}\n{steps}')
    return path


def manifest_count(store: Path) -> int:
    """Return the number of chunk manifest files (chunks known to be written) in a store."""
    n = 0
    for root, _dirs, files in os.walk(store):
        if f"{os.sep}.interpretome{os.sep}done" in root:
            n += len([f for f in files if ".tmp" not in f and not f.startswith(".")])
    return n


def store_files(store: Path) -> dict[str, bytes]:
    """Return ``{relative path: bytes}`` of a store's data and array metadata.

    Left out: what records when and how long (root/group ``.zattrs``, ``.zmetadata``) and the
    manifest files (compared as a set of names by ``manifests``).
    """
    out = {}
    for p in sorted(Path(store).rglob("*")):
        rel = p.relative_to(store).as_posix()
        if not p.is_file() or ".interpretome/" in rel or p.name == ".zmetadata":
            continue
        if p.name == ".zattrs" and (p.parent / ".zgroup").exists():
            continue
        out[rel] = p.read_bytes()
    return out


def manifests(store: Path) -> set[str]:
    """Return the relative paths of a store's chunk manifest files."""
    return {p.relative_to(store).as_posix() for p in Path(store).rglob("*")
            if p.is_file() and "/.interpretome/done/" in p.as_posix() and ".tmp" not in p.name
            and not p.name.startswith(".")}


def dir_model(model_dir: str, channels: int = 4):
    """A factory that loads its own weights (``model_dir/weights.pt``), as checkpoint-directory models do.

    Retraining it in place (a new ``weights.pt``) changes the model without changing its spec.
    """
    import torch

    from interpretome.datasets import reference_cnn

    model = reference_cnn(channels=channels)
    model.load_state_dict(torch.load(Path(model_dir) / "weights.pt", weights_only=True))
    return model


def save_dir_model(model_dir: Path, seed: int, channels: int = 4) -> Path:
    """Write the weights ``dir_model`` loads (``reference_cnn`` of ``seed``) into ``model_dir``."""
    import torch

    from interpretome.datasets import reference_cnn

    Path(model_dir).mkdir(parents=True, exist_ok=True)
    torch.save(reference_cnn(seed=seed, channels=channels).state_dict(), Path(model_dir) / "weights.pt")
    return Path(model_dir)


def picky_cnn(strict: bool = True):
    """``reference_cnn(channels=4)`` that, when ``strict``, raises on a sequence of only N (all-zero one-hot).

    It passes a check on the first items of a FASTA whose last record is all N, and fails in the
    compute: a run that fails after its group was initialised, before any chunk was written.
    """
    import torch

    from interpretome.datasets import reference_cnn

    class Picky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = reference_cnn(channels=4)

        def forward(self, x):
            if strict and bool((x.abs().sum(dim=(1, 2)) == 0).any()):
                raise ValueError("picky_cnn: a sequence of only N")
            return self.net(x)

    return Picky()

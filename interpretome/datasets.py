"""Built-in models and data: seeded simulators, the demo promoter model and the reference CNN.

Everything here is generated deterministically by the package or shipped with it (the trained
demo weights in ``interpretome/data``, made by ``python -m interpretome.datasets``); nothing is
downloaded.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np

from .storage.alphabet import decode_bases, encode_bases

PROMOTER_LENGTH = 200
TSS = 150
MOTIF_10 = "TATAAT"   # -10 box, planted to end 7 bp before the TSS
MOTIF_35 = "TTGACA"   # -35 box, planted 17 bp upstream of the -10 box
MOTIF_10_START = TSS - 12
MOTIF_35_START = MOTIF_10_START - 6 - 17


def data_path(name: str) -> Path:
    """Return the path of a file shipped in ``interpretome/data``."""
    return Path(str(files("interpretome") / "data" / name))


def random_dna(n: int, length: int, seed: int = 0, gc: float = 0.42) -> np.ndarray:
    """Return ``(n, length)`` uint8 base codes drawn i.i.d. with GC content ``gc``."""
    rs = np.random.default_rng(seed)
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return rs.choice(4, size=(n, length), p=p).astype(np.uint8)


def _plant(codes: np.ndarray, motif: str, start: int) -> None:
    codes[start:start + len(motif)] = encode_bases(motif)


def simulate_promoters(n: int = 2000, length: int = PROMOTER_LENGTH, seed: int = 0, jitter: int = 2):
    """Return ``(codes (n, length) uint8, labels (n,) int64)`` of synthetic promoter-like sequences.

    Positives (label 1, half) carry both the -35 box ``TTGACA`` and the -10 box ``TATAAT`` upstream
    of the TSS at ``TSS`` (shifted together by up to ``jitter`` bp). Negatives are background, a
    third of them with only one of the two boxes, so a model must use both.
    """
    rs = np.random.default_rng(seed)
    codes = random_dna(n, length, seed=seed + 1)
    labels = np.zeros(n, np.int64)
    labels[: n // 2] = 1
    rs.shuffle(labels)
    for i in range(n):
        shift = int(rs.integers(-jitter, jitter + 1))
        if labels[i] == 1:
            _plant(codes[i], MOTIF_35, MOTIF_35_START + shift)
            _plant(codes[i], MOTIF_10, MOTIF_10_START + shift)
        elif rs.random() < 1 / 3:
            motif, start = (MOTIF_35, MOTIF_35_START) if rs.random() < 0.5 else (MOTIF_10, MOTIF_10_START)
            _plant(codes[i], motif, start + shift)
    return codes, labels


def promoter_sequences(n: int = 16, seed: int = 7) -> dict[str, str]:
    """Return ``{name: sequence}`` of ``n`` positive demo promoters (both boxes planted)."""
    codes, labels = simulate_promoters(4 * n, seed=seed, jitter=0)
    pos = np.flatnonzero(labels == 1)[:n]
    return {f"promoter_{i:02d}": decode_bases(codes[j]) for i, j in enumerate(pos)}


def promoter_cnn(channels: int = 32):
    """Return the demo promoter model: two convolutions (the second dilated), global max, linear.

    Input one-hot ``(N, 4, L)``; output ``(N, 1)`` logit ("promoter"). Receptive field 47 bp, so
    it can see both boxes at once.
    """
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv1d(4, channels, 15, padding=7), nn.ReLU(),
        nn.Conv1d(channels, channels, 9, padding=16, dilation=4), nn.ReLU(),
        nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(channels, 1),
    )


def reference_cnn(seed: int = 0, channels: int = 64, outputs: int = 1):
    """Return the benchmarks' reference CNN with seeded random weights.

    Conv1d(4, 64, 15, pad 7) + ReLU, Conv1d(64, 64, 9, pad 4) + ReLU, global max pool,
    Linear(64, outputs). Input one-hot ``(N, 4, L)``; output ``(N, outputs)``.
    """
    import torch
    import torch.nn as nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv1d(4, channels, 15, padding=7), nn.ReLU(),
            nn.Conv1d(channels, channels, 9, padding=4), nn.ReLU(),
            nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(channels, outputs),
        )


def profile_cnn(seed: int = 0, channels: int = 16, outputs: int = 2, crop: int = 8, bin_size: int = 4):
    """Return a small profile-output CNN with seeded random weights (tiled-track tests and demos).

    Conv1d(4, C, 9, pad 4) + ReLU, Conv1d(C, outputs, 5, pad 2), then ``crop`` bases dropped at
    each end and average pooling over ``bin_size`` bases. Input one-hot ``(N, 4, L)``; output
    ``(N, outputs, (L - 2 crop) // bin_size)`` — a profile like Basenji/Enformer heads.
    """
    import torch
    import torch.nn as nn

    class Crop1d(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return x[..., self.n:x.shape[-1] - self.n] if self.n else x

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv1d(4, channels, 9, padding=4), nn.ReLU(), nn.Conv1d(channels, outputs, 5, padding=2),
            Crop1d(crop), nn.AvgPool1d(bin_size),
        )


def kmer_model(seed: int = 0, vocab_size: int = 1033, dim: int = 16, outputs: int = 2):
    """Return a small k-mer token model (embedding, mean pool, linear) with seeded weights.

    Input token ids ``(N, T)`` int64 (default vocabulary: 9 specials + 4^5 5-mers); output
    ``(N, outputs)``.
    """
    import torch
    import torch.nn as nn

    class KmerBag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, dim)
            self.conv = nn.Conv1d(dim, dim, 3, padding=1)
            self.out = nn.Linear(dim, outputs)

        def forward(self, ids):
            h = torch.relu(self.conv(self.embedding(ids).transpose(1, 2)))
            return self.out(h.max(dim=2).values)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return KmerBag()


DEMO_WEIGHTS = "promoter_cnn.pt"


def demo_model_spec(**options):
    """Return the ModelSpec of the shipped, trained demo promoter model (sigmoid probability)."""
    from .engine.models import ModelSpec

    return ModelSpec(factory="interpretome.datasets:promoter_cnn", weights=str(data_path(DEMO_WEIGHTS)),
                     targets=("promoter",), activation="sigmoid", **options)


def train_promoter_cnn(out: str | Path, n: int = 3000, epochs: int = 12, seed: int = 0) -> dict:
    """Train the demo promoter model deterministically and save its state_dict to ``out``.

    Returns ``{"train_accuracy": ..., "test_accuracy": ...}``. Takes about a minute on 2 cores.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    codes, labels = simulate_promoters(n + 1000, seed=seed)
    lut = np.eye(5, 4, dtype=np.float32)
    x = torch.from_numpy(lut[codes].transpose(0, 2, 1).copy())
    y = torch.from_numpy(labels.astype(np.float32))
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    model = promoter_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=g).split(64):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(xtr[idx])[:, 0], ytr[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc_tr = float(((model(xtr)[:, 0] > 0).float() == ytr).float().mean())
        acc_te = float(((model(xte)[:, 0] > 0).float() == yte).float().mean())
    torch.save(model.state_dict(), out)
    return {"train_accuracy": acc_tr, "test_accuracy": acc_te}


if __name__ == "__main__":  # python -m interpretome.datasets  -> retrain the shipped demo weights
    print(train_promoter_cnn(data_path(DEMO_WEIGHTS)))

"""A small model zoo with planted, deterministic weights: profile models whose biology is known.

Nothing is trained or downloaded: every weight is set by hand, so a test (or a user learning
the tools) knows what an interpretation must find.

* ``bpnet_like``: a BPNet-style residual dilated profile model. A motif detector (one filter
  for ``motif``, one for its reverse complement, each firing only on a perfect match) feeds
  three residual dilated convolutions (dilation 2, 4, 8) that spread each hit into a smooth
  footprint; the profile head sums the two strands, crops ``crop`` bases at each end and
  averages ``bin_size`` bases per bin; the counts head is ``log(1 + sum of the profile)``.
  Output ``(N, 1, (L - 2 crop) / bin_size)`` (``output="profile"``), ``(N, 1)`` (``"counts"``)
  or the tuple of both (``"both"``; interpretome reads the first). A planted ``motif`` is the
  only thing it sees, on either strand.
* ``splice_like``: a stranded SpliceAI-like site model (bin size 1, ``crop`` bases of context
  at each end). Acceptor score at base ``i`` (the first exon base) = sigmoid(4 [A at i-2] +
  4 [G at i-1] + 0.6 x (C or T among the 12 bases before the AG) - 13.5); donor score at ``i``
  (the first intron base) = sigmoid(4 [G at i] + 4 [T at i+1] + 0.5 x (A or G at i+2..i+5) -
  9.5). Output ``(N, 2, L - 2 crop)``, targets ``acceptor``, ``donor``. It reads the forward
  strand only (an AG, not a CT), as spliceosome sites are stranded.

Random-initialised architectures (seeded weights, no planted biology) for the locality tests and
benchmarks (``engine.fx_locality``), each a small instance of a published design:

* ``bpnet_tower``: BPNet/ChromBPNet-style — a wide first convolution, ``layers`` residual dilated
  convolutions (dilation 2, 4, 8, ...), a profile head (a wide convolution, cropped) and a counts
  head (global average pool, linear); output the profile ``(N, 1, L - 2 crop)`` and the counts
  ``(N, 1)`` (a tuple; interpretome reads the profile) or ``output="counts"``.
* ``spliceai_like``: SpliceAI-style — a 1x1 convolution, residual units (BatchNorm, ReLU,
  dilated convolution, twice) with 1x1 skip connections summed, a crop of ``crop`` bases each
  end, a 1x1 convolution and a softmax over (neither, acceptor, donor): ``(N, 3, L - 2 crop)``.
* ``basenji_like``: Basenji-style — convolution + BatchNorm + GELU, max pooling (stride 2) three
  times, residual dilated convolutions, a bin crop and a softplus 1x1 head: ``(N, 2, L / 8 - 2 crop)``.
* ``profile_tower``: a large BPNet-style profile model (32 channels, 16 residual dilated units,
  10 kb input, 5 kb output by default) for the tiling benchmarks.
* ``ulmfit_like``: Genomic-ULMFiT-style — k-mer token embedding, a unidirectional batch_first
  ``nn.LSTM`` stack and concat pooling (last, max, mean) into a linear classifier: ``(N, 2)``;
  its spec tokenises 5-mers every 2 bases (``KmerTokenizer()``).

``zoo_spec(name, **kwargs)`` returns the ``ModelSpec`` of a zoo model with its targets;
``ACCEPTOR_SITE`` is a strong acceptor (pyrimidine tract + AG) to plant.
"""

from __future__ import annotations

import numpy as np

BPNET_MOTIF = "GATAAG"
ACCEPTOR_TRACT = 12
ACCEPTOR_SITE = "CTTTCTCCTTCTAG"  # 12-base pyrimidine tract, then the AG; the exon starts after it
_ONEHOT = {b: i for i, b in enumerate("ACGT")}


def _motif_filter(motif: str) -> np.ndarray:
    """Return a (4, k) filter scoring +1 per matching base and -1 per mismatch (k = perfect match)."""
    w = -np.ones((4, len(motif)), np.float32)
    for j, b in enumerate(motif):
        w[_ONEHOT[b], j] = 1.0
    return w


def _revcomp(motif: str) -> str:
    return motif.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def bpnet_like(motif: str = BPNET_MOTIF, crop: int = 16, bin_size: int = 1, output: str = "profile"):
    """Return the BPNet-like residual dilated profile model (module doc), weights planted.

    Parameters
    ----------
    motif : str
        The motif its detector fires on (perfect matches only, either strand).
    crop, bin_size : int
        Bases cropped at each end of the profile; bases averaged per output bin.
    output : {'profile', 'counts', 'both'}
        Which head to return: ``(N, 1, (L - 2 crop) / bin_size)``, ``(N, 1)``, or both as a tuple.
    """
    import torch
    import torch.nn as nn

    if output not in ("profile", "counts", "both"):
        raise ValueError(f"output {output!r} is not 'profile', 'counts' or 'both'")
    k = len(motif)

    class BPNetLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.motif = nn.Conv1d(4, 2, k)  # padded by hand to keep the length (even k too)
            self.dilated = nn.ModuleList(nn.Conv1d(2, 2, 3, dilation=d, padding=d) for d in (2, 4, 8))
            self.profile = nn.Conv1d(2, 1, 1)
            with torch.no_grad():
                self.motif.weight.copy_(torch.from_numpy(np.stack([_motif_filter(motif), _motif_filter(_revcomp(motif))])))
                self.motif.bias.fill_(-(k - 1.0))  # a perfect match scores k: ReLU passes 1, any mismatch 0
                for conv in self.dilated:
                    conv.weight.zero_()
                    for c in range(2):
                        conv.weight[c, c] = torch.tensor([0.25, 0.5, 0.25])
                    conv.bias.zero_()
                self.profile.weight.fill_(1.0)
                self.profile.bias.fill_(0.01)  # a flat background

        def forward(self, x):
            h = torch.relu(self.motif(nn.functional.pad(x, ((k - 1) // 2, k // 2))))
            for conv in self.dilated:  # residual: the footprint widens, the hit stays
                h = h + torch.relu(conv(h))
            p = self.profile(h)
            p = p[..., crop:p.shape[-1] - crop] if crop else p
            p = nn.functional.avg_pool1d(p, bin_size) if bin_size > 1 else p
            counts = torch.log1p(p.sum(dim=-1) * bin_size)
            return {"profile": p, "counts": counts, "both": (p, counts)}[output]

    return BPNetLike().eval()


def splice_like(crop: int = 20):
    """Return the stranded splice-site profile model (module doc), weights planted.

    Parameters
    ----------
    crop : int
        Bases of context dropped at each end (>= 14, the acceptor filter's reach); output
        ``(N, 2, L - 2 crop)``: acceptor and donor probability per base.
    """
    import torch
    import torch.nn as nn

    ka, kd = ACCEPTOR_TRACT + 2, 6
    if crop < ka:
        raise ValueError(f"crop must be >= {ka} (the acceptor filter looks {ka} bases upstream), got {crop}")

    class SpliceLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.acceptor = nn.Conv1d(4, 1, ka)  # window [i - ka, i): tract, then A, G
            self.donor = nn.Conv1d(4, 1, kd)  # window [i, i + kd): G, T, then purines
            with torch.no_grad():
                wa = torch.zeros(1, 4, ka)
                wa[0, [1, 3], :ACCEPTOR_TRACT] = 0.6
                wa[0, 0, ka - 2] = 4.0
                wa[0, 2, ka - 1] = 4.0
                self.acceptor.weight.copy_(wa)
                self.acceptor.bias.fill_(-13.5)
                wd = torch.zeros(1, 4, kd)
                wd[0, 2, 0] = 4.0
                wd[0, 3, 1] = 4.0
                wd[0, [0, 2], 2:] = 0.5
                self.donor.weight.copy_(wd)
                self.donor.bias.fill_(-9.5)

        def forward(self, x):
            n = x.shape[-1]
            a = self.acceptor(x)  # a[j] scores the site at j + ka
            d = self.donor(x)  # d[j] scores the site at j
            acc = a[..., crop - ka:n - crop - ka]
            don = d[..., crop:n - crop]
            return torch.sigmoid(torch.cat([acc, don], dim=1))

    return SpliceLike().eval()


def bpnet_tower(seed: int = 0, channels: int = 32, layers: int = 6, first_kernel: int = 21, profile_kernel: int = 75,
                crop: int = 32, output: str = "both"):
    """Return a BPNet-style residual dilated profile model with seeded random weights (module doc).

    Parameters
    ----------
    seed : int
        Seed of the initial weights.
    channels, layers : int
        Width of the tower; residual dilated layers (dilation ``2 ** (i + 1)``).
    first_kernel, profile_kernel : int
        Odd kernel sizes of the first convolution and of the profile head.
    crop : int
        Bases dropped at each end of the profile.
    output : {'both', 'profile', 'counts'}
        ``(profile (N, 1, L - 2 crop), counts (N, 1))``, either one alone.
    """
    import torch
    import torch.nn as nn

    if output not in ("profile", "counts", "both"):
        raise ValueError(f"output {output!r} is not 'profile', 'counts' or 'both'")

    class BPNetTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv1d(4, channels, first_kernel, padding=first_kernel // 2)
            self.dilated = nn.ModuleList(nn.Conv1d(channels, channels, 3, dilation=2 ** (i + 1), padding=2 ** (i + 1))
                                         for i in range(layers))
            self.profile = nn.Conv1d(channels, 1, profile_kernel, padding=profile_kernel // 2)
            self.counts = nn.Linear(channels, 1)

        def forward(self, x):
            h = torch.relu(self.first(x))
            for conv in self.dilated:
                h = h + torch.relu(conv(h))
            p = self.profile(h)[:, :, crop:x.shape[-1] - crop]
            c = self.counts(h.mean(dim=-1))
            return {"profile": p, "counts": c, "both": (p, c)}[output]

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BPNetTower().eval()


def spliceai_like(seed: int = 0, channels: int = 32, units=((11, 1), (11, 1), (11, 4), (11, 4)), crop: int = 50):
    """Return a SpliceAI-style residual-unit stack with seeded random weights (module doc).

    Parameters
    ----------
    seed : int
        Seed of the weights and BatchNorm statistics.
    channels : int
        Width of every residual unit.
    units : sequence of (kernel, dilation)
        One residual unit each (odd kernels).
    crop : int
        Bases of context dropped at each end: output ``(N, 3, L - 2 crop)``.
    """
    import torch
    import torch.nn as nn

    class Unit(nn.Module):
        def __init__(self, k, d):
            super().__init__()
            pad = d * (k - 1) // 2
            self.bn1, self.bn2 = nn.BatchNorm1d(channels), nn.BatchNorm1d(channels)
            self.c1 = nn.Conv1d(channels, channels, k, dilation=d, padding=pad)
            self.c2 = nn.Conv1d(channels, channels, k, dilation=d, padding=pad)

        def forward(self, x):
            return x + self.c2(torch.relu(self.bn2(self.c1(torch.relu(self.bn1(x))))))

    class SpliceAILike(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Conv1d(4, channels, 1)
            self.skip0 = nn.Conv1d(channels, channels, 1)
            self.units = nn.ModuleList(Unit(k, d) for k, d in units)
            self.skips = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in units)
            self.out = nn.Conv1d(channels, 3, 1)

        def forward(self, x):
            h = self.inp(x)
            skip = self.skip0(h)
            for unit, sk in zip(self.units, self.skips):
                h = unit(h)
                skip = skip + sk(h)
            skip = skip[..., crop:skip.shape[-1] - crop]
            return torch.softmax(self.out(skip), dim=1)

    return _seeded_eval(SpliceAILike, seed, affine_batchnorm=True)


def _seeded_eval(build, seed: int, *, affine_batchnorm: bool):
    """Return ``build()`` in eval mode, built under torch seed ``seed`` with its BatchNorm1d running
    statistics (and, with ``affine_batchnorm``, its scale and shift) drawn at random, so that the
    normalisation layers are not the identity; the global torch RNG is left as it was."""
    import torch
    import torch.nn as nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = build()
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm1d):
                    mod.running_mean.normal_(0, 0.2)
                    mod.running_var.uniform_(0.5, 2.0)
                    if affine_batchnorm:
                        mod.weight.uniform_(0.5, 1.5)
                        mod.bias.normal_(0, 0.1)
        return m.eval()


def basenji_like(seed: int = 0, channels: int = 32, dilations=(2, 4, 8, 16), crop: int = 8, outputs: int = 2):
    """Return a Basenji-style dilated stack with pooling, seeded random weights (module doc).

    Three convolution blocks each end in ``MaxPool1d(2)`` (bins of 8 bp), then residual dilated
    convolutions, ``crop`` bins dropped each end and a softplus 1x1 head:
    ``(N, outputs, L // 8 - 2 crop)``.
    """
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c_in, k, d=1):
            super().__init__()
            self.conv = nn.Conv1d(c_in, channels, k, dilation=d, padding=d * (k - 1) // 2)
            self.bn = nn.BatchNorm1d(channels)

        def forward(self, x):
            return self.bn(self.conv(nn.functional.gelu(x)))

    class BasenjiLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv1d(4, channels, 15, padding=7)
            self.tower = nn.ModuleList([Block(channels, 5), Block(channels, 5)])
            self.pool = nn.MaxPool1d(2)
            self.dilated = nn.ModuleList(Block(channels, 3, d) for d in dilations)
            self.head = nn.Conv1d(channels, outputs, 1)

        def forward(self, x):
            h = self.pool(self.stem(x))
            for block in self.tower:
                h = nn.functional.max_pool1d(block(h), 2)
            for block in self.dilated:
                h = h + block(h)
            h = h[:, :, crop:h.shape[-1] - crop]
            return nn.functional.softplus(self.head(nn.functional.gelu(h)))

    return _seeded_eval(BasenjiLike, seed, affine_batchnorm=False)


def ulmfit_like(seed: int = 0, vocab_size: int = 1033, dim: int = 64, hidden: int = 96, layers: int = 3, outputs: int = 2):
    """Return a Genomic-ULMFiT-style k-mer LSTM classifier with seeded random weights (module doc).

    Input token ids ``(N, T)`` (default vocabulary: 9 specials + 4^5 5-mers); embedding ``dim``,
    a unidirectional ``batch_first`` LSTM of ``layers`` x ``hidden``, concat pooling
    ``[last, max, mean]`` over tokens, ``Linear(3 hidden, hidden)``, ReLU, ``Linear(hidden, outputs)``.
    """
    import torch
    import torch.nn as nn

    class ULMFiTLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, dim)
            self.lstm = nn.LSTM(dim, hidden, layers, batch_first=True)
            self.fc1 = nn.Linear(3 * hidden, hidden)
            self.fc2 = nn.Linear(hidden, outputs)

        def forward(self, ids):
            out, _ = self.lstm(self.embedding(ids))
            pooled = torch.cat([out[:, -1], out.max(dim=1).values, out.mean(dim=1)], dim=1)
            return self.fc2(torch.relu(self.fc1(pooled)))

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ULMFiTLike().eval()


def profile_tower(seed: int = 0, channels: int = 32, units: int = 16, cycle: int = 10, first_kernel: int = 21,
                  profile_kernel: int = 75, crop: int = 2500):
    """Return a large BPNet-style profile model with seeded random weights: 10 kb in, 5 kb out by default.

    A ``first_kernel`` convolution, ``units`` residual dilated units ``h + relu(conv(h))`` (kernel 3,
    dilations ``2, 4, ..., 2 ** cycle`` repeated: 2..1024 then 2..64 for 16 units, a receptive field of
    4,439 bases), a ``profile_kernel`` profile convolution and ``crop`` bases dropped at each end:
    ``(N, 1, L - 2 crop)``; with ``crop`` >= half the receptive field every output base has its full context.
    """
    import torch
    import torch.nn as nn

    class ProfileTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv1d(4, channels, first_kernel, padding=first_kernel // 2)
            self.dilated = nn.ModuleList(nn.Conv1d(channels, channels, 3, dilation=2 ** (1 + i % cycle),
                                                   padding=2 ** (1 + i % cycle)) for i in range(units))
            self.profile = nn.Conv1d(channels, 1, profile_kernel, padding=profile_kernel // 2)

        def forward(self, x):
            h = torch.relu(self.first(x))
            for conv in self.dilated:
                h = h + torch.relu(conv(h))
            return self.profile(h)[:, :, crop:x.shape[-1] - crop]

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ProfileTower().eval()


def _kmer_options(kw):
    from .engine.tokenize import KmerTokenizer

    return {"input_kind": "kmer", "kmer": KmerTokenizer(k=5, stride=2)}


_ZOO = {
    "bpnet_like": ("interpretome.zoo:bpnet_like", lambda kw: ("counts",) if kw.get("output") == "counts" else ("profile",)),
    "splice_like": ("interpretome.zoo:splice_like", lambda kw: ("acceptor", "donor")),
    "bpnet_tower": ("interpretome.zoo:bpnet_tower", lambda kw: ("counts",) if kw.get("output") == "counts" else ("profile",)),
    "spliceai_like": ("interpretome.zoo:spliceai_like", lambda kw: ("neither", "acceptor", "donor")),
    "basenji_like": ("interpretome.zoo:basenji_like", lambda kw: tuple(f"track{i}" for i in range(kw.get("outputs", 2)))),
    "ulmfit_like": ("interpretome.zoo:ulmfit_like", lambda kw: tuple(f"class{i}" for i in range(kw.get("outputs", 2)))),
    "profile_tower": ("interpretome.zoo:profile_tower", lambda kw: ("profile",)),
}
_SPEC_OPTIONS = {"ulmfit_like": _kmer_options}


def zoo_spec(name: str, **kwargs):
    """Return the ``ModelSpec`` of zoo model ``name`` (one of ``_ZOO``, module doc) with ``kwargs``.

    Spec options (``batch_size``, ``device`` ...) may be passed as ``options={...}``.
    """
    from .engine.models import ModelSpec

    if name not in _ZOO:
        raise ValueError(f"zoo model {name!r} is not one of {sorted(_ZOO)}")
    factory, targets = _ZOO[name]
    options = dict(_SPEC_OPTIONS[name](kwargs)) if name in _SPEC_OPTIONS else {}
    options.update(kwargs.pop("options", {}))
    return ModelSpec(factory=factory, kwargs=kwargs, targets=targets(kwargs), **options)

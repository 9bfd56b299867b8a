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


_ZOO = {
    "bpnet_like": ("interpretome.zoo:bpnet_like", lambda kw: ("counts",) if kw.get("output") == "counts" else ("profile",)),
    "splice_like": ("interpretome.zoo:splice_like", lambda kw: ("acceptor", "donor")),
}


def zoo_spec(name: str, **kwargs):
    """Return the ``ModelSpec`` of zoo model ``name`` (``bpnet_like`` or ``splice_like``) with ``kwargs``.

    Spec options (``batch_size``, ``device`` ...) may be passed as ``options={...}``.
    """
    from .engine.models import ModelSpec

    if name not in _ZOO:
        raise ValueError(f"zoo model {name!r} is not one of {sorted(_ZOO)}")
    factory, targets = _ZOO[name]
    options = kwargs.pop("options", {})
    return ModelSpec(factory=factory, kwargs=kwargs, targets=targets(kwargs), **options)

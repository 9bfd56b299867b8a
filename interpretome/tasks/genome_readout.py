"""What a genome perturbation stores of one edit: a scalar model's delta, or a profile model's reductions.

``ScalarReadout`` (a model ``(N, T)``) keeps each edit's delta; ``ProfileReadout`` (a model
``(N, T, L_out)`` with ``bin_size`` / ``crop`` / ``crop_right``) reduces each edit's profile change
to the ``reductions`` of ``REDUCTIONS`` (``at_edit``, ``total``, ``delta_score``; see
``tasks.genome_perturb``) one model batch at a time. ``make_readout`` checks the options and
returns the one that fits; ``jobs.genome`` also uses its ``check`` on a real window before any
cluster starts. Apart from ``tasks.genome_perturb`` to keep that module one idea (graphs and
blocks along genomes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..storage.genome import TrackGeometry
from ..storage.schema import GENOME_REDUCTION_VALUES
from .tiles import check_output

REDUCTIONS = tuple(GENOME_REDUCTION_VALUES)
"""Profile-model reductions of one edit's effect (``tasks.genome_perturb`` module doc)."""
_VALUES = GENOME_REDUCTION_VALUES


@dataclass(frozen=True)
class ScalarReadout:
    """A scalar model ``(N, T)``: the stored value of an edit is its delta."""

    window: int

    @property
    def names(self) -> tuple[str, ...]:
        """Return the value names (``delta``)."""
        return ("delta",)

    def check(self, o: np.ndarray) -> np.ndarray:
        """Return ``o`` after checking it is ``(N, T)``."""
        return check_output(o, TrackGeometry(self.window, 1), "genome perturbation")

    def reference(self, ref: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Return the stored reference ``(E, T)`` for edits starting at ``lo`` of a ``ref`` (T,) window."""
        return np.broadcast_to(ref, (len(lo),) + ref.shape)

    def valid(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Return ``(E, V)`` bool: which values an edit of window bases ``[lo, hi]`` has."""
        return np.ones((len(lo), 1), bool)

    def edits_per_call(self, batch_size: int) -> int | None:
        """Return None: a scalar edit's output is ``T`` floats, so all edits of a context go to the model at once.

        (``Runtime.predict_edits`` batches them itself: the locality path ``LOCAL_BATCH_FACTOR`` x
        ``batch_size`` edits per call, full forwards ``batch_size``.)
        """
        return None

    def reduce(self, pred: np.ndarray, ref: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Return ``(E, T, V)`` float32: the values of edits with outputs ``pred`` (E, T)."""
        return (pred - ref[None])[..., None].astype(np.float32)


@dataclass(frozen=True)
class ProfileReadout:
    """A profile model ``(N, T, L_out)``: each edit reduced to ``reductions`` (module doc).

    ``geom`` places output bin ``k`` on window bases ``[crop + k*bin_size, crop + (k+1)*bin_size)``;
    an edit of window bases ``[lo, hi]`` is read at the bin covering base ``(lo + hi) // 2``
    (``at_edit``) and over the bins overlapping ``[lo - distance, hi + distance]`` (``delta_score``).
    """

    geom: TrackGeometry
    reductions: tuple[str, ...]
    distance: int

    @property
    def names(self) -> tuple[str, ...]:
        """Return the value names, in storage order (``delta_score`` gives gain and loss)."""
        return tuple(v for r in self.reductions for v in _VALUES[r])

    def check(self, o: np.ndarray) -> np.ndarray:
        """Return ``o`` after checking it is ``(N, T, L_out)`` of the geometry."""
        return check_output(o, self.geom, "the profile perturbation")

    def _bin(self, lo, hi):
        c = (np.asarray(lo) + np.asarray(hi)) // 2
        k = (c - self.geom.crop) // self.geom.bin_size
        return np.clip(k, 0, self.geom.out_length - 1), (c >= self.geom.crop) & (k < self.geom.out_length)

    def _near(self, lo, hi):
        """Return ``(E, L_out)`` bool: output bins overlapping ``[lo - distance, hi + distance]``."""
        b0 = self.geom.crop + np.arange(self.geom.out_length) * self.geom.bin_size
        return ((b0[None, :] <= np.asarray(hi)[:, None] + self.distance)
                & (b0[None, :] + self.geom.bin_size - 1 >= np.asarray(lo)[:, None] - self.distance))

    def reference(self, ref: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Return ``(E, T)``: the reference profile ``ref`` (T, L_out) at the bin covering base ``lo``."""
        k, ok = self._bin(lo, lo)
        return np.where(ok[:, None], ref[:, k].T, np.nan)

    def valid(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Return ``(E, V)`` bool: which values an edit of window bases ``[lo, hi]`` has."""
        cols = {"at_edit": [self._bin(lo, hi)[1]], "total": [np.ones(len(lo), bool)],
                "delta_score": [self._near(lo, hi).any(axis=1)] * 2}
        return np.stack([c for r in self.reductions for c in cols[r]], axis=1)

    def edits_per_call(self, batch_size: int) -> int:
        """Return ``batch_size``: only one batch of profiles ``(batch, T, L_out)`` is held at once."""
        return batch_size

    def reduce(self, pred: np.ndarray, ref: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Return ``(E, T, V)`` float32: the reductions of edits with profiles ``pred`` (E, T, L_out)."""
        diff = pred.astype(np.float64) - ref[None]
        cols = []
        for r in self.reductions:
            if r == "at_edit":
                k, ok = self._bin(lo, hi)
                cols.append(np.where(ok[:, None], diff[np.arange(len(k)), :, k], np.nan))
            elif r == "total":
                cols.append(diff.sum(axis=-1))
            else:
                near = self._near(lo, hi)[:, None, :]
                some = near.any(axis=-1)
                cols.append(np.where(some, np.where(near, diff, -np.inf).max(axis=-1), np.nan))
                cols.append(np.where(some, np.where(near, -diff, -np.inf).max(axis=-1), np.nan))
        return np.stack(cols, axis=-1).astype(np.float32)


def make_readout(input_length: int, bin_size, crop: int, crop_right, reductions, delta_distance: int, strand: str):
    """Return the readout of a scalar (``bin_size`` None) or profile model, checking its options.

    Raises ``ValueError`` naming the option to fix.
    """
    if bin_size is None:
        if reductions is not None or crop or crop_right:
            raise ValueError("reductions=/crop= only apply to profile models: pass bin_size= (bases per output bin) "
                             "too, or drop them for a scalar model")
        return ScalarReadout(int(input_length))
    crop_right = int(crop) if crop_right is None else int(crop_right)
    geom = TrackGeometry(int(input_length), int(bin_size), int(bin_size), int(crop), crop_right)
    reductions = tuple(REDUCTIONS if reductions is None else ([reductions] if isinstance(reductions, str) else reductions))
    bad = [r for r in reductions if r not in REDUCTIONS]
    if bad or not reductions or len(set(reductions)) != len(reductions):
        raise ValueError(f"reductions {list(reductions)} must be distinct names from {REDUCTIONS}")
    if int(delta_distance) < 0:
        raise ValueError(f"delta_distance must be >= 0 bases, got {delta_distance}")
    if strand != "+" and geom.crop != geom.crop_right:
        raise ValueError(f"strand {strand!r} maps reverse-complement profiles back by mirroring, which needs "
                         f"crop == crop_right (got {geom.crop} and {geom.crop_right})")
    return ProfileReadout(geom, reductions, int(delta_distance))

"""k-mer tokenisation of DNA for token models (Genomic-ULMFiT): ``KmerTokenizer``.

Base codes come from ``storage.alphabet`` (A, C, G, T, N = 0..4); a k-mer holding an N maps to the
unknown token. The tokenizer is part of a ``ModelSpec`` (``engine.spec``) and is used by the
``Runtime`` (``engine.runtime``) to encode sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from ..errors import ModelSpecError
from ..storage.alphabet import BASES, CODE_N


@dataclass(frozen=True)
class KmerTokenizer:
    """Genomic-ULMFiT tokenisation: k-mers of ``k`` bases every ``stride`` bases, mapped to ids.

    ``vocab`` lists the token strings in id order (the model's ``itos``); by default it is the
    fastai special tokens followed by all 4^k k-mers in lexicographic order. A k-mer absent from the
    vocabulary, or holding an N, maps to ``unk``. ``bos``, when set, is prepended (fastai's xxbos).

    Parameters
    ----------
    k : int
        Bases per k-mer.
    stride : int
        Bases between the starts of consecutive k-mers.
    vocab : sequence of str, optional
        Token strings in id order.
    unk : str
        The unknown token (must be in ``vocab``).
    bos : str or None
        The token prepended to every sequence (must be in ``vocab``).

    Examples
    --------
    >>> import numpy as np
    >>> from interpretome import KmerTokenizer
    >>> tok = KmerTokenizer(k=2, stride=1)
    >>> len(tok.vocab), tok.vocab[9:12]
    (25, ('AA', 'AC', 'AG'))
    >>> tok.encode(np.array([[0, 1, 4, 3]], np.uint8)).tolist()
    [[2, 10, 0, 0]]
    """

    k: int = 5
    stride: int = 2
    vocab: tuple[str, ...] | None = None
    unk: str = "xxunk"
    bos: str | None = "xxbos"

    SPECIALS = ("xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxmaj", "xxup", "xxrep", "xxwrep")

    def __post_init__(self):
        if self.k < 1 or self.stride < 1:
            raise ModelSpecError(f"k-mer tokenizer needs k >= 1 and stride >= 1, got k={self.k} stride={self.stride}")
        if self.vocab is None:
            object.__setattr__(self, "vocab", self.SPECIALS + tuple("".join(p) for p in product(BASES, repeat=self.k)))
        else:
            object.__setattr__(self, "vocab", tuple(self.vocab))
        if self.unk not in self.vocab:
            raise ModelSpecError(f"k-mer vocabulary has no unknown token {self.unk!r}: add it or set unk=")
        if self.bos is not None and self.bos not in self.vocab:
            raise ModelSpecError(f"k-mer vocabulary has no {self.bos!r} token: add it or set bos=None")

    def lookup(self) -> np.ndarray:
        """Return the int64 table mapping a k-mer's base-4 index (0..4^k-1) to its token id."""
        index = {t: i for i, t in enumerate(self.vocab)}
        unk = index[self.unk]
        return np.array([index.get("".join(p), unk) for p in product(BASES, repeat=self.k)], dtype=np.int64)

    def encode(self, codes: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        """Return token ids ``(N, T)`` int64 for base codes ``(N, L)`` uint8 (T = (L-k)//stride+1 [+1 bos])."""
        table = self.lookup() if table is None else table
        codes = np.asarray(codes)
        n, length = codes.shape
        if length < self.k:
            raise ModelSpecError(f"sequence of {length} bp is shorter than the k-mer size {self.k}")
        starts = np.arange(0, length - self.k + 1, self.stride)
        win = codes[:, starts[:, None] + np.arange(self.k)[None, :]].astype(np.int64)  # (N, T, k)
        has_n = (win >= CODE_N).any(-1)
        idx = (np.minimum(win, 3) * (4 ** np.arange(self.k - 1, -1, -1))).sum(-1)
        ids = table[idx]
        ids[has_n] = self.vocab.index(self.unk)
        if self.bos is not None:
            ids = np.concatenate([np.full((n, 1), self.vocab.index(self.bos), np.int64), ids], axis=1)
        return ids

    def token_starts(self, length: int) -> np.ndarray:
        """Return the first base of each (non-bos) token for a sequence of ``length`` bp."""
        return np.arange(0, length - self.k + 1, self.stride)


"""The DNA alphabet, in one place: base codes, text <-> codes, one-hot, reverse complement.

Every layer may import this module (it imports only numpy and ``interpretome.errors``).

* codes: ``uint8`` A, C, G, T, N = 0, 1, 2, 3, 4 (``CODE_N``); padding past a sequence's length
  is ``CODE_N`` too.
* one-hot: channels in ``BASES`` order (A, C, G, T); N and padding are all-zero columns.
* reverse complement: A<->T, C<->G, N stays N, positions reversed.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

BASES = ("A", "C", "G", "T")
"""The order of the one-hot channels and of the ``base`` coordinate."""

ALPHABET = "ACGTN"
"""The letter of each code: ``ALPHABET[code]``."""

CODE_N = 4
"""The uint8 code of N (and of padding) in ``sequence_code``; A,C,G,T are 0..3."""

CODE_INVALID = 255
"""What ``CODE_LUT`` gives for a byte that is not a base letter."""

CODE_LUT = np.full(256, CODE_INVALID, np.uint8)
"""Byte -> code lookup (upper and lower case; anything else ``CODE_INVALID``)."""
for _i, _b in enumerate(ALPHABET):
    CODE_LUT[ord(_b)] = _i
    CODE_LUT[ord(_b.lower())] = _i
del _i, _b

_LETTERS = np.frombuffer(ALPHABET.encode(), np.uint8)

ONEHOT_LUT = np.zeros((CODE_N + 1, len(BASES)), np.float32)
"""Code -> one-hot row ``(5, 4)``: the identity for A,C,G,T, zeros for N."""
ONEHOT_LUT[np.arange(len(BASES)), np.arange(len(BASES))] = 1.0
ONEHOT_LUT.setflags(write=False)


def encode_bases(text: bytes | str, record: str = "?", offset: int = 0) -> np.ndarray:
    """Return uint8 codes for DNA text; raise ``InputError`` naming record and position on a bad base."""
    raw = np.frombuffer(text.encode() if isinstance(text, str) else text, np.uint8)
    codes = CODE_LUT[raw]
    bad = np.flatnonzero(codes == CODE_INVALID)
    if bad.size:
        i = int(bad[0])
        ch = chr(raw[i])
        raise InputError(
            f"record {record!r} has the character {ch!r} at position {offset + i + 1} (1-based), which is "
            f"not A, C, G, T or N (upper or lower case): replace it (e.g. IUPAC codes by N) and rerun"
        )
    return codes


def decode_bases(codes: np.ndarray) -> str:
    """Return the DNA string of uint8 codes (0..4 -> ACGTN)."""
    return _LETTERS[np.asarray(codes)].tobytes().decode()


def is_dna(token: str) -> bool:
    """Whether ``token`` is a non-empty string of the letters A, C, G, T, N (upper case)."""
    return bool(token) and set(token) <= set(ALPHABET)


def one_hot(codes: np.ndarray) -> np.ndarray:
    """Return float32 one-hot ``(N, 4, L)`` of codes ``(N, L)`` (channels A,C,G,T; N all zeros)."""
    return ONEHOT_LUT[np.asarray(codes)].transpose(0, 2, 1).copy()


def reverse_complement(codes: np.ndarray) -> np.ndarray:
    """Return the reverse complement of base codes ``(..., L)`` (A<->T, C<->G, N stays N)."""
    codes = np.asarray(codes)
    return np.where(codes < CODE_N, 3 - codes, CODE_N).astype(np.uint8)[..., ::-1]

"""The one DNA alphabet: codes, text round trip, one-hot, reverse complement."""

from __future__ import annotations

import numpy as np
import pytest

from interpretome.errors import InputError
from interpretome.storage import alphabet as ab


def test_alphabet__codes_round_trip_and_case():
    codes = ab.encode_bases("ACGTNacgtn")
    assert codes.dtype == np.uint8
    assert codes.tolist() == [0, 1, 2, 3, 4] * 2
    assert ab.decode_bases(codes) == "ACGTNACGTN"
    assert ab.BASES == ("A", "C", "G", "T") and ab.CODE_N == 4 and ab.ALPHABET[ab.CODE_N] == "N"
    with pytest.raises(InputError, match=r"record 'r1' has the character 'R' at position 13 \(1-based\)"):
        ab.encode_bases("ACGR", record="r1", offset=9)


def test_alphabet__one_hot_and_reverse_complement():
    codes = np.array([[0, 1, 2, 3, 4]], np.uint8)
    x = ab.one_hot(codes)
    assert x.shape == (1, 4, 5) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :, :4], np.eye(4, dtype=np.float32))
    assert not x[0, :, 4].any()  # N: all-zero column
    assert ab.reverse_complement(codes).tolist() == [[4, 0, 1, 2, 3]]  # N T G C A
    assert ab.decode_bases(ab.reverse_complement(ab.encode_bases("AACGTN"))) == "NACGTT"
    assert ab.is_dna("ACGTN") and not ab.is_dna("xxpad") and not ab.is_dna("")

"""Counter-based random draws keyed by global coordinates.

A draw is a pure function of its key — (seed, sequence, window size, position, replicate, offset
in window) for the perturbation sweep — computed by a SplitMix64-style integer mix. Nothing is
carried from one draw to the next, so results do not depend on chunking, batch size, worker count
or order. The functions use only array-API operations (``xp`` is ``numpy`` or ``cupy`` — found
from the arguments with ``array_api_compat``), so the same code runs on CPU and GPU arrays.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def namespace(*arrays):
    """Return the array namespace (numpy, cupy ...) of ``arrays`` (numpy for Python scalars)."""
    arrays = [a for a in arrays if hasattr(a, "__array_namespace__") or type(a).__module__.startswith("cupy")]
    if not arrays:
        return np
    from array_api_compat import array_namespace

    xp = array_namespace(*arrays)
    return np if xp.__name__.endswith("numpy") else xp


def _u64(x, xp):
    return xp.asarray(x).astype(xp.uint64) if hasattr(x, "shape") else xp.asarray(int(x) & (2**64 - 1), dtype=xp.uint64)


def mix64(x, xp=np):
    """Return the SplitMix64 finaliser of uint64 array ``x`` (a bijection with good avalanche)."""
    x = x ^ (x >> xp.uint64(30))
    x = x * xp.uint64(_M1)
    x = x ^ (x >> xp.uint64(27))
    x = x * xp.uint64(_M2)
    return x ^ (x >> xp.uint64(31))


def hash_keys(seed: int, *keys, xp=None):
    """Return uint64 hashes of the broadcast integer ``keys`` under ``seed``.

    Each key may be a Python int or an integer array (any shape); arrays broadcast. The hash is
    a chain ``h = mix64(h + GOLDEN * (i + 1) ^ key_i)`` over the keys, so permuting keys changes it.
    """
    xp = xp or namespace(*keys)
    with np.errstate(over="ignore"):
        h = mix64(_u64(seed, xp) + xp.uint64(_GOLDEN), xp)
        for i, k in enumerate(keys):
            k = _u64(k, xp)
            h = mix64((h + xp.uint64((_GOLDEN * (i + 2)) & (2**64 - 1))) ^ k, xp)
    return h


def random_bases(seed: int, sequence, window, position, replicate, offset, xp=None):
    """Return uniform random base codes (0..3 = A,C,G,T) as uint8, one per broadcast key.

    Dims: the broadcast shape of the keys (e.g. sequence (S,1,1), position (1,P,1), offset (1,1,K)
    gives (S, P, K)).
    """
    xp = xp or namespace(sequence, window, position, replicate, offset)
    h = hash_keys(seed, 1, sequence, window, position, replicate, offset, xp=xp)
    return (h >> xp.uint64(62)).astype(xp.uint8)


def shuffle_order(seed: int, sequence, window, position, replicate, offset, xp=None):
    """Return, along the last axis, a uniformly random permutation of ``range(len(offset))``.

    ``offset`` is the last-axis index (0..k-1); the permutation is the argsort of one hash per
    offset, so it depends only on the key. Dims: the broadcast shape of the keys (last axis k).
    """
    xp = xp or namespace(sequence, window, position, replicate, offset)
    h = hash_keys(seed, 2, sequence, window, position, replicate, offset, xp=xp)
    return xp.argsort(h, axis=-1)


def uniform(seed: int, *keys, xp=None):
    """Return float64 uniform draws in [0, 1), one per broadcast key."""
    xp = xp or namespace(*keys)
    h = hash_keys(seed, 3, *keys, xp=xp)
    return (h >> xp.uint64(11)).astype(xp.float64) * (1.0 / 2**53)

"""Content digests of input files (``sha256:<hex>``), cached per process.

A neutral module: every layer may import it (it imports only the standard library). The store's
fingerprints, the model digest of a weights file and the job runs' records all use it.
"""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike, _cache: dict = {}) -> str:  # noqa: B006 - process cache
    """Return ``sha256:<hex>`` of a file's bytes (cached per process by path, size and mtime)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _cache[key] = f"sha256:{h.hexdigest()}"
    return _cache[key]


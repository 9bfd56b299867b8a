"""The explicit opt-in for unpickling: one check, one message, for every reader of pickles."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PickleRefusedError


def require_pickle_opt_in(path: str | os.PathLike, trust_pickle: bool, *, what: str, instead: str) -> Path:
    """Return ``path`` as a Path when unpickling it was explicitly allowed and the file exists.

    ``what`` names the file's role in messages ("model", "embedding"); ``instead`` says which safe
    format to convert it to. Raises ``PickleRefusedError`` (an ``InputError`` and a
    ``PermissionError``) without ``trust_pickle`` — unpickling runs arbitrary code from the file —
    and ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not trust_pickle:
        raise PickleRefusedError(
            f"{str(path)!r} is a pickle/joblib file and loading it runs arbitrary code: pass trust_pickle=True "
            f"(--trust-pickle) only for files you trust, or {instead}")
    if not path.exists():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    return path

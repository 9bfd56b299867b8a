"""matplotlib, set up once for every figure module: the Agg backend and saving to files."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """Return ``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 120, *, tight: bool = False) -> Path:
    """Save a matplotlib figure (PNG, or the suffix's format), folders created; close it; return the path.

    ``tight`` crops the figure to its artists (``bbox_inches="tight"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return path

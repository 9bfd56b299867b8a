"""Line numbers of a TOML text's tables and keys (tomllib gives none), for job-file messages."""

from __future__ import annotations

import re

_KEY_RE = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)]


class LineIndex:
    """Line numbers of the tables and keys of a TOML text (tomllib gives none).

    Paths are tuples: ``("model",)``, ``("step", 1)`` for the second ``[[step]]``, ``("step", 1,
    "model")``. ``line(path, key)`` returns the key's line, else the nearest enclosing table's or
    key's line, else 1.
    """

    def __init__(self, text: str):
        self.tables: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        counts: dict[tuple, int] = {}
        current: tuple = ()
        depth = 0
        in_multi = None
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw
            if in_multi:
                if in_multi in line:
                    in_multi = None
                continue
            stripped = line.strip()
            if depth == 0 and stripped.startswith("["):
                is_array = stripped.startswith("[[")
                inner = stripped[2:stripped.find("]]")] if is_array else stripped[1:stripped.find("]")]
                parts = _split_key(inner)
                path: list = []
                for i, part in enumerate(parts):
                    path.append(part)
                    key = tuple(path)
                    last = i == len(parts) - 1
                    if is_array and last:
                        counts[key] = counts.get(key, -1) + 1
                        path.append(counts[key])
                    elif key in counts:
                        path.append(counts[key])
                current = tuple(path)
                self.tables.setdefault(current, no)
                continue
            if depth == 0:
                m = _KEY_RE.match(line)
                if m:
                    parts = _split_key(m.group(1))
                    self.keys.setdefault(current + tuple(parts), no)
                    if len(parts) > 1:
                        self.keys.setdefault(current + (parts[0],), no)
                    rest = line[m.end():]
                else:
                    rest = line
            else:
                rest = line
            depth, in_multi = _scan_value(rest, depth)

    def line(self, path: tuple, key: str | None = None) -> int:
        """Return the line of ``key`` in the table at ``path`` (or the closest enclosing thing)."""
        full = tuple(path) + ((key,) if key is not None else ())
        while full:
            if full in self.keys:
                return self.keys[full]
            if full in self.tables:
                return self.tables[full]
            full = full[:-1]
            if full and isinstance(full[-1], int) and full in self.tables:
                return self.tables[full]
        return 1


def _scan_value(text: str, depth: int) -> tuple[int, str | None]:
    """Return the bracket depth after ``text`` and the open multi-line string delimiter, if any."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            delim = text[i:i + 3]
            end = text.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if c in "\"'":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if (c == '"' and text[end] == "\\") else 1
            i = end + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None


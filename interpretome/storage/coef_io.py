"""Linear-model coefficients in: tables, arrays and fitted scikit-learn models -> ``coefficient``.

Every input becomes a Dataset with ``coefficient`` (model, class, feature) float64, one ``model``
entry per (model name, feature set, model kind):

* ``model_name``  (model) e.g. ``final`` / ``shuffled``;
* ``feature_set`` (model) e.g. ``CP`` / ``DP`` / ``CP_and_DP``;
* ``model_kind``  (model) ``multiclass`` (one multi-class model, a row per class) or ``ovr``
  (one binary one-vs-rest model per class, its single coefficient row under that class);
* ``class_present`` (model, class) and ``feature_present`` (model, feature) bool: which classes
  and features the entry really has (combining entries takes the union; absent cells are NaN).

Sources: CSV / TSV / Parquet tables, **wide** (a class column + one column per feature) or
**tidy** (columns class, feature, coefficient, optionally model_name, feature_set, model_kind);
numpy arrays / ``.npy`` files (class x feature); fitted scikit-learn linear models (anything
with ``coef_``: LogisticRegression, LinearSVC, RidgeClassifier, SGDClassifier ..., and
OneVsRestClassifier), given as objects or as joblib/pickle files — the files are loaded only
with ``trust_pickle=True`` (unpickling runs arbitrary code).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError
from .schema import CLASS, FEATURE, MODEL, validate
from .trust import require_pickle_opt_in

KINDS = ("multiclass", "ovr")
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle", ".jl")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".tab": "\t"}
TIDY_META = ("model_name", "feature_set", "model_kind")


def model_label(name: str, feature_set: str, kind: str) -> str:
    """Return the ``model`` coordinate of an entry: ``name:feature_set:kind``."""
    return f"{name}:{feature_set}:{kind}"


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"model kind {kind!r} is not one of {KINDS}: use 'multiclass' for a multi-class model "
                         f"and 'ovr' for per-class binary one-vs-rest models")
    return kind


def coefficients_dataset(values, classes, features, *, model: str = "final", feature_set: str = "features",
                         kind: str = "multiclass") -> xr.Dataset:
    """Return a one-entry coefficient Dataset from ``values`` (class, feature).

    ``classes`` and ``features`` name the rows and columns (unique, non-empty). Raises
    ``InputError`` on a shape mismatch, duplicate names, an empty table or non-numeric values.
    """
    _check_kind(kind)
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"coefficients of model {model!r} are not numeric ({e}): pass numbers only") from e
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.size == 0:
        raise InputError(f"coefficients of model {model!r} have shape {v.shape}; need a non-empty (class, feature) table")
    classes = [str(c) for c in classes]
    features = [str(f) for f in features]
    if v.shape != (len(classes), len(features)):
        raise InputError(f"coefficients of model {model!r} have shape {v.shape} but {len(classes)} class names and "
                         f"{len(features)} feature names were given: pass one name per row and per column")
    for what, names in (("class", classes), ("feature", features)):
        dup = pd.Index(names)[pd.Index(names).duplicated()]
        if len(dup):
            raise InputError(f"model {model!r} has duplicate {what} names {list(dup[:5])}: make them unique")
    allnan = np.isnan(v).all(axis=0)
    if allnan.any():
        bad = [features[i] for i in np.flatnonzero(allnan)[:5]]
        raise InputError(f"model {model!r} has all-NaN (empty) coefficients for feature(s) {bad}: drop those "
                         f"columns or fill them")
    if np.isnan(v).any():
        r, c = (int(i[0]) for i in np.nonzero(np.isnan(v)))
        raise InputError(f"model {model!r} has {int(np.isnan(v).sum())} NaN coefficient(s), e.g. class {classes[r]!r} "
                         f"feature {features[c]!r}: a fitted linear model has none — fill them (e.g. with 0) or "
                         f"drop the feature")
    if not np.isfinite(v).all():
        raise InputError(f"model {model!r} has infinite coefficients: check the model fit")
    label = model_label(model, feature_set, kind)
    ds = xr.Dataset(
        {"coefficient": ((MODEL, CLASS, FEATURE), v[None])},
        coords={MODEL: [label], CLASS: np.array(classes, dtype=object), FEATURE: np.array(features, dtype=object),
                "model_name": (MODEL, np.array([model], dtype=object)),
                "feature_set": (MODEL, np.array([feature_set], dtype=object)),
                "model_kind": (MODEL, np.array([kind], dtype=object)),
                "class_present": ((MODEL, CLASS), np.ones((1, len(classes)), bool)),
                "feature_present": ((MODEL, FEATURE), np.ones((1, len(features)), bool))})
    return validate(ds)


# --- scikit-learn models ---------------------------------------------------------------------------

def load_pickle(path: str | os.PathLike, *, trust_pickle: bool = False):
    """Return the object in a joblib/pickle file — only with ``trust_pickle=True``.

    Raises ``PermissionError`` without the opt-in (unpickling runs arbitrary code from the file).
    """
    path = require_pickle_opt_in(path, trust_pickle, what="model",
                                 instead="export the coefficients to CSV/Parquet")
    import joblib

    return joblib.load(path)


def _feature_names(est, n: int, features) -> list[str]:
    if features is not None:
        features = [str(f) for f in features]
        if len(features) != n:
            raise InputError(f"{len(features)} feature names were given but the model has {n} coefficients per class")
        return features
    names = getattr(est, "feature_names_in_", None)
    return [str(f) for f in names] if names is not None else [f"feature_{i}" for i in range(n)]


def model_coefficients(est, *, features=None, positive_class=None) -> tuple[np.ndarray, list[str], list[str]]:
    """Return ``(values (class, feature), classes, features)`` of a fitted linear model.

    Multi-class models give one row per ``classes_`` entry; a binary model gives one row named
    after its positive class (``classes_[1]``, or ``positive_class`` when given — the class a
    one-vs-rest model separates). ``OneVsRestClassifier`` gives one row per estimator. Raises
    ``TypeError`` for objects without ``coef_``.
    """
    if hasattr(est, "estimators_") and not hasattr(est, "coef_") and hasattr(est, "classes_"):
        rows = [np.ravel(e.coef_) for e in est.estimators_]
        values = np.stack(rows)
        classes = [str(c) for c in est.classes_]
        if len(classes) == 2 and len(rows) == 1:
            classes = [str(positive_class) if positive_class is not None else classes[1]]
        named = est if hasattr(est, "feature_names_in_") else est.estimators_[0]
        return values, classes, _feature_names(named, values.shape[1], features)
    coef = getattr(est, "coef_", None)
    if coef is None:
        raise TypeError(f"{type(est).__name__} has no coef_: pass a fitted scikit-learn linear model "
                        f"(LogisticRegression, LinearSVC, RidgeClassifier, SGDClassifier, OneVsRestClassifier)")
    values = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    cls = getattr(est, "classes_", None)
    if values.shape[0] == 1:
        if positive_class is not None:
            classes = [str(positive_class)]
        elif cls is not None and len(cls) == 2:
            classes = [str(cls[1])]
        else:
            classes = ["positive"]
    else:
        classes = [str(c) for c in cls] if cls is not None else [f"class_{i}" for i in range(values.shape[0])]
    return values, classes, _feature_names(est, values.shape[1], features)


# --- tables ----------------------------------------------------------------------------------------

def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Return a CSV / TSV / Parquet file as a DataFrame (format from the suffix)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"coefficient table {str(path)!r} does not exist")
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in (".parquet", ".pq") for s in suffixes):
        return pd.read_parquet(path)
    for s in reversed(suffixes):
        if s in TABLE_SUFFIXES:
            return pd.read_csv(path, sep=TABLE_SUFFIXES[s], float_precision="round_trip")
    raise InputError(f"{str(path)!r} has an unknown suffix: use .csv, .tsv, .txt, .parquet (or .npy, .joblib)")


def _from_frame(df: pd.DataFrame, *, model, feature_set, kind, class_col, feature_col, value_col, layout,
                where: str) -> list[xr.Dataset]:
    if df.empty:
        raise InputError(f"coefficient table {where} is empty: pass a table with coefficients")
    tidy = layout == "tidy" or (layout == "auto" and feature_col in df.columns and value_col in df.columns)
    if tidy:
        missing = [c for c in (class_col, feature_col, value_col) if c not in df.columns]
        if missing:
            raise InputError(f"tidy coefficient table {where} has no column(s) {missing}; it has {list(df.columns)}: "
                             f"name them with class_col/feature_col/value_col (--class-col ...)")
        meta = [c for c in TIDY_META if c in df.columns]
        out = []
        groups = df.groupby(meta, sort=False) if meta else [((), df)]
        for key, sub in groups:
            key = key if isinstance(key, tuple) else (key,)
            m = dict(zip(meta, key))
            dup = sub.duplicated([class_col, feature_col])
            if dup.any():
                r = sub[dup].iloc[0]
                raise InputError(f"tidy table {where} repeats class {r[class_col]!r} feature {r[feature_col]!r}"
                                 f"{' for ' + str(m) if m else ''}: keep one row per (class, feature)")
            wide = sub.pivot(index=class_col, columns=feature_col, values=value_col).reindex(
                index=pd.unique(sub[class_col]), columns=pd.unique(sub[feature_col]))  # keep the table's order
            out.append(coefficients_dataset(wide.to_numpy(), wide.index, wide.columns,
                                            model=str(m.get("model_name", model)),
                                            feature_set=str(m.get("feature_set", feature_set)),
                                            kind=str(m.get("model_kind", kind))))
        return out
    if class_col in df.columns:
        df = df.set_index(class_col)
    elif df.index.name == class_col or not isinstance(df.index, pd.RangeIndex):
        pass  # a DataFrame whose index already names the classes
    else:
        first = df.columns[0]
        if df[first].dtype.kind in "fiu":
            raise InputError(f"wide coefficient table {where} has no {class_col!r} column and its first column "
                             f"{first!r} is numeric: add a class column (or pass class_col / --class-col)")
        df = df.set_index(first)
    df = df.drop(columns=[c for c in TIDY_META if c in df.columns])
    bad = [c for c in df.columns if df[c].dtype.kind not in "fiub"]
    if bad:
        raise InputError(f"wide coefficient table {where} has non-numeric feature column(s) {bad[:5]}: drop them "
                         f"or convert them to numbers")
    return [coefficients_dataset(df.to_numpy(dtype=np.float64), df.index, df.columns, model=model,
                                 feature_set=feature_set, kind=kind)]


def read_coefficients(source, *, model: str = "final", feature_set: str = "features", kind: str = "multiclass",
                      classes=None, features=None, positive_class=None, layout: str = "auto",
                      class_col: str = "class", feature_col: str = "feature", value_col: str = "coefficient",
                      trust_pickle: bool = False) -> xr.Dataset:
    """Return the coefficient Dataset of one source (see the module doc).

    ``source``: a path (.csv/.tsv/.txt/.parquet/.npy/.joblib/.pkl), a DataFrame, a numpy array
    (class, feature), or a fitted scikit-learn model. ``model``, ``feature_set`` and ``kind``
    name the entry (a tidy table's own model_name/feature_set/model_kind columns win).
    ``classes``/``features`` name array rows/columns (defaults class_i / feature_i; for models,
    ``feature_names_in_`` or feature_i). ``positive_class`` names the row of a binary model.
    Pickled models load only with ``trust_pickle=True`` (``PermissionError`` otherwise).

    Parameters
    ----------
    source : path, DataFrame, ndarray or estimator
        The coefficients.
    model, feature_set, kind : str
        The entry's ``model_name``, ``feature_set`` and ``model_kind``.
    classes, features : sequence of str, optional
        Row / column names of an array.
    positive_class : str, optional
        The row name of a binary model.
    layout : str
        A table's layout (``auto``: detected; module doc).
    class_col, feature_col, value_col : str
        A tidy table's columns.
    trust_pickle : bool
        Allow pickled models to load.

    Returns
    -------
    Dataset
        ``coefficient`` (model, class, feature) float64, with ``model_name``, ``feature_set``,
        ``model_kind`` (model,), ``class_present`` (model, class) and ``feature_present`` (model,
        feature) coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> ds = it.read_coefficients(np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]]), classes=["B", "T"],
    ...                           features=["g1", "g2", "g3"])
    >>> dict(ds.sizes), ds["model"].values.tolist()
    ({'model': 1, 'class': 2, 'feature': 3}, ['final:features:multiclass'])
    >>> float(ds["coefficient"].sel({"class": "T", "feature": "g3"}).item())
    2.0
    """
    if layout not in ("auto", "wide", "tidy"):
        raise ValueError(f"layout {layout!r} is not 'auto', 'wide' or 'tidy'")
    kw = dict(model=model, feature_set=feature_set, kind=kind)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            est = load_pickle(path, trust_pickle=trust_pickle)
            v, c, f = model_coefficients(est, features=features, positive_class=positive_class)
            return coefficients_dataset(v, c, f, **kw)
        if suffix == ".npy":
            if not path.exists():
                raise FileNotFoundError(f"coefficient array {str(path)!r} does not exist")
            return read_coefficients(np.load(path, allow_pickle=False), classes=classes, features=features, **kw)
        frames = _from_frame(read_table(path), class_col=class_col, feature_col=feature_col, value_col=value_col,
                             layout=layout, where=repr(str(path)), **kw)
        return combine_coefficients(frames)
    if isinstance(source, pd.DataFrame):
        return combine_coefficients(_from_frame(source, class_col=class_col, feature_col=feature_col,
                                                value_col=value_col, layout=layout, where="(DataFrame)", **kw))
    if hasattr(source, "coef_") or hasattr(source, "estimators_"):
        v, c, f = model_coefficients(source, features=features, positive_class=positive_class)
        return coefficients_dataset(v, c, f, **kw)
    arr = np.asarray(source)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"a coefficient array must be (class, feature), got shape {arr.shape}")
    classes = classes if classes is not None else [f"class_{i}" for i in range(arr.shape[0])]
    features = features if features is not None else [f"feature_{i}" for i in range(arr.shape[1])]
    return coefficients_dataset(arr, classes, features, **kw)


def combine_coefficients(parts: list[xr.Dataset]) -> xr.Dataset:
    """Return one coefficient Dataset from several (union of classes and features, NaN elsewhere).

    Entries with the same (model_name, feature_set, model_kind) are merged along ``class`` — the
    per-class binary models of one one-vs-rest set — which requires equal feature sets and no
    shared class. Raises ``InputError`` on a repeated class or differing features.

    Parameters
    ----------
    parts : list of Dataset
        ``read_coefficients`` results.

    Returns
    -------
    Dataset
        ``coefficient`` (model, class, feature) over the union of classes and features, with the
        coordinates of ``read_coefficients`` (``class_present`` / ``feature_present`` false where an
        entry lacks a class or feature).

    Examples
    --------
    >>> import numpy as np
    >>> import interpretome as it
    >>> names = dict(features=["g1", "g2", "g3"])
    >>> multi = it.read_coefficients(np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]]), classes=["B", "T"], **names)
    >>> ovr = [it.read_coefficients(np.array([[2.0, -3.0, 1.0]]), kind="ovr", classes=["B"], **names),
    ...        it.read_coefficients(np.array([[0.5, 1.0, 3.0]]), kind="ovr", classes=["T"], **names)]
    >>> ds = it.combine_coefficients([multi] + ovr)
    >>> dict(ds.sizes), ds["model_kind"].values.tolist()
    ({'model': 2, 'class': 2, 'feature': 3}, ['multiclass', 'ovr'])
    >>> ds["class_present"].values.tolist()
    [[True, True], [True, True]]
    """
    if not parts:
        raise InputError("no coefficients were given: pass at least one table, array or model")
    by_label: dict[str, list[xr.Dataset]] = {}
    for p in parts:
        for m in p[MODEL].values:
            by_label.setdefault(str(m), []).append(p.sel({MODEL: [m]}))
    merged = []
    for label, group in by_label.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        feats = [set(g[FEATURE].values[g["feature_present"].values[0]]) for g in group]
        for f in feats[1:]:
            if f != feats[0]:
                raise InputError(
                    f"the parts of model {label!r} have different features (e.g. {sorted(f ^ feats[0])[:5]} "
                    f"are in one but not the other): give every binary model of a set the same features")
        seen: set = set()
        rows = []
        for g in group:
            cls = [c for c, ok in zip(g[CLASS].values, g["class_present"].values[0]) if ok]
            dup = seen.intersection(cls)
            if dup:
                raise InputError(f"class(es) {sorted(dup)} of model {label!r} are given twice: give each class once")
            seen.update(cls)
            rows.append(g.sel({CLASS: cls}))
        merged.append(xr.concat(rows, dim=CLASS, join="outer", data_vars="all", coords="different",
                                compat="equals", fill_value={"class_present": False, "feature_present": False}))
    out = xr.concat(merged, dim=MODEL, join="outer", data_vars="all", coords="different", compat="equals",
                    fill_value={"coefficient": np.nan, "class_present": False, "feature_present": False})
    for c in ("class_present", "feature_present"):
        out[c] = out[c].astype(bool)
    for c in ("model_name", "feature_set", "model_kind"):
        out[c] = out[c].astype(object)
    return validate(out)


def coefficients_to_frame(ds: xr.Dataset) -> pd.DataFrame:
    """Return the tidy table (model_name, feature_set, model_kind, class, feature, coefficient) of present cells."""
    rows = []
    for m in range(ds.sizes[MODEL]):
        e = ds.isel({MODEL: m})
        cp = e["class_present"].values
        fp = e["feature_present"].values
        vals = np.asarray(e["coefficient"].values)[np.ix_(cp, fp)]
        cls = e[CLASS].values[cp]
        fts = e[FEATURE].values[fp]
        df = pd.DataFrame({"class": np.repeat(cls, len(fts)), "feature": np.tile(fts, len(cls)),
                           "coefficient": vals.ravel()})
        df.insert(0, "model_kind", str(e["model_kind"].values))
        df.insert(0, "feature_set", str(e["feature_set"].values))
        df.insert(0, "model_name", str(e["model_name"].values))
        rows.append(df)
    return pd.concat(rows, ignore_index=True)

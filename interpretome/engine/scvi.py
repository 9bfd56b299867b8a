"""scvi-tools models as interpretome models: the classifier path that scvi-tools itself attributes.

``ModelSpec.from_scvi(dir)`` (its fields from ``spec_fields(dir)`` here) reads a directory written
by ``model.save(dir)`` of a scvi-tools model with a classifier (SCANVI) and returns a dense-input
``ModelSpec`` whose model is ``module.classify`` — the encoder's posterior mean followed by the
classifier, returning logits — exactly what ``model.predict(ig_interpretability=True)``
attributes with captum's Integrated Gradients. The spec carries:

* ``targets``: the label mapping without the unlabeled category (the classifier's outputs);
* ``layer``: the registered AnnData layer (``None`` for ``X``), read from the h5ad;
* ``feature_names``: the saved ``var_names`` (``attribute`` refuses inputs whose genes differ);
* ``covariates``: the registered batch key, then the continuous and the categorical covariate
  keys, each passed per cell from ``obs`` (categorical ones as codes of their saved
  ``covariate_categories``).

scvi-tools saves ``model.pt`` as a full pickle (it loads it with ``weights_only=False``), so the
directory is read only with ``trust_pickle=True``. scvi-tools itself is needed (``pip install
'interpretome[scvi]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelSpecError


def _require_scvi():
    try:
        import scvi  # noqa: F401
    except ImportError as e:
        raise ModelSpecError(f"scvi-tools models need scvi-tools: pip install 'interpretome[scvi]' ({e})") from e


def read_saved(model_dir: str | os.PathLike, *, trust_pickle: bool = False) -> dict:
    """Return ``model.pt`` of a scvi-tools model directory (keys ``model_state_dict``, ``var_names``, ``attr_dict``).

    Raises ``ModelSpecError`` without ``trust_pickle`` (the file is a full pickle), or when the
    directory has no ``model.pt``.
    """
    import torch

    path = Path(model_dir) / "model.pt"
    if not path.is_file():
        raise ModelSpecError(f"{str(model_dir)!r} is not a scvi-tools model directory (no model.pt): pass the "
                             f"folder written by model.save(dir)")
    if not trust_pickle:
        raise ModelSpecError(f"{str(path)!r} is a full pickle (scvi-tools saves and loads it with "
                             f"weights_only=False): only if you trust it, pass trust_pickle=True (--trust-pickle)")
    return torch.load(path, map_location="cpu", weights_only=False)


def _registry(saved: dict) -> dict:
    return saved["attr_dict"]["registry_"]


def _covariate_layout(registry: dict) -> tuple[list[str], dict[str, list[str]], int, int]:
    """Return ``(obs columns, categories, n continuous, n categorical)`` of the registered covariates."""
    fields = registry["field_registries"]
    setup = registry["setup_args"]
    cols, cats = [], {}
    batch_key = setup.get("batch_key")
    if batch_key is not None:
        cols.append(batch_key)
        cats[batch_key] = [str(c) for c in fields["batch"]["state_registry"]["categorical_mapping"]]
    cont = list(setup.get("continuous_covariate_keys") or [])
    cols += cont
    cat_keys = list(setup.get("categorical_covariate_keys") or [])
    if cat_keys:
        mappings = fields["extra_categorical_covs"]["state_registry"]["mappings"]
        for k in cat_keys:
            cols.append(k)
            cats[k] = [str(c) for c in mappings[k]]
    return cols, cats, len(cont), len(cat_keys)


FACTORY = "interpretome.engine.scvi:scvi_classifier"
"""The factory of every spec ``ModelSpec.from_scvi`` makes (the model's input: the registered counts layer)."""


def spec_fields(model_dir: str | os.PathLike, *, trust_pickle: bool = False, use_posterior_mean: bool = True) -> dict:
    """Return the fields of the dense-input ``ModelSpec`` of a saved scvi-tools classifier model (see the module doc)."""
    _require_scvi()
    saved = read_saved(model_dir, trust_pickle=trust_pickle)
    reg = _registry(saved)
    fields = reg["field_registries"]
    if "labels" not in fields or not fields["labels"].get("state_registry"):
        raise ModelSpecError(f"the scvi-tools model in {str(model_dir)!r} ({reg.get('model_name')}) has no labels: "
                             f"only models with a classifier (e.g. SCANVI) can be attributed")
    labels = fields["labels"]["state_registry"]
    unlabeled = labels.get("unlabeled_category")
    targets = tuple(str(c) for c in labels["categorical_mapping"] if unlabeled is None or str(c) != str(unlabeled))
    cols, cats, _, _ = _covariate_layout(reg)
    fields_ = dict(factory=FACTORY,
                   kwargs={"model_dir": str(Path(model_dir).resolve()), "use_posterior_mean": bool(use_posterior_mean)},
                   input_kind="dense", targets=targets, trust_pickle=True, layer=reg["setup_args"].get("layer"),
                   feature_names=tuple(str(v) for v in saved["var_names"]), covariates=tuple(cols),
                   covariate_categories=cats,
                   weights_sha256=_file_sha256(Path(model_dir) / "model.pt"))
    return fields_


def _file_sha256(path) -> str:
    from ..storage.digests import file_digest

    return file_digest(str(path)).split(":", 1)[1]


def _load_model(model_dir: str):
    """Return the loaded scvi-tools model, built on a one-cell AnnData made from its registry (no data needed)."""
    import anndata
    import numpy as np
    import pandas as pd
    import scvi

    saved = read_saved(model_dir, trust_pickle=True)
    reg = _registry(saved)
    setup = reg["setup_args"]
    fields = reg["field_registries"]
    var_names = [str(v) for v in saved["var_names"]]
    obs = {}
    labels = fields["labels"]["state_registry"]
    unlabeled = labels.get("unlabeled_category")
    obs[setup["labels_key"]] = [str(unlabeled if unlabeled is not None else labels["categorical_mapping"][0])]
    cols, cats, n_cont, _ = _covariate_layout(reg)
    cont = set((setup.get("continuous_covariate_keys") or []))
    for c in cols:
        obs[c] = [0.0] if c in cont else [cats[c][0]]
    obs_df = pd.DataFrame(obs, index=["cell0"])
    for c in obs_df.columns:
        if c not in cont:
            obs_df[c] = pd.Categorical(obs_df[c])
    x = np.ones((1, len(var_names)), np.float32)
    ad = anndata.AnnData(x, obs=obs_df, var=pd.DataFrame(index=var_names))
    if setup.get("layer"):
        ad.layers[setup["layer"]] = x.copy()
    cls = getattr(scvi.model, reg["model_name"])
    return cls.load(model_dir, adata=ad, accelerator="cpu")


def scvi_classifier(model_dir: str, use_posterior_mean: bool = True):
    """Return an ``nn.Module`` ``(x, *covariates) -> logits``: ``module.classify`` of the saved scvi-tools model.

    ``x`` ``(N, genes)`` is the registered layer's values; the covariates are ``(N, 1)`` tensors
    in the spec's order (batch code, continuous values, categorical codes).
    """
    import torch
    import torch.nn as nn

    model = _load_model(model_dir)
    _, _, n_cont, n_cat = _covariate_layout(_registry(read_saved(model_dir, trust_pickle=True)))
    has_batch = _registry(read_saved(model_dir, trust_pickle=True))["setup_args"].get("batch_key") is not None

    class ScviClassify(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x, *covs):
            covs = list(covs)
            batch = covs.pop(0) if has_batch else torch.zeros(x.shape[0], 1, device=x.device)
            cont = torch.cat(covs[:n_cont], dim=1) if n_cont else None
            cat = torch.cat(covs[n_cont:n_cont + n_cat], dim=1).long() if n_cat else None
            return self.module.classify(x, batch_index=batch, cont_covs=cont, cat_covs=cat,
                                        use_posterior_mean=use_posterior_mean)

    return ScviClassify(model.module).eval()

"""The rows of a model's ``nn.Embedding`` as items to embed (k-mer vocabularies and the like).

``from_embedding_layer(spec)`` builds the model of a ``ModelSpec`` in this process (the one
``model_digest(spec)`` describes) and returns its embedding weight as ``item_vector`` (item,
feature), one row per token, ``item`` = the vocabulary (k-mer strings). It lives in tasks, not
storage, because it builds a model; ``storage.embedding_io`` reads files only.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..engine.models import KmerTokenizer, get_runtime, load_spec
from ..errors import InputError
from ..storage.embedding_io import first_bases
from ..storage.schema import FEATURE, ITEM


def from_embedding_layer(model, *, layer: str | None = None, vocab=None) -> xr.Dataset:
    """Return ``item_vector`` (item, feature) = the weight of an ``nn.Embedding`` of ``model``.

    ``model`` is a ModelSpec (or anything ``load_spec`` takes) or a built ``torch.nn.Module``.
    ``layer`` names the embedding module (``model.named_modules()`` name); by default the only
    ``nn.Embedding``. ``item`` is the vocabulary: ``vocab``, else the spec's k-mer tokenizer
    vocabulary, else the token ids. Also sets ``item_label`` to the first base of each k-mer.

    Parameters
    ----------
    model : ModelSpec, str, dict or torch.nn.Module
        The model holding the embedding.
    layer : str, optional
        The ``nn.Embedding``'s module name.
    vocab : sequence of str, optional
        One name per embedding row.

    Returns
    -------
    Dataset
        ``item_vector`` (item, feature) float32 [and ``item_label`` (item,)].

    Examples
    --------
    >>> import torch
    >>> import interpretome as it
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Flatten())
    >>> ds = it.from_embedding_layer(model, vocab=["AA", "AC", "GA", "TT"])
    >>> dict(ds.sizes), ds["item"].values.tolist()
    ({'item': 4, 'feature': 3}, ['AA', 'AC', 'GA', 'TT'])
    >>> bool((ds["item_vector"].values == model[0].weight.detach().numpy()).all())
    True
    """
    import torch.nn as nn

    if isinstance(model, nn.Module):
        module, spec_vocab = model, None
    else:
        spec = load_spec(model)
        module = get_runtime(spec).model  # this process's model: the one model_digest(spec) describes
        spec_vocab = spec.kmer.vocab if getattr(spec, "kmer", None) is not None else None
    found = {name: m for name, m in module.named_modules() if isinstance(m, nn.Embedding)}
    if not found:
        raise InputError(f"the model has no nn.Embedding layer (modules: {[n for n, _ in module.named_modules()][:8]}); "
                         f"embed another input (npy, zarr, h5ad)")
    if layer is None:
        if len(found) > 1:
            raise InputError(f"the model has several nn.Embedding layers {sorted(found)}: pick one with layer=")
        layer = next(iter(found))
    if layer not in found:
        raise InputError(f"layer {layer!r} is not an nn.Embedding of the model; its embeddings are {sorted(found)}")
    weight = found[layer].weight.detach().cpu().numpy().astype(np.float32)
    n = weight.shape[0]
    tokens = list(vocab) if vocab is not None else (list(spec_vocab) if spec_vocab is not None else None)
    if tokens is None:
        default = KmerTokenizer().vocab
        tokens = list(default) if len(default) == n else [str(i) for i in range(n)]
    if len(tokens) != n:
        raise InputError(f"the vocabulary has {len(tokens)} tokens but embedding {layer!r} has {n} rows: pass "
                         f"the model's own vocabulary (itos) as vocab=")
    ds = xr.Dataset({"item_vector": ((ITEM, FEATURE), weight),
                     "item_label": ((ITEM,), first_bases(tokens, 1).astype(str))},
                    coords={ITEM: np.asarray(tokens, dtype=str)})
    ds.attrs["source"] = f"nn.Embedding {layer}"
    return ds

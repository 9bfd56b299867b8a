"""The public face of the model API: one import for everything a task, job or test needs of a model.

Nothing is defined here; each idea lives in its own module and is re-exported:

==============================  ====================================================================
module                          holds
==============================  ====================================================================
``engine.spec``                 ``ModelSpec`` (what a model is; factory, kwargs, weights, identity),
                                ``load_spec``, ``INPUT_KINDS``
``engine.tokenize``             ``KmerTokenizer`` (Genomic-ULMFiT k-mer ids)
``engine.runtime``              ``Runtime`` (one per worker process and spec: encoding, ``predict``,
                                ``predict_edits``, ``probe``), ``get_runtime``, ``clear_runtimes``,
                                ``model_digest``, ``state_digest``, ``check_model``
``engine.heads``                output normalisation, activation, target selection and finiteness:
                                ``OutputHead``, ``first_output``, ``activate``, ``require_finite``,
                                ``outputs_of``, ``item_name``, ``ACTIVATIONS``
``engine.receptive_field``      ``local_split`` and the fast path of ``Runtime.predict_edits``
``interpretome.errors``         ``ModelSpecError``, ``ModelOutputError``, ``NonFiniteOutputError``
==============================  ====================================================================
"""

from __future__ import annotations

from ..errors import ModelOutputError, ModelSpecError, NonFiniteOutputError
from .heads import ACTIVATIONS, OutputHead, activate, first_output, item_name, outputs_of, require_finite
from .receptive_field import local_split
from .runtime import Runtime, check_model, clear_runtimes, get_runtime, model_digest, state_digest
from .spec import INPUT_KINDS, ModelSpec, load_spec
from .tokenize import KmerTokenizer

__all__ = ["ACTIVATIONS", "INPUT_KINDS", "KmerTokenizer", "ModelOutputError", "ModelSpec", "ModelSpecError",
           "NonFiniteOutputError", "OutputHead", "Runtime", "activate", "check_model", "clear_runtimes",
           "first_output", "get_runtime", "item_name", "load_spec", "local_split", "model_digest", "outputs_of",
           "require_finite", "state_digest"]

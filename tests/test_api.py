"""The Python API is the command line's twin: every analysis and reader in ``interpretome.*``,
numpydoc docstrings whose Examples run (as doctests, on the shipped demo data)."""

from __future__ import annotations

import doctest
import inspect

import pytest

import interpretome as it

ANALYSES = tuple(n for n in it.__all__ if n != "__version__")
"""Every exported callable (functions and classes): its numpydoc sections are checked and its Examples run."""

EXPORTED = ("read_fasta", "read_h5ad", "read_images", "read_genome", "read_annotation", "read_coefficients",
            "read_embedding_input", "from_embedding_layer", "perturbation_sweep", "saturation_mutagenesis",
            "predict_tiles", "genome_sweep", "genome_ism", "attribute", "fastshap", "summarize_attributions",
            "embed", "clustering_scores", "summarize_folds", "compare_coefficients", "all_pairs_ccc", "genomap",
            "write_dataset", "open_group", "connect")


def test_api__every_analysis_and_reader_is_exported():
    missing = [n for n in EXPORTED if not callable(getattr(it, n, None))]
    assert not missing and set(EXPORTED) <= set(it.__all__), missing
    from interpretome.jobs.registry import job_kinds

    # each job kind's function calls a task exported here (the runner modules import them by name)
    assert {"attribute", "embed", "clustering_scores", "perturbation_sweep", "saturation_mutagenesis",
            "predict_tiles", "genome_ism", "genome_sweep", "compare_coefficients", "all_pairs_ccc"} <= set(it.__all__)
    assert len(job_kinds()) >= 10


@pytest.mark.parametrize("name", ANALYSES)
def test_api__docstring_is_numpydoc_and_its_examples_run(name):
    obj = getattr(it, name)
    assert callable(obj), name
    doc = obj.__doc__ or ""
    # a class documents its constructor's Parameters and an Example; a function also what it Returns
    sections = ("Parameters", "Examples") if inspect.isclass(obj) else ("Parameters", "Returns", "Examples")
    for section in sections:
        assert f"{section}\n    {'-' * len(section)}" in doc, f"{name}: no {section} section"
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 2 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_api__connect_reuses_a_running_client():
    import distributed

    with distributed.Client(processes=False, dashboard_address=None) as running:
        assert it.connect() is running and distributed.default_client() is running

"""The declared registry: every variable and dimension in storage/schema.py, once, known on import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import interpretome
from interpretome.storage import schema

ROOT = Path(interpretome.__file__).parent


def test_schema__register_is_called_in_schema_only():
    calls = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "storage" / "schema.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func  # register(...) or schema.register(...); CLI modules' register(subparsers) is another thing
            if (isinstance(f, ast.Name) and f.id == "register") or (
                    isinstance(f, ast.Attribute) and f.attr == "register" and getattr(f.value, "id", "") == "schema"):
                calls.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert not calls, f"variables registered outside storage/schema.py: {calls}"


def test_schema__the_registry_does_not_grow_when_modules_are_imported():
    code = ("import interpretome.storage.schema as s; n = len(s.REGISTRY); import interpretome, interpretome.cli; "
            "import pkgutil, importlib; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(interpretome.__path__, 'interpretome.') "
            "if not m.name.endswith('__main__')]; "
            "print(n, len(s.REGISTRY))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == out[1], f"schema alone knows {out[0]} variables, after importing everything {out[1]}"


def test_schema__every_dimension_declared_and_names_unique():
    for var in schema.REGISTRY.values():
        assert set(var.dims) <= schema.DIMENSIONS, var
    with pytest.raises(ValueError, match="already registered"):
        schema.register("sequence_code", (schema.SEQUENCE, schema.POSITION), "u", "again, same definition")
    with pytest.raises(ValueError, match="already registered"):
        schema.register("track_prediction", (schema.CONTIG,), "f", "another definition")
    with pytest.raises(ValueError, match="undeclared dimensions \\['nope'\\]"):
        schema.register("brand_new_variable", ("nope",), "f", "bad dims")
    assert "brand_new_variable" not in schema.REGISTRY


def test_schema__require_checks_a_renamed_input_against_its_spec():
    ds = xr.Dataset({"codes": (("sequence", "position"), np.zeros((2, 3), np.uint8)),
                     "wrong": (("sequence", "position"), np.zeros((2, 3), np.float32))})
    assert schema.require(ds, "codes", "sequence_code", "read_fasta").dtype == np.uint8
    with pytest.raises(ValueError, match="'wrong' \\(standing for 'sequence_code'\\) has dtype float32"):
        schema.require(ds, "wrong", "sequence_code", "read_fasta")
    with pytest.raises(ValueError, match="has no \\['missing'\\]: build it with read_fasta"):
        schema.require(ds, "missing", "sequence_code", "read_fasta")


def test_schema__annotate_gives_every_variable_its_declared_attrs():
    for spec in [*schema.REGISTRY.values(), *schema.COORDINATES.values(), *schema.DIMENSION_SPECS.values()]:
        assert spec.doc and (spec.long_name or isinstance(spec, schema.Variable)), spec
    ds = xr.Dataset({"gene_start": ("feature", np.array([3, 7])), "gene_strand": ("feature", np.array(["+", "-"]))},
                    coords={"feature": ["g1", "g2"], "n_genes": ("feature", [1, 2]), "position": [0, 1]})
    ds["position"].attrs["description"] = "offsets from each region start"  # a task's own, more specific one
    out = schema.annotate(ds)
    assert out["gene_start"].attrs == {"description": "first base of the gene, 0-based", "long_name": "gene start",
                                       "units": "bp", "convention": "0-based, half-open interval [start, end)"}
    assert out["gene_strand"].attrs["convention"] == "'+' forward strand, '-' reverse strand, '.' unstranded"
    assert out["feature"].attrs["long_name"] == "feature" and out["feature"].attrs["description"].startswith("input feature")
    assert out["position"].attrs == {"description": "offsets from each region start", "long_name": "position",
                                     "units": "bp", "convention": "0-based"}
    assert out["n_genes"].attrs["description"] == "n_genes: carried from the input (its own column, along feature)"
    assert ds["gene_start"].attrs == {}  # the input is not changed
    with pytest.raises(ValueError, match="already declared"):
        schema.dimension("sequence", "again", "twice")
    with pytest.raises(ValueError, match="already declared"):
        schema.coordinate("region_start", "again", "twice")
    with pytest.raises(ValueError, match="already declared"):
        schema.coordinate("gene_start", "a variable", "not a coordinate too")

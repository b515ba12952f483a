"""The mutation catalog stays meaningful: every mutant still applies to exactly one place, yields
code that compiles, and changes something; the catalog covers the areas the suite certifies."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mutant_catalog", REPO / "scripts" / "mutants" / "catalog.py")
catalog = importlib.util.module_from_spec(_spec)
sys.modules["mutant_catalog"] = catalog
_spec.loader.exec_module(catalog)


@pytest.mark.parametrize("mutant", catalog.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_once_and_compiles(mutant):
    mutated = catalog.mutated_text(REPO, mutant)
    assert mutated != (REPO / mutant.file).read_text(), f"{mutant.name}: the edit changes nothing"
    compile(mutated, mutant.file, "exec")


def test_mutant_names_are_unique():
    names = [m.name for m in catalog.MUTANTS]
    assert len(names) == len(set(names))


def test_a_stale_anchor_is_reported_with_the_file_and_what_to_do(tmp_path):
    (tmp_path / "x.py").write_text("a = 1\n")
    stale = catalog.Mutant("gone", "test", False, "x.py", "b = 2\n", "b = 3\n")
    with pytest.raises(catalog.AnchorError, match=r"occurs 0 times in x.py .*update scripts/mutants/catalog.py"):
        catalog.mutated_text(tmp_path, stale)


def test_the_catalog_covers_each_area_the_suite_certifies():
    areas = {m.area for m in catalog.MUTANTS}
    assert len(catalog.MUTANTS) >= 25
    assert {"hbone-identity", "l4-authz", "scope", "peerauth", "ca", "xds", "drain", "waypoint", "jwt",
            "routing"} <= areas

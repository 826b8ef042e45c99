"""The presentation layers point down: meaning → present → report → renderers → export → cli."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT

# Each presentation module and the trialdiff modules it may import (at the top or inside a
# function): only modules of lower layers, never a sibling renderer, export or the CLI.
# `registry` is the table of what is ClinicalTrials.gov's (the atom feed takes the study URL
# from it); it imports only `fields` at run time.
BELOW = {"errors", "fields", "model", "meaning", "render", "worddiff", "diff", "normalize",
         "registry"}
ALLOWED = {
    "present": BELOW,
    "report": BELOW | {"present"},
    "terminal": BELOW | {"present", "report"},
    "markdown": BELOW | {"present", "report"},
    "atom": BELOW | {"present", "report"},
    "jsoncsv": BELOW | {"present", "report"},
    "export": BELOW | {"present", "report", "terminal", "markdown", "atom", "jsoncsv"},
}


def imported(module: str) -> set[str]:
    """Return the trialdiff modules a module imports, wherever in it the import stands."""
    tree = ast.parse((ROOT / "trialdiff" / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add((node.module or "").split(".")[0] or "__init__")
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names]
            found |= {n.split(".")[1] for n in names if n.startswith("trialdiff.")}
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_presentation_modules_import_only_lower_layers(module: str) -> None:
    assert imported(module) <= ALLOWED[module], imported(module) - ALLOWED[module]


def test_presentation_modules_stay_readable_in_one_sitting() -> None:
    for module in ALLOWED:
        lines = (ROOT / "trialdiff" / f"{module}.py").read_text(encoding="utf-8").count("\n")
        assert lines < 400, (module, lines)

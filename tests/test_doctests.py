"""The examples in the docstrings of ``core`` and ``scripts`` run, and say what the code does."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import core

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(["core"] + [m.name for m in pkgutil.walk_packages(core.__path__, "core.")
                            if not m.name.endswith("__main__")]  # importing it runs the command line
                 + [f"scripts.{p.stem}" for p in (ROOT / "scripts").glob("*.py")])


def _module(name: str):
    if name.startswith("scripts."):
        sys.path.insert(0, str(ROOT / "scripts"))
        return importlib.import_module(name.split(".", 1)[1])
    return importlib.import_module(name)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run pytest -s to see them)"


def test_the_examples_are_there_to_run():
    """More than a hundred examples, so the test above cannot pass by finding none."""
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES for t in finder.find(_module(name)))
    assert examples > 100

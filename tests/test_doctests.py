"""Every docstring example in the project's packages runs and gives what it shows.

The examples are the small, checkable statements of formulas and name rules (logicle's
scale points, the name key, marker spellings ...); a module whose example stops being
true fails here, in ``make test``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("assays", "gating", "storage", "flows", "reports", "simulators")


def _modules() -> list[str]:
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_the_packages_hold_examples():
    """The doctests above are not vacuous: the packages hold examples, several modules of them."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    counts = {}
    for name in MODULES:
        module = importlib.import_module(name)
        counts[name] = sum(len(t.examples) for t in finder.find(module, name))
    with_examples = [n for n, c in counts.items() if c]
    assert sum(counts.values()) > 10 and len(with_examples) >= 5, counts
    assert counts["gating.transforms"] >= 3 and counts["assays.names"] >= 3

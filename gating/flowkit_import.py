"""Import flowkit without its plotting stack until a plot (or a ``Sample``) is asked for.

flowkit's ``__init__`` imports every public name eagerly, and ``flowkit.Sample`` pulls
bokeh and ``scipy.stats`` (through ``flowkit._utils.plot_utils``): about 2 s of a 3 s
import on this machine class, paid by every run that gates a file although graftwatch
gates with its own evaluator and only needs flowkit's gate, transform and Gating-ML
classes (docs/performance.md).

:func:`install` puts a ``flowkit`` package object in ``sys.modules`` whose public names
are the same as the real package's, resolved on first access (PEP 562 module
``__getattr__``): ``fk.GatingStrategy`` imports ``flowkit._models.gating_strategy`` only,
``fk.Sample`` or ``fk.Session`` import the plotting stack as before. The name -> submodule
map is read from flowkit's own ``__init__.py`` (its relative imports), so it follows the
installed flowkit version rather than a copy of it.

pandas is deferred too (:func:`deferred_module`): flowkit's gate, transform and Gating-ML
modules import it at the top but use it only in methods graftwatch never calls (results
as DataFrames). It is ~0.5 s of the import, paid before the first file could start; now it
loads on first real use (pyarrow converting a file's rows, in a worker thread, while the
other worker computes).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import sys
import types


def _public_names(package: str, init_source: str) -> dict[str, tuple[str, str | None]]:
    """``{name: (submodule, attribute or None for the submodule itself)}`` of ``init_source``.

    Only the package's relative imports (``from .x import A``, ``from . import y``) are
    taken: that is all flowkit's ``__init__`` files do besides ``__all__``.
    """
    names: dict[str, tuple[str, str | None]] = {}
    for node in ast.parse(init_source).body:
        if not (isinstance(node, ast.ImportFrom) and node.level == 1):
            continue
        for alias in node.names:
            bound = alias.asname or alias.name
            if node.module:
                names[bound] = (f"{package}.{node.module}", alias.name)
            else:
                names[bound] = (f"{package}.{alias.name}", None)
    return names


# flowkit itself (its Sample pulls bokeh and scipy.stats) and its transforms package (the
# FlowJo WSP transforms pull scipy.interpolate, ~0.5-2 s; Gating-ML needs none of them),
# each with the module its first name resolution imports before anything else:
# _utils.xml_utils and _models.gates._gml_gates import each other, and only the import
# that starts from xml_utils succeeds (flowkit's own __init__ imports it before any
# module reaching _gml_gates; fk.Workspace first would fail with an ImportError
# naming GMLBooleanGate).
LAZY_PACKAGES = (("flowkit", "flowkit._utils.xml_utils"), ("flowkit._models.transforms", None))
# Imported at the top of flowkit's modules, used only inside methods graftwatch does not call.
DEFERRED_BY_FLOWKIT = ("pandas",)


@contextlib.contextmanager
def deferred_module(name: str):
    """While the block runs, ``import name`` binds a stand-in that imports the real module
    on its first attribute access; afterwards ``import name`` is the ordinary import again.

    The stand-in leaves ``sys.modules`` when the block ends (or at its first attribute
    access, whichever comes first), so only the modules imported inside the block hold
    it; each access through it returns the real module's attribute. Nothing happens when
    the module is already imported.
    """
    if name in sys.modules:
        yield
        return
    spec = importlib.util.find_spec(name)
    if spec is None:  # not installed: the block's own import says so
        yield
        return
    stand_in = types.ModuleType(name, f"{name}, imported on first use (gating.flowkit_import)")
    # Libraries ask "is pandas installed?" with importlib.util.find_spec, which reads the
    # __spec__ of what sys.modules holds (bokeh does, while flowkit builds a Workspace).
    stand_in.__spec__ = spec

    def _release() -> None:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]

    def __getattr__(attr: str):
        _release()  # the import below must find the real module, not this one
        return getattr(importlib.import_module(name), attr)

    stand_in.__getattr__ = __getattr__
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        _release()


def install() -> None:
    """Make ``import flowkit`` lazy for the rest of the process (no-op once flowkit is imported).

    Importing ``gating`` stays cheap (an empty ``graftwatch run`` imports it but gates
    nothing): flowkit's modules load when a flowkit name is first used.
    """
    if "flowkit" in sys.modules:
        return
    for package, first in LAZY_PACKAGES:
        if not _install_lazy(package, first):
            return


def _install_lazy(package: str, first: str | None) -> bool:
    """Put a lazy ``package`` in ``sys.modules``; False (nothing done) when it cannot be.

    ``first``: a module imported before the first of the package's names is resolved.
    It cannot when the package's ``__init__`` holds anything but relative imports,
    ``__all__`` and its docstring: this module would not know what that code does, so
    the ordinary eager import stays.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return False
    with open(spec.origin, encoding="utf-8") as fh:
        source = fh.read()
    tree = ast.parse(source)
    for node in tree.body:
        plain = (isinstance(node, ast.ImportFrom) and node.level == 1) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
            isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"])
        if not plain:
            return False
    names = _public_names(package, source)
    module = importlib.util.module_from_spec(spec)  # the package, its __init__ not run

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target, attr = names[name]
        with contextlib.ExitStack() as deferred:
            for dep in DEFERRED_BY_FLOWKIT:
                deferred.enter_context(deferred_module(dep))
            if first is not None:
                importlib.import_module(first)
            sub = importlib.import_module(target)
            if attr is None:
                value = sub
            elif hasattr(sub, attr):
                value = getattr(sub, attr)
            else:  # ``from ._models import gates``: a subpackage its parent does not import
                value = importlib.import_module(f"{target}.{attr}")
        setattr(module, name, value)  # next access is a plain attribute
        return value

    def __dir__():
        return sorted(set(names) | set(module.__dict__))

    module.__getattr__ = __getattr__
    module.__dir__ = __dir__
    module.__all__ = next((list(ast.literal_eval(n.value)) for n in tree.body if isinstance(n, ast.Assign)), [])
    sys.modules[package] = module
    parent, _, child = package.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return True

"""Commands import what they use (issue 15, point 5): a Gating-ML template is read and
compiled without flowkit's plotting stack (bokeh, scipy.stats) or pandas (gating/flowkit_import.py),
and ``graftwatch query`` without pyarrow or numpy (storage/schemas.py, storage/store.py).

Each check runs in a fresh interpreter, where nothing else has imported those modules.
The Gating-ML files are the ISAC compliance suite in ../shared/data (reference data).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("bokeh", "scipy.stats", "scipy.interpolate", "flowkit._models.sample", "pandas")


def _python(code: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.splitlines()


@pytest.mark.reference
def test_gatingml_templates_load_without_the_plotting_stack(shared_data):
    import flowkit as fk

    from gating.templates import load_template

    files = sorted((shared_data / "fcs/gatingml2/gml").glob("gml_*.xml"))
    files = [p for p in files if p.name != "gml_range_gate_attr_testing.xml"]  # not Gating-ML 2.0 flowkit reads
    assert len(files) == 46
    code = f"""
import json, sys
from pathlib import Path
from gating.compiled_strategy import compile_strategy
from gating.templates import load_template
out = {{}}
for p in {[str(p) for p in files]!r}:
    t = load_template(Path(p))
    compile_strategy(t.strategy)
    out[Path(p).name] = sorted(g for g, _ in t.strategy.get_gate_ids())
print(json.dumps(out))
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    gates, heavy = (json.loads(line) for line in _python(code))
    assert heavy == []
    # The same gates as flowkit's own parser (in this process, possibly eagerly imported).
    assert gates == {p.name: sorted(g for g, _ in fk.parse_gating_xml(str(p)).get_gate_ids()) for p in files}
    assert load_template(files[0]).strategy.get_gate_ids()


def test_flowkit_loads_on_first_use_and_every_name_resolves():
    # An empty `graftwatch run` imports gating but gates nothing: no pandas, no flowkit
    # modules. The FlowJo readers as the first name used enter flowkit's
    # xml_utils <-> _gml_gates import cycle from its failing side unless xml_utils is
    # loaded first (an ImportError naming GMLBooleanGate made every .wsp "unreadable").
    # Then each kind of name flowkit's __init__ binds: a class of a submodule, a subpackage,
    # a submodule, a lazy subpackage's class; bokeh is still not needed.
    code = """
import sys
import gating
import flowkit as fk
lazy = ('flowkit._models', 'flowkit._models.transforms')  # empty package objects, nothing run
print(sorted(m for m in sys.modules if m.startswith(('flowkit.', 'pandas', 'networkx')) and m not in lazy))
print(fk.parse_wsp.__module__, fk.extract_wsp_sample_data.__module__)
print(fk.Matrix.__module__, fk.gates.__name__, fk.exceptions.__name__)
print(fk.transforms.WSPBiexTransform.__module__, 'bokeh' in sys.modules)
print(sorted(set(fk.__all__) - set(dir(fk))), fk.__version__ == fk._version.__version__)
"""
    assert _python(code) == [
        "[]",
        "flowkit._utils.wsp_utils flowkit._utils.wsp_utils",
        "flowkit._models.transforms._matrix flowkit._models.gates flowkit.exceptions",
        "flowkit._models.transforms._wsp_transforms False",
        "[] True",
    ]


def test_pandas_loads_when_first_used_not_with_flowkit():
    # flowkit's gate/transform/Gating-ML modules import pandas at the top but graftwatch
    # never calls the methods that use it; it is deferred (~0.5 s of a run's start) and the
    # module-level name still reaches real pandas, as does any later `import pandas`.
    code = """
import sys
import gating
import flowkit as fk
fk.GatingStrategy, fk.Matrix
from flowkit._models import gating_strategy
print('pandas' in sys.modules, 'networkx' in sys.modules)
frame = gating_strategy.pd.DataFrame({'a': [1, 2]})
import pandas
print('pandas' in sys.modules, type(frame) is pandas.DataFrame, sys.modules['pandas'] is pandas, int(frame.a.sum()))
"""
    assert _python(code) == ["False True", "True True True 3"]


def test_a_deferred_module_still_answers_is_it_installed():
    # bokeh asks importlib.util.find_spec("pandas") while flowkit builds a FlowJo Workspace;
    # a stand-in without __spec__ made that a ValueError and every .wsp template unreadable.
    code = """
import importlib.util, sys
from gating.flowkit_import import deferred_module
with deferred_module('pandas'):
    import pandas as pd
    print(importlib.util.find_spec('pandas').name, 'DataFrame' in dir(pd) or hasattr(pd, 'DataFrame'))
import pandas
print(sys.modules['pandas'] is pandas, type(pd.DataFrame()) is pandas.DataFrame)
"""
    assert _python(code) == ["pandas True", "True True"]


def test_query_command_imports_no_pyarrow(tmp_path):
    from test_views import _gates, _write

    from storage.store import Store

    store = Store(tmp_path / "store")
    _write(store, "S1", _gates({"cd3": "CD3+", "cd4": "CD4+CD8-", "cd8": "CD4-CD8+", "th1": "Th1", "treg": "Treg"}))
    code = ("import sys; from flows.query import run_query; "
            f"assert run_query('SELECT count(*) FROM immune_timeline', {str(store.base)!r}, fmt='csv') == 0; "
            "print(sorted(m for m in ('pyarrow', 'numpy', 'pandas') if m in sys.modules))")
    assert _python(code) == ["count_star()", "1", "[]"]

"""`import mlpx` is light: no CuPy, no Numba, nothing compiled.

How long the import takes is measured by `mlpx bench` (its startup figures), not here: a
timed assertion would fail on a loaded machine or where bytecode is not cached."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys
import mlpx
heavy = sorted(m for m in sys.modules
               if m.split('.')[0] in ('cupy', 'cupyx', 'numba', 'llvmlite', 'torch', 'scipy',
                                      'sklearn', 'matplotlib', 'tqdm')
               or m.startswith('mlpx.backends.numba_') or m == 'mlpx.backends.cuda')
model = mlpx.MLP([4, 3, 2], seed=0)  # building a model compiles nothing either
still_light = 'numba' not in sys.modules
print(json.dumps({"heavy": heavy, "still_light": still_light,
                  "backends": mlpx.available_backends()}))
"""


def test_import_is_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         check=True, timeout=60)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["heavy"] == [], f"import mlpx pulled in {info['heavy']}"
    assert info["still_light"]
    assert "cpu" in info["backends"]

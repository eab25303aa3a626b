"""The checkpoint format's earlier module paths keep importing, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import mlpx
from mlpx.saving import container, records, schema, writer

OLD_PATHS = {
    "mlpx.checkpoint": {"CheckpointError": container.CheckpointError,
                        "read_file": container.read_file, "write": writer.write,
                        "FORMAT_VERSION": container.FORMAT_VERSION},
    "mlpx.checkpoint_file": {"CheckpointError": container.CheckpointError,
                             "write_atomic": container.write_atomic,
                             "OldCheckpointWarning": container.OldCheckpointWarning},
    "mlpx.checkpoint_schema": {"check_document": schema.check_document,
                               "check_state": schema.check_record_fits_model,
                               "check_weights": schema.check_weights},
    "mlpx.state": {"read_record": records.read_record, "RunRecord": records.RunRecord,
                   "check_state": records.check_state_dict,
                   "history_to_dict": mlpx.history.history_to_dict},
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_path_warns_and_gives_the_moved_names(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated; import mlpx\.saving"):
        module = importlib.import_module(old)
    for name, moved in OLD_PATHS[old].items():
        assert getattr(module, name) is moved, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def test_importing_mlpx_imports_no_old_path():
    code = ("import sys, mlpx; print(sorted(m for m in sys.modules if m in "
            f"{sorted(OLD_PATHS)!r}))")
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

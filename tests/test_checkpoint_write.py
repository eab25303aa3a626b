"""Saving checkpoints: temporary files, file modes, symlinks, errors that name the user's path."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlpx
from mlpx.saving import container

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and signals")


def _model(seed=0):
    return mlpx.MLP([3, 4, 2], seed=seed)


def _tmp_name(target: Path, pid: int, host: str | None = None) -> str:
    return f".{target.name}.{pid}.{host or container._host_tag()}.abcd1234{container._TMP_SUFFIX}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _strays(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(container._TMP_SUFFIX))


@posix_only
def test_next_save_removes_temporaries_whose_writer_is_gone(tmp_path):
    target = tmp_path / "m.safetensors"
    dead = _tmp_name(target, _dead_pid())
    alive = _tmp_name(target, os.getppid())  # a running process: maybe still writing
    other_host = _tmp_name(target, _dead_pid(), host="0badc0de")
    other_file = _tmp_name(tmp_path / "other.safetensors", _dead_pid())
    for name in (dead, alive, other_host, other_file):
        (tmp_path / name).write_bytes(b"partial")
    _model().save(target)
    assert _strays(tmp_path) == sorted([alive, other_host, other_file])
    mlpx.load(target)


@posix_only
def test_kill_9_during_saves_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    """A process saving a 4 MB model in a loop is killed with SIGKILL at random moments; the
    file always loads, and the next save removes what the killed writer left."""
    target = tmp_path / "run.safetensors"
    _model().save(target)
    script = (
        "import sys, mlpx\n"
        "m = mlpx.MLP([1000, 1000, 2], seed=0)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    m.save(sys.argv[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = np.random.default_rng(0)
    left_behind = set()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.2)))
        deadline = time.monotonic() + 20
        while not _strays(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.001)  # kill while a temporary file exists: mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left_behind |= set(_strays(tmp_path))
        loaded = mlpx.load(target)  # the previous file or the new one, never a mix
        assert loaded.input_dim in (3, 1000)
    assert left_behind  # the kills did interrupt writes
    _model(seed=1).save(target)
    assert _strays(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["run.safetensors"]


@posix_only
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = _model().save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


@posix_only
def test_overwriting_keeps_the_existing_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    _model().save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    mlpx.load(path)


@posix_only
def test_saving_through_a_symlink_writes_its_target(tmp_path):
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    real = real_dir / "real.safetensors"
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)  # dangling: the save creates the target, as open(link, "w") would
    _model().save(link)
    assert link.is_symlink() and real.is_file()
    _model(seed=5).save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    np.testing.assert_array_equal(mlpx.load(real).get_weights()[0],
                                  _model(seed=5).get_weights()[0])
    assert _strays(tmp_path) == [] and _strays(real_dir) == []


def test_saving_onto_a_directory_names_the_path(tmp_path):
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match=r"adir'.*is a directory"):
        _model().save(target)
    assert os.listdir(target) == []


def test_saving_below_a_file_says_it_is_a_file(tmp_path):
    (tmp_path / "x.txt").write_text("notes")
    with pytest.raises(NotADirectoryError, match=r"x\.txt' is a file, not a directory"):
        _model().save(tmp_path / "x.txt" / "y")
    assert (tmp_path / "x.txt").read_text() == "notes"


def test_saving_into_a_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"directory '.*missing' does not exist"):
        _model().save(tmp_path / "missing" / "m.safetensors")


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_saving_onto_a_device_is_refused(tmp_path):
    with pytest.raises(OSError, match="character device"):
        _model().save("/dev/null")


def test_write_errors_name_the_users_path_not_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "m.safetensors"
    real_open = os.open

    def refuse(path, flags, *args):
        if str(path).endswith(container._TMP_SUFFIX):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(container.os, "open", refuse)
    with pytest.raises(PermissionError) as info:
        _model().save(target)
    monkeypatch.undo()
    assert "m.safetensors" in str(info.value) and container._TMP_SUFFIX not in str(info.value)
    assert "Permission denied" in str(info.value)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(container.os, "fsync", full)
    with pytest.raises(OSError, match=r"m\.safetensors'.*No space") as info:
        _model().save(target)
    assert container._TMP_SUFFIX not in str(info.value)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []

"""A command's output directory is checked before any work: a file in the way or a directory
without write permission is named in the error."""

from __future__ import annotations

import os

import pytest

from mlpx.commands.outdir import check_out_dir


def test_a_new_directory_under_a_writable_one_is_accepted(tmp_path):
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not created


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"'[^']*f': it is a file.*--out"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(NotADirectoryError, match=r"f' is a file, not a directory"):
        check_out_dir(tmp_path / "f" / "sub")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions and a user that they apply to (not root)")
def test_a_directory_without_write_permission_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="no permission to create files in"):
            check_out_dir(locked / "out")
    finally:
        locked.chmod(0o700)

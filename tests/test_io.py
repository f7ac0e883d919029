"""Atomic output writing: all or nothing, and the permissions of an ordinary file."""

import os
import stat

import pytest

from monai_modan.utils import io


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    """Run with umask 027 (group read, others nothing), read afresh by the writer."""
    old = os.umask(0o027)
    io._new_file_mode.cache_clear()
    yield
    os.umask(old)
    io._new_file_mode.cache_clear()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_output_gets_the_umask_permissions_not_mkstemps_private_ones(tmp_path, umask_027):
    direct = tmp_path / "direct.txt"
    direct.write_text("x")  # what open() gives under this umask
    written = io.atomic_write_json(tmp_path / "out" / "summary.json", {"auc": 0.8})
    assert _mode(written) == _mode(direct) == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_replacing_keeps_the_replaced_files_permissions(tmp_path, umask_027):
    target = tmp_path / "report.md"
    target.write_text("old")
    os.chmod(target, 0o604)
    io.atomic_write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("complete")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_check_writable_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert io.check_writable(tmp_path / "ok" / "out.json") == tmp_path / "ok" / "out.json"
    assert not (tmp_path / "ok" / "out.json").exists()
    with pytest.raises(io.OutputError, match="file/sub/out.json"):
        io.check_writable(blocker / "sub" / "out.json")

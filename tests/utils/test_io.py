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


# reading user files: UTF-8 and YAML errors name the file, the byte / line, and the cause -------------------------
def test_utf8_problem_counts_from_the_start_of_the_file_across_blocks(tmp_path):
    path = tmp_path / "big.csv"
    head = b"filename,label\n" + b"x" * ((1 << 20) - 16) + "é".encode()  # é split across the 1 MiB block boundary
    path.write_bytes(head + b"\nok\n\xff\n")
    assert io.utf8_problem(path) == f"byte 0xff at offset {len(head) + 4}, line 4"
    path.write_bytes("filename\ncafé\n".encode())
    assert io.utf8_problem(path) is None
    path.write_bytes(b"abc\xc3")
    assert io.utf8_problem(path) == "a truncated character at the end (offset 4)"


def test_read_text_file_names_file_and_byte(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(ValueError, match=r"v.yaml: rules file is not UTF-8 text \(byte 0xff at offset 8, line 2\)"):
        io.read_text_file(path, "rules file")
    path.write_bytes("\ufeffa: 1\n".encode())  # a byte-order mark (Windows editors) is dropped
    assert io.read_text_file(path, "rules file") == "a: 1\n"
    with pytest.raises(KeyError, match="cannot read rules file .*nope.yaml"):
        io.read_text_file(tmp_path / "nope.yaml", "rules file", KeyError)


def test_yaml_errors_are_one_line_and_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("groups:\n  anatomy: [1, 2\n")
    with pytest.raises(ValueError, match=r"c.yaml: not valid YAML \(.*at line 3, column 1\)") as e:
        io.read_yaml_file(path, "config")
    assert "\n" not in str(e.value)
    path.write_text("a:\n  b: 1\n  b: 2\n")  # PyYAML alone keeps b: 2 without a word
    with pytest.raises(ValueError, match=r"c.yaml: key 'b' appears twice under a \(lines 2 and 3\)"):
        io.read_yaml_file(path, "config")
    path.write_text("- {x: 1, x: 2}\n")
    with pytest.raises(ValueError, match=r"key 'x' appears twice under \[0\]"):
        io.read_yaml_file(path, "config")
    path.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n")  # a merge key overridden is not a duplicate
    assert io.read_yaml_file(path, "config") == {"base": {"x": 1}, "other": {"x": 2}}
    path.write_text("")
    assert io.read_yaml_file(path, "config") is None

"""Output files: never a FIFO or device, never inside an input folder, sets written all or none,
and what a killed run left removed by the next one."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bone_age.utils import outputs
from bone_age.utils.outputs import (
    OutputError,
    check_output_file,
    remove_stale_temps,
    temp_path,
    write_all_atomic,
    write_atomic,
)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_fifo_or_device_is_refused_as_an_output_and_left_as_it_is(tmp_path):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    link = tmp_path / "to_null.csv"
    link.symlink_to("/dev/null")
    for path in (fifo, Path("/dev/null"), link):
        with pytest.raises(OutputError, match=r"not a regular file \(a .*\); give a regular file"):
            check_output_file(path, "predictions")
        with pytest.raises(OutputError, match="not a regular file"):
            write_atomic(path, lambda tmp: tmp.write_text("x"))
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "to_null.csv"]  # no temp


def test_an_output_inside_an_input_folder_or_on_an_input_file_is_refused(tmp_path):
    export = tmp_path / "export"
    (export / "sub").mkdir(parents=True)
    (export / "ant.dcm").write_bytes(b"scan")
    for path in (export / "ant.dcm", export / "sub" / "new.csv", export / "manifest.csv"):
        with pytest.raises(OutputError, match="inside the input folder"):
            check_output_file(path, "manifest", input_dirs=[export])
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_output_file(export / "ant.dcm", "manifest", [export / "ant.dcm"])
    assert check_output_file(tmp_path / "manifest.csv", "manifest", input_dirs=[export])
    assert check_output_file(export / "x.csv", "manifest", [export])  # a folder as a file input


def test_a_set_of_files_is_written_all_or_none(tmp_path):
    (tmp_path / "b.png").write_text("old b")

    def fails(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    writes = [(tmp_path / "a.png", lambda t: t.write_text("a")),
              (tmp_path / "b.png", lambda t: t.write_text("b")), (tmp_path / "c.png", fails)]
    with pytest.raises(OSError, match="No space"):
        write_all_atomic(writes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]
    assert (tmp_path / "b.png").read_text() == "old b"
    writes[2] = (tmp_path / "c.png", lambda t: t.write_text("c"))
    assert [p.read_text() for p in write_all_atomic(writes)] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]


def test_leftovers_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    host, mark = outputs._HOST, outputs.TEMP_MARK
    stale = [f".preds.csv.{mark}.{host}-{dead}-0", f".scatter.png.{mark}.{host}-{dead}-3.png"]
    kept = [f".preds.csv.{mark}.{host}-{alive}-0",  # a live process's
            f".preds.csv.{mark}.0000abcd-{dead}-0",  # another host's: its process cannot be checked
            f".x.{mark}.{host}-{'9' * 30}-0",  # no pid at all
            ".hidden", "preds.csv", f"notes.{dead}.tmp",
            # users' names that the old patterns took for temporaries
            ".thesis.docx.2024.tmp", f".abc.npy.{dead}.tmp", f".preds.csv.{host}-{dead}-0.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    # Folders, whatever their name, with what is in them: a user's cannot be told from ours.
    folders = [".archive.2019.tmp", f".photos.{host}-{dead}-1.tmp", f".links.{dead}.tmp",
               f".links.{mark}.{host}-{dead}-0"]
    for name in folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / "BA-1.dcm").write_text("a user's file")
    # A link under our name: removing it is harmless, but nothing proves it ours either.
    (tmp_path / f".l.{mark}.{host}-{dead}-0").symlink_to(tmp_path / "preds.csv")
    kept += [*folders, f".l.{mark}.{host}-{dead}-0"]
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert all((tmp_path / name / "BA-1.dcm").is_file() for name in folders)
    assert outputs._TEMP.fullmatch(temp_path(tmp_path / "x.png").name)


def test_a_temporary_name_never_collides_with_a_leftover(tmp_path):
    """A folder a killed process of the same pid left stays: the next name skips it."""
    first = temp_path(tmp_path / "out", keep_suffix=False)
    serial = int(first.name.rsplit("-", 1)[1])
    for n in range(serial + 1, serial + 4):
        (tmp_path / f".out.{outputs.TEMP_MARK}.{outputs._HOST}-{os.getpid()}-{n}").mkdir()
    nxt = temp_path(tmp_path / "out", keep_suffix=False)
    assert not nxt.exists() and int(nxt.name.rsplit("-", 1)[1]) == serial + 4

"""Ctrl-C anywhere ends in one line (issue 33 item 4): no Hydra traceback, no worker's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# In a session of its own, a worker sends SIGINT to its whole process group, as a terminal's
# Ctrl-C does: the parent and every worker get it at once. No timing is involved: the worker
# signals before it does any work and then waits to be ended.
_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import bone_age.phantom.cohort as cohort
    from bone_age.utils.errors import interrupted

    GROUP = os.getpgid(0)
    assert GROUP == os.getpid(), "not a session of its own"
    # As in a terminal: a process started in the background of a non-interactive shell (a CI
    # job's `make test &`) inherits SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def ctrl_c(job):
        assert os.getpgid(0) == GROUP
        os.killpg(GROUP, signal.SIGINT)
        time.sleep(600)

    assert "torch" not in sys.modules  # so the phantom forks its workers: they see ctrl_c
    cohort._work = ctrl_c
    try:
        cohort.generate_cohort(sys.argv[1], subjects=40, seed=1, workers=2, progress=False)
    except KeyboardInterrupt:
        sys.exit(interrupted("phantom"))
""")


@pytest.mark.skipif(not hasattr(os, "killpg") or sys.platform == "win32", reason="POSIX")
def test_ctrl_c_during_phantom_generation_leaves_no_worker_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "phantom")],
                          capture_output=True, text=True, timeout=300, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [
        "bone-age phantom: interrupted (Ctrl-C); nothing half-written was kept"], done.stderr


def test_ctrl_c_in_a_run_is_one_line(monkeypatch, tmp_path, capsys):
    import bone_age.run as run_command

    def ctrl_c() -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(run_command, "run", ctrl_c)
    with pytest.raises(SystemExit) as stop:
        run_command.main()
    assert stop.value.code == 130
    assert capsys.readouterr().err.splitlines() == [
        "bone-age run: interrupted (Ctrl-C); nothing half-written was kept"]


def test_commands_end_ctrl_c_in_one_line(capsys):
    from bone_age.utils.errors import command

    @command("index")
    def main() -> int:
        raise KeyboardInterrupt
    assert main() == 130
    assert capsys.readouterr().err.splitlines() == [
        "bone-age index: interrupted (Ctrl-C); nothing half-written was kept"]

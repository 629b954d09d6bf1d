"""experiments/phantom/remeasure.sh names only commands, configs and files that exist."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "phantom" / "remeasure.sh"


def _dry_run(tmp_path: Path, *opts: str) -> list[list[str]]:
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run", *opts, str(tmp_path / "logs")],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert not (tmp_path / "logs").exists()  # a dry run writes nothing
    return [shlex.split(line) for line in res.stdout.splitlines()]


def test_dry_run_names_existing_modules_scripts_and_experiments(tmp_path: Path) -> None:
    commands = _dry_run(tmp_path)
    assert len(commands) >= 15
    experiments = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    seen_modules = set()
    for cmd in commands:
        for i, arg in enumerate(cmd):
            if arg == "-m" and i + 1 < len(cmd) and not cmd[i + 1].startswith("experiment"):
                seen_modules.add(cmd[i + 1])
                assert importlib.util.find_spec(cmd[i + 1]) is not None, cmd
            if arg.endswith(".py"):
                assert (ROOT / arg).is_file(), cmd
            if arg.startswith("experiment="):
                names = arg.split("=", 1)[1].split(",")
                assert set(names) <= experiments, (names, cmd)
    assert {"bone_age.run", "bone_age.phantom", "bone_age.phantom.realism",
            "bone_age.bench"} <= seen_modules  # fmt: skip
    # Timings (quickstart, generation, phantom_bench) come last, after the load-independent part.
    timed = [k for k, c in enumerate(commands)
             if re.search(r"make run|--subjects 4474|--accuracy", " ".join(c))]  # fmt: skip
    assert timed == list(range(len(commands) - len(timed), len(commands))) and len(timed) == 7
    # --part 1 / --part 2 split the same commands at that point.
    assert _dry_run(tmp_path, "--part", "1") + _dry_run(tmp_path, "--part", "2") == commands
    assert _dry_run(tmp_path, "--part", "2") == commands[timed[0]:]


def test_usage_errors(tmp_path: Path) -> None:
    for args in ([], ["--part", "3", "x"], ["--nope", "x"]):
        res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, args


def test_a_failing_step_stops_the_run_and_says_which(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    res = subprocess.run(["bash", str(SCRIPT), "--part", "1", str(logs)], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                     "PYTHON": "false"})  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip() == f"remeasure.sh: realism failed, see {logs}/realism.log"
    assert "realism failed" in (logs / "summary.txt").read_text()
    assert sorted(p.name for p in logs.iterdir()) == ["realism.log", "summary.txt"]

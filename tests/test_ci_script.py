"""`.ci/run`: both suites, the OpenMMLab environment built inside CI's time budget, and a failure
line that names the part that failed (run against a stand-in `make` that logs its targets)."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_ci(tmp_path, fail_target="", budget="5280", sleep_target=""):
    root = tmp_path / "clone"
    (root / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", root / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "make.log"
    fake = bin_dir / "make"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$1" >> "{log}"\n'
        f'[ "$1" = "{sleep_target}" ] && sleep 5\n'
        f'[ "$1" = "{fail_target}" ] && exit 2\n'
        "exit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CI_BUDGET_S=budget)
    proc = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, capture_output=True,
                          text=True, timeout=60)
    targets = log.read_text().split() if log.exists() else []
    return proc, targets


def test_ci_runs_core_suite_then_builds_and_runs_the_mm_suite(tmp_path):
    proc, targets = run_ci(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert targets == ["test", "env-mm", "test-mm"]
    assert "both suites done" in proc.stdout


def test_ci_failure_line_names_the_environment_build(tmp_path):
    proc, targets = run_ci(tmp_path, fail_target="env-mm")
    assert proc.returncode == 1
    assert targets == ["test", "env-mm"]
    assert "building .venv-mm (make env-mm)" in proc.stderr


def test_ci_fails_when_the_mm_suite_fails(tmp_path):
    proc, targets = run_ci(tmp_path, fail_target="test-mm")
    assert proc.returncode == 1
    assert "OpenMMLab suite (make test-mm)" in proc.stderr


def test_ci_stops_the_mm_step_at_the_budget(tmp_path):
    # the core suite takes 5 s of a 3 s budget: nothing of the OpenMMLab step may start
    proc, targets = run_ci(tmp_path, budget="3", sleep_target="test")
    assert proc.returncode == 1
    assert targets == ["test"]
    assert "ran past CI_BUDGET_S=3" in proc.stderr

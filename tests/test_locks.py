"""One writer per stage output: concurrent runs, stale locks, publication while a reader runs,
and a publication stopped between its two renames."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline.runtime import locks
from pipeline.runtime.stage import StageLockedError, read_manifest, run_stage

REPO = Path(__file__).resolve().parent.parent

# A stage that writes its files one by one, each tagged with its PID; half-way it waits for
# the file ``go`` (when ``wait`` is set), so the test controls the overlap.
SLOW_STAGE = textwrap.dedent("""
    import os, time
    from pathlib import Path
    from pipeline.settings.checks import Bool, Int, Str
    from pipeline.settings.section import make_section
    from stages.common import main_for
    STAGE = "slow"
    UPSTREAM = ()
    SETTINGS = make_section("slow", n=Int(1), wait=Bool(), go=Str())   # its config section
    def run(ctx):
        n, go = int(ctx.section["n"]), Path(ctx.section["go"])
        (ctx.out / "files").mkdir(exist_ok=True)
        for i in range(n):
            (ctx.out / "files" / f"{i}.txt").write_text(str(os.getpid()))
            end = time.monotonic() + 120
            while i == n // 2 and ctx.section["wait"] and not go.exists() and time.monotonic() < end:
                time.sleep(0.02)
        return {"counts": {"files": n}, "metrics": {"pid": os.getpid()}}
    if __name__ == "__main__":
        main_for(__name__)
""")


def _start(tmp_path: Path, n: int, wait: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "slow_stage", "--exp", str(tmp_path / "exp.py"), "--work-dir",
           str(tmp_path / "work"), "--force", "--opts", f"slow.n={n}", f"slow.wait={wait}",
           f"slow.go={tmp_path / 'go'}"]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_holder(path: Path, pid: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (locks.read_holder(path) or {}).get("pid") == pid:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never named PID {pid}")


def test_two_concurrent_runs_one_output_and_a_clear_error(tmp_path):
    (tmp_path / "slow_stage.py").write_text(SLOW_STAGE)
    (tmp_path / "exp.py").write_text('experiment = dict(name="t", seed=0, device="cpu")\n'
                                     'slow = dict(n=1, wait=False, go="go")\n')
    first = _start(tmp_path, n=40, wait=True)
    _wait_for_holder(tmp_path / "work" / ".locks" / "slow", first.pid)
    second = _start(tmp_path, n=3, wait=False)
    out2, err2 = second.communicate(timeout=120)
    assert first.poll() is None                   # the second failed while the first still ran
    (tmp_path / "go").touch()
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 1 and "Traceback" not in err2, err2
    assert f"PID {first.pid}" in err2 and "already running" in err2, err2
    man = read_manifest(tmp_path / "work" / "slow")
    files = sorted((tmp_path / "work" / "slow" / "files").iterdir())
    assert man["counts"]["files"] == len(files) == 40 and man["metrics"]["pid"] == first.pid
    assert {f.read_text() for f in files} == {str(first.pid)}
    assert not (tmp_path / "work" / ".partial" / "slow").exists()


def _writer(text):
    def run(ctx):
        (ctx.out / "out.txt").write_text(text)
        return {"counts": {"n": 1}}
    return run


def test_a_held_lock_names_its_pid_and_a_dead_holder_is_taken_over(tmp_path):
    fd = locks.acquire_writer(tmp_path, "a")
    with pytest.raises(StageLockedError, match=f"PID {os.getpid()}"):
        run_stage("a", (), _writer("x"), {}, {}, tmp_path)
    locks.release(fd)
    # a lock file left by a finished process (its flock released with it)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    path = tmp_path / ".locks" / "a"
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    run_stage("a", (), _writer("x"), {}, {}, tmp_path, force=True)
    assert (tmp_path / "a" / "out.txt").read_text() == "x"
    assert locks.read_holder(path)["pid"] == os.getpid()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_lock_still_held_by_a_child_of_a_dead_holder_is_taken_over(tmp_path, request):
    # the holder forks a child (a pool worker, say) that inherits the locked file, then dies
    code = textwrap.dedent(f"""
        import os, sys, time
        from pipeline.runtime import locks
        locks.acquire_writer({str(tmp_path)!r}, "a")
        child = os.fork()
        if child == 0:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1); os.dup2(null, 2)
            time.sleep(30); os._exit(0)
        print(os.getpid(), child, flush=True)
        os._exit(0)
    """)
    parent = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    parent_pid, child_pid = map(int, parent.stdout.split())
    request.addfinalizer(lambda: _kill(child_pid))
    path = tmp_path / ".locks" / "a"
    assert locks.read_holder(path)["pid"] == parent_pid
    with pytest.raises(BlockingIOError):       # the child still holds the old file's lock
        import fcntl
        probe = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    fd = locks.acquire_writer(tmp_path, "a")
    assert locks.read_holder(path)["pid"] == os.getpid()
    locks.release(fd)


def test_publication_waits_for_a_running_reader(tmp_path, capsys):
    run_stage("up", (), _writer("old"), {}, {}, tmp_path)
    reader = locks.acquire_writer(tmp_path, "down", reads=("up",))   # "down" runs, reading "up"
    shared = locks.acquire_reader(tmp_path, "up")
    done = threading.Event()
    seen = {}

    def rerun_up():
        run_stage("up", (), _writer("new"), {}, {}, tmp_path, force=True)
        done.set()

    thread = threading.Thread(target=rerun_up)
    thread.start()
    time.sleep(0.8)
    seen["during"] = (tmp_path / "up" / "out.txt").read_text()
    assert not done.is_set()
    locks.release(shared)
    locks.release(reader)
    thread.join(30)
    assert done.is_set() and seen["during"] == "old"
    assert (tmp_path / "up" / "out.txt").read_text() == "new"
    assert f"down (PID {os.getpid()}) still reads" in capsys.readouterr().out


def test_a_publication_stopped_between_its_renames_is_finished_by_the_next_run(tmp_path):
    calls = []

    def run(ctx):
        calls.append(1)
        return _writer("v1")(ctx)

    first = run_stage("a", (), run, {}, {"k": 1}, tmp_path)
    # stopped after moving the old folder aside, before renaming the new one into place
    (tmp_path / ".partial").mkdir(exist_ok=True)
    os.replace(tmp_path / "a", tmp_path / ".partial" / "a")
    (tmp_path / ".partial" / "a.old999").mkdir()
    again = run_stage("a", (), run, {}, {"k": 1}, tmp_path)
    assert calls == [1] and again["run_digest"] == first["run_digest"]
    assert (tmp_path / "a" / "out.txt").read_text() == "v1"
    assert not list((tmp_path / ".partial").glob("a*"))

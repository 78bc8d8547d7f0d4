"""BackgroundWriter: every call runs, errors surface naming the call, pending calls stay bounded."""
import threading
import time

import pytest

from pipeline.runtime.writer import BackgroundWriter


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_all_calls_run_and_files_are_written(tmp_path, threads):
    with BackgroundWriter(threads) as w:
        for i in range(20):
            w.submit((tmp_path / f"{i}.txt").write_text, str(i))
    assert sorted(int(p.read_text()) for p in tmp_path.iterdir()) == list(range(20))


def test_error_names_the_call_and_is_raised_in_the_caller(tmp_path):
    def fail(path):
        raise OSError("disk full")

    with pytest.raises(RuntimeError, match=r"fail\(.*bad\.npz\).*disk full"):
        with BackgroundWriter(2) as w:
            w.submit(fail, tmp_path / "bad.npz")


def test_pending_calls_are_bounded():
    running, peak, lock = [0], [0], threading.Lock()

    def slow(_):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    w = BackgroundWriter(2, max_pending=3)
    for i in range(12):
        w.submit(slow, i)
        assert len(w._pending) <= 3
    w.close()
    assert 1 <= peak[0] <= 2 and not w._pending

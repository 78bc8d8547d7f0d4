"""``make gpu-check`` (bench/gpu_check.py): its whole code path on the CPU at tiny sizes, in a
subprocess that refuses OpenMMLab, pydensecrf, OpenCV, Pillow and scikit-image (a stock PyTorch
install has none of them); the plain config reader equals mmengine's for the experiment configs;
without CUDA it says so and exits 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.plain_config import plain_config

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("mmengine", "mmcv", "mmseg", "pydensecrf", "cv2", "skimage", "PIL")

# an import hook that refuses the forbidden packages and records every attempt (also caught ones)
HOOK = f"""
import atexit, importlib.abc, runpy, sys
FORBIDDEN = {FORBIDDEN!r}
tried = []
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            tried.append(name)
            raise ImportError("refused by the test: " + name)
        return None
sys.meta_path.insert(0, Refuse())
atexit.register(lambda: print("FORBIDDEN IMPORTS:", sorted(set(tried))))
sys.argv = ["bench.gpu_check"] + sys.argv[1:]
runpy.run_module("bench.gpu_check", run_name="__main__", alter_sys=True)
"""


def _run(args, tmp_path, extra_env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", HOOK, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_tiny_cpu_run_imports_only_torch_numpy_and_the_library(tmp_path):
    out = tmp_path / "results"
    proc = _run(["--device", "cpu", "--tiny", "--ddp", "on", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FORBIDDEN IMPORTS: []" in proc.stdout, proc.stdout[-2000:]
    res = json.loads((out / "gpu_check-tiny.json").read_text())
    assert res["ok"] and res["tiny"] and res["device"] == "cpu"
    assert (out / "gpu_check-tiny.md").read_text().startswith("# gpu-check on")
    by = {p["name"]: p for p in res["parts"]}
    assert set(by) == {"classifier", "segmenter", "heatmaps", "eval"}
    for name in ("classifier", "segmenter"):
        p = by[name]
        assert p["losses_finite"] and p["weights_changed"] and len(p["losses"]) == 3
        assert p["img_per_s"] > 0 and sum(p["shares"].values()) == pytest.approx(1.0, abs=0.02)
    assert by["segmenter"]["parts_s"]["DSRG CRF (torch)"] > 0 and by["segmenter"]["grid"] == 7
    assert by["heatmaps"]["finite"] and by["eval"]["finite"]
    assert by["eval"]["protocol"] == "test-ms-f" and by["eval"]["passes"] == [[36, 48], [48, 64], [60, 80]]
    ddp = res["ddp"]
    assert ddp["backend"] == "gloo" and ddp["identical_across_ranks"] and ddp["weights_changed"]
    assert all(res["checks"].values()) and len(res["checks"]) == 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    proc = _run(["--out", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("exp", ["configs/voc_ep_dsrg.py", "configs/demo_synthetic.py"])
def test_plain_config_equals_mmengine(exp):
    mmengine = pytest.importorskip("mmengine")
    cfg = mmengine.Config.fromfile(str(REPO / exp))
    plain = plain_config(REPO / exp)

    def norm(x):
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        return x
    for section in ("classifier", "segmenter", "heatmaps", "eval"):
        assert norm(plain[section]) == norm(cfg[section].to_dict()), section


def test_dsrg_parts_on_the_cpu(tmp_path):
    """The per-part DSRG timing runs on any device; its growing equals the CPU's."""
    from bench import dsrg_parts
    assert dsrg_parts.main(["--device", "cpu", "--batch", "2", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "dsrg_parts.json").read_text())
    assert res["grow_equals_cpu"] and res["batch"] == 2
    assert all(res[f"grow_{m}_ms"] > 0 for m in ("numpy", "words", "bool", "pool"))
    assert res["dsrg_losses_ms"] >= res["grow_default_ms"] > 0

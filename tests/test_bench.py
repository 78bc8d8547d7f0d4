"""The benchmarks (``make bench``) in their tiny ``--quick`` configuration: what they compare must
agree (vectorised growing == per-pixel loop, pooled CRF == one process, mmengine step == plain
step, batched heatmaps == one at a time), the seeds memory figures must be computed, and the
results must be written as JSON + markdown. Timings are not checked."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.baselines import grow_seeds_loop
from bench.growing import make_inputs
from pipeline.growing import grow_seeds, grow_seeds_reference
from pipeline.runtime.stage import write_json_atomic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loop_baseline_matches_library_on_edge_cases(seed):
    probs, cues, classes = make_inputs(batch=3, size=13, channels=6, max_fg=3, seed=seed)
    g = torch.Generator().manual_seed(seed)
    # multi-cue pixels and cues of classes absent from the image
    cues = cues | (torch.rand(cues.shape, generator=g) < 0.04)
    for fg, bg in ((0.85, 0.99), (0.5, 0.6)):
        vec = grow_seeds(probs, cues, classes, fg, bg).numpy()
        loop = grow_seeds_loop(probs, cues, classes, fg, bg)
        ref = grow_seeds_reference(probs, cues, classes, fg, bg)
        assert loop.dtype == bool and loop.shape == tuple(probs.shape)
        assert np.array_equal(vec, loop) and np.array_equal(ref, loop)
        assert (loop & ~cues.numpy()).any()          # something grew
        assert (loop[cues.numpy()]).all()             # cues are never removed


def test_loop_baseline_hand_example():
    # 1 image, 1x4 row, classes {0, 1}: cue of 1 at x=0, confident class-1 pixels at x=1,2, x=3 bg
    probs = torch.tensor([[[[0.1, 0.05, 0.1, 0.995]], [[0.9, 0.95, 0.9, 0.005]]]])
    cues = torch.zeros(1, 2, 1, 4, dtype=torch.bool)
    cues[0, 1, 0, 0] = True
    classes = torch.tensor([[True, True]])
    out = grow_seeds_loop(probs, cues, classes, 0.85, 0.99)
    assert out[0, 1, 0].tolist() == [True, True, True, False]
    assert not out[0, 0].any()                        # no background cue: background does not grow


def test_quick_bench_run(tmp_path):
    from bench.run import main

    demo = tmp_path / "demo"
    (demo / "data").mkdir(parents=True)
    write_json_atomic(demo / "data" / "manifest.json",
                      {"stage": "data", "wall_time_s": 1.5, "started": "2020-01-01T00:00:00", "counts": {"train": 3}})
    out = tmp_path / "results"
    rc = main(["--quick", "--out", str(out), "--tag", "t", "--demo-dir", str(demo)])
    res = json.loads((out / "t.json").read_text())
    assert (out / "t.md").is_file() and (out / "latest.json").is_file() and (out / "latest.md").is_file()
    errors = [r for r in res["rows"] if "error" in r]
    assert not errors, errors
    assert rc == 0 and res["ok"] and res["quick"]
    by = {}
    for r in res["rows"]:
        by.setdefault(r["bench"], []).append(r)
    assert set(by) == {"growing", "crf", "crf_train", "heatmaps", "training", "dsrg_loss", "seeds", "voc_costs",
                       "flops", "demo"}
    assert len(by["crf"]) == 3 and by["crf"][2]["ratio"] > 0          # labels, marginals, ceiling
    # training CRF: torch on the CPU, the pool (+ CUDA where present), agreement with pydensecrf
    assert len(by["crf_train"]) == 3 + torch.cuda.is_available()
    agree = by["crf_train"][-1]["extra"]
    assert agree["argmax"] == by["crf_train"][-1]["value"] and 0 <= agree["mean_abs_dq"] < 0.05
    assert 0 < agree["seeds"] <= 1 and agree["cov_torch"] > 0
    assert {r["extra"]["key"] for r in by["voc_costs"]} == {
        "rbd", "heatmap_file", "seeds", "loader", "crf", "crf_noise", "heatmap_writer"}
    for name in ("growing", "crf", "crf_train", "heatmaps", "training", "dsrg_loss"):
        checks = [r["check_ok"] for r in by[name] if r["check"]]
        assert checks and all(checks), name
    for r in res["rows"]:
        if r["bench"] != "demo" or r["value"] is not None:
            assert r["value"] is not None and r["value"] > 0, r["figure"]
        assert r["goal_met"] is None                  # goals are not judged on the quick sizes
    # seeds: peak RSS and tracemalloc peak at both image counts
    mem = by["seeds"][1]["extra"]
    assert set(mem) == {"20", "80"}
    for v in mem.values():
        assert v["rss_peak"] > 0 and v["traced_peak"] > 0 and v["images"] in (20, 80)
        assert 0 < v["heap_first"] <= v["traced_peak"] and 0 < v["heap_last"] <= v["traced_peak"]
    assert by["seeds"][1]["ratio"] == pytest.approx(mem["80"]["rss_peak"] / mem["20"]["rss_peak"])
    # demo: read from the manifests of the given work dir
    assert by["demo"][0]["value"] == 1.5 and "`data`" in by["demo"][0]["figure"]
    assert "| growing |" in (out / "t.md").read_text()


def test_unknown_benchmark_name_is_refused():
    from bench.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
    assert parse_args(["--quick", "--only", "crf", "seeds"]).only == ["crf", "seeds"]

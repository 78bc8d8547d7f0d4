"""The hard synthetic benchmark: configs/synthetic_hard.py loads, its generator settings are the
ones docs/RESULTS.md lists, the generator draws such images (object_radius), and `make ablation`
accepts the config. Cheap: a handful of generated images, no training."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.synthetic import DEFAULTS, generate_synthetic
from stages.common import load_experiment

REPO = Path(__file__).resolve().parent.parent
HARD = REPO / "configs" / "synthetic_hard.py"


def documented_generator_settings() -> dict:
    """``key=value`` pairs of the docs/RESULTS.md line "Generator settings of the hard benchmark ..."."""
    lines = [ln for ln in (REPO / "docs" / "RESULTS.md").read_text().splitlines()
             if ln.startswith("Generator settings of the hard benchmark")]
    assert len(lines) == 1, "docs/RESULTS.md: one 'Generator settings of the hard benchmark' line"
    pairs = re.findall(r"`(\w+)=([^`]+)`", lines[0])
    return {k: ast.literal_eval(v) for k, v in pairs}


def test_hard_config_loads_with_the_documented_generator_settings():
    cfg = load_experiment(HARD)
    demo = load_experiment(REPO / "configs" / "demo_synthetic.py")
    assert cfg.experiment.name == "synthetic_hard" and cfg.data.dataset == "synthetic"
    syn = dict(cfg.data.synthetic)
    syn["object_radius"] = tuple(syn["object_radius"])
    documented = documented_generator_settings()
    assert documented == syn                            # every setting, the same values
    assert set(syn) - {"seed"} <= set(DEFAULTS)
    # harder than the demo's generator defaults on every axis the preset changes
    assert syn["n_classes"] >= 10 > DEFAULTS["n_classes"]
    assert syn["max_objects"] > DEFAULTS["max_objects"]
    assert syn["max_classes_per_image"] > DEFAULTS["max_classes_per_image"]
    assert syn["context_prob"] > DEFAULTS["context_prob"]
    assert syn["object_radius"][1] < DEFAULTS["object_radius"][1]
    # the method is the demo's: same segmenter / eval sections, only a longer segmenter schedule
    # (the upper bound follows it)
    assert cfg.segmenter.train.max_iters == 2000 == 2 * demo.segmenter.train.max_iters
    seg = cfg.segmenter.replace(train=cfg.segmenter.train.replace(max_iters=demo.segmenter.train.max_iters))
    assert seg.to_dict() == demo.segmenter.to_dict() and cfg.eval.to_dict() == demo.eval.to_dict()
    assert cfg.upper_bound.segmenter(cfg.segmenter).train.max_iters == 2000


def test_hard_config_is_accepted_by_the_ablation_driver():
    from stages.ablation import variant_specs

    specs = variant_specs(load_experiment(HARD))
    assert {"gap", "ep", "bew_ep"} <= set(specs)


def test_hard_generator_settings_draw_small_numerous_objects(tmp_path):
    syn = {k: v for k, v in dict(load_experiment(HARD).data.synthetic).items() if k != "seed"}
    few = dict(n_train=30, n_val=0, n_test=0)
    hard = generate_synthetic(tmp_path / "hard", {**syn, **few}, seed=0)
    demo = generate_synthetic(tmp_path / "demo", {"image_size": syn["image_size"], **few}, seed=0)
    assert len(hard["classes"]) == syn["n_classes"] + 1

    def objects(root):
        return [o for im in json.loads((root / "meta.json").read_text())["images"].values()
                for o in im["objects"]]
    h, d = objects(tmp_path / "hard"), objects(tmp_path / "demo")
    assert len(h) > len(d)                             # more objects ...
    assert np.median([o[3] for o in h]) < 0.8 * np.median([o[3] for o in d])   # ... and smaller
    per_image = [im["objects"] for im in json.loads((tmp_path / "hard" / "meta.json").read_text())["images"].values()]
    assert max(len(o) for o in per_image) <= syn["max_objects"]
    assert max(len({x[0] for x in o}) for o in per_image) <= syn["max_classes_per_image"]


def test_object_radius_default_and_errors(tmp_path):
    tiny = dict(image_size=48, n_train=3, n_val=0, n_test=0)
    a = generate_synthetic(tmp_path / "a", tiny, seed=0)
    b = generate_synthetic(tmp_path / "b", {**tiny, "object_radius": (0.11, 0.3)}, seed=0)
    jpgs = sorted((tmp_path / "a" / "VOC2012" / "JPEGImages").iterdir())
    assert a["config"]["object_radius"] == (0.11, 0.3) and len(jpgs) == 3
    for p in jpgs:                                     # the default is the explicit (0.11, 0.3)
        assert p.read_bytes() == (tmp_path / "b" / "VOC2012" / "JPEGImages" / p.name).read_bytes()
    for bad in ((0.3, 0.1), (0.0, 0.2), (0.1,)):
        with pytest.raises(ValueError, match="object_radius"):
            generate_synthetic(tmp_path / "c", {**tiny, "object_radius": bad})

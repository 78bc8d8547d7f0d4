"""Typed settings (pipeline/settings/): every config in configs/ checks against them; bad keys,
values and sections fail at load time with one line naming the key, before any stage runs; the
digests of unchanged configs stay what they were."""
from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from pipeline.crf import CRFParams
from pipeline.runtime.stage import config_digests
from pipeline.settings import KEYS_ADDED_LATER, SECTIONS, ConfigError, Section, Settings
from stages.common import load_experiment, main_for

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.py"))
BASES = sorted((REPO / "configs" / "_base_").glob("*.py"))
DEMO = REPO / "configs" / "demo_synthetic.py"


def _check_every_key(typed, raw, path):
    """Every key of the plain config ``raw`` is a field of the typed section, holding the same
    value; nested sections are walked (free-form dicts such as an mmseg model are values)."""
    fields = {f.name for f in dataclasses.fields(typed)}
    assert set(raw) <= fields, (path, set(raw) - fields)
    for key, value in raw.items():
        got = getattr(typed, key)
        if isinstance(got, Section):
            _check_every_key(got, value, f"{path}.{key}")
        else:
            want = tuple(value) if isinstance(value, list) else value
            assert got == want, (f"{path}.{key}", got, want)


@pytest.mark.parametrize("path", CONFIGS + BASES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_config_checks_against_the_typed_settings(path):
    raw = Config.fromfile(str(path)).to_dict()
    assert raw and set(raw) <= set(SECTIONS)
    for name, section in raw.items():
        typed = SECTIONS[name].from_dict(section, name)
        _check_every_key(typed, section, name)
    if path in CONFIGS:
        settings = load_experiment(path)          # the whole experiment, ablation variants too
        assert settings.experiment.name == (raw["experiment"].get("name") or path.stem)
        for name in settings.ablation.variants:
            assert isinstance(settings.variant(name), Settings)


def _fails(capsys, tmp_path, *opts, exp=DEMO) -> str:
    """The error line of ``python -m stages.seeds --opts ...`` (exit status 1, nothing ran:
    not even the work dir was made)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main_for("stages.seeds", ["--exp", str(exp), "--work-dir", str(tmp_path / "wd"), "--opts", *opts])
    assert exc.value.code == 1 and not (tmp_path / "wd").exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("[seeds] error: ") and lines[1:] == ["(DEBUG=1 shows the traceback)"]
    return lines[0]


@pytest.mark.parametrize("opt,message", [
    ("seeds.fg_tpo=0.2", "OPTS: unknown key seeds.fg_tpo — did you mean seeds.fg_top?"),
    ("classifier.train.max_itres=5",
     "unknown key classifier.train.max_itres — did you mean classifier.train.max_iters?"),
    ("seedz.fg_top=0.2", "OPTS: unknown section seedz — did you mean seeds?"),
    ("seeds.bg_sal=-1", "seeds.bg_sal=-1 is out of range: it must be a number in [0, 1]"),
    ("classifier.train.batch_size=0",
     "classifier.train.batch_size=0 is out of range: it must be an integer >= 1"),
    ("eval.scales=(0,)", "eval.scales=(0,) is out of range: it must be None or a tuple of one or "
                         "more values, each a number > 0"),
    ("eval.scales=()", "eval.scales=() has the wrong length"),
    ("heatmaps.scales=(1.0, -0.5)", "heatmaps.scales=(1.0, -0.5) is out of range: it must be a "
                                    "tuple of one or more values, each a number > 0"),
    ("seeds.fg_top=high", "seeds.fg_top='high' has the wrong type: it must be a number in [0, 1]"),
    ("seeds.fg_mode=top", "seeds.fg_mode='top' is not allowed: it must be one of 'relative', 'rank'"),
    ("classifier.train.optimizer.momentum=0.9",
     "classifier.train.optimizer.momentum is not an argument of Adam: remove it"),
    ("classifier.train.optimizer.betaz=(0.9,0.99)",
     "unknown key classifier.train.optimizer.betaz — did you mean classifier.train.optimizer.betas?"),
    ("upper_bound.train.max_iter=3", "did you mean upper_bound.train.max_iters?"),
    ("segmenter.crf.backend=cuda", "it must be one of 'pydensecrf', 'torch'"),
])
def test_bad_opts_fail_before_any_stage_runs(opt, message, capsys, tmp_path):
    assert message in _fails(capsys, tmp_path, opt)


def test_bad_config_file_fails_naming_the_file_and_key(tmp_path, capsys):
    exp = tmp_path / "exp.py"
    exp.write_text(f"_base_ = [{str(DEMO)!r}]\nseeds = dict(fg_tpo=0.2)\n")
    msg = _fails(capsys, tmp_path, "seeds.fg_top=0.2", exp=exp)
    assert f"{exp}: unknown key seeds.fg_tpo — did you mean seeds.fg_top?" in msg
    exp.write_text(f"_base_ = [{str(DEMO)!r}]\nseedz = dict(fg_top=0.2)\n")
    assert "unknown section seedz — did you mean seeds?" in _fails(capsys, tmp_path,
                                                                   "seeds.fg_top=0.2", exp=exp)
    exp.write_text(f"_base_ = [{str(DEMO)!r}]\nseeds = dict(bg_sal=1.5)\n")
    assert "seeds.bg_sal=1.5 is out of range: it must be a number in [0, 1]" in _fails(
        capsys, tmp_path, "seeds.fg_top=0.2", exp=exp)
    # a required key whose default is missing from the config names the key
    exp.write_text("experiment = dict(seed=0, device='cpu')\nseeds = dict(fg_top=0.2)\n")
    assert "seeds.heatmap_source is not set" in _fails(capsys, tmp_path, "seeds.bg_sal=0.1", exp=exp)
    # OPTS naming a section the experiment does not have
    exp.write_text(f"_base_ = [{str(REPO / 'configs/_base_/cues.py')!r}]\n"
                   "experiment = dict(seed=0, device='cpu')\n")
    assert "OPTS: section eval is not in this experiment" in _fails(capsys, tmp_path, "eval.split=val",
                                                                   exp=exp)


def test_rules_between_keys_and_sections(tmp_path):
    demo = load_experiment(DEMO)
    with pytest.raises(ConfigError, match=r"needs the λ\^c maps: set heatmaps.class_specific_lambda"):
        demo.with_overrides({"heatmaps.class_specific_lambda": False,
                             "seeds.heatmap_source": "lambda_c"})
    with pytest.raises(ConfigError, match="schedule type 'step' needs step and gamma"):
        demo.with_overrides({"segmenter.train.schedule.type": "step"})
    with pytest.raises(ConfigError, match=r"boundary_clip=\(20, 1\) must be \(low, high\)"):
        demo.with_overrides({"segmenter.dsrg.boundary_clip": (20, 1)})
    exp = tmp_path / "exp.py"
    exp.write_text(f"_base_ = [{str(DEMO)!r}]\n"
                   "ablation = dict(variants=dict(gap={'classifier.model.pooling.tpye': 'gap'}))\n")
    with pytest.raises(ConfigError, match=r"ablation\.variants\.gap: unknown key classifier\.model"
                                          r"\.pooling\.tpye — did you mean classifier\.model\.pooling\.type\?"):
        load_experiment(exp)


def test_one_line_message_and_status_from_the_command_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "stages.seeds", "--exp", str(DEMO), "--work-dir",
                          str(tmp_path / "wd"), "--opts", "seeds.bg_sal=-1"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "[seeds] error: OPTS: seeds.bg_sal=-1 is out of range: it must be a number in [0, 1]",
        "(DEBUG=1 shows the traceback)"]
    assert not (tmp_path / "wd").exists()


# digests of configs/demo_synthetic.py's stage sections, as manifests written before the typed
# settings recorded them: a config whose values did not change keeps its digest
DEMO_DIGESTS = {"data": "9253634834f1d672", "classifier": "7979784e0bc654ac",
                "heatmaps": "d0ebaaef59664a1a", "saliency": "b45f1381ffc7f831",
                "seeds": "9fb8889ab629b8ba", "segmenter": "695d75e03b0034c2",
                "upper_bound": "123155f564caa7fd", "retrain": "39dd0ba95e0a05bb",
                "eval": "a2a60b288d4a6ee7", "submit": "0624784cd3db6222",
                "localize": "2c9dcb51365d7f4a"}


def test_digests_of_unchanged_configs_stay_and_later_keys_count_once_changed():
    demo = load_experiment(DEMO)
    for stage, want in DEMO_DIGESTS.items():
        mod = importlib.import_module(f"stages.{stage}")
        assert config_digests(demo.stage_section(stage, getattr(mod, "SECTIONS", None)))[0] == want, stage
    seg = demo.segmenter          # a key added later, at its earlier behaviour, is left out
    assert "start_method" not in seg.to_dict()["crf"] and seg.crf.start_method == "spawn"
    assert "model" not in demo.eval.to_dict() and demo.eval.model == "segmenter"
    torch_crf = demo.with_overrides({"segmenter.crf.backend": "torch"}).segmenter
    assert torch_crf.to_dict()["crf"]["backend"] == "torch"
    assert config_digests(torch_crf)[0] != config_digests(seg)[0]
    # execution-only keys change nothing; a real value does
    wider = demo.with_overrides({"segmenter.crf.workers": 8, "saliency.workers": 8})
    assert config_digests(wider.segmenter)[0] == config_digests(seg)[0]
    assert config_digests(demo.with_overrides({"seeds.fg_top": 0.2}).seeds)[0] != DEMO_DIGESTS["seeds"]
    for dotted in KEYS_ADDED_LATER:                 # every listed key exists in the settings
        section, *rest = dotted.split(".")
        node = SECTIONS[section]
        for name in rest:
            assert name in {f.name for f in dataclasses.fields(node)}, dotted
            node = next((f.metadata["check"].cls for f in dataclasses.fields(node)
                         if f.name == name and hasattr(f.metadata["check"], "cls")), None)


def test_submit_takes_evals_inference_unless_it_sets_its_own():
    demo = load_experiment(DEMO)
    ev = demo.with_overrides({"eval.crf.bi_w": 5}).eval
    same = demo.submit.inference(ev)
    assert same.settings == ev.inference().settings and same.settings.protocol == "resized-square+size"
    assert same.crf == CRFParams.preset("dsrg_test", bi_w=5) and same.workers == 2
    own = demo.with_overrides({"submit.size": "original", "submit.flip": False,
                               "submit.crf": {"enabled": False, "workers": 4}}).submit.inference(ev)
    assert own.settings.size is None and own.settings.flip is False
    assert own.settings.batch_size == ev.batch_size and own.crf is None and own.workers == 4
    voc = load_experiment(REPO / "configs" / "voc_ep_dsrg.py")
    assert voc.eval.inference().settings.describe() == {
        "protocol": "test-ms-f", "size": None, "scales": [0.75, 1.0, 1.25], "sizes": None,
        "flip": False, "fusion": "sum"}                       # DSRG's test-ms-f.py
    assert voc.retrain.pseudo.inference().settings.sizes == (241, 321, 401)   # test-ms.py


def test_the_synthetic_generators_parameters_are_all_settings():
    from pipeline.data.synthetic import DEFAULTS
    from pipeline.settings.experiment import SyntheticSettings

    assert {f.name for f in dataclasses.fields(SyntheticSettings)} == set(DEFAULTS) | {"seed"}


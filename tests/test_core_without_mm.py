"""The core pipeline needs neither mmcv nor mmsegmentation.

A separate Python process refuses every ``mmcv`` / ``mmseg`` import (a ``sys.meta_path`` finder
that raises ``ModuleNotFoundError``) and runs every stage of ``make demo`` through the stages'
command line (``stages.common.main_for``, as ``make <stage>`` does) on the demo config scaled
down with ``--opts`` (a few images and iterations), then the report. The process must end
cleanly with neither package imported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("data", "classifier", "heatmaps", "saliency", "seeds", "segmenter", "upper_bound",
          "eval", "submit", "localize")
TINY = ["data.synthetic.n_train=8", "data.synthetic.n_val=3", "data.synthetic.n_test=2",
        "classifier.train.max_iters=2", "classifier.train.batch_size=4", "classifier.train.log_interval=1",
        "heatmaps.scales=(1.0,)", "saliency.workers=1",
        "segmenter.train.max_iters=2", "segmenter.train.batch_size=2", "segmenter.train.log_interval=1",
        "upper_bound.train.max_iters=2", "eval.scales=(1.0,)", "eval.crf.workers=0", "eval.n_overlays=1",
        "localize.n_overlays=1"]

DRIVER = textwrap.dedent("""
    import importlib.abc, json, sys

    class RefuseOpenMMLab(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("mmcv", "mmseg"):
                raise ModuleNotFoundError(f"No module named {name!r} (refused: core environment test)")
            return None

    sys.meta_path.insert(0, RefuseOpenMMLab())
    import torch
    torch.set_num_threads(1)
    from stages.common import main_for
    import stages.report
    exp, work, stages_, opts = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
    result = {}
    for stage in stages_:
        man = main_for(f"stages.{stage}", ["--exp", exp, "--work-dir", work, "--opts", *opts])
        result[stage] = man["metrics"]
    rc = stages.report.main(["--exp", exp, "--work-dir", work])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("mmcv", "mmseg"))
    print("RESULT " + json.dumps({"report_rc": rc, "leaked": leaked, "val_mAP": result["classifier"]["val_mAP"],
                                  "mIoU": result["eval"]["mIoU"]}))
""")


def test_every_demo_stage_runs_with_mmcv_and_mmseg_refused(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(driver), str(REPO / "configs" / "demo_synthetic.py"),
                           str(tmp_path / "work"), ",".join(STAGES), *TINY],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    assert res["leaked"] == [] and res["report_rc"] == 0
    assert 0.0 <= res["val_mAP"] <= 1.0 and 0.0 <= res["mIoU"] <= 1.0
    assert (tmp_path / "work" / "report" / "index.html").is_file()
    assert (tmp_path / "work" / "classifier" / "train" / "scalars.jsonl").is_file()

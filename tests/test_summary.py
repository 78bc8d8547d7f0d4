"""`make summary`: the numbers of an experiment from its manifests, incl. the segmenter's score
on the pseudo-mask images next to the pseudo-masks' own."""
import json

from stages.summary import summarize


def _manifest(wd, stage, metrics, counts=None):
    (wd / stage).mkdir(parents=True)
    (wd / stage / "manifest.json").write_text(json.dumps(
        {"stage": stage, "wall_time_s": 1.5, "metrics": metrics, "counts": counts or {}}))


def test_summary_shows_the_train_score_next_to_the_pseudo_masks(tmp_path):
    _manifest(tmp_path, "seeds", {"pseudo": {"mIoU": 0.3}, "seeds": {"precision": 0.9, "recall": 0.5,
                                                                     "mIoU": 0.4, "fraction_labelled": 0.6}})
    _manifest(tmp_path, "segmenter", {"val_mIoU": 0.1, "train_mIoU": 0.12, "train_below_pseudo": True,
                                      "train_pred_fg": 0.03, "val_pred_fg": 0.02, "train_gt_fg": 0.2,
                                      "val_gt_fg": 0.25})
    _manifest(tmp_path, "eval", {"mIoU": 0.2, "mIoU_no_crf": 0.18, "mIoU_crf": 0.2})
    _manifest(tmp_path, "upper_bound", {"mIoU": 0.4})
    lines = {ln.split("  ")[0]: ln for ln in summarize(tmp_path).splitlines()}
    assert "30.00" in lines["pseudo-mask mIoU (%)"]
    seg = lines["segmenter on those images (%)"]
    assert "12.00" in seg and "BELOW the pseudo-masks" in seg
    fg = lines["predicted foreground train / val"]
    assert "3.00 /   2.00 %" in fg and "(GT 20.00 / 25.00 %)" in fg
    assert lines["WSSS / upper bound"].endswith("0.500")
    # a segmenter above its pseudo-masks (or without the score) carries no warning
    (tmp_path / "segmenter" / "manifest.json").unlink()
    (tmp_path / "segmenter").rmdir()
    _manifest(tmp_path, "segmenter", {"train_mIoU": 0.35, "train_below_pseudo": False})
    text = summarize(tmp_path)
    assert "BELOW" not in text and "35.00" in text


def test_summary_shows_the_val_halves_and_their_ratios(tmp_path):
    part = lambda n, no, crf: {"images": n, "mIoU": crf, "mIoU_no_crf": no, "mIoU_crf": crf}
    _manifest(tmp_path, "eval", {"mIoU": 0.2, "mIoU_no_crf": 0.18, "mIoU_crf": 0.2,
                                 "parts": {"select": part(61, 0.1, 0.12), "report": part(59, 0.3, 0.33)}})
    _manifest(tmp_path, "upper_bound", {"mIoU": 0.4, "parts": {"select": part(61, 0.3, 0.4),
                                                                "report": part(59, 0.3, 0.44)}})
    text = summarize(tmp_path)
    select = next(ln for ln in text.splitlines() if "select half of val" in ln)
    report = next(ln for ln in text.splitlines() if "report half of val" in ln)
    assert "61 images" in select and "10.00 /  12.00" in select and select.endswith("ratio 0.300")
    assert "59 images" in report and report.endswith("ratio 0.750")
    # eval metrics from before the halves: no such lines
    (tmp_path / "eval" / "manifest.json").write_text(json.dumps({"wall_time_s": 1, "metrics": {"mIoU": 0.2}}))
    assert "half of val" not in summarize(tmp_path)

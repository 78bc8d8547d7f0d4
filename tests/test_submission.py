"""Tests for pipeline.data.submission: prediction PNGs, validator, archive."""
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline.data.files import write_label_png
from pipeline.data.submission import (make_submission_archive, validate_submission,
                                      write_prediction_png)

N = 21
SIZES = {"2008_000001": (40, 30), "2008_000002": (25, 35), "2008_000003": (20, 20)}  # (H, W)


@pytest.fixture()
def setup(tmp_path):
    img_dir, res = tmp_path / "JPEGImages", tmp_path / "pred"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / f"{i}.jpg")
        write_prediction_png(res / f"{i}.png", rng.integers(0, N, (h, w)), N)
    return img_dir, res


def test_correct_submission_passes(setup):
    img_dir, res = setup
    assert validate_submission(res, list(SIZES), img_dir, N) == []
    with Image.open(res / "2008_000001.png") as im:
        assert im.mode == "P" and im.size == (30, 40)


def test_write_refuses_ignore_and_out_of_range(tmp_path):
    with pytest.raises(ValueError):
        write_prediction_png(tmp_path / "a.png", np.array([[0, 255]]), N)
    with pytest.raises(ValueError):
        write_prediction_png(tmp_path / "a.png", np.array([[0, 21]]), N)
    assert not (tmp_path / "a.png").exists()


def _only(problems, name):
    assert len(problems) == 1, problems
    assert name in problems[0]
    return problems[0]


def test_validator_catches_each_defect(setup):
    img_dir, res = setup
    ids = list(SIZES)
    # RGB PNG
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(res / "2008_000001.png")
    assert "mode" in _only(validate_submission(res, ids, img_dir, N), "2008_000001.png")
    write_prediction_png(res / "2008_000001.png", np.zeros((40, 30)), N)
    # wrong size
    write_prediction_png(res / "2008_000002.png", np.zeros((35, 25)), N)
    assert "size" in _only(validate_submission(res, ids, img_dir, N), "2008_000002.png")
    write_prediction_png(res / "2008_000002.png", np.zeros((25, 35)), N)
    # value 255
    lab = np.zeros((20, 20), np.uint8)
    lab[3, 3] = 255
    write_label_png(res / "2008_000003.png", lab)
    assert "255" in _only(validate_submission(res, ids, img_dir, N), "2008_000003.png")
    # wrong palette (grey palette)
    img = Image.fromarray(np.zeros((20, 20), np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in (i, i, i)])
    img.save(res / "2008_000003.png")
    assert "palette" in _only(validate_submission(res, ids, img_dir, N), "2008_000003.png")
    write_prediction_png(res / "2008_000003.png", lab * 0, N)
    assert validate_submission(res, ids, img_dir, N) == []
    # missing id
    (res / "2008_000003.png").rename(res / "2008_000009.png")
    problems = validate_submission(res, ids, img_dir, N)
    assert len(problems) == 2
    assert any("2008_000003.png" in p and "missing" in p for p in problems)
    assert any("2008_000009.png" in p and "extra" in p for p in problems)
    # unreadable file
    (res / "2008_000009.png").unlink()
    (res / "2008_000003.png").write_bytes(b"garbage")
    assert "readable" in _only(validate_submission(res, ids, img_dir, N), "2008_000003.png")


def test_archive_member_names(setup, tmp_path):
    _, res = setup
    tgz = tmp_path / "out" / "results.tgz"
    assert make_submission_archive(res, tgz) == 3
    with tarfile.open(tgz, "r:gz") as tar:
        names = tar.getnames()
    assert sorted(names) == [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in sorted(SIZES)]
    # a tree that already holds results/VOC2012/... is packed the same way
    tree = tmp_path / "tree" / "results/VOC2012/Segmentation/comp6_test_cls"
    tree.mkdir(parents=True)
    for p in res.iterdir():
        (tree / p.name).write_bytes(p.read_bytes())
    assert make_submission_archive(tmp_path / "tree", tgz) == 3
    with tarfile.open(tgz, "r:gz") as tar:
        assert sorted(tar.getnames()) == sorted(names)
    assert sorted(p.name for p in tgz.parent.iterdir()) == ["results.tgz"]

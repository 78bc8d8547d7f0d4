"""Shared pytest fixtures (no ``__init__.py`` in tests/, see docs/DESIGN.md).

Sections: data fixtures (tiny VOC / SBD trees, a small synthetic tree). Add new sections
below with their own header.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pipeline.data.files import write_label_png
from pipeline.data.vocxml import VocAnnotation, VocObject, write_voc_xml

# ============================== data fixtures ==============================================
# Tiny VOC tree: 3 foreground classes. Masks are 6x8 label maps written with symbolic class
# names; the builder maps names to indices (classes.txt order, or the VOC indices).
TINY_CLASSES = ["background", "cat", "dog", "car"]
TINY_VOC_INDEX = {"cat": 8, "dog": 12, "car": 7}  # the same names in VOC_CLASSES
TINY_H, TINY_W = 6, 8
TINY_SPLITS = {"train": ["img_a", "img_b", "img_c"], "val": ["img_d", "img_e"], "test": ["img_f"]}
TINY_SBD_SPLITS = {"train": ["img_b", "img_g", "img_h"], "val": ["img_d", "img_i"]}
# trainaug = (SBD train ∪ SBD val ∪ VOC train) − VOC val
TINY_TRAINAUG = ["img_a", "img_b", "img_c", "img_g", "img_h", "img_i"]
# Objects per id: (name, difficult). Disagreements with the masks are noted.
TINY_XML = {
    "img_a": [("cat", 0)], "img_b": [("dog", 0)],
    "img_c": [("cat", 0)],                      # mask has cat + car -> disagrees
    "img_d": [("car", 0)],
    "img_e": [("dog", 0), ("cat", 1)],          # difficult cat kept; mask has dog -> disagrees
    "img_f": [],
    "img_g": [("dog", 0)], "img_h": [("car", 0)],  # SBD h has car + cat -> disagrees
    "img_i": [("cat", 0)],
}
TINY_VOC_MASKS = {  # id -> list of (name, (y0, y1, x0, x1)) rectangles; 255 band on the first
    "img_a": [("cat", (1, 5, 1, 6))], "img_b": [("dog", (0, 4, 2, 8))],
    "img_c": [("cat", (0, 3, 0, 4)), ("car", (3, 6, 4, 8))],
    "img_d": [("car", (2, 6, 0, 5))], "img_e": [("dog", (1, 6, 3, 7))],
}
TINY_SBD_MASKS = {  # SBD has no void band; img_b / img_d differ from VOC (VOC wins)
    "img_b": [("cat", (0, 6, 0, 8))], "img_d": [("dog", (0, 6, 0, 8))],
    "img_g": [("dog", (1, 5, 2, 7))], "img_h": [("car", (0, 3, 0, 8)), ("cat", (3, 6, 0, 3))],
    "img_i": [("cat", (2, 6, 2, 6))],
}


def tiny_mask(rects, index: dict[str, int], void: bool) -> np.ndarray:
    """Label map from rectangles; with ``void`` the first rectangle gets a 255 outline."""
    m = np.zeros((TINY_H, TINY_W), np.uint8)
    for k, (name, (y0, y1, x0, x1)) in enumerate(rects):
        m[y0:y1, x0:x1] = 255 if (void and k == 0) else index[name]
        if void and k == 0:
            m[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = index[name]
    return m


def write_sbd_mat(path: Path, seg: np.ndarray, layout: str = "dict") -> None:
    """Write an SBD ``cls`` .mat: ``layout='dict'`` (MATLAB struct via a dict) or ``'record'``."""
    import scipy.io

    if layout == "dict":
        scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros((1, 1)),
                                          "CategoriesPresent": np.unique(seg[seg > 0])}})
    else:
        rec = np.zeros((1, 1), dtype=[("Segmentation", object), ("CategoriesPresent", object)])
        rec[0, 0]["Segmentation"] = seg
        rec[0, 0]["CategoriesPresent"] = np.unique(seg[seg > 0])
        scipy.io.savemat(path, {"GTcls": rec})


def build_tiny_voc(root: Path, voc_classes: bool = False) -> SimpleNamespace:
    """Write the tiny VOC tree under ``root``; ``voc_classes`` uses VOC indices, no classes.txt."""
    index = dict(TINY_VOC_INDEX) if voc_classes else {c: i for i, c in enumerate(TINY_CLASSES)}
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not voc_classes:
        (root / "classes.txt").write_text("\n".join(TINY_CLASSES) + "\n")
    for split, ids in TINY_SPLITS.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    rng = np.random.default_rng(0)
    for k, (img_id, objs) in enumerate(sorted(TINY_XML.items())):
        Image.fromarray(rng.integers(0, 255, (TINY_H, TINY_W, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{img_id}.jpg")
        write_voc_xml(root / "Annotations" / f"{img_id}.xml", VocAnnotation(
            filename=f"{img_id}.jpg", width=TINY_W, height=TINY_H,
            objects=[VocObject(n, (1 + j, 2, 4 + j, 5), bool(dif), False) for j, (n, dif) in enumerate(objs)]))
    masks = {i: tiny_mask(r, index, void=True) for i, r in TINY_VOC_MASKS.items()}
    for img_id, m in masks.items():
        write_label_png(root / "SegmentationClass" / f"{img_id}.png", m)
    return SimpleNamespace(root=root, index=index, masks=masks, splits=TINY_SPLITS,
                           classes=None if voc_classes else TINY_CLASSES)


def build_tiny_sbd(sbd_root: Path, index: dict[str, int]) -> SimpleNamespace:
    """Write the tiny SBD tree (``dataset/cls/*.mat``; img_i in the 'record' layout)."""
    (sbd_root / "dataset" / "cls").mkdir(parents=True, exist_ok=True)
    for split, ids in TINY_SBD_SPLITS.items():
        (sbd_root / "dataset" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    masks = {i: tiny_mask(r, index, void=False) for i, r in TINY_SBD_MASKS.items()}
    for img_id, m in masks.items():
        write_sbd_mat(sbd_root / "dataset" / "cls" / f"{img_id}.mat", m,
                      layout="record" if img_id == "img_i" else "dict")
    return SimpleNamespace(root=sbd_root, masks=masks)


def check_boxes(label: np.ndarray, objects, classes, tol: int = 1) -> None:
    """XML objects vs a mask: each box is tight (within ``tol`` px) around pixels of its class,
    the class's pixels lie inside the union of its boxes, and the class sets agree."""
    cover = defaultdict(lambda: np.zeros(label.shape, bool))
    for name, (x1, y1, x2, y2) in objects:
        c = classes.index(name)
        sub = label[y1 - 1:y2, x1 - 1:x2] == c
        assert sub.any(), (name, (x1, y1, x2, y2))
        t = tol + 1
        assert sub[:t].any() and sub[-t:].any() and sub[:, :t].any() and sub[:, -t:].any()
        cover[c][y1 - 1:y2, x1 - 1:x2] = True
    present = {int(v) for v in np.unique(label) if 0 < v < 255}
    assert present == set(cover)
    for c in present:
        assert not ((label == c) & ~cover[c]).any()


@pytest.fixture
def tiny_voc(tmp_path) -> SimpleNamespace:
    """A tiny VOC tree (classes.txt: background, cat, dog, car) under ``tmp_path/voc``."""
    return build_tiny_voc(tmp_path / "voc")


@pytest.fixture
def tiny_sbd(tmp_path, tiny_voc) -> SimpleNamespace:
    """A tiny SBD tree matching ``tiny_voc`` under ``tmp_path/sbd``."""
    return build_tiny_sbd(tmp_path / "sbd", tiny_voc.index)


@pytest.fixture
def data_helpers() -> SimpleNamespace:
    """Builders and checks for data tests (tests import no modules: importlib import mode)."""
    return SimpleNamespace(build_tiny_voc=build_tiny_voc, build_tiny_sbd=build_tiny_sbd,
                           write_sbd_mat=write_sbd_mat, check_boxes=check_boxes,
                           trainaug=TINY_TRAINAUG)


SYNTH_TEST_CFG = dict(image_size=64, n_train=60, n_val=20, n_test=20)


@pytest.fixture(scope="session")
def synthetic_tree(tmp_path_factory) -> SimpleNamespace:
    """A small synthetic benchmark (``SYNTH_TEST_CFG``, seed 3), generated once per session."""
    from pipeline.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "syn"
    summary = generate_synthetic(out, SYNTH_TEST_CFG, seed=3)
    return SimpleNamespace(out=out, voc=out / "VOC2012", heldout=out / "heldout" / "SegmentationClass",
                           summary=summary, cfg=summary["config"])
# ============================== end of data fixtures =======================================


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is fastest on a shared CPU (restored afterwards)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ============================== OpenMMLab edge =============================================
@pytest.fixture(scope="session")
def mm_edge():
    """:mod:`pipeline.mm.segmentation`; where mmsegmentation / mmcv are not installed (the core
    environment) the test is skipped with the reason and the command that installs them."""
    from pipeline.mm import MMSegUnavailable, segmentation_edge

    try:
        return segmentation_edge("this test")
    except MMSegUnavailable as exc:
        pytest.skip(str(exc).split(" [")[0])

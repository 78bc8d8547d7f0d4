"""torch Datasets over a :class:`pipeline.data.index.DatasetIndex`.

* :class:`ClassificationDataset` — image + multi-hot image labels (K foreground classes).
* :class:`SegmentationDataset` — image + a label map read from a folder of ``<id>.png``
  (seeds, pseudo-labels) or the ground-truth masks, + image-level labels and the raw
  (augmented) uint8 image that the CRF boundary loss needs.

Randomness comes from torch's generator (seeded per DataLoader worker by torch), so runs
are reproducible under ``torch.manual_seed``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline import transforms as T
from pipeline.data.files import read_label_png


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))


class ClassificationDataset(Dataset):
    """Items: ``{"image": 3xSxS float, "target": K float multi-hot, "id": str}``.

    Training: optional square resize, random scale in ``scale_range``, random ``crop``, flip.
    Evaluation (``train=False``): square resize to ``size``.
    """

    def __init__(self, index, split: str, size: int, train: bool = True,
                 scale_range=(0.7, 1.3), resize: int | None = None):
        self.index, self.ids = index, list(index.ids(split))
        self.size, self.train = int(size), train
        self.scale_range, self.resize = scale_range, resize
        if not self.ids:
            raise ValueError(f"split {split!r} of dataset {index.root} is empty")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        img_id = self.ids[i]
        image = self.index.read_image(img_id)
        if self.train:
            image, _ = T.train_augment(image, None, self.size, self.scale_range, _rng(), self.resize)
        else:
            image = T.resize_image(image, (self.size, self.size))
        return {"image": T.to_tensor(image),
                "target": torch.from_numpy(self.index.label_vector(img_id)),
                "id": img_id}


class SegmentationDataset(Dataset):
    """Items: ``{"image", "label" (HxW long, 255 ignore), "classes" (C bool, [0] = background),
    "raw" (HxWx3 uint8), "id"}``.

    ``label_dir`` is a folder of ``<id>.png`` label maps (seeds or pseudo-labels); ``None``
    reads the ground-truth masks of the dataset (fully supervised upper bound, evaluation).
    """

    def __init__(self, index, split: str, label_dir: str | os.PathLike | None, size: int,
                 train: bool = True, scale_range=(0.7, 1.3), resize: int | None = None):
        self.index, self.ids = index, list(index.ids(split))
        self.label_dir = None if label_dir is None else Path(label_dir)
        self.size, self.train = int(size), train
        self.scale_range, self.resize = scale_range, resize
        if not self.ids:
            raise ValueError(f"split {split!r} of dataset {index.root} is empty")
        missing = [i for i in self.ids if self._label_path(i) is None or not Path(self._label_path(i)).is_file()]
        if missing:
            where = self.label_dir or "the dataset's mask folders"
            raise FileNotFoundError(f"{len(missing)} label maps missing in {where}, e.g. {missing[0]}.png")

    def _label_path(self, img_id: str):
        if self.label_dir is not None:
            return self.label_dir / f"{img_id}.png"
        return self.index.mask_path(img_id)

    def label_paths(self) -> list:
        """The label map file of every item, in order."""
        return [self._label_path(i) for i in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        img_id = self.ids[i]
        image = self.index.read_image(img_id)
        label = read_label_png(self._label_path(img_id))
        if label.shape != image.shape[:2]:
            raise ValueError(f"{self._label_path(img_id)}: size {label.shape} differs from its image "
                             f"{image.shape[:2]}")
        if self.train:
            image, label = T.train_augment(image, label, self.size, self.scale_range, _rng(), self.resize)
        else:
            image = T.resize_image(image, (self.size, self.size))
            label = T.resize_label(label, (self.size, self.size))
        classes = np.zeros(self.index.num_classes, dtype=bool)
        classes[0] = True
        classes[list(self.index.labels(img_id))] = True
        return {"image": T.to_tensor(image), "label": torch.from_numpy(label.astype(np.int64)),
                "classes": torch.from_numpy(classes), "raw": torch.from_numpy(np.ascontiguousarray(image)),
                "id": img_id}

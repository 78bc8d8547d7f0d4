"""Read access to a prepared dataset directory (docs/DESIGN.md "Dataset directory").

``DatasetIndex.load(data_dir)`` reads ``dataset.json``; split lists and ``labels.json`` are read
lazily on first use. Paths are returned as ``pathlib.Path``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.files import read_label_png
from pipeline.data.vocxml import read_voc_xml

__all__ = ["DatasetIndex"]

FORMAT = "wsss-dataset/1"
_REQUIRED = ("root", "classes", "seg_dirs", "splits")


class DatasetIndex:
    """Dataset metadata and per-id file access for a prepared dataset directory."""

    def __init__(self, data_dir: str | Path, meta: dict):
        self.data_dir = Path(data_dir)
        self.meta = meta
        self.name: str = meta.get("name") or self.data_dir.name
        self.root = self._abs(meta["root"])
        self.classes: list[str] = list(meta["classes"])
        self.seg_dirs: list[Path] = [self._abs(d) for d in meta["seg_dirs"]]
        held = meta.get("heldout_seg_dir")
        self.heldout_seg_dir: Path | None = self._abs(held) if held else None
        self.splits: dict[str, int] = dict(meta["splits"])
        self.label_source: str | None = meta.get("label_source")
        self._ids: dict[str, list[str]] = {}
        self._labels: dict[str, list[int]] | None = None
        self._index = {c: i for i, c in enumerate(self.classes)}

    def _abs(self, path: str) -> Path:
        """Paths in dataset.json may be relative to the dataset folder (so it can be moved)."""
        p = Path(path)
        return p if p.is_absolute() else (self.data_dir / p)

    @classmethod
    def load(cls, data_dir: str | Path) -> "DatasetIndex":
        """Read ``<data_dir>/dataset.json``; ``ValueError``/``FileNotFoundError`` name the file."""
        path = Path(data_dir) / "dataset.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing dataset.json (run the data stage first)")
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT!r} dataset description")
        missing = [k for k in _REQUIRED if k not in meta]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        if not isinstance(meta["classes"], list) or len(meta["classes"]) < 2:
            raise ValueError(f"{path}: 'classes' must list the background and >= 1 class")
        return cls(data_dir, meta)

    # ---- classes ---------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of dataset classes, background included."""
        return len(self.classes)

    @property
    def fg_classes(self) -> list[str]:
        """Foreground class names (dataset indices 1..); classifier channel k is class k+1."""
        return self.classes[1:]

    # ---- lists and labels --------------------------------------------------------------------
    def ids(self, split: str) -> list[str]:
        """Ids of ``split`` (``train``, ``val``, ``test``, ``trainaug``) in list order."""
        if split not in self._ids:
            path = self.data_dir / "lists" / f"{split}.txt"
            if not path.is_file():
                raise KeyError(f"{path}: no list for split {split!r} (known: {sorted(self.splits)})")
            self._ids[split] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        return list(self._ids[split])

    def _all_labels(self) -> dict[str, list[int]]:
        if self._labels is None:
            path = self.data_dir / "labels.json"
            try:
                self._labels = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: unreadable labels ({exc})") from exc
        return self._labels

    def labels(self, img_id: str) -> list[int]:
        """Image-level labels of ``img_id`` as dataset class indices (>= 1), sorted."""
        labels = self._all_labels()
        if img_id not in labels:
            raise KeyError(f"{self.data_dir / 'labels.json'}: no labels for id {img_id!r}")
        return list(labels[img_id])

    def label_vector(self, img_id: str) -> np.ndarray:
        """Multi-hot float32 vector of length ``num_classes - 1``: entry k is class k+1."""
        vec = np.zeros(self.num_classes - 1, dtype=np.float32)
        for c in self.labels(img_id):
            vec[c - 1] = 1.0
        return vec

    # ---- files -------------------------------------------------------------------------------
    def image_path(self, img_id: str) -> Path:
        """``<root>/JPEGImages/<id>.jpg`` (not checked for existence)."""
        return self.root / "JPEGImages" / f"{img_id}.jpg"

    def mask_path(self, img_id: str) -> Path | None:
        """GT mask of ``img_id``: the first of ``seg_dirs`` holding ``<id>.png``, else None."""
        for d in self.seg_dirs:
            p = d / f"{img_id}.png"
            if p.is_file():
                return p
        return None

    def heldout_mask_path(self, img_id: str) -> Path | None:
        """Held-out (test scoring) mask of ``img_id`` or None."""
        if self.heldout_seg_dir is None:
            return None
        p = self.heldout_seg_dir / f"{img_id}.png"
        return p if p.is_file() else None

    def xml_path(self, img_id: str) -> Path | None:
        """``<root>/Annotations/<id>.xml`` if it exists, else None."""
        p = self.root / "Annotations" / f"{img_id}.xml"
        return p if p.is_file() else None

    def boxes(self, img_id: str) -> list[tuple[int, int, int, int, int]]:
        """Object boxes ``(class index, x1, y1, x2, y2)`` from the XML (difficult kept).

        Coordinates are VOC pixel coordinates: 1-based and inclusive, so the pixel block of a
        box in a numpy image is ``img[y1-1:y2, x1-1:x2]``. Objects without a box are skipped;
        no XML gives ``[]``.
        """
        path = self.xml_path(img_id)
        if path is None:
            return []
        out = []
        for obj in read_voc_xml(path).objects:
            if obj.name not in self._index or self._index[obj.name] == 0:
                raise ValueError(f"{path}: unknown class name {obj.name!r}")
            if obj.bbox is not None:
                out.append((self._index[obj.name], *obj.bbox))
        return out

    def read_image(self, img_id: str) -> np.ndarray:
        """The image as an ``HxWx3`` uint8 RGB array."""
        path = self.image_path(img_id)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing image for id {img_id!r}")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        except OSError as exc:
            raise ValueError(f"{path}: unreadable image ({exc})") from exc

    def read_mask(self, img_id: str, heldout: bool = False) -> np.ndarray | None:
        """The GT (or held-out) mask as ``HxW`` uint8, or None when there is none."""
        path = self.heldout_mask_path(img_id) if heldout else self.mask_path(img_id)
        return None if path is None else read_label_png(path)

    def __repr__(self) -> str:
        return f"DatasetIndex({self.name!r}, {self.num_classes} classes, splits={self.splits})"

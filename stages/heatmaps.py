"""Stage `heatmaps`: class heatmaps (CAM) and entropy weights λ of every image of a split.

For each image of ``heatmaps.split`` and each of its labelled classes c (dataset index >= 1,
classifier channel c - 1): the CAM ``Wᵀv + b`` of the trained classifier, averaged over
``scales`` and horizontal flips (:func:`pipeline.heatmaps.aggregate_heatmaps`), upsampled to the
image's own size and normalised per class (``ReLU(h) / max ReLU(h)``); plus the entropy-weight
map λ (EP paper Eq. 3, averaged the same way). Written with
:func:`pipeline.data.files.save_heatmap` to ``maps/<id>.npz`` (float16, the image's classes only;
``extra`` holds the image-level scores σ(logit) of those classes under the inference pooling).

With ``class_specific_lambda`` the class-specific weights ``λ^c = λ · p̂(c)`` (EP paper §4.3,
p̂ = softmax over the K classes of the CAM, computed per scale/flip at feature resolution and
then averaged like the CAM) go to ``lambda_c/<id>.npz`` in the same format (raw values in
[0, 1], not max-normalised; the seeds stage normalises every map it reads).

Images are resized to ``size`` so that they batch; ``size=None`` keeps their size and batches
equal-sized images together. ``pooling`` swaps the pooling rule at inference ("EP inference").
Runs on one process (rank 0) on ``ctx.device``.

``source='rib'`` replaces the CAM by RIB's per-image fine-tuned heatmaps (Lee et al. NeurIPS
2021; :func:`pipeline.rib.rib_heatmaps`): for each image, ``rib.steps`` updates of the trained
classifier on the image (``scales`` + flip) and ``rib.negatives`` images sharing no class with
it, loss on raw logits, GNDRP pooling, CAMs accumulated over the steps, weights restored after
every image. One image at a time (the network changes per image); λ still comes from the
unmodified classifier.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pipeline.data.datasets import ClassificationDataset
from pipeline.data.files import save_heatmap
from pipeline.data.index import DatasetIndex
from pipeline.heatmaps import infer_batch, normalise_per_class
from pipeline.rib import pick_negatives, rib_heatmaps
from pipeline.runtime.guards import check_array_finite
from pipeline.runtime.trunk_cache import attach_trunk_lookup
from pipeline.runtime.writer import BackgroundWriter
from pipeline.transforms import parse_size, resize_image, to_tensor
from stages.common import load_inference_classifier, main_for, resolve_path, split_ids

STAGE = "heatmaps"
UPSTREAM = ("data", "classifier")
NONFINITE_FIX = ("the classifier (WORK_DIR/classifier/model.pth) gives non-finite outputs: re-run "
                 "`make classifier` with a lower classifier.train.optimizer.lr")


class _Images(Dataset):
    """Items ``(3xhxw tensor, id, (H, W) original size)``; resized to ``size`` when given."""

    def __init__(self, index: DatasetIndex, ids: list[str], size):
        self.index, self.ids, self.size = index, ids, parse_size(size)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img_id = self.ids[i]
        img = self.index.read_image(img_id)
        hw = img.shape[:2]
        if self.size is not None and tuple(hw) != self.size:
            img = resize_image(img, self.size)
        return to_tensor(img), img_id, tuple(int(v) for v in hw)


def _collate(items):
    return items


def make_loader(index, ids, sec) -> DataLoader:
    return DataLoader(_Images(index, ids, sec.size), batch_size=sec.batch_size,
                      shuffle=False, num_workers=sec.num_workers, collate_fn=_collate)


def _groups(items):
    """Split a loader batch into sub-batches of equal tensor shape (only needed for size=None)."""
    groups = defaultdict(list)
    for item in items:
        groups[tuple(item[0].shape)].append(item)
    return list(groups.values())


def _to_image(x: torch.Tensor, hw) -> torch.Tensor:
    """(k, S, S) maps of the resized input → (k, H, W) of the image: the inverse of the
    input's bilinear resize (align_corners=False = OpenCV's half-pixel convention); the grid →
    input step already used the stride-8 geometry (:func:`pipeline.heatmaps.aggregate_heatmaps`)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    if x.shape[0] == 0:
        return x.new_zeros((0, *hw))
    return F.interpolate(x[None], size=tuple(hw), mode="bilinear", align_corners=False)[0]


class MapFiles:
    """Writes the per-image heatmap files of the inferred batches (through ``writer``) and counts
    images, class maps and the labelled classes' scores."""

    def __init__(self, ctx, net, index: DatasetIndex, sec, writer, rib=None):
        self.ctx, self.net, self.index, self.writer, self.rib = ctx, net, index, writer, rib
        self.maps_dir, self.lc_dir = ctx.out / "maps", ctx.out / "lambda_c"
        self.with_lc = sec.class_specific_lambda
        self.maps_dir.mkdir(exist_ok=True)
        if self.with_lc:
            self.lc_dir.mkdir(exist_ok=True)
        self.n_done, self.n_maps, self.score_sum = 0, 0, 0.0

    def write(self, b: int, img_id: str, hw, x: torch.Tensor, out: dict) -> None:
        """Image ``b`` of the batch ``x`` (its :func:`pipeline.heatmaps.infer_batch` ``out``)."""
        classes = [int(c) for c in self.index.labels(img_id)]
        ch = torch.as_tensor([c - 1 for c in classes], dtype=torch.long, device=x.device)
        raw = out["cam"][b] if self.rib is None else self.rib(x[b], img_id)
        cam = normalise_per_class(_to_image(raw[ch], hw))
        lam = _to_image(out["lam"][b][None], hw)[0].clamp(0, 1) if out["lam"] is not None else None
        scores = out["scores"][b, ch].tolist()
        extra = {"scores": {str(c): round(float(s), 5) for c, s in zip(classes, scores)},
                 "pooling": self.net.pooling_name, "size": list(hw)}
        self.writer.submit(save_heatmap, self.maps_dir / f"{img_id}.npz", cam.cpu(), classes,
                           lam=None if lam is None else lam.cpu(), extra=extra)
        if self.with_lc:
            lc = _to_image(out["lambda_c"][b, ch], hw).clamp(0, 1)
            self.writer.submit(save_heatmap, self.lc_dir / f"{img_id}.npz", lc.cpu(), classes,
                               extra={"kind": "lambda_c"})
        self.n_done += 1
        self.n_maps += len(classes)
        self.score_sum += sum(scores)


def infer_checked(net, x: torch.Tensor, group, sec) -> dict:
    """:func:`pipeline.heatmaps.infer_batch` of one group, its maps checked finite."""
    out = infer_batch(net, x, sec.scales, sec.flip, sec.class_specific_lambda, sec.amp,
                      sec.refine.fields_dict())
    for key in ("cam", "lam"):
        check_array_finite(out[key], f"the classifier's {key} maps of images "
                           f"{group[0][1]}..{group[-1][1]}", NONFINITE_FIX)
    return out


def run(ctx) -> dict:
    sec = ctx.section
    if ctx.rank != 0:
        return {}
    index, split, ids = split_ids(ctx)
    net, trained = load_inference_classifier(ctx, index, sec)
    with_lc = sec.class_specific_lambda
    ctx.log(f"{len(ids)} {split} images; classifier pooling {trained}, inference pooling "
            f"{net.pooling_name}; size {sec.size}, scales {sec.scales}, flip {sec.flip}, "
            f"lambda_c {with_lc}, device {ctx.device}"
            + (f"; affinity refinement {sec.refine.fields_dict()}" if sec.refine.iterations else ""))
    rib = RIBSource(net, index, ids, sec) if sec.source == "rib" else None
    lookup = use_trunk_cache(ctx, net, index, sec)
    log_every = max(100, len(ids) // 10) if rib is None else 10
    # compressing the files is most of this stage's host time: threads write them (zlib frees
    # the GIL); `writers` threads (0 = write in the loop).
    with BackgroundWriter(sec.writers) as writer:
        files = MapFiles(ctx, net, index, sec, writer, rib)
        for batch in make_loader(index, ids, sec):
            for group in _groups(batch):
                x = torch.stack([it[0] for it in group]).to(ctx.device)
                out = infer_checked(net, x, group, sec)
                for b, (_, img_id, hw) in enumerate(group):
                    files.write(b, img_id, hw, x, out)
                    if files.n_done % log_every == 0:
                        ctx.log(f"{files.n_done}/{len(ids)} images")
    if lookup is not None:
        ctx.log(f"trunk cache: {lookup.hits} inputs from the cache, {lookup.misses} computed")
    n_done, n_maps = files.n_done, files.n_maps
    mean_score = files.score_sum / n_maps if n_maps else float("nan")
    ctx.log(f"wrote {n_done} heatmap files ({n_maps} class maps) to {files.maps_dir}; mean score of "
            f"the labelled classes {mean_score:.3f}")
    metrics = {"trained_pooling": trained, "inference_pooling": net.pooling_name, "source": sec.source,
               "mean_labelled_score": mean_score if n_maps else None}
    if lookup is not None:
        metrics["trunk_cache_hits"] = lookup.hits
    if rib is not None:
        metrics["rib_stops"] = dict(rib.stops)
        ctx.log(f"RIB early stops: {dict(rib.stops)}")
    return {"counts": {"images": n_done, "class_maps": n_maps, "lambda_c": n_done if with_lc else 0},
            "metrics": metrics}


def use_trunk_cache(ctx, net, index, sec):
    """With a cached frozen trunk (``classifier.train.cache_trunk``) and a square ``size``, let
    the classifier's trunk read the cached features of the inputs the classifier trained on
    (identical inputs only: pipeline/runtime/trunk_cache.py); returns the lookup or None."""
    cls = ctx.cfg.classifier
    if not cls.train.cache_trunk or not isinstance(sec.size, int) or sec.source != "classifier":
        return None
    model = cls.model.to_dict()
    if model["pretrained"] not in (None, "package"):
        model["pretrained"] = resolve_path(model["pretrained"])
    base = ClassificationDataset(index, cls.train.split, sec.size, train=False)
    return attach_trunk_lookup(net, model, base, ctx.work_dir, ctx.log)


class RIBSource:
    """Per-image RIB heatmaps at the network input size: ``(K, h, w)`` raw accumulated CAMs."""

    def __init__(self, net, index, ids, sec):
        self.net, self.index = net, index
        self.cfg = {**sec.rib.algorithm_options(), "scales": sec.scales, "flip": sec.flip}
        self.n_neg = sec.rib.negatives
        self.labels = {i: index.labels(i) for i in ids}
        self.size = parse_size(sec.size)
        self.stops: dict[str, int] = defaultdict(int)

    def _image(self, img_id):
        img = self.index.read_image(img_id)
        return to_tensor(resize_image(img, self.size) if self.size else img)

    def __call__(self, image: torch.Tensor, img_id: str) -> torch.Tensor:
        neg_ids = pick_negatives(self.labels, self.labels[img_id], self.n_neg, exclude=(img_id,))
        negatives = neg_labels = None
        if neg_ids and self.size is not None:
            device = image.device
            negatives = torch.stack([self._image(i) for i in neg_ids]).to(device)
            neg_labels = torch.stack([torch.from_numpy(self.index.label_vector(i)) for i in neg_ids]).to(device)
        target = torch.from_numpy(self.index.label_vector(img_id)).to(image.device)
        with torch.enable_grad():
            cam, info = rib_heatmaps(self.net, image, target, negatives, self.cfg,
                                     negative_labels=neg_labels, return_info=True)
        self.stops[info["stop"]] += 1
        return cam


if __name__ == "__main__":
    main_for(__name__)

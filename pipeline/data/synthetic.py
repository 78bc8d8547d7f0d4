"""Synthetic VOC-format WSSS benchmark: ``generate_synthetic(out_root, cfg, seed)``.

Writes ``out_root/VOC2012/`` in the VOCdevkit layout (``JPEGImages/*.jpg``, palette
``SegmentationClass/*.png`` for train/val, ``Annotations/*.xml``,
``ImageSets/Segmentation/{train,val,test,trainaug}.txt``, ``classes.txt``), the test masks in
``out_root/heldout/SegmentationClass/`` only (kept aside for scoring, like the VOC test set),
and ``out_root/meta.json`` (per-image background family and per-object drawn/visible areas,
for analysis; not part of the VOC tree). Output is byte-identical for equal (cfg, seed): every
image draws from its own ``numpy.random.default_rng([seed, image_number])``.

Design (a fair, non-trivial WSSS task): each class has its own shape family and texture
(class-specific stripe orientation / period, ...), while its colour is drawn from a wide hue
distribution shared pairwise with another class plus a uniform-hue share, so colour alone does
not classify. Backgrounds come from families shared by all classes, but each class prefers
one family with probability ``context_prob`` (co-occurring context, as in real data, makes
classifier heatmaps spill onto the background). 1..``max_objects`` objects of
1..``max_classes_per_image`` classes per image, varied scale (radius log-uniform in
``object_radius`` × image size), painter's-order occlusion and objects cut by the image
border. ``difficulty`` in [0, 1] scales overlap, noise, colour spread, texture contrast and
jitter. Masks carry a 255 void band of ``void_band`` px on each
side of every object boundary (0 disables; ``void_band_test`` overrides it for the held-out
masks). XML boxes are the tight 1-based extents of each object's labelled (non-void) pixels;
``truncated`` marks objects touching the border. Test XMLs hold no objects (no label leak).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data import synthetic_draw as draw
from pipeline.data.files import write_label_png
from pipeline.data.io_utils import atomic_dir
from pipeline.data.vocxml import VocAnnotation, VocObject, write_voc_xml
from pipeline.voc import IGNORE_INDEX

__all__ = ["DEFAULTS", "CLASS_NAMES", "BACKGROUNDS", "class_specs", "generate_synthetic", "main"]

DEFAULTS = dict(image_size=112, n_train=360, n_val=120, n_test=120, n_classes=6, max_objects=4,
                max_classes_per_image=3, difficulty=0.5, context_prob=0.7, void_band=1,
                void_band_test=None, min_visible=40, jpeg_quality=90, object_radius=(0.11, 0.3))
CLASS_NAMES = ("background", "glorp", "zint", "quabble", "mervin", "tassel", "yonk",
               "fiddle", "brom", "snark", "wimble", "plonk", "drizz")
SHAPES = ("ellipse", "rect", "triangle", "star", "ring", "blob", "cross", "crescent")
TEXTURES = ("stripes", "checker", "dots", "noise", "waves", "stripes", "hatch", "dots")
BACKGROUNDS = ("gradient", "blotch", "grass", "clouds", "tiles", "speckle")


def class_specs(n_classes: int) -> list[dict]:
    """Fixed (seed-independent) per-class shape, texture, hue centre and preferred background."""
    if not 1 <= n_classes <= len(CLASS_NAMES) - 1:
        raise ValueError(f"n_classes must be in 1..{len(CLASS_NAMES) - 1}, got {n_classes}")
    zones = (n_classes + 1) // 2
    return [dict(name=CLASS_NAMES[k], shape=SHAPES[(k - 1) % 8],
                 texture=TEXTURES[(k - 1 + 3 * ((k - 1) // 8)) % 8],
                 angle=float((k * 47) % 180), period=5.0 + (k * 3) % 5,
                 hue=((k - 1) // 2) / zones + 0.05 * ((k - 1) % 2),
                 background=BACKGROUNDS[(k - 1) % len(BACKGROUNDS)])
            for k in range(1, n_classes + 1)]


def _render(rng, cfg, specs, S, X, Y, void_w: int):
    """One image: (rgb uint8, label uint8, objects [(cls, bbox, truncated, drawn, visible)], bg)."""
    d, C = float(cfg["difficulty"]), len(specs)
    kmax = min(cfg["max_classes_per_image"], C, cfg["max_objects"])
    r_lo, r_hi = (float(r) for r in cfg["object_radius"])
    p = 0.62 ** np.arange(kmax)
    for _attempt in range(60):
        k = int(rng.choice(np.arange(1, kmax + 1), p=p / p.sum()))
        chosen = rng.choice(C, k, replace=False) + 1
        n = int(rng.integers(k, cfg["max_objects"] + 1))
        obj_cls = rng.permutation(np.concatenate([chosen, rng.choice(chosen, n - k)]))
        inst, objs, ok = np.zeros((S, S), np.int16), [], True
        for j, c in enumerate(obj_cls):
            R = S * np.exp(rng.uniform(np.log(r_lo), np.log(r_hi)))
            if objs and rng.random() < 0.2 + 0.6 * d:
                pc, pr = objs[rng.integers(len(objs))][1:3]
                ang, dist = rng.uniform(0, 2 * np.pi), (pr + R) * rng.uniform(0.35, 0.9)
                centre = pc + dist * np.array([np.cos(ang), np.sin(ang)])
            elif rng.random() < 0.25 + 0.2 * d:  # anywhere: often cut by the border
                centre = rng.uniform(-0.1 * d, 1 + 0.1 * d, 2) * S
            else:
                centre = rng.uniform(0.8 * R, S - 0.8 * R, 2)
            m = draw.shape(rng, specs[c - 1]["shape"], X, Y, centre[0], centre[1], R)
            if m.sum() < 1.5 * cfg["min_visible"]:
                ok = False
                break
            inst[m] = j + 1
            objs.append((int(c), centre, R, m))
        if not ok:
            continue
        label = np.zeros((S, S), np.uint8)
        for j, (c, *_rest) in enumerate(objs):
            label[inst == j + 1] = c
        if void_w > 0:
            label[draw.void(inst, void_w)] = IGNORE_INDEX
        vis = [int((inst == j + 1).sum()) for j in range(len(objs))]
        lab = [int(((inst == j + 1) & (label != IGNORE_INDEX)).sum()) for j in range(len(objs))]
        if all(vv >= max(cfg["min_visible"], 0.3 * o[3].sum()) and ll >= 10
               for vv, ll, o in zip(vis, lab, objs)):
            break
    else:
        raise RuntimeError("synthetic layout failed 60 times; relax min_visible / max_objects")
    main = objs[rng.integers(len(objs))][0]
    fam = specs[main - 1]["background"] if rng.random() < cfg["context_prob"] else \
        BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    img = draw.background(rng, fam, S, X, Y)
    out_objs = []
    for j, (c, centre, R, m) in enumerate(objs):
        spec = specs[c - 1]
        if rng.random() < 0.3 + 0.4 * d:
            h = rng.random()
        else:
            h = spec["hue"] + rng.normal(0, 0.08 + 0.08 * d)
        s, v = rng.uniform(0.35, 1.0), rng.uniform(0.4, 1.0)
        A = draw.hsv(h, s, v)
        B = draw.hsv(h + rng.uniform(-0.08, 0.08), s * rng.uniform(0.5, 1), v + rng.choice([-1, 1]) * rng.uniform(0.25, 0.45))
        t = draw.texture(rng, spec, d, S, X, Y, centre[0], centre[1]) * rng.uniform(1 - 0.6 * d, 1.0)
        u, _ = draw.rot(X, Y, centre[0], centre[1], rng.uniform(0, 2 * np.pi))
        shade = 1 + 0.25 * np.clip(u / R, -1, 1)
        col = (A * (1 - t[..., None]) + B * t[..., None]) * shade[..., None]
        img[m] = col[m]
        own = (inst == j + 1) & (label != IGNORE_INDEX)
        ys, xs = np.nonzero(own)
        box = (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)
        trunc = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        out_objs.append((c, box, trunc, int(m.sum()), vis[j]))
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    img = 0.6 * img + 0.1 * (pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:])
    img = img + rng.normal(0, 0.015 + 0.05 * d, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label, out_objs, fam


def _config(cfg: dict | None) -> dict:
    cfg = {**DEFAULTS, **(cfg or {})}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise KeyError(f"unknown synthetic config keys {unknown} (known: {sorted(DEFAULTS)})")
    if not 0 <= cfg["difficulty"] <= 1 or not 0 <= cfg["context_prob"] <= 1:
        raise ValueError("difficulty and context_prob must lie in [0, 1]")
    if cfg["max_objects"] < 1 or cfg["max_classes_per_image"] < 1 or cfg["image_size"] < 32:
        raise ValueError("need max_objects >= 1, max_classes_per_image >= 1, image_size >= 32")
    r = cfg["object_radius"]
    if len(r) != 2 or not 0 < float(r[0]) <= float(r[1]) <= 1:
        raise ValueError(f"object_radius must be (min, max) fractions of the image size with "
                         f"0 < min <= max <= 1, got {r!r}")
    return cfg


def generate_synthetic(out_root, cfg: dict | None = None, seed: int = 0, overwrite: bool = False) -> dict:
    """Generate the synthetic benchmark under ``out_root`` (atomically); return a summary.

    ``cfg`` overrides ``DEFAULTS``. ``out_root`` must not exist (or be empty) unless
    ``overwrite``. The summary holds the paths, config, classes, split and object counts
    (``objects``, ``truncated``, ``occluded``), the context rate and the wall time.
    """
    t0 = time.perf_counter()
    cfg, out_root = _config(cfg), Path(out_root).resolve()
    specs, S = class_specs(int(cfg["n_classes"])), int(cfg["image_size"])
    classes = [CLASS_NAMES[0]] + [s["name"] for s in specs]
    Y, X = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    with atomic_dir(out_root, overwrite=overwrite) as tmp:
        voc, held = tmp / "VOC2012", tmp / "heldout" / "SegmentationClass"
        for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        held.mkdir(parents=True)
        (voc / "classes.txt").write_text("".join(c + "\n" for c in classes))
        splits = {s: [] for s in ("train", "val", "test")}
        images, stats = {}, dict(objects=0, truncated=0, occluded=0, context=0)
        n = 0
        for split in ("train", "val", "test"):
            test = split == "test"
            vw = cfg["void_band_test"] if test and cfg["void_band_test"] is not None else cfg["void_band"]
            for _ in range(int(cfg[f"n_{split}"])):
                img_id = f"syn_{n:06d}"
                rng = np.random.default_rng([int(seed), n])
                rgb, label, objs, fam = _render(rng, cfg, specs, S, X, Y, int(vw))
                n += 1
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format="JPEG", quality=int(cfg["jpeg_quality"]))
                (voc / "JPEGImages" / f"{img_id}.jpg").write_bytes(buf.getvalue())
                write_label_png((held if test else voc / "SegmentationClass") / f"{img_id}.png", label)
                xml_objs = [] if test else [VocObject(classes[c], box, False, tr) for c, box, tr, _, _ in objs]
                write_voc_xml(voc / "Annotations" / f"{img_id}.xml", VocAnnotation(
                    filename=f"{img_id}.jpg", width=S, height=S, objects=xml_objs, segmented=True))
                splits[split].append(img_id)
                images[img_id] = {"split": split, "background": fam,
                                  "objects": [[c, list(b), tr, dr, vi] for c, b, tr, dr, vi in objs]}
                stats["objects"] += len(objs)
                stats["truncated"] += sum(o[2] for o in objs)
                stats["occluded"] += sum(o[4] < o[3] for o in objs)
                stats["context"] += any(fam == specs[o[0] - 1]["background"] for o in objs)
        splits["trainaug"] = list(splits["train"])
        for split, ids in splits.items():
            (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
        meta = {"format": "wsss-synthetic/1", "seed": int(seed), "config": cfg, "classes": classes,
                "class_specs": specs, "backgrounds": list(BACKGROUNDS), "images": images}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=None, sort_keys=True) + "\n")
    n_img = sum(len(v) for k, v in splits.items() if k != "trainaug")
    return {"out_root": str(out_root), "voc_root": str(out_root / "VOC2012"),
            "heldout_seg_dir": str(out_root / "heldout" / "SegmentationClass"), "seed": int(seed),
            "config": cfg, "classes": classes, "splits": {k: len(v) for k, v in splits.items()},
            "objects": stats["objects"], "objects_truncated": stats["truncated"],
            "objects_occluded": stats["occluded"],
            "context_rate": stats["context"] / max(n_img, 1),
            "seconds": round(time.perf_counter() - t0, 3)}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m pipeline.data.synthetic OUT [--seed N] [--set key=value ...]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output root (gets VOC2012/, heldout/, meta.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a config key; defaults: {DEFAULTS}")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = ap.parse_args(argv)
    cfg = {}
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        cfg[key.strip()] = _parse_value(val.strip())
    summary = generate_synthetic(args.out, cfg, seed=args.seed, overwrite=args.overwrite)
    json.dump({k: v for k, v in summary.items() if k != "config"}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

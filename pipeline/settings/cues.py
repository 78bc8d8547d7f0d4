"""Typed ``heatmaps``, ``saliency`` and ``seeds`` sections (configs/_base_/cues.py)."""
from __future__ import annotations

import dataclasses

from pipeline.seeds import BG_SOURCES

from .checks import Bool, Float, Int, Nullable, OneOf, Size, Str, TupleOf
from .classifier import POOLING
from .section import Section, Sub, key
from .train import SPLIT

__all__ = ["RIBSettings", "HeatmapsSettings", "RBDSettings", "SaliencySettings", "SeedsSettings",
           "SCALES", "IMAGE_SIZE"]

SCALES = TupleOf(Float(0, lo_open=True), min_len=1)
# network input size: n (square), (h, w), or None = each image at its own size
IMAGE_SIZE = Nullable(Size())


@dataclasses.dataclass(frozen=True)
class RIBSettings(Section):
    """RIB per-image fine-tuning (pipeline.rib.rib_heatmaps; its views are the heatmaps
    section's ``scales`` and ``flip``) and ``negatives``: images sharing no class with the
    target, picked per image."""
    steps: int = key(Int(0))
    lr: float = key(Float(0))
    classifier_lr_mult: float = key(Float(0))
    weight_decay: float = key(Float(0))
    momentum: float = key(Float(0, 1, hi_open=True))
    poly_power: float = key(Float(0))
    tau: float = key(Float(0, 1))
    max_logit: float = key(Float(0, lo_open=True))
    explode_th: float = key(Float(0, 1))
    explode_ratio: float = key(Float(0, 1))
    neg_batch: int = key(Int(0))
    loss_reduction: str = key(OneOf("sum", "mean"))
    train_mode: bool = key(Bool())
    seed: int = key(Int(0))
    negatives: int = key(Int(0))

    def algorithm_options(self) -> dict:
        """The options of pipeline.rib.rib_heatmaps (all keys but ``negatives``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "negatives"}


@dataclasses.dataclass(frozen=True)
class RefineSettings(Section):
    """Training-free affinity refinement of the class maps (pipeline.affinity.refine_cam):
    ``iterations`` random-walk steps (0 = off) on the classifier features' cosine affinities
    raised to ``beta``, between cells at most ``radius`` apart."""
    iterations: int = key(Int(0))
    beta: float = key(Float(0, lo_open=True))
    radius: int = key(Int(0))


@dataclasses.dataclass(frozen=True)
class HeatmapsSettings(Section):
    split: str = key(SPLIT)
    size: int | tuple | None = key(IMAGE_SIZE)
    scales: tuple = key(SCALES)
    flip: bool = key(Bool())
    pooling: str | None = key(Nullable(POOLING))   # None = the pooling the model was trained with
    class_specific_lambda: bool = key(Bool())
    batch_size: int = key(Int(1))
    num_workers: int = key(Int(0))
    writers: int = key(Int(0))                      # writer threads (0 = write in the loop)
    amp: bool = key(Bool())
    source: str = key(OneOf("classifier", "rib"))
    rib: RIBSettings = key(Sub(RIBSettings))
    refine: RefineSettings = key(Sub(RefineSettings))

    def check(self) -> None:
        if self.refine.iterations and self.source != "classifier":
            raise self.fail("refine.iterations", f"={self.refine.iterations} refines the "
                            "classifier's maps: set it to 0 with source='rib'")


@dataclasses.dataclass(frozen=True)
class RBDSettings(Section):
    """Parameters of pipeline.saliency.rbd_saliency."""
    n_segments: int = key(Int(2))
    compactness: float = key(Float(0, lo_open=True))
    sigma_clr: float = key(Float(0, lo_open=True))
    sigma_bndcon: float = key(Float(0, lo_open=True))
    sigma_spa: float = key(Float(0, lo_open=True))
    mu: float = key(Float(0))
    bg_lambda: float = key(Float(0))


@dataclasses.dataclass(frozen=True)
class SaliencySettings(Section):
    split: str = key(SPLIT)
    dir: str | None = key(Nullable(Str()))         # None = compute RBD saliency
    # imported colour maps: True converts them to luma; unset / False = a colour map is an error
    allow_colour: bool | None = key(Bool(), optional=True)
    rbd: RBDSettings = key(Sub(RBDSettings))
    workers: int = key(Int(0))


@dataclasses.dataclass(frozen=True)
class SeedsSettings(Section):
    heatmap_source: str = key(OneOf("cam", "lambda_c"))
    fg_top: float = key(Float(0, 1))
    fg_mode: str = key(OneOf("relative", "rank"))
    fg_min: float = key(Float(0, 1))
    bg_source: str = key(OneOf(*BG_SOURCES))       # background cue: saliency | cam | both
    bg_sal: float = key(Float(0, 1))
    bg_cam: float = key(Float(0, 1))
    normalise_saliency: bool = key(Bool())
    overlap: str = key(OneOf("max", "ignore"))
    pseudo_bg_threshold: float = key(Float(0, 1))
    export_dsrg_pickle: bool = key(Bool())
    dsrg_grid: int = key(Int(1))
    dsrg_mode: str = key(OneOf("nearest", "majority"))
    n_overlays: int = key(Int(0))

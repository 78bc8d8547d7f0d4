"""Settings of an inference section (eval / submit / retrain.pseudo): the test protocols.

:data:`PROTOCOLS` names the pass sets and fusions of :mod:`pipeline.inference` (its module
docstring and docs/ALGORITHMS.md §5.6 describe them and their sources, DSRG's ``test-ms-f.py``
and ``test-ms.py``);
:class:`InferenceSettings` is what one section asks for; :func:`merge_inference_cfg` lets the
submit section inherit eval's keys; :func:`crf_from_cfg` reads the ``crf`` sub-section.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.crf import CRFParams
from pipeline.transforms import parse_size

__all__ = ["InferenceSettings", "merge_inference_cfg", "crf_from_cfg", "INFERENCE_KEYS",
           "PROTOCOLS", "FUSIONS", "DSRG_PROB_FLOOR"]

# config keys of an inference section (eval / submit / retrain.pseudo); configs/_base_/eval_submit.py
INFERENCE_KEYS = ("protocol", "size", "scales", "sizes", "flip", "fusion", "batch_size", "amp", "crf")
FUSIONS = ("mean", "sum")
DSRG_PROB_FLOOR = 1e-5                  # test-ms(-f).py: probs[probs < eps] = eps
PROTOCOLS = {
    "test-ms-f": dict(size=None, scales=(0.75, 1.0, 1.25), sizes=None, flip=False, fusion="sum"),
    "test-ms": dict(size=None, scales=(1.0,), sizes=(241, 321, 401), flip=False, fusion="sum"),
    "resized-square": dict(size=321, scales=(0.75, 1.0, 1.25), sizes=None, flip=True, fusion="mean"),
}
_PASS_KEYS = ("size", "scales", "sizes", "flip", "fusion")


def _float_tuple(v) -> tuple:
    return (float(v),) if np.isscalar(v) else tuple(float(s) for s in v)


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """``size``: (h, w) base size (:func:`pipeline.transforms.parse_size` of the config
    value), or None (each image's own size); ``scales``
    relative to the base; ``sizes``: fixed square sides, one pass each (replaces size ×
    scales); ``flip`` adds mirrored passes; ``fusion`` 'mean' | 'sum' (module doc); ``amp``:
    float16 autocast on CUDA only; ``protocol``: the preset's name ("custom" without one)."""
    size: tuple | None = (321, 321)
    scales: tuple = (1.0,)
    flip: bool = True
    batch_size: int = 1
    amp: bool = False
    sizes: tuple | None = None
    fusion: str = "mean"
    protocol: str = "custom"

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {self.scales}")
        if self.sizes is not None and (not self.sizes or min(self.sizes) < 1):
            raise ValueError(f"sizes must be positive square sides, got {self.sizes}")

    @classmethod
    def from_cfg(cls, cfg) -> "InferenceSettings":
        """From an inference section. With ``protocol`` (a :data:`PROTOCOLS` name) the preset
        gives ``size`` / ``scales`` / ``sizes`` / ``flip`` / ``fusion`` and a non-None key of the
        section overrides it (the name then reads "<protocol>+overrides"); without one, a None
        or missing ``size`` means the image's own size / 321, as before protocols existed."""
        name = cfg.get("protocol")
        if name is not None and name not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)} or None, got {name!r}")
        vals = dict(PROTOCOLS[name]) if name else dict(size=cfg.get("size", 321), scales=(1.0,),
                                                        sizes=None, flip=True, fusion="mean")
        changed = [k for k in _PASS_KEYS if cfg.get(k) is not None and name
                   and _normal(k, cfg.get(k)) != _normal(k, vals[k])]
        vals.update({k: cfg.get(k) for k in _PASS_KEYS if cfg.get(k) is not None})
        sizes = vals["sizes"]
        label = (name + ("+" + ",".join(changed) if changed else "")) if name else "custom"
        return cls(size=parse_size(vals["size"]), scales=_float_tuple(vals["scales"]),
                   flip=bool(vals["flip"]), batch_size=max(1, int(cfg.get("batch_size") or 1)),
                   amp=bool(cfg.get("amp") or False),
                   sizes=None if sizes is None else tuple(int(v) for v in sizes),
                   fusion=str(vals["fusion"]), protocol=label)

    def describe(self) -> dict:
        """JSON-ready record of what ran (stored in the stages' metrics)."""
        return {"protocol": self.protocol, "size": None if self.size is None else list(self.size),
                "scales": list(self.scales),
                "sizes": None if self.sizes is None else list(self.sizes), "flip": self.flip,
                "fusion": self.fusion}


def _normal(key, value):
    if key == "size":
        return parse_size(value)
    if key in ("scales", "sizes"):
        return None if value is None else _float_tuple(value)
    return value


def merge_inference_cfg(base, override) -> dict:
    """Inference keys of ``override`` (e.g. the submit section) where they are not None, else
    those of ``base`` (the eval section). ``crf``: base's dict updated with override's keys.
    (A None ``size`` in the result means "original size"; override it with ``'original'``.)"""
    out = {}
    for k in INFERENCE_KEYS:
        if not any(d is not None and k in d for d in (base, override)):
            continue
        b = base.get(k) if base is not None else None
        o = override.get(k) if override is not None else None
        if k == "crf":
            merged = dict(b or {})
            merged.update(dict(o or {}))
            out[k] = merged
        else:
            out[k] = b if o is None else o
    return {k: v for k, v in out.items() if v is not None or k == "size"}


def crf_from_cfg(crf_cfg) -> tuple[CRFParams | None, int]:
    """``crf=dict(enabled, preset, workers, **param overrides)`` → (params or None, workers)."""
    crf_cfg = dict(crf_cfg or {})
    enabled = bool(crf_cfg.pop("enabled", False))
    preset = crf_cfg.pop("preset", "dsrg_test")
    workers = int(crf_cfg.pop("workers", 0) or 0)
    crf_cfg.pop("start_method", None)
    if not enabled:
        return None, workers
    return CRFParams.preset(preset, **crf_cfg), workers

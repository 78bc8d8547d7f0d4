"""Drawing primitives of the synthetic benchmark (:mod:`pipeline.data.synthetic`): background
families, object shapes and class textures on a pixel grid ``X, Y`` (``np.meshgrid`` of
0..S-1), and the void band along instance borders. Pure numpy; every random choice comes from the
``rng`` passed in, so a dataset is a function of its seed."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

__all__ = ["lowfreq", "hsv", "rot", "background", "shape", "texture", "void"]


def lowfreq(rng, S: int, cells: int) -> np.ndarray:
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(g, mode="F").resize((S, S), Image.BICUBIC), np.float32)


def hsv(h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))),
                    np.float32)


def rot(X, Y, cx, cy, a):
    c, s = np.cos(a), np.sin(a)
    return (X - cx) * c + (Y - cy) * s, -(X - cx) * s + (Y - cy) * c


def background(rng, fam: str, S: int, X, Y) -> np.ndarray:
    h = rng.random()
    c1 = hsv(h, rng.uniform(0.15, 0.7), rng.uniform(0.3, 0.9))
    c2 = hsv(h + rng.uniform(-0.2, 0.2), rng.uniform(0.15, 0.7), rng.uniform(0.3, 0.9))
    sc = S / 112.0
    if fam == "gradient":
        u, _ = rot(X, Y, 0, 0, rng.uniform(0, 2 * np.pi))
        t = (u - u.min()) / (np.ptp(u) + 1e-6) + 0.15 * (lowfreq(rng, S, 3) - 0.5)
    elif fam == "blotch":
        t = 1 / (1 + np.exp(-12 * (lowfreq(rng, S, rng.integers(4, 8)) - 0.5)))
    elif fam == "grass":
        u, _ = rot(X, Y, 0, 0, np.deg2rad(rng.uniform(-20, 20)))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / (rng.uniform(2.5, 4.5) * sc) + 6 * lowfreq(rng, S, 6))
        t = t * (0.6 + 0.4 * Y / S)
    elif fam == "clouds":
        t = sum(lowfreq(rng, S, c) / (i + 1) for i, c in enumerate((2, 5, 11, 23)))
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    elif fam == "tiles":
        T = rng.uniform(9, 18) * sc
        u, v = rot(X, Y, 0, 0, np.deg2rad(rng.uniform(-10, 10)))
        iu, iv = np.floor(u / T), np.floor(v / T)
        t = ((iu * 7 + iv * 13) % 5) / 5.0 * 0.6 + 0.2
        grout = (np.minimum(u - iu * T, v - iv * T) < 1.5 * sc)
        t = np.where(grout, 1.0, t)
    else:  # speckle
        t = (rng.random((S, S)) > 0.8).astype(np.float32) * 0.8 + 0.2 * lowfreq(rng, S, 4)
    t = np.asarray(t, np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


def shape(rng, shape: str, X, Y, cx, cy, R) -> np.ndarray:
    u, v = rot(X, Y, cx, cy, rng.uniform(0, 2 * np.pi))
    v = v / rng.uniform(0.6, 1.0) if shape not in ("ring", "star", "cross") else v
    r, phi = np.hypot(u, v), np.arctan2(v, u)
    if shape == "ellipse":
        return r <= R
    if shape == "rect":
        return (np.abs(u / R) ** 6 + np.abs(v / (R * 0.8)) ** 6) <= 1
    if shape in ("triangle", "star"):
        n, rho = (3, 0.5) if shape == "triangle" else (5, rng.uniform(0.42, 0.55))
        b = np.pi / n
        psi = np.mod(phi, 2 * b)
        psi = np.minimum(psi, 2 * b - psi)
        lim = rho * R * np.sin(b) / (rho * np.sin(b) * np.cos(psi) + (1 - rho * np.cos(b)) * np.sin(psi))
        return r <= lim * (1.25 if shape == "triangle" else 1.1)
    if shape == "ring":
        return (r <= R) & (r >= R * rng.uniform(0.45, 0.6))
    if shape == "blob":
        k = np.arange(2, 6)[:, None, None]
        a = rng.uniform(0, 0.32, 4)[:, None, None] / k * 2
        return r <= R * (1 + (a * np.cos(k * phi + rng.uniform(0, 2 * np.pi, 4)[:, None, None])).sum(0))
    if shape == "cross":
        w = R * rng.uniform(0.28, 0.4)
        return ((np.abs(u) <= R) & (np.abs(v) <= w)) | ((np.abs(v) <= R) & (np.abs(u) <= w))
    return (r <= R) & (np.hypot(u - 0.55 * R, v) > 0.8 * R)  # crescent


def texture(rng, spec, d, S, X, Y, cx, cy) -> np.ndarray:
    a = np.deg2rad(spec["angle"] + rng.uniform(-1, 1) * (5 + 25 * d))
    P = spec["period"] * (S / 112.0) * (1 + rng.uniform(-1, 1) * (0.1 + 0.3 * d))
    u, v = rot(X, Y, rng.uniform(0, S), rng.uniform(0, S), a)
    kind = spec["texture"]
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / P)
    if kind == "checker":
        return (np.floor(u / P) + np.floor(v / P)) % 2
    if kind == "dots":
        du, dv = u / P - np.round(u / P), v / P - np.round(v / P)
        return (np.hypot(du, dv) < 0.3).astype(np.float32)
    if kind == "noise":
        return lowfreq(rng, S, max(2, int(S / P)))
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(X - cx, Y - cy) / P)
    return ((np.abs(u / P - np.round(u / P)) < 0.15) | (np.abs(v / P - np.round(v / P)) < 0.15)) * 1.0


def void(inst: np.ndarray, w: int) -> np.ndarray:
    """Pixels within ``w`` px (either side, 4-connected) of a boundary between instance ids."""
    p = np.pad(inst, 1, mode="edge")
    c = p[1:-1, 1:-1]
    edge = (c != p[:-2, 1:-1]) | (c != p[2:, 1:-1]) | (c != p[1:-1, :-2]) | (c != p[1:-1, 2:])
    for _ in range(w - 1):
        q = np.pad(edge, 1)
        edge = edge | q[:-2, 1:-1] | q[2:, 1:-1] | q[1:-1, :-2] | q[1:-1, 2:]
    return edge

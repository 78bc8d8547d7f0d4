"""DSRG region growing: hand-made cases and vectorised == scipy reference on random inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.growing import grow_seeds, grow_seeds_reference, grown_label_map, masked_flood_fill


def make_probs(C, H, W, spec, default=(0, 0.6)):
    """probs (1,C,H,W): at each pixel class k gets value v, the others share 1 - v."""
    probs = torch.empty(1, C, H, W)
    for y in range(H):
        for x in range(W):
            k, v = spec.get((y, x), default)
            probs[0, :, y, x] = (1 - v) / (C - 1)
            probs[0, k, y, x] = v
    return probs


def make_cues(C, H, W, points):
    cues = torch.zeros(1, C, H, W, dtype=torch.bool)
    for c, y, x in points:
        cues[0, c, y, x] = True
    return cues


def classes(C, present):
    m = torch.zeros(1, C, dtype=torch.bool)
    m[0, list(present)] = True
    return m


def as_set(mask, c):
    return {tuple(p) for p in torch.nonzero(mask[0, c]).tolist()}


DSRG = dict(fg_threshold=0.85, bg_threshold=0.99)     # DSRG's growing thresholds


def both(probs, cues, cls, **kw):
    kw = {**DSRG, **kw}
    out = grow_seeds(probs, cues, cls, **kw)
    ref = grow_seeds_reference(probs, cues, cls, **kw)
    assert np.array_equal(out.numpy(), ref)
    return out


def test_diagonal_connectivity_and_unseeded_region():
    # class-1 cue at (0,0); confident class 1 on the diagonal (1,1), (2,2) and at (4,4), but
    # (3,3) is not confident: (4,4) touches no seed of its class and is not added.
    spec = {(1, 1): (1, 0.9), (2, 2): (1, 0.9), (4, 4): (1, 0.95), (3, 3): (1, 0.8)}
    probs = make_probs(2, 5, 5, spec)
    out = both(probs, make_cues(2, 5, 5, [(1, 0, 0)]), classes(2, [0, 1]))
    assert as_set(out, 1) == {(0, 0), (1, 1), (2, 2)}
    assert as_set(out, 0) == set()


def test_conflict_other_class_cue_never_overwritten():
    # row 0: cue1 | conf1 | cue2 but confidently class 1 | conf1. The class-2 cue pixel links the
    # class-1 component (connectivity) but keeps its single label; class 2 has no start pixel.
    spec = {(0, 1): (1, 0.9), (0, 2): (1, 0.9), (0, 3): (1, 0.9)}
    probs = make_probs(3, 2, 5, spec)
    cues = make_cues(3, 2, 5, [(1, 0, 0), (2, 0, 2)])
    out = both(probs, cues, classes(3, [0, 1, 2]))
    assert as_set(out, 1) == {(0, 0), (0, 1), (0, 3)}
    assert as_set(out, 2) == {(0, 2)}


def test_multi_cue_pixel_takes_highest_class_in_label_map():
    spec = {(0, 1): (2, 0.9), (0, 3): (1, 0.9)}
    probs = make_probs(3, 1, 5, spec)
    # (0,2) carries cues 1 and 2 -> L = 2; class 2 grows through it, class 1 does not start there
    cues = make_cues(3, 1, 5, [(1, 0, 2), (2, 0, 2)])
    out = both(probs, cues, classes(3, [0, 1, 2]))
    assert as_set(out, 2) == {(0, 1), (0, 2)}
    assert as_set(out, 1) == {(0, 2)}


def test_absent_class_never_grows():
    # class 2 is absent: its cue is passed through but it never grows; over S = {0, 1} the pixels
    # where class 2 dominates have p <= 0.1 and are not confident for class 1 either.
    spec = {(0, 1): (2, 0.9), (0, 2): (2, 0.9), (1, 0): (1, 0.9)}
    probs = make_probs(3, 2, 3, spec)
    cues = make_cues(3, 2, 3, [(2, 0, 0), (1, 1, 1)])
    out = both(probs, cues, classes(3, [0, 1]))
    assert as_set(out, 2) == {(0, 0)}
    assert as_set(out, 1) == {(1, 1), (1, 0)}


def test_background_threshold():
    spec = {(0, 1): (0, 0.995), (0, 2): (0, 0.985), (0, 3): (0, 0.995)}
    probs = make_probs(2, 1, 4, spec, default=(1, 0.6))
    cues = make_cues(2, 1, 4, [(0, 0, 0)])
    out = both(probs, cues, classes(2, [0, 1]))
    assert as_set(out, 0) == {(0, 0), (0, 1)}          # 0.985 < 0.99 blocks the path
    out = both(probs, cues, classes(2, [0, 1]), bg_threshold=0.98)
    assert as_set(out, 0) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    # a foreground pixel at 0.985 passes the foreground threshold
    probs2 = make_probs(2, 1, 3, {(0, 1): (1, 0.985)})
    out = both(probs2, make_cues(2, 1, 3, [(1, 0, 0)]), classes(2, [0, 1]))
    assert as_set(out, 1) == {(0, 0), (0, 1)}


def test_original_cues_never_removed_and_no_accumulation():
    # class-1 cue inside confident background: stays class 1, not added to background
    spec = {(0, 0): (0, 0.999), (0, 1): (0, 0.999), (0, 2): (0, 0.999)}
    probs = make_probs(2, 1, 3, spec)
    cues = make_cues(2, 1, 3, [(0, 0, 0), (1, 0, 1)])
    out = both(probs, cues, classes(2, [0, 1]))
    assert as_set(out, 1) == {(0, 1)}
    assert as_set(out, 0) == {(0, 0), (0, 2)}
    assert bool((out | ~cues).all())
    # growth restarts from the cues: unconfident probabilities give back the cues exactly
    flat = torch.full_like(probs, 0.5)
    assert torch.equal(grow_seeds(flat, cues, classes(2, [0, 1]), **DSRG), cues)


def test_background_channel_forced_present():
    probs = make_probs(2, 1, 3, {(0, 1): (0, 0.999)})
    cues = make_cues(2, 1, 3, [(0, 0, 0)])
    out = both(probs, cues, classes(2, [1]))
    assert as_set(out, 0) == {(0, 0), (0, 1)}


def _smooth(gen, B, C, H, W, low=5):
    noise = torch.randn(B, C, low, low, generator=gen)
    return F.interpolate(noise, size=(H, W), mode="bilinear", align_corners=False)


def test_grown_label_map_keeps_seeds_and_labels_grown_pixels_once():
    # 1x5 row, classes 0 (bg), 1 (present), 2 (absent); seed of 1 at x=0, of 0 at x=4
    probs = make_probs(3, 1, 5, {(0, 0): (1, 0.9), (0, 1): (1, 0.9), (0, 2): (1, 0.5),
                                 (0, 3): (0, 0.995), (0, 4): (0, 0.995)})
    seeds = np.array([[1, 255, 255, 255, 0]], np.uint8)
    got = grown_label_map(probs[0].numpy(), seeds, [1], **DSRG)
    # x=1 grows into class 1 (0.9 > 0.85), x=2 is not confident, x=3 grows background
    assert got.tolist() == [[1, 1, 255, 0, 0]] and got.dtype == np.uint8
    grown = grow_seeds(probs, make_cues(3, 1, 5, [(1, 0, 0), (0, 0, 4)]), classes(3, [0, 1]), **DSRG)
    assert np.array_equal(got != 255, grown[0].any(0).numpy())
    # an absent class (2) never grows, and classes beyond C are ignored
    probs2 = make_probs(3, 1, 3, {(0, 1): (2, 0.95)})
    got2 = grown_label_map(probs2[0].numpy(), np.array([[2, 255, 255]], np.uint8), [1, 7], **DSRG)
    assert got2.tolist() == [[2, 255, 255]]


def test_vectorised_equals_reference_random():
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    n_images, grown_pixels = 0, 0
    while n_images < 240:
        B, C = int(rng.integers(1, 9)), int(rng.integers(2, 6))
        H, W = (int(v) for v in rng.integers(3, 42, size=2))
        probs = torch.softmax(_smooth(gen, B, C, H, W) * float(rng.uniform(3, 12)), dim=1)
        cls = torch.rand(B, C, generator=gen) < 0.6
        cls[:, 0] = torch.rand(B, generator=gen) < 0.8          # also checks forcing bg
        cues = _smooth(gen, B, C, H, W, low=7) > float(rng.uniform(0.8, 1.6))
        cues &= (cls | (torch.rand(B, C, generator=gen) < 0.2))[:, :, None, None]
        fg_t, bg_t = (0.85, 0.99) if rng.random() < 0.7 else (0.6, 0.9)
        out = grow_seeds(probs, cues, cls, fg_t, bg_t)
        ref = grow_seeds_reference(probs, cues, cls, fg_t, bg_t)
        assert out.dtype == torch.bool and out.shape == cues.shape
        assert np.array_equal(out.numpy(), ref), (B, C, H, W)
        grown_pixels += int((out & ~cues).sum())
        n_images += B
    assert grown_pixels > 1000                                   # the test exercised growth


def test_flood_fill_packed_equals_bool_and_wide_images():
    gen = torch.Generator().manual_seed(3)
    region = _smooth(gen, 1, 6, 23, 62, low=8)[0] > -0.2
    start = torch.rand(6, 23, 62, generator=gen) < 0.01
    b = masked_flood_fill(region, start, method="bool")
    a = masked_flood_fill(region, start)                                 # numpy words (CPU)
    assert torch.equal(a, b)
    for method in ("words", "pool"):                                     # the accelerator paths
        for every in (1, 8):
            assert torch.equal(masked_flood_fill(region, start, method, every), b), (method, every)
    with pytest.raises(ValueError, match="method"):
        masked_flood_fill(region, start, "bfs")
    assert bool((a & ~region).sum() == 0) and a.sum() > start.sum()
    for W in (1, 8, 9, 41):                                                # word packing edges
        r = torch.rand(3, 5, W, generator=gen) < 0.7
        s = torch.rand(3, 5, W, generator=gen) < 0.2
        assert torch.equal(masked_flood_fill(r, s), masked_flood_fill(r, s, "bool"))
        assert torch.equal(masked_flood_fill(r, s, "pool"), masked_flood_fill(r, s, "bool"))
    # W > 62 uses the bool path; still equal to the reference
    probs = torch.softmax(_smooth(gen, 2, 3, 9, 70, low=6) * 8, dim=1)
    cues = _smooth(gen, 2, 3, 9, 70, low=9) > 1.0
    cls = torch.ones(2, 3, dtype=torch.bool)
    out = grow_seeds(probs, cues, cls, **DSRG)
    assert np.array_equal(out.numpy(), grow_seeds_reference(probs, cues, cls, **DSRG))
    assert (out & ~cues).any()
    for method in ("bool", "pool"):                      # grow_seeds passes its method through
        assert torch.equal(grow_seeds(probs, cues, cls, **DSRG, fill_method=method), out), method
    with pytest.raises(ValueError, match="method"):
        grow_seeds(probs, cues, cls, **DSRG, fill_method="bfs")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(_smooth(gen, 6, 4, 41, 41) * 8, dim=1)
    cls = torch.ones(6, 4, dtype=torch.bool)
    cues = _smooth(gen, 6, 4, 41, 41, low=7) > 1.0
    out = grow_seeds(probs.cuda(), cues.cuda(), cls.cuda(), **DSRG)
    assert out.is_cuda
    assert torch.equal(out.cpu(), grow_seeds(probs, cues, cls, **DSRG))
    region, start = cues[:, 1].cuda(), cues[:, 1].cuda() & (torch.rand(6, 41, 41) < 0.05).cuda()
    want = masked_flood_fill(region.cpu(), start.cpu(), "bool")
    for method in ("pool", "words", "bool", "numpy"):
        got = masked_flood_fill(region, start, method)
        assert got.device == region.device and torch.equal(got.cpu(), want), method

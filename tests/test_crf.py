"""Dense CRF wrapper (pydensecrf): distribution, strong unary, pool == sequential, errors."""
import numpy as np
import pytest
import torch

pytest.importorskip("pydensecrf.densecrf")

from pipeline.crf import CRF_PRESETS, CRFParams, dense_crf, downscale_image, label_map  # noqa: E402
from pipeline.crf_pool import CRFJobs, crf_batch, make_crf_pool  # noqa: E402


def random_case(rng, C=3, H=12, W=10):
    img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    logits = rng.normal(size=(C, H, W)) * 2
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    return img, p.astype(np.float32)


def two_halves(H=16, W=16, C=3, strong=0.98):
    img = np.zeros((H, W, 3), np.uint8)
    img[:, W // 2:] = 255
    p = np.full((C, H, W), (1 - strong) / (C - 1), np.float32)
    p[:, :, :W // 2] = (1 - strong) / (C - 1)
    p[1, :, :W // 2] = strong
    p[2, :, W // 2:] = strong
    return img, p


def test_presets():
    t = CRF_PRESETS["dsrg_train"]
    assert (t.bi_w, t.bi_rgb, t.pos_w, t.iterations, t.unary) == (10, 13, 3, 10, "prob")
    assert t.bi_xy == pytest.approx(80 / 12) and t.pos_xy == pytest.approx(3 / 12)
    assert CRF_PRESETS["dsrg_test"] == CRFParams(10, 80, 13, 3, 3, 10, "log")
    assert CRFParams.preset("deeplab_resnet") == CRFParams(4, 67, 3, 3, 1, 10, "log")
    assert CRFParams.preset("deeplab_vgg16", iterations=5).iterations == 5
    with pytest.raises(KeyError):
        CRFParams.preset("nope")
    with pytest.raises(ValueError):
        CRFParams(unary="energy")


@pytest.mark.parametrize("preset", sorted(CRF_PRESETS))
def test_output_is_distribution(preset):
    img, p = random_case(np.random.default_rng(0))
    q = dense_crf(img, p, CRF_PRESETS[preset])
    assert q.shape == p.shape and q.dtype == np.float32
    assert (q >= 0).all() and np.allclose(q.sum(0), 1, atol=1e-5)


@pytest.mark.parametrize("preset", ["deeplab_vgg16", "dsrg_test", "dsrg_train"])
def test_strong_unary_kept(preset):
    img, p = two_halves()
    q = dense_crf(img, p, CRF_PRESETS[preset])
    assert np.array_equal(q.argmax(0), p.argmax(0))
    assert q[1, :, :8].min() > 0.5 and q[2, :, 8:].min() > 0.5


def test_reference_side_scales_the_spatial_sigmas_with_the_image():
    ref = CRFParams.preset("dsrg_test", reference_side=500)
    small = ref.for_image(128, 100)                 # longer side 128: sigma x 128/500
    assert small.bi_xy == pytest.approx(80 * 128 / 500) and small.pos_xy == pytest.approx(3 * 128 / 500)
    assert (small.bi_rgb, small.bi_w, small.pos_w, small.reference_side) == (13, 10, 3, None)
    assert CRF_PRESETS["dsrg_test"].for_image(128, 100) is CRF_PRESETS["dsrg_test"]   # off: unchanged
    img, p = random_case(np.random.default_rng(2), H=12, W=10)
    np.testing.assert_array_equal(dense_crf(img, p, ref),
                                  dense_crf(img, p, CRF_PRESETS["dsrg_test"].scaled(500 / 12)))
    assert not np.array_equal(dense_crf(img, p, ref), dense_crf(img, p, CRF_PRESETS["dsrg_test"]))
    with pytest.raises(ValueError, match="reference_side"):
        CRFParams(reference_side=0)


def test_size_mismatch():
    img, p = random_case(np.random.default_rng(1))
    with pytest.raises(ValueError):
        dense_crf(img[:-1], p, CRF_PRESETS["deeplab_vgg16"])
    with pytest.raises(ValueError):
        crf_batch(img[None], np.stack([p, p]), CRF_PRESETS["deeplab_vgg16"])


def test_pool_equals_sequential_and_tensors():
    rng = np.random.default_rng(2)
    cases = [random_case(rng, H=9, W=11) for _ in range(3)]
    imgs = np.stack([c[0] for c in cases])
    probs = np.stack([c[1] for c in cases])
    params = CRF_PRESETS["dsrg_train"]
    seq = crf_batch(imgs, probs, params)
    pool = make_crf_pool(2)
    try:
        par = crf_batch(imgs, probs, params, pool=pool)
    finally:
        pool.shutdown()
    assert seq.shape == probs.shape and np.array_equal(seq, par)
    out = crf_batch(torch.from_numpy(imgs), torch.from_numpy(probs), params)
    assert torch.is_tensor(out) and np.array_equal(out.numpy(), seq)


def test_downscale_image():
    img = np.random.default_rng(3).integers(0, 256, size=(321, 300, 3), dtype=np.uint8)
    small = downscale_image(img, 41)
    assert small.shape == (41, 41, 3) and small.dtype == np.uint8
    assert np.array_equal(small[0, 0], img[0, 0]) and np.array_equal(small[-1, -1], img[-1, -1])
    assert (downscale_image(np.full((50, 40, 3), 77, np.uint8), (5, 4)) == 77).all()


@pytest.fixture(scope="module")
def pool():
    p = make_crf_pool(2)
    yield p
    p.shutdown()


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("labels", [False, True])
def test_crf_jobs_mixed_sizes_equal_sequential(pool, shared, labels):
    rng = np.random.default_rng(3)
    cases = [random_case(rng, C=4, H=h, W=w) for h, w in [(9, 11), (14, 6), (5, 5), (12, 12), (7, 9)]]
    cases[1] = (cases[1][0].astype(np.float64) + 0.4, cases[1][1])   # non-uint8 image is rounded
    params = CRF_PRESETS["dsrg_test"]
    seq = [dense_crf(im, p, params) for im, p in cases]
    if labels:
        seq = [label_map(q) for q in seq]
        assert seq[0].dtype == np.uint8 and seq[0].shape == cases[0][1].shape[1:]
    with CRFJobs(pool, [c[0] for c in cases], [c[1] for c in cases], params, chunksize=2,
                 shared=shared, labels=labels) as jobs:
        assert len(jobs) == 5 and len(jobs._futures) == 3
        assert (jobs._shm is not None) == shared
        got = jobs.results()
        view = jobs.result(3, copy=False)
        assert np.array_equal(view, seq[3])
    for a, b in zip(seq, got):
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    if shared:
        with pytest.raises(RuntimeError, match="close"):
            jobs.result(0)


def test_crf_jobs_transport_by_size(pool):
    from pipeline.crf_pool import SHARED_MIN_BYTES
    img, p = random_case(np.random.default_rng(5))
    with CRFJobs(pool, [img], [p], CRF_PRESETS["dsrg_train"]) as small:
        assert small._shm is None
    side = int(np.sqrt(SHARED_MIN_BYTES / (3 * 4))) + 1     # P of 3 classes over 1 MiB
    big_img = np.zeros((side, side, 3), np.uint8)
    big_p = np.full((3, side, side), 1 / 3, np.float32)
    with CRFJobs(pool, [big_img], [big_p], CRF_PRESETS["dsrg_train"].scaled(1.0)) as big:
        assert big._shm is not None
        assert big.result(0).shape == big_p.shape


def test_crf_jobs_close_frees_the_block_and_errors_propagate(pool):
    from multiprocessing.shared_memory import SharedMemory
    img, p = random_case(np.random.default_rng(4))
    jobs = CRFJobs(pool, [img, img], [p, p[:, :-1]], CRF_PRESETS["dsrg_train"], chunksize=1,
                   shared=True)
    name = jobs._shm.name
    assert np.array_equal(jobs.result(0), dense_crf(img, p, CRF_PRESETS["dsrg_train"]))
    with pytest.raises(ValueError, match="differs from probs size"):
        jobs.result(1)
    jobs.close()
    with pytest.raises(FileNotFoundError):
        SharedMemory(name=name)
    with pytest.raises(ValueError, match="2 images but 1"):
        CRFJobs(pool, [img, img], [p], CRF_PRESETS["dsrg_train"])
    with CRFJobs(pool, [], [], CRF_PRESETS["dsrg_train"]) as empty:
        assert empty.results() == []


def test_pool_leaves_no_shared_memory_behind(tmp_path):
    """A whole process (spawn and fork pools whose workers start before the first shared
    block, shared blocks, exit) prints no resource-tracker warning."""
    import subprocess
    import sys
    script = tmp_path / "run.py"
    script.write_text(
        "import numpy as np\n"
        "from pipeline.crf import CRF_PRESETS\n"
        "from pipeline.crf_pool import CRFJobs, make_crf_pool\n"
        "if __name__ == '__main__':\n"
        "    rng = np.random.default_rng(0)\n"
        "    imgs = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)\n"
        "    p = rng.random((4, 3, 8, 8)).astype(np.float32)\n"
        "    for method in ('fork', 'spawn'):\n"
        "        pool = make_crf_pool(2, method)\n"
        "        warm = CRFJobs(pool, imgs, p, CRF_PRESETS['dsrg_train'], 1, shared=False)\n"
        "        warm.results()\n"
        "        with CRFJobs(pool, imgs, p, CRF_PRESETS['dsrg_train'], 1, shared=True) as jobs:\n"
        "            q = np.stack(jobs.results())\n"
        "        pool.shutdown()\n"
        "        assert q.shape == p.shape\n"
        "    print('ok')\n")
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
    assert "leaked" not in res.stderr and "resource_tracker" not in res.stderr, res.stderr


def test_pool_workers_exit_when_the_parent_is_killed(tmp_path):
    import os
    import pathlib
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "import numpy as np\n"
        "from pipeline.crf import CRF_PRESETS\n"
        "from pipeline.crf_pool import crf_batch, make_crf_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = make_crf_pool(2)\n"
        "    p = np.full((2, 3, 6, 6), 1 / 3, np.float32)\n"
        "    crf_batch(np.zeros((2, 6, 6, 3), np.uint8), p, CRF_PRESETS['dsrg_train'], pool, 1)\n"
        "    print(' '.join(str(q) for q in pool._processes), flush=True)\n"
        "    time.sleep(60)\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    pids = [int(v) for v in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:                                    # a zombie (exited, not yet reaped) counts as gone
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 15
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)

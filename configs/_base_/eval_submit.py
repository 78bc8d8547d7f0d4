# Evaluation on the val split and the VOC test-server submission (stages `eval`, `submit`).
# DSRG test protocol (docs/ALGORITHMS.md §5.6, §7; DSRG's test-ms-f.py, which gave its published
# val / test numbers): scales 0.75 / 1 / 1.25 of the original image, no flip, logits upsampled to
# the original size and summed, softmax floored at 1e-5, dense CRF with the DSRG test parameters.
eval = dict(
    # the model scored: "segmenter" (the first-round DSRG segmenter) | "retrain" (the `retrain`
    # stage's model: DSRG's second round, or an mmseg segmentor); submit follows unless it sets
    # its own `model`.
    model="segmenter",
    split="val",
    # test protocol (pipeline/inference.py, PROTOCOLS): "test-ms-f" (DSRG's test-ms-f.py, above) |
    # "test-ms" (DSRG's test-ms.py: squares 241/321/401, logits summed) | "resized-square"
    # (scales of a 321x321 resize + flips, logits averaged) | None (only the keys below).
    # The keys below, when not None, override the protocol's; the metrics record what ran.
    protocol="test-ms-f",
    size=None,                 # base size (square) or (h, w); "original" = each image's own size
    scales=None,               # relative to the base size
    sizes=None,                # fixed square sides, one pass each (instead of size x scales)
    flip=None,                 # also run the mirrored image (mirrored-back logits)
    fusion=None,               # "sum": Σ logits, softmax, P >= 1e-5 (DSRG) | "mean": mean logits
    batch_size=8,              # images per forward pass (x2 with flip); equal base sizes batch
    amp=True,                  # float16 autocast on CUDA (ignored on CPU)
    # dense CRF post-processing: both "without CRF" and "with CRF" are scored in one pass.
    # preset: pipeline.crf.CRF_PRESETS ('dsrg_test' = bilateral 10/80/13, Gaussian 3/3,
    # 10 iterations, log-probability unary); extra keys (bi_w, bi_xy, bi_rgb, pos_w, pos_xy,
    # iterations, unary) override the preset; reference_side=S scales the spatial sigmas by each
    # image's longer side / S (the presets are for ~500-px VOC photos; docs/ALGORITHMS.md §7).
    # workers >= 2: a process pool over the images.
    crf=dict(enabled=True, preset="dsrg_test", workers=2),
    n_overlays=8,              # overlays/<id>.png: image | prediction | prediction+CRF | GT
    save_predictions=True,     # pred/<id>.png colour palette PNGs (final = with CRF if enabled)
    save_no_crf=False,         # also pred_nocrf/<id>.png when the CRF is on
    # (optional) chunk=N: images streamed through the network per CRF chunk (default
    # max(batch_size, 8)); memory only, the results do not depend on it
)

submit = dict(
    split="test",
    comp="comp6",              # comp6 = trained with data beyond VOC (ImageNet, SBD)
    # Inference settings: None = the same as `eval` (protocol, size, scales, sizes, flip, fusion,
    # batch_size, amp; size="original" for each image's own size when eval uses a fixed size);
    # crf holds only the keys that differ from eval's crf (empty = eval's), e.g.
    # crf=dict(workers=8) or crf=dict(enabled=False).
    protocol=None, size=None, scales=None, sizes=None, flip=None, fusion=None, batch_size=None,
    amp=None, crf=dict(),
)

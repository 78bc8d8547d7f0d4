# Evaluation on the val split and the VOC test-server submission (stages `eval`, `submit`).
# DSRG test protocol (docs/ALGORITHMS.md §5.6, §7): resize to 321x321 (aspect ratio ignored),
# scales 0.75 / 1 / 1.25 of it + horizontal flips, logits upsampled to the original image size
# and averaged, softmax, dense CRF with the DSRG test parameters.
eval = dict(
    # (optional) model="retrain": score the `retrain` stage's mmseg segmentor instead of the
    # DSRG segmenter (default "segmenter"); submit follows unless it sets its own `model`.
    split="val",
    size=321,                  # base size (square) or (h, w); None / "original" = own size
    scales=(0.75, 1.0, 1.25),  # relative to the base size
    flip=True,                 # also average the mirrored image's (mirrored-back) logits
    batch_size=8,              # images per forward pass (x2 with flip); equal base sizes batch
    amp=True,                  # float16 autocast on CUDA (ignored on CPU)
    # dense CRF post-processing: both "without CRF" and "with CRF" are scored in one pass.
    # preset: pipeline.crf.CRF_PRESETS ('dsrg_test' = bilateral 10/80/13, Gaussian 3/3,
    # 10 iterations, log-probability unary); extra keys (bi_w, bi_xy, bi_rgb, pos_w, pos_xy,
    # iterations, unary) override the preset. workers >= 2: a process pool over the images.
    crf=dict(enabled=True, preset="dsrg_test", workers=2),
    n_overlays=8,              # overlays/<id>.png: image | prediction | prediction+CRF | GT
    save_predictions=True,     # pred/<id>.png colour palette PNGs (final = with CRF if enabled)
    save_no_crf=False,         # also pred_nocrf/<id>.png when the CRF is on
)

submit = dict(
    split="test",
    comp="comp6",              # comp6 = trained with data beyond VOC (ImageNet, SBD)
    # Inference settings: None = the same as `eval` (size, scales, flip, batch_size, amp;
    # size="original" for each image's own size when eval uses a fixed size);
    # crf holds only the keys that differ from eval's crf (empty = eval's), e.g.
    # crf=dict(workers=8) or crf=dict(enabled=False).
    size=None, scales=None, flip=None, batch_size=None, amp=None, crf=dict(),
)

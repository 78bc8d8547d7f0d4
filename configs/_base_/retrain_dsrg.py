# DSRG's second round (docs/ALGORITHMS.md §5.7; DSRG's run.sh "train step 2", train-f.prototxt,
# solver-f.prototxt; stage `retrain`, python -m stages.retrain): the trained segmenter labels
# trainaug with DSRG's test-ms protocol + dense CRF, then the same DeepLab-ASPP VGG-16, started
# from the first-round model, is trained on those labels with cross-entropy (255 ignored) by the
# project's segmenter code: 20k iterations, batch 10, SGD lr 1e-3 poly 0.9, momentum 0.9,
# weight decay 5e-4, the prototxt's lr multipliers, random 321 crops of the original image
# (padded with 255) + flips. No mmsegmentation needed. `make eval OPTS="eval.model=retrain"`
# scores it with the eval protocol (DSRG's test-ms-f for the VOC configs).
retrain = dict(
    # pseudo-labels of trainaug with DSRG's test-ms.py protocol (squares 241 / 321 / 401, logits
    # summed, softmax floored at 1e-5, dense CRF); any eval key (protocol, size, scales, sizes,
    # flip, fusion) works here too, e.g. protocol="resized-square" for scales of 321 + flips.
    pseudo=dict(split="trainaug", protocol="test-ms", batch_size=8,
                amp=True, crf=dict(enabled=True, preset="dsrg_test", workers=4)),
    # type: "DeepLabV2VGG16" = the project's DeepLab-ASPP VGG-16 with the first round's
    # architecture (no other keys); any other type is an mmsegmentation segmentor config (needs
    # mmsegmentation; see configs/voc_ep_dsrg_mmseg.py).
    # init: "segmenter" = the first-round weights (DSRG: --weights model-s_iter_8000) |
    # "pretrained" = a fresh start from the segmenter's own `pretrained` (ImageNet) weights.
    model=dict(type="DeepLabV2VGG16", init="segmenter"),
    # cross-entropy resolution: "output" = labels taken on the 41x41 logit grid (train-f's
    # label_shrink Interp, shrink factor 8: pixels 0, 8, ..., 320) | "input" = logits upsampled
    ce=dict(resolution="output"),
    train=dict(
        split="trainaug", crop=321, resize=None, scale_range=(1.0, 1.0),
        batch_size=10, max_iters=20000, num_workers=4,
        optimizer=dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=5e-4),
        schedule=dict(type="poly", power=0.9),
        # train-f.prototxt: fc8 w x10 / b x20 (no decay), other biases lr x2 without decay
        lr_mult={"fc8.weight": 10.0, "fc8.bias": dict(lr_mult=20.0, decay_mult=0.0)},
        paramwise=dict(bias_lr_mult=2.0, bias_decay_mult=0.0, norm_decay_mult=0.0),
        amp=True, log_interval=20, checkpoint_interval=2000,
        cache_trunk=False,     # as segmenter.train.cache_trunk (needs the first round's frozen trunk)
    ),
    val=dict(split="val", size=321, batch_size=10),   # quick single-scale, no-CRF val mIoU
)

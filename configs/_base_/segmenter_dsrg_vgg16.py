# Segmenter of the DSRG recipe (Huang et al. CVPR 2018; docs/ALGORITHMS.md §4, §5, §7):
# DeepLab v2 (ASPP-L) VGG-16 trained from the seeds with seeded region growing + seeding /
# boundary losses.
# Schedule of the DSRG reference code (VOC): batch 20, SGD lr 5e-4 x0.33 every 1000 it, 8000 it,
# momentum 0.9, weight decay 5e-4; fc8 lr x10 (weights) / x20 (biases); 321x321 resized input.
segmenter = dict(
    model=dict(
        type="DeepLabV2VGG16",          # pool4/pool5 stride 1, dilated conv5, OS 8 (321 -> 41)
        fc_channels=1024, rates=(6, 12, 18, 24), dropout=0.5,
        reduce=0,                       # EfficientNet only: 1x1 projection to this width before ASPP
        width=1.0, batch_norm=False,
        pretrained="torchvision",       # ImageNet VGG-16 convs (torchvision cache or a file path)
        # the trunk under the ASPP head: "vgg16" (above) | "efficientnet_lite0" (pretrained=
        # "package" or a file; width 1, batch_norm False; frozen_blocks / head / taps as the
        # classifier's)
        backbone=dict(type="vgg16", frozen_blocks=0, head=False, taps=()),
    ),
    loss="dsrg",                        # "dsrg" | "ce" (plain cross-entropy, ignore 255)
    train=dict(
        labels="seeds",                 # "seeds": WORK_DIR/seeds/labels | "gt": GT masks (upper bound)
        split="trainaug", crop=321, resize=321, scale_range=(1.0, 1.0),   # DSRG: resize, flip
        batch_size=20, max_iters=8000, num_workers=4,
        optimizer=dict(type="SGD", lr=5e-4, momentum=0.9, weight_decay=5e-4),
        schedule=dict(type="step", step=1000, gamma=0.33),
        # prototxt multipliers (DeepLabV2VGG16.param_groups): fc8 w x10 / b x20 (no decay),
        # other biases lr x2 without decay, BatchNorm (if any) without decay
        lr_mult={"fc8.weight": 10.0, "fc8.bias": dict(lr_mult=20.0, decay_mult=0.0)},
        paramwise=dict(bias_lr_mult=2.0, bias_decay_mult=0.0, norm_decay_mult=0.0),
        amp=True,                       # CUDA only; the losses are computed in float32
        log_interval=20, checkpoint_interval=1000,
        cache_trunk=False,              # as classifier.train.cache_trunk (frozen trunk cached)
    ),
    dsrg=dict(
        fg_threshold=0.85, bg_threshold=0.99,   # growing thresholds (docs/ALGORITHMS.md §5.3)
        grow_on="crf",                  # grow on the CRF-refined P (reference) | "probs"
        seed_weight=1.0, boundary_weight=1.0,
        boundary_clip=(0.05, 20.0),     # DSRG ConstrainLossLayer clips Q/P; None = SEC (no clip)
        grow_start=0,                   # iterations trained on the seeds alone before growing
                                        # starts (0 = DSRG: grow from the first iteration)
    ),
    # training CRF at the output grid (docs/ALGORITHMS.md §7: DSRG test parameters, spatial
    # sigma / 12, P as unary);
    # any CRFParams field overrides the preset (bi_w, bi_xy, bi_rgb, pos_w, pos_xy, iterations,
    # unary). backend: "pydensecrf" (permutohedral lattice, CPU; workers: process pool size per
    # training process, 0 = in-process, started with start_method) | "torch" (exact mean-field
    # on the training device, pipeline/crf_torch.py; workers unused). docs/CRF_TORCH.md compares
    # the two.
    crf=dict(preset="dsrg_train", backend="pydensecrf", workers=4, start_method="spawn"),
    ce=dict(resolution="input"),        # loss="ce": "input" = upsampled logits | "output" = grid
    # per-class loss weights from the pixel counts of the labels trained on (seeds, GT masks or
    # pseudo-labels): w_c = min((n_max / n_c)^power, max_weight), the most frequent class 1;
    # DSRG's seeding loss weights its foreground classes, cross-entropy every class
    # (docs/ALGORITHMS.md §5.4). power 0 = unweighted (DSRG, DeepLab)
    class_balance=dict(power=0.0, max_weight=50.0),
    # quick single-scale, no-CRF val mIoU (+ the fraction of val pixels predicted foreground);
    # score_train: also score the segmenter (same settings) on the images the seeds stage scored
    # its pseudo-masks on, against their GT masks, next to the pseudo-mask mIoU (a warning when
    # lower); False skips it (e.g. a training set without GT masks)
    val=dict(split="val", size=321, batch_size=10, score_train=True),
)

# Fully supervised reference (`make upper_bound`): the segmenter above, same schedule, trained on
# the ground-truth masks of the same training images with cross-entropy; scored with `eval`.
upper_bound = dict(loss="ce", train=dict())

# Classifier of the EP paper (ICCV 2019, §3, §4.4): VGG-16 with Entropy Pooling, trained on
# image-level labels; its heatmaps become seeds. Values: paper + docs/ALGORITHMS.md §1-§3, §10.
experiment = dict(seed=0, device="auto")

classifier = dict(
    model=dict(
        # fully convolutional VGG-16 (DSRG/SEC cue network): pool4/pool5 stride 1, dilated conv5,
        # fc6 (3x3, 1024) + fc7 (1x1, 1024) convs, output stride 8 (321 -> 41)
        # type: "vgg16" | "efficientnet_lite0" (ImageNet weights from pretrained="package", output
        # stride 8 too; frozen_blocks: stem + that many of its 16 blocks frozen; head: its 1x1
        # 1280-ch head conv; taps: with the whole trunk frozen, the concatenated outputs of these
        # layers, e.g. (10, 15, "head")). width .. bew_before are VGG-16 settings (rejected for
        # other types unless at these values); dropout: before the classifier (VGG: after fc6 and fc7)
        backbone=dict(type="vgg16", frozen_blocks=0, head=True, taps=(),
                      width=1.0, batch_norm=False, dropout=0.5, fc6_dilation=1,
                      sge_after=(), sge_groups=32, lip_pools=(), bew_before=()),
        # tau: GNDRP threshold; normalize (EP): "hw" = Eq. 4's 1/hw | "lambda" = λ-weighted mean
        pooling=dict(type="ep", detach_lambda=False, tau=0.4, normalize="hw"),
        pretrained="torchvision",        # torchvision cache, or a path to vgg16-397923af.pth
        bew_loss_weight=0.5,
        classifier_bias=True,            # bias b of the 1x1 classifier (CAM = Wᵀv + b)
    ),
    train=dict(
        split="trainaug", crop=321, resize=None, scale_range=(0.7, 1.3),
        batch_size=20, max_iters=8000, num_workers=4,
        optimizer=dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=5e-4),
        schedule=dict(type="step", step=2000, gamma=0.1),   # lr /10 every 2000 iterations
        lr_mult=dict(),
        loss="multilabel_soft_margin", amp=True, log_interval=20, checkpoint_interval=1000,
        # True: compute the frozen trunk once per image (square resize to crop, no flip) and
        # train the rest on the cached features (pipeline/runtime/trunk_cache.py); needs a
        # frozen trunk, resize=crop and scale_range=(1.0, 1.0)
        cache_trunk=False,
    ),
    # extra_poolings: also score the trained weights with these pooling rules ("EP inference")
    val=dict(split="val", size=321, batch_size=20, num_workers=0, extra_poolings=()),
)

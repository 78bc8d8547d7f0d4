"""Benchmark configurations: ``FULL`` (``make bench``) and ``QUICK`` (``--quick``, the tests).

``repeats`` / ``warmup`` are global (each figure = median over ``repeats`` timed runs after
``warmup`` untimed ones); a section's own ``repeats`` overrides the global value for it. Section
keys are the ``DEFAULTS`` of the benchmark module of the same name.
"""
from __future__ import annotations

FULL = dict(
    repeats=5,
    warmup=1,
    # DSRG training grid: batch 20, 41x41, 21 channels, 1..3 foreground classes + background
    growing=dict(batch=20, size=41, channels=21, max_fg=3, loop_repeats=3),
    # eval CRF: 8 images at 321x321 (DSRG base size), 21 classes, dsrg_test (10 iterations)
    crf=dict(images=8, height=321, width=321, classes=21, preset="dsrg_test", workers=None, repeats=3),
    # DSRG training CRF: the recipe's batch of 20 crops 321x321 -> 41x41 grid, 21 classes
    crf_train=dict(batch=20, size=321, grid=41, num_classes=21, workers=None),
    # demo heatmaps settings (the VOC network at 321 px x 8 passes is ~1.5 TFLOP per image)
    heatmaps=dict(images=32, batch=32, size=112, width=0.25, batch_norm=True,
                  scales=(1.0, 0.75, 1.25), flip=True, num_classes=7, repeats=3),
    # the VOC networks (width 1, 321x321), batch 2
    training=dict(size=321, width=1.0, batch=2, num_classes=21, repeats=3),
    # DSRG loss of the recipe's batch: 20 crops of 321x321 -> 41x41, network time from `training`
    dsrg_loss=dict(batch=20, size=321, num_classes=21, workers=None,
                   net=dict(size=321, width=1.0, batch=2)),
    seeds=dict(counts=(250, 1000), image_size=64, repeats=3, separate_trace=True),
    # per-image host costs at the VOC image size (the inputs of docs/PERFORMANCE.md)
    voc_costs=dict(height=375, width=500, classes=21),
    flops=dict(size=321, width=1.0, num_classes=21),
    demo=dict(work_dir="work_dirs/demo_synthetic"),
)

QUICK = dict(
    repeats=2,
    warmup=1,
    growing=dict(batch=4, size=17, channels=6, max_fg=3, loop_repeats=1),
    crf=dict(images=4, height=24, width=32, classes=5, preset="dsrg_test", workers=2),
    crf_train=dict(batch=4, size=64, grid=9, num_classes=5, workers=2, min_argmax=0.9),
    heatmaps=dict(images=4, batch=4, size=32, width=0.125, batch_norm=True, scales=(1.0, 0.75),
                  flip=True, num_classes=4),
    training=dict(size=48, width=0.125, batch=2, num_classes=5, batch_norm=True,
                  segmenter=dict(fc_channels=64, rates=(1, 2, 3, 4))),
    dsrg_loss=dict(batch=4, size=48, num_classes=5, workers=2,
                   net=dict(size=48, width=0.125, batch=2, segmenter=dict(fc_channels=64, rates=(1, 2, 3, 4)))),
    seeds=dict(counts=(20, 80), image_size=32, repeats=1, separate_trace=False),
    voc_costs=dict(height=40, width=52, classes=5, files=4),
    flops=dict(size=64, width=0.125, num_classes=5),
    demo=dict(work_dir="work_dirs/demo_synthetic"),
)

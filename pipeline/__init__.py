"""WSSS pipeline library: Entropy Pooling classifiers, seeds, DSRG, CRF, metrics, VOC data.

Algorithms and the training loop (``pipeline.runtime.training``) depend on torch/numpy only; OpenMMLab
is used at the edges: mmengine's config loader in ``stages``, and the optional mmsegmentation
models of the ``retrain`` stage in ``pipeline.mm``.
"""

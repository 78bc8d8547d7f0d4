"""WSSS pipeline library: Entropy Pooling classifiers, seeds, DSRG, CRF, metrics, VOC data.

Algorithms here depend on torch/numpy only; OpenMMLab is used at the edges
(``pipeline.mm`` registration, ``stages`` runners).
"""

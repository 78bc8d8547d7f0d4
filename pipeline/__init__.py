"""WSSS pipeline library: Entropy Pooling classifiers, seeds, DSRG, CRF, metrics, VOC data.

Layers (docs/DESIGN.md, "Layers"): the top-level modules and ``pipeline.models`` are the
algorithms (torch / numpy, no files, no config); ``pipeline.data`` reads and writes datasets and
the files the stages exchange; ``pipeline.runtime`` runs stages and trains networks;
``pipeline.settings`` checks the config sections; ``pipeline.mm`` is the optional OpenMMLab edge
(mmsegmentation models of the ``retrain`` stage); ``pipeline.report`` renders the HTML report.
mmengine's config loader is used by ``stages`` only.
"""

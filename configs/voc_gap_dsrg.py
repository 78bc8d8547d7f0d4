# Baseline: the same pipeline with a GAP (CAM) classifier, i.e. DSRG's original cues.
# `make heatmaps EXP=configs/voc_gap_dsrg.py OPTS="heatmaps.pooling=ep"` gives "EP inference"
# on the GAP-trained model without retraining.
_base_ = ["voc_ep_dsrg.py"]

experiment = dict(name="voc_gap_dsrg")
classifier = dict(model=dict(pooling=dict(type="gap")))

# configs/voc_ep_dsrg.py with an mmsegmentation segmentor as the second round (default
# DeepLabV3+ R-50-D8, configs/_base_/retrain_mmseg.py) instead of DSRG's DeepLab-ASPP VGG-16.
# Needs mmsegmentation + a compiled mmcv, and the ImageNet ResNet-50-v1c file named there.
# The other sections equal voc_ep_dsrg.py's, so its work dir is reused and only retrain re-runs:
#   make retrain eval EXP=configs/voc_ep_dsrg_mmseg.py WORK_DIR=work_dirs/voc_ep_dsrg OPTS="eval.model=retrain"
_base_ = ["_base_/data_voc.py", "_base_/classifier_vgg16_ep.py", "_base_/cues.py",
          "_base_/segmenter_dsrg_vgg16.py", "_base_/eval_submit.py", "_base_/localize.py",
          "_base_/retrain_mmseg.py", "_base_/ablation.py"]

experiment = dict(name="voc_ep_dsrg_mmseg", seed=0, device="auto")

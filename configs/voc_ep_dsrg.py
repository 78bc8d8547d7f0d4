# The EP paper's WSSS setting on PASCAL VOC 2012 (ICCV 2019, §4.4): VGG-16 + Entropy Pooling
# classifier (ImageNet init) -> heatmaps -> DRFI-style saliency -> seeds (top 30% / saliency
# < 0.06) -> DSRG with DeepLab-ASPP VGG-16 -> val mIoU and test submission.
#   make data EXP=configs/voc_ep_dsrg.py VOC_ROOT=data/VOCdevkit/VOC2012 SBD_ROOT=data/benchmark_RELEASE
#   make classifier heatmaps saliency seeds segmenter eval submit EXP=configs/voc_ep_dsrg.py GPUS=1
# DSRG's second round (its published numbers come after it; configs/_base_/retrain_dsrg.py):
#   make retrain eval submit EXP=configs/voc_ep_dsrg.py OPTS="eval.model=retrain"
# Paper anchors (VOC 2012 mIoU %): DSRG 59.0 val / 60.4 test; DSRG + EP 61.5 val / 62.7 test.
_base_ = ["_base_/data_voc.py", "_base_/classifier_vgg16_ep.py", "_base_/cues.py",
          "_base_/segmenter_dsrg_vgg16.py", "_base_/eval_submit.py", "_base_/localize.py",
          "_base_/retrain_dsrg.py", "_base_/ablation.py"]

experiment = dict(name="voc_ep_dsrg", seed=0, device="auto")
# precomputed saliency maps (e.g. DRFI, as the paper) instead of the built-in RBD method:
# saliency = dict(dir="data/saliency")

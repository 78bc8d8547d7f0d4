# PASCAL VOC 2012 with its 10,582-image trainaug split, from either of the two usual layouts:
#   VOC + SBD's .mat files:
#     make data EXP=configs/voc_ep_dsrg.py VOC_ROOT=data/VOCdevkit/VOC2012 SBD_ROOT=data/benchmark_RELEASE
#   VOC + DeepLab's SegmentationClassAug PNGs and train_aug.txt (found by themselves when the
#   folder is VOC2012/SegmentationClassAug and the list sits in ImageSets/Segmentation/ or next
#   to the folder; else AUG_DIR=... and OPTS="data.aug_list=..."):
#     make data EXP=configs/voc_ep_dsrg.py VOC_ROOT=data/VOCdevkit/VOC2012
data = dict(dataset="voc", root="data/VOCdevkit/VOC2012",
            sbd_root=None,             # SBD benchmark_RELEASE folder (its cls/*.mat masks), or None
            # SegmentationClassAug folder when there is no SBD: "auto" = VOC2012/SegmentationClassAug
            # if it exists, None = not used, or a path (relative to the repository root)
            aug_dir="auto",
            aug_list=None,             # its train_aug.txt / trainaug.txt; None = look for it
            label_source="xml")        # image labels: "xml" (the mask where an id has no XML) | "mask"

# PASCAL VOC 2012 (+ SBD for the 10,582-image trainaug split).
# make data DATASET=voc VOC_ROOT=data/VOCdevkit/VOC2012 SBD_ROOT=data/benchmark_RELEASE
data = dict(dataset="voc", root="data/VOCdevkit/VOC2012", sbd_root="data/benchmark_RELEASE",
            label_source="xml")

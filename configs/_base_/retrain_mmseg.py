# Second round with an mmsegmentation segmentor instead of DSRG's DeepLab-ASPP VGG-16
# (configs/voc_ep_dsrg_mmseg.py; docs/ALGORITHMS.md §5.7; stage `retrain`): the trained segmenter
# labels trainaug (DSRG's test-ms protocol + dense CRF) and any mmsegmentation segmentor is
# trained on those pseudo-labels with its own cross-entropy (255 ignored). Needs mmsegmentation
# and a compiled mmcv (`make env-mm`). Schedule of DSRG's second round: poly lr 1e-3, 20k
# iterations, batch 10, random 321 crops + flips. SyncBN (mmseg default) is reverted to
# BatchNorm unless training under DDP on CUDA (pipeline.mm.segmentation.for_training).
retrain = dict(
    # pseudo-labels of trainaug with DSRG's test-ms.py protocol (squares 241 / 321 / 401, logits
    # summed, softmax floored at 1e-5, dense CRF); any eval key (protocol, size, scales, sizes,
    # flip, fusion) works here too, e.g. protocol="resized-square" for scales of 321 + flips.
    pseudo=dict(split="trainaug", protocol="test-ms", batch_size=8,
                amp=True, crf=dict(enabled=True, preset="dsrg_test", workers=4)),
    # any mmseg model dict (mmseg registry); num_classes of the heads is set from the dataset
    # (type "DeepLabV2VGG16" is the project's own segmenter instead). Default: DeepLabV3+ R-50-D8
    # (mmseg configs/_base_/models/deeplabv3plus_r50-d8.py) with ImageNet ResNet-50-v1c weights
    # from a local file (nothing is downloaded at run time): mmseg's open-mmlab://resnet50_v1c,
    # https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth, saved at
    # this path (relative to the repository root), or None for random weights.
    model=dict(
        type="EncoderDecoder",
        pretrained="data/pretrained/resnet50_v1c-2cccc1ad.pth",
        backbone=dict(
            type="ResNetV1c", depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
            dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), contract_dilation=True,
            norm_cfg=dict(type="SyncBN", requires_grad=True), norm_eval=False, style="pytorch"),
        decode_head=dict(
            type="DepthwiseSeparableASPPHead", in_channels=2048, in_index=3, channels=512,
            dilations=(1, 12, 24, 36), c1_in_channels=256, c1_channels=48, dropout_ratio=0.1,
            num_classes=21, norm_cfg=dict(type="SyncBN", requires_grad=True), align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0,
                             avg_non_ignore=True)),
        auxiliary_head=dict(
            type="FCNHead", in_channels=1024, in_index=2, channels=256, num_convs=1,
            concat_input=False, dropout_ratio=0.1, num_classes=21,
            norm_cfg=dict(type="SyncBN", requires_grad=True), align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4,
                             avg_non_ignore=True)),
        train_cfg=dict(), test_cfg=dict(mode="whole"),
    ),
    train=dict(
        split="trainaug", crop=321, resize=None, scale_range=(1.0, 1.0),
        batch_size=10, max_iters=20000, num_workers=4,
        optimizer=dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=5e-4),
        schedule=dict(type="poly", power=0.9),
        lr_mult=dict(), paramwise=dict(),
        amp=True, log_interval=50, checkpoint_interval=2000,
        cache_trunk=False,     # the project's frozen-trunk cache; not for mmseg models
    ),
    val=dict(split="val", size=321, batch_size=10),
)

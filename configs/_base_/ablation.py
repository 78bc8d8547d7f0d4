# Classifier ablation (`make ablation`, stages/ablation.py): every variant trains its own
# classifier on the same data (WORK_DIR/data) and makes its own heatmaps and seeds from the same
# saliency (WORK_DIR/saliency), in WORK_DIR/ablation/<variant>/; FULL=1 (full=True) also trains
# the segmenter and scores it (eval). One table: classification mAP, seed precision / recall /
# mIoU, pseudo-mask mIoU (+ segmenter mIoU). A second `make ablation` skips finished variants.
#
# A variant is a dict of config overrides in `--opts` form ("section.key.sub": value, applied
# with Config.merge_from_dict on top of the experiment) plus reserved keys without a dot:
#   label            the row's description in the table
#   classifier_from  reuse that variant's trained classifier instead of training one
#                    (its folder is linked); e.g. "EP inference" on the GAP-trained model.
# `common` holds overrides applied to every variant first (e.g. a shorter schedule).
# Run a subset with `make ablation VARIANTS="gap ep"`.
ablation = dict(
    variants=dict(
        gap={"label": "GAP (CAM)",
             "classifier.model.pooling.type": "gap",
             # also score the GAP-trained weights with EP pooling (the ep_inference row's mAP)
             "classifier.val.extra_poolings": ("ep",)},
        ep={"label": "EP",
            "classifier.model.pooling.type": "ep"},
        # EP inference on the GAP model (EP paper §3): the GAP classifier, EP pooling at test
        # time. The CAM (Wᵀv + b) and λ do not depend on the pooling rule, so its seeds equal the
        # GAP row's; the image-level scores (mAP, heatmap scores) are EP's.
        ep_inference={"label": "EP inference on the GAP model",
                      "classifier_from": "gap",
                      "heatmaps.pooling": "ep"},
        bew_ep={"label": "BEW + EP",
                "classifier.model.pooling.type": "ep",
                "classifier.model.backbone.bew_before": ("pool4", "pool5")},
        gndrp={"label": "GNDRP (RIB)",
               "classifier.model.pooling.type": "gndrp"},
        sge_ep={"label": "SGE + EP",
                "classifier.model.pooling.type": "ep",
                "classifier.model.backbone.sge_after": ("conv4", "conv5")},
        lip_ep={"label": "LIP + EP",
                "classifier.model.pooling.type": "ep",
                "classifier.model.backbone.lip_pools": ("pool1", "pool2", "pool3")},
        # RIB (Lee et al. NeurIPS 2021): per-image fine-tuning of the GNDRP classifier on raw
        # logits, heatmaps accumulated over the steps (heatmaps.source='rib'). Steps, scales and
        # negatives are cut down so the CPU demo stays within minutes.
        rib={"label": "RIB heatmaps (GNDRP classifier)",
             "classifier_from": "gndrp",
             "heatmaps.source": "rib",
             "heatmaps.scales": (1.0,),
             "heatmaps.rib.steps": 5, "heatmaps.rib.lr": 1e-4, "heatmaps.rib.negatives": 4},
    ),
    common=dict(),     # overrides applied to every variant before its own
    full=False,        # True (or FULL=1): also segmenter + eval per variant
)

# Weakly-supervised object localisation (EP paper §4.3; docs/ALGORITHMS.md §12): `make localize`.
# Boxes from the class-specific entropy weights λ^c = λ·p̂(c) of the trained classifier,
# compared with the CAM baseline of Zhou et al. (CVPR 2016), scored against the XML boxes.
localize = dict(
    split="val",               # images to localise (needs Annotations/<id>.xml boxes to score)
    mass=0.98,                 # box = smallest rectangle holding this fraction of the mass
    topk=5,                    # λ^top-k = Σ λ^c over the top-k predicted classes (capped at K)
    # multi-label *choice* (docs/ALGORITHMS.md §12): sum over the image's own classes instead
    use_image_classes=False,
    cam_threshold=0.2,         # CAM baseline: largest blob of min-max normalised CAM >= 0.2
    iou_threshold=0.5,         # CorLoc / top-1 localisation hit
    # network input: images resized to size x size (the cue network's 321), maps resized back
    # to each image's own size, where the boxes are searched; None keeps the image size
    size=321,
    scales=(1.0,),             # test-time scales of the `size` input (mean of the raw maps)
    flip=False,                # also average the horizontally flipped input
    pooling=None,              # None = the trained pooling rule (the top-k scores depend on it)
    max_images=None,           # score only the first N ids of the split (quick checks)
    n_overlays=8,              # overlays/<id>.png: boxes on the image | λ^top-k | CAM (top-1)
)

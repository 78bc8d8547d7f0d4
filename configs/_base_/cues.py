# Localisation cues of the EP paper (ICCV 2019, §4.3-§4.4; docs/ALGORITHMS.md §1, §3):
# class heatmaps of the trained classifier -> saliency -> seeds (+ argmax pseudo-masks).
# Stages: `make heatmaps`, `make saliency`, `make seeds`. Changing only `seeds.*` re-runs the
# seeds stage alone (heatmaps and saliency stay fresh) and marks the segmenter stale.

heatmaps = dict(
    split="trainaug",          # the images that get heatmaps (and later seeds)
    # images are resized to size x size so that they batch (the DSRG/SEC cue network takes
    # 321x321 inputs, aspect ratio ignored); maps are upsampled back to each image's own size.
    # None keeps every image at its size (batches then group equal-sized images).
    size=321,
    # test-time aggregation (docs/ALGORITHMS.md §1.6; *choice*): mean of the raw CAM over these
    # scales of the `size` input and their horizontal flips (the usual AffinityNet/IRN CAM set).
    scales=(1.0, 0.5, 1.5, 2.0),
    flip=True,
    # pooling rule at inference: None = the one the model was trained with; 'ep' on a GAP-trained
    # model = "EP inference" (EP paper §3). CAM = Wᵀv + b and λ do not depend on it; the
    # image-level scores stored with each map do.
    pooling=None,
    # also store λ^c = λ · p̂(c) (EP paper §4.3, p̂ = softmax over the K classes of the CAM at
    # each location) in heatmaps/lambda_c/<id>.npz, for seeds.heatmap_source='lambda_c'.
    class_specific_lambda=False,
    batch_size=8,
    num_workers=2,             # DataLoader workers (image decoding + resizing)
    writers=2,                 # threads that compress and write the .npz files (0 = in the loop)
    amp=True,                  # float16 autocast on CUDA (ignored on CPU)
    # 'classifier': CAMs of the trained classifier | 'rib': RIB's per-image fine-tuned CAMs
    # (Lee et al. NeurIPS 2021, docs/ALGORITHMS.md §8.2; pipeline/rib.py), one image at a time.
    source="classifier",
    # RIB settings (source='rib'; docs/ALGORITHMS.md §8.2), views = the scales/flip above: steps
    # per image, SGD lr (VOC) with the classifier's lr x classifier_lr_mult, weight decay, momentum,
    # poly decay over the steps; GNDRP tau; early stops (a labelled logit > max_logit; CAM >
    # explode_th on more than explode_ratio of the pixels); `negatives` images sharing no class
    # with the target, neg_batch of them per step; loss 'sum' (RIB) | 'mean'; train_mode=False
    # keeps BatchNorm statistics and dropout frozen; seed of the negatives' sub-sampling.
    # training-free affinity refinement of each view's class maps before they are averaged
    # (docs/ALGORITHMS.md §3.4; pipeline/affinity.py): `iterations` random-walk steps of
    # AffinityNet's Eq. 6 (Ahn & Kwak, CVPR 2018) on the cosine affinities of the classifier's
    # own features (no affinity network is trained), raised to `beta`, between grid cells at most
    # `radius` apart; iterations=0 = off (the EP paper's cues). classifier source only.
    refine=dict(iterations=0, beta=8.0, radius=5),
    rib=dict(steps=10, lr=8e-6, classifier_lr_mult=10.0, weight_decay=1e-4, momentum=0.0,
             poly_power=0.9, tau=0.4, max_logit=100.0, explode_th=0.3, explode_ratio=0.7,
             negatives=20, neg_batch=20, loss_reduction="sum", train_mode=False, seed=0),
)

saliency = dict(
    split="trainaug",
    # folder of precomputed maps <id>.png|.jpg|.bmp (e.g. DRFI, as the EP paper uses), relative
    # to the repository root or absolute; any size (resized bilinearly to the image). Every
    # image of the split needs one. None = compute the built-in RBD saliency (Zhu et al. 2014).
    # The stage does not watch the folder's contents: after replacing maps, run with FORCE=1.
    dir=None,
    # imported maps must be one grey channel; the optional key allow_colour=True converts colour
    # maps (RGB channels that differ) to luma instead of stopping, and logs how many it converted
    # parameters of pipeline.saliency.rbd_saliency (paper values; SLIC superpixels)
    rbd=dict(n_segments=250, compactness=10.0, sigma_clr=10.0, sigma_bndcon=1.0,
             sigma_spa=0.25, mu=0.1, bg_lambda=1.0),
    workers=2,                 # processes (RBD is CPU-bound); <= 1 runs in-process
)

seeds = dict(
    heatmap_source="cam",      # 'cam' | 'lambda_c' (needs heatmaps.class_specific_lambda=True)
    # foreground: pixels in the "top 30%" of each class heatmap (EP paper §4.4)
    fg_top=0.30,
    # 'rank': the fg_top share of the map's pixels with the highest values (the paper's words read
    # literally) | 'relative': h >= (1 - fg_top)·max h. 'rank' won on the select half of the real
    # photos' val (docs/FIDELITY.md, "Seed rule"); the synthetic demo keeps 'relative', which won on its own.
    fg_mode="rank",
    # confidence floor of a foreground claim: h >= fg_min·max h as well (0 = none). With 'rank'
    # the seeds are the top share AND the confident band of the map; the rest of the share is
    # left unlabelled (ignored by the losses, for DSRG's growing to decide)
    fg_min=0.0,
    # background cue: 'saliency' (EP paper §4.4, DSRG) | 'cam' (no saliency model: the image's
    # class maps alone, IRN-style; the seeds stage then does not need the saliency stage) |
    # 'both' (background where both rules hold: saliency < bg_sal AND every class map <= bg_cam)
    bg_source="saliency",
    # background: saliency < bg_sal (EP paper §4.4: "normalized saliency < 0.06")
    bg_sal=0.06,
    # bg_source 'cam' / 'both': background where every class map of the image (normalised by its
    # max, as the foreground rule reads them) is <= bg_cam. 0.05 is IRN's `conf_bg_thres` on
    # max-normalised CAMs (Ahn et al. CVPR 2019; docs/ALGORITHMS.md §3)
    bg_cam=0.05,
    # rescale each saliency map to [0, 1] by its own min/max before thresholding (the paper's
    # "normalized saliency"); False uses the stored 8-bit values / 255 as they are
    normalise_saliency=True,
    overlap="max",             # pixel claimed by several classes: 'max' (highest heatmap) | 'ignore' (255)
    # dense pseudo-masks pseudo/<id>.png: argmax over the image's (max-normalised) class maps,
    # background where the max is below this. 0.15 is IRN's CAM evaluation threshold
    # (Ahn et al. CVPR 2019, `cam_eval_thres`); CAM papers use 0.15-0.25.
    pseudo_bg_threshold=0.15,
    # also write seeds/dsrg_cues.pickle + input_list.txt for the SEC/DSRG reference code
    export_dsrg_pickle=False,
    dsrg_grid=41,              # 321 input / output stride 8
    dsrg_mode="nearest",       # seed map -> grid: 'nearest' | 'majority'
    n_overlays=8,              # overlay PNGs (image | heatmap | λ | saliency | seeds | pseudo | GT)
)

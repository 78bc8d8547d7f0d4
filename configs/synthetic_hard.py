# The hard synthetic benchmark: the demo's method, networks and schedules on a harder generated
# dataset, closer to VOC's layouts: 12 classes, many small objects (radius 7-20 % of the image),
# up to 4 classes and 8 objects per image, strong class-correlated backgrounds (context 0.9),
# more colour/texture noise (difficulty 0.7), 128 px images (resized to 112 px by the networks
# as in the demo: the segmenter's output grid is 15x15). Whole chain (data -> eval) in <= 20 min
# on 2 CPU cores; README "Hard synthetic benchmark" has the measured times and results.
#   make data classifier heatmaps saliency seeds segmenter upper_bound eval EXP=configs/synthetic_hard.py
_base_ = ["demo_synthetic.py"]

experiment = dict(name="synthetic_hard")

# generator settings (pipeline/data/synthetic.py DEFAULTS; the README lists the same values)
data = dict(synthetic=dict(seed=0, n_classes=12, image_size=128, n_train=1000, n_val=200,
                           n_test=100, max_objects=8, max_classes_per_image=4, difficulty=0.7,
                           context_prob=0.9, object_radius=(0.07, 0.2)))

# 12 classes instead of 6: a longer classifier schedule (1200 -> 1500 iterations)
classifier = dict(train=dict(max_iters=1500))

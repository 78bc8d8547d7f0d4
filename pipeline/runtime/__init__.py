"""Running the pipeline: the stage runner (manifests, freshness, locks), expected-failure
messages, numerical guards, model files, scoring a segmenter over a split, background writers
and the training loop (docs/DESIGN.md, "Layers" and "Stages")."""

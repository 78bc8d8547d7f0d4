"""The experiment report (``make report``): HTML sections, plots, the examples grid and the
ablation table, read from a work dir's manifests and outputs."""
